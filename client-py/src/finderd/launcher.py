"""python -m finderd launcher enable|disable|status [VENV]: finderd-python in a venv.

`enable` puts the launcher built with this package (finderd/finderd-python,
for this interpreter) in place of the venv's python, python3 and python3.X;
`disable` puts back exactly what was there. Names that are symlinks to one
of the others (python -> python3.11) are left alone: they reach the
launcher through it. What was replaced is moved into VENV/.finderd-launcher/
(beside state.json, which says what each was), so that disable renames each
back: the very same symlink or file, inode, owner, mode and times. A symlink to the base interpreter
that the launcher replaces is also written into the launcher copy's layout
record, so that CPython's path calculation, which follows the executable's
symlinks to find sys._base_executable, finds the same one as before.

The venv's finderd.pth, when the finderd package is installed in it, goes
into VENV/.finderd-launcher/ too while the launcher is enabled: the launcher
serves the venv from its first lookup, so the .pth line would only cost its
compilation at every start (and would serve `-E`/`-I` runs, which the
launcher leaves stock as CPython leaves PYTHON* unread). disable puts it back.
"""

import errno
import glob
import hashlib
import json
import os
import subprocess
import sys

STATE_DIR = ".finderd-launcher"
STATE_FILE = "state.json"
ORIGINALS = "originals"
LAYOUT_MARKER = b"FINDERD-LAYOUT:"
LAYOUT_SIZE = 4096  # the record's buffer in the binary (client-py/launcher/interpose.c)
NAME = "finderd-python"


class LauncherError(Exception):
    """Something the user must fix; the message says what."""


def package_dir():
    return os.path.dirname(os.path.abspath(__file__))


def build_info():
    """(path of the launcher binary or None, metadata dict) of this package's build."""
    meta_path = os.path.join(package_dir(), NAME + ".json")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {"built": False, "reason": "this finderd package has no launcher build "
                                          "(no %s)" % meta_path}
    binary = os.path.join(package_dir(), NAME)
    if meta.get("built") and not os.path.isfile(binary):
        meta = {"built": False, "reason": "%s is missing" % binary}
    return (binary if meta.get("built") else None), meta


def read_cfg(venv):
    """pyvenv.cfg as a dict (lower-case keys)."""
    path = os.path.join(venv, "pyvenv.cfg")
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise LauncherError("%s is not a venv: it has no pyvenv.cfg" % venv) from None
    cfg = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            cfg[key.strip().lower()] = value.strip()
    return cfg


def venv_version(cfg):
    """(major, minor, micro) of the venv's interpreter, from pyvenv.cfg."""
    text = cfg.get("version") or cfg.get("version_info") or ""
    parts = text.split(".")
    try:
        return tuple(int(p) for p in parts[:3])
    except ValueError:
        raise LauncherError("pyvenv.cfg has no readable version (%r)" % text) from None


def names_for(version):
    return ["python", "python3", "python%d.%d" % version[:2]]


def check_venv(venv, meta):
    """The launcher fits this venv: the same interpreter, by version and home."""
    cfg = read_cfg(venv)
    version = venv_version(cfg)
    built = tuple(int(x) for x in meta["python"].split("."))
    if version != built:
        raise LauncherError(
            "this launcher was built for CPython %s (%s); %s runs %s. Install finderd with "
            "that venv's interpreter (VENV/bin/python -m pip install ./client-py) and enable "
            "the launcher from there" % (meta["python"], meta["base_executable"], venv,
                                         ".".join(map(str, version))))
    home = cfg.get("home", "")
    expected = os.path.dirname(meta["base_executable"])
    if home and os.path.realpath(home) != os.path.realpath(expected):
        raise LauncherError("%s's base interpreter is in %s; this launcher embeds the one in %s"
                            % (venv, home, expected))
    return version


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 16), b""):
            h.update(chunk)
    return h.hexdigest()


def layout_record(links):
    """The bytes written after LAYOUT_MARKER: see interpose.c."""
    record = b"v1\0"
    for name, target in sorted(links.items()):
        record += b"link\0" + os.fsencode(name) + b"\0" + os.fsencode(target) + b"\0"
    record += b"\0"
    if len(record) > LAYOUT_SIZE - len(LAYOUT_MARKER):
        raise LauncherError("the symlink targets are too long for the launcher's layout record")
    return record


def patched(binary_bytes, links):
    at = binary_bytes.find(LAYOUT_MARKER)
    if at < 0 or binary_bytes.find(LAYOUT_MARKER, at + 1) >= 0:
        raise LauncherError("the launcher binary has no single layout record: rebuild finderd")
    start = at + len(LAYOUT_MARKER)
    record = layout_record(links)
    data = bytearray(binary_bytes)
    data[start:start + len(record)] = record
    return bytes(data)


def state_path(venv):
    return os.path.join(venv, STATE_DIR, STATE_FILE)


def read_state(venv):
    try:
        with open(state_path(venv)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise LauncherError("%s is damaged (%s): restore the names by hand or recreate the venv"
                            % (state_path(venv), exc)) from None


def write_json(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def original_of(bindir, name, names):
    """What @name is now, if the launcher must replace it: a dict, or None to leave it."""
    path = os.path.join(bindir, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    times = [st.st_atime_ns, st.st_mtime_ns]
    if os.path.islink(path):
        target = os.readlink(path)
        if "/" not in target and target in names and target != name:
            return None  # reaches the launcher through a sibling name
        return {"kind": "symlink", "target": target, "uid": st.st_uid, "gid": st.st_gid,
                "times_ns": times}
    import stat as stat_module
    if not stat_module.S_ISREG(st.st_mode):
        raise LauncherError("%s is neither a file nor a symlink" % path)
    return {"kind": "file", "sha256": file_sha256(path), "mode": st.st_mode & 0o7777,
            "uid": st.st_uid, "gid": st.st_gid, "times_ns": times}


def pth_files(venv):
    """The venv's finderd.pth (site-packages under lib/, or lib64/ on some builds; a
    lib64 symlink to lib names the same file twice: kept once, by its first name)."""
    out, seen = [], set()
    for path in sorted(glob.glob(os.path.join(venv, "lib*", "python*", "site-packages",
                                              "finderd.pth"))):
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


def park_pth(venv, state):
    """Move the venv's finderd.pth beside the originals (see the module's docstring)."""
    parked = state.setdefault("parked_pth", [])
    for path in pth_files(venv):
        rel = os.path.relpath(path, venv)
        target = os.path.join(venv, STATE_DIR, ORIGINALS, rel.replace("/", "%"))
        os.replace(path, target)
        if rel not in parked:
            parked.append(rel)


def enable(venv, binary=None):
    """@binary: a launcher built for this interpreter elsewhere (a sanitizer build, a
    package's), instead of this package's own."""
    own, meta = build_info()
    if binary is None and not own:
        raise LauncherError("no launcher to enable: %s" % meta.get("reason", "not built"))
    if binary is None:
        binary = own
    elif not meta.get("built"):
        meta = dict(meta, python="%d.%d.%d" % sys.version_info[:3],
                    base_executable=os.path.realpath(sys._base_executable))
    version = check_venv(venv, meta)
    names = names_for(version)
    bindir = os.path.join(venv, "bin")
    state = read_state(venv)
    if state is None:
        replaced = {}
        for name in names:
            original = original_of(bindir, name, names)
            if original is not None:
                replaced[name] = original
        if names[-1] not in replaced and not os.path.islink(os.path.join(bindir, names[-1])):
            raise LauncherError("%s has no %s to replace" % (bindir, names[-1]))
        state = {"version": 1, "names": replaced}
        os.makedirs(os.path.join(venv, STATE_DIR, ORIGINALS), mode=0o755, exist_ok=True)
        # The record first, then the moves: an interrupted enable can be disabled.
        write_json(state_path(venv), state)
        for name in replaced:  # renamed, so disable gives back the very same inode
            os.replace(os.path.join(bindir, name), os.path.join(venv, STATE_DIR, ORIGINALS, name))
    links = {n: o["target"] for n, o in state["names"].items() if o["kind"] == "symlink"}
    with open(binary, "rb") as f:
        data = patched(f.read(), links)
    for name in state["names"]:
        path = os.path.join(bindir, name)
        tmp = os.path.join(bindir, ".%s.finderd-tmp" % name)
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    state["launcher_sha256"] = hashlib.sha256(data).hexdigest()
    state["launcher_python"] = meta["python"]
    write_json(state_path(venv), state)  # first: an interrupted move can be undone
    park_pth(venv, state)
    write_json(state_path(venv), state)
    return state


def disable(venv):
    """Restore every replaced name; returns the names left alone (changed by someone else)."""
    state = read_state(venv)
    if state is None:
        raise LauncherError("the launcher is not enabled in %s" % venv)
    bindir = os.path.join(venv, "bin")
    left = []
    for name, original in sorted(state["names"].items()):
        path = os.path.join(bindir, name)
        backup = os.path.join(venv, STATE_DIR, ORIGINALS, name)
        current_is_launcher = (os.path.isfile(path) and not os.path.islink(path)
                               and file_sha256(path) == state.get("launcher_sha256"))
        if os.path.lexists(path) and not current_is_launcher:
            left.append(name)
            continue
        if os.path.lexists(backup):
            os.replace(backup, path)  # the very symlink or file, as it was
        elif original["kind"] == "symlink":  # a backup lost: the same link, owner and times
            tmp = os.path.join(bindir, ".%s.finderd-tmp" % name)
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(original["target"], tmp)
            _restore_owner_and_times(tmp, original)
            os.replace(tmp, path)
        else:
            raise LauncherError("%s is gone: cannot restore %s" % (backup, path))
    for rel in state.get("parked_pth", []):
        parked = os.path.join(venv, STATE_DIR, ORIGINALS, rel.replace("/", "%"))
        if os.path.lexists(parked):
            if os.path.lexists(os.path.join(venv, rel)):  # reinstalled meanwhile: that one stays
                os.unlink(parked)
            else:
                os.replace(parked, os.path.join(venv, rel))
    for name in left:
        backup = os.path.join(venv, STATE_DIR, ORIGINALS, name)
        if os.path.lexists(backup):  # keep what cannot be put back, beside the venv's files
            os.replace(backup, os.path.join(bindir, "%s.finderd-original" % name))
    os.unlink(state_path(venv))
    try:
        os.rmdir(os.path.join(venv, STATE_DIR, ORIGINALS))
        os.rmdir(os.path.join(venv, STATE_DIR))
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise
    return left


def _restore_owner_and_times(path, original):
    if os.geteuid() == 0:
        os.lchown(path, original["uid"], original["gid"])
    os.utime(path, ns=tuple(original["times_ns"]), follow_symlinks=False)


def served_state(venv):
    """One line from the venv's own python: is it served by the launcher now?"""
    python = os.path.join(venv, "bin", "python")
    code = ("import sys; m = sys.modules.get('finderd._launcher'); "
            "print(m.state if m else 'not served by the launcher')")
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "could not run %s: %s" % (python, exc)
    if proc.returncode != 0:
        return "%s failed: %s" % (python, proc.stderr.strip()[-300:])
    return proc.stdout.strip() or "?"


def status(venv):
    """Print the launcher's state for @venv; 0 when it is enabled and current."""
    binary, meta = build_info()
    if binary:
        print("launcher: %s (CPython %s, %s libpython %s)" % (
            binary, meta["python"], "static" if meta.get("static") else "shared",
            meta["libpython"]))
    else:
        print("launcher: not built: %s" % meta.get("reason", "unknown"))
    state = read_state(venv)
    if state is None:
        print("%s: not enabled (python -m finderd launcher enable %s)" % (venv, venv))
        return 1
    bindir = os.path.join(venv, "bin")
    current = True
    for name, original in sorted(state["names"].items()):
        path = os.path.join(bindir, name)
        ours = os.path.isfile(path) and not os.path.islink(path) and \
            file_sha256(path) == state.get("launcher_sha256")
        was = ("symlink to %s" % original["target"]) if original["kind"] == "symlink" \
            else "a regular file"
        print("  %-12s %s (was %s)" % (name, "launcher" if ours else "CHANGED since enable", was))
        current = current and ours
    for path in pth_files(venv):
        print("  %s is back (reinstalled?): run enable again to park it" % path)
        current = False
    if binary:
        with open(binary, "rb") as f:
            links = {n: o["target"] for n, o in state["names"].items() if o["kind"] == "symlink"}
            if hashlib.sha256(patched(f.read(), links)).hexdigest() != state.get("launcher_sha256"):
                print("  the venv has an older launcher than this package's: run enable again")
                current = False
    print("served: %s" % served_state(venv))
    return 0 if current else 1


def main(args):
    venv = os.path.abspath(args.venv or sys.prefix)
    try:
        if args.action == "enable":
            state = enable(venv, getattr(args, "binary", None))
            print("enabled in %s: %s" % (venv, ", ".join(sorted(state["names"]))))
            return 0
        if args.action == "disable":
            left = disable(venv)
            if left:
                print("restored all but %s, changed since enable (their originals are beside "
                      "them, *.finderd-original)" % ", ".join(left))
                return 1
            print("disabled in %s: every name restored" % venv)
            return 0
        return status(venv)
    except (LauncherError, OSError) as exc:
        print("finderd launcher %s: %s" % (args.action, exc), file=sys.stderr)
        return 2

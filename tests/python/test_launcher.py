"""finderd-python, the launcher (issue 13): served from the first lookup, exactly stock.

Every case runs a real interpreter from a real venv twice or more: with the
launcher in place (served by the real daemon, with FINDERD=off, and with no
daemon at all) and with the venv as `venv` made it (the launcher disabled,
which restores it), and compares what the program saw and did: sys and
sysconfig facts, sys.flags, stdout, stderr, exit status, the death signal.
The layouts are the ones users have: a venv of symlinks (venv's default), a
venv of copies (--copies), a venv reached through a symlinked directory, a
venv moved after it was made, and `python` found on PATH. CPython 3.11 and
later; on 3.9 and 3.10 the launcher is not built and says why.

What differs is the file itself, and is checked for what it is:
os.path.realpath(sys.executable) in a venv of symlinks was the base
interpreter's binary and is now the launcher in the venv's bin (the name is
a file, not a symlink). getpath finds sys._base_executable through the
launcher's record of the symlink it replaced, and sysconfig's projectbase
comes from pyvenv.cfg's home (sys._home) once site has run; without site
(-S) projectbase is the directory of that realpath, in both runs, and is
compared as such. See docs/compatibility.md, "The finderd-python launcher".
"""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess

import pytest

import support
from test_compat import (  # noqa: F401  the compatibility cases, re-run under the launcher
    BASIC,
    observe,
    same_as_stock,
    test_pycache_prefix as test_compat_pycache_prefix,
    test_pyc_invalidation_modes as test_compat_pyc_invalidation_modes,
    test_resources_and_metadata_of_served_packages as test_compat_resources_and_metadata,
    test_sys_path_forms_and_hooks as test_compat_sys_path_forms_and_hooks,
    tree_factory,
)

PROBE = r"""
import json, os, sys, sysconfig
facts = {}
for name in ('executable', '_base_executable', 'prefix', 'base_prefix', 'exec_prefix',
             'base_exec_prefix', 'platlibdir', '_stdlib_dir', 'path', 'argv', 'orig_argv',
             'warnoptions', '_xoptions', 'dont_write_bytecode', 'pycache_prefix', 'flags',
             'version', 'hexversion', 'api_version', 'abiflags', 'implementation', 'byteorder',
             'builtin_module_names', 'stdlib_module_names', 'float_info', 'int_info',
             'hash_info', 'thread_info', 'maxsize', 'float_repr_style', 'platform', 'copyright',
             'getfilesystemencoding', 'getfilesystemencodeerrors', 'getdefaultencoding',
             'getrecursionlimit', 'getswitchinterval', 'get_int_max_str_digits',
             'getdlopenflags', 'is_finalizing', 'getprofile', 'gettrace'):
    value = getattr(sys, name, '<missing>')
    value = value() if callable(value) else value
    facts[name] = repr(sorted(value) if isinstance(value, (set, frozenset)) else value)
facts['stdio'] = [(s.encoding, s.errors, s.line_buffering) if s else None
                  for s in (sys.stdin, sys.stdout, sys.stderr)]
facts['modules'] = [m for m in sys.modules if not m.startswith('finderd')]
facts['meta_path'] = [getattr(f, '__qualname__', type(f).__qualname__) for f in sys.meta_path]
facts['path_hooks'] = [getattr(h, '__qualname__', repr(h)) for h in sys.path_hooks]
facts['path_importer_cache'] = [(k, type(v).__qualname__) for k, v in sys.path_importer_cache.items()]
ext = sys.modules['_frozen_importlib_external']
facts['importlib_external'] = [getattr(ext, '__file__', None), repr(ext.__spec__),
                               repr(ext.__spec__.loader_state)]
facts['sysconfig_paths'] = sysconfig.get_paths()
config_vars = dict(sysconfig.get_config_vars())
# projectbase is sys._home, which site sets from pyvenv.cfg; without site
# (-S) it follows the file: the directory of os.path.realpath(sys.executable).
if config_vars.get('projectbase') == getattr(sys, '_home', None):
    config_vars['projectbase'] = '<sys._home>'
elif config_vars.get('projectbase') == os.path.dirname(os.path.realpath(sys.executable)):
    config_vars['projectbase'] = '<dirname of realpath(sys.executable)>'
facts['sysconfig_vars'] = {k: repr(v) for k, v in config_vars.items()}
facts['environ'] = dict(os.environ)
facts['cwd'] = os.getcwd()
facts['served'] = 'finderd._launcher' in sys.modules
print(json.dumps(facts, sort_keys=True))
"""

# (id, arguments, stdin, extra environment): what a user does with `python`.
PROGRAMS = [
    ("c", ["-c", PROBE], None, {}),
    ("m", ["-m", "probe_mod", "x"], None, {}),
    ("script", ["probe_script.py", "a", "b"], None, {}),
    ("stdin", ["-", "arg"], PROBE, {}),
    ("S", ["-S", "-c", PROBE], None, {}),
    ("I", ["-I", "-c", PROBE], None, {}),
    ("E", ["-E", "-c", PROBE], None, {"PYTHONPATH": "/nonexistent-pp"}),
    ("sBOu", ["-s", "-B", "-OO", "-u", "-c", PROBE], None, {}),
    ("X", ["-X", "dev", "-X", "utf8", "-X", "frozen_modules=off", "-X", "int_max_str_digits=5000",
           "-W", "ignore", "-c", PROBE], None, {}),
    ("P", ["-P", "-c", PROBE], None, {}),
    ("pythonpath", ["-c", PROBE], None, {"PYTHONPATH": "{cwd}/pp:relative-pp"}),
    ("pythonhome", ["-c", PROBE], None, {"PYTHONHOME": "{base_prefix}"}),
    ("env-flags", ["-c", PROBE], None, {"PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
                                         "PYTHONSAFEPATH": "1", "PYTHONUTF8": "1"}),
    ("importtime", ["-X", "importtime", "-c", "import json, email.parser"], None, {}),
    ("exit-3", ["-c", "import sys; sys.exit(3)"], None, {}),
    ("exit-text", ["-c", "import sys; sys.exit('bye')"], None, {}),
    ("raise", ["-c", "def f():\n    raise ValueError('boom')\nf()"], None, {}),
    ("keyboardinterrupt", ["-c", "raise KeyboardInterrupt"], None, {}),
    ("sigterm", ["-c", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"], None, {}),
    ("warning-error", ["-W", "error", "-c", "import warnings; warnings.warn('w')"], None, {}),
    ("stdin-data", ["-c", "import sys; print(sys.stdin.read().upper())"], "hello\nworld\n", {}),
    ("interactive", ["-i", "-c", "x = 6"], "print(x * 7)\n", {}),
    ("json.tool", ["-m", "json.tool"], '{"b": 1, "a": [1, 2]}', {}),
    ("child", ["-c", "import subprocess, sys; print(subprocess.run([sys.executable, '-c', "
                     "'import sys, json; print(json.dumps([sys.executable, sys._base_executable,"
                     " sys.prefix, sys.path]))'], capture_output=True, text=True).stdout)"],
     None, {}),
    ("help", ["-h"], None, {}),
    ("version", ["-VV"], None, {}),
    ("bad-option", ["-Z"], None, {}),
    ("missing-script", ["no_such_script.py"], None, {}),
    ("missing-module", ["-m", "no_such_module"], None, {}),
]
# The layouts other than the default venv run these.
FEW = {"c", "m", "S", "I", "pythonhome", "child", "keyboardinterrupt"}


def launcher_bases():
    return [p for p in support.target_pythons() if support.python_version(p) >= (3, 11)]


make_venv = support.plain_venv
launcher = support.launcher


def bin_state(venv):
    """Everything of bin/ that disable must restore: kind, target, owner, mode, times, inode."""
    out = {}
    bindir = os.path.join(venv, "bin")
    for name in sorted(os.listdir(bindir)):
        path = os.path.join(bindir, name)
        st = os.lstat(path)
        entry = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                 "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
        if os.path.islink(path):
            entry["target"] = os.readlink(path)
        else:
            with open(path, "rb") as f:
                entry["sha256"] = hashlib.sha256(f.read()).hexdigest()
        out[name] = entry
    return out


def prepare_cwd(tmp):
    cwd = os.path.join(tmp, "work")
    os.makedirs(os.path.join(cwd, "pp"), exist_ok=True)
    support.write(os.path.join(cwd, "probe_mod.py"), PROBE)
    support.write(os.path.join(cwd, "probe_script.py"), PROBE)
    support.write(os.path.join(cwd, "pp", "ppmod.py"), "")
    return cwd


def run_program(argv0, program, cwd, socket_path, base_prefix, path_env=None, **env):
    _id, args, stdin, extra = program
    environment = support.clean_env(socket_path, **env)
    for key, value in extra.items():
        environment[key] = value.format(cwd=cwd, base_prefix=base_prefix)
    if path_env:
        environment["PATH"] = path_env
    proc = subprocess.run([argv0] + args, input=stdin, capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=120)
    return {"returncode": proc.returncode, "stdout": normalise(proc.stdout),
            "stderr": normalise(proc.stderr)}


def normalise(text):
    """What two runs of one program share: import times and addresses vary."""
    text = re.sub(r"import time:\s+\d+ \|\s+\d+ \|", "import time: N | N |", text)
    text = re.sub(r" at 0x[0-9a-f]+", " at 0x?", text)
    out = []
    for line in text.splitlines():
        if line.startswith("import time:") and "finderd" in line:
            continue
        out.append(line)
    return "\n".join(out)


def without_environ_of(result, keys):
    """The facts with the environment entries the runs set differently removed."""
    try:
        facts = json.loads(result["stdout"].splitlines()[-1])
    except (ValueError, IndexError):
        return result
    if not isinstance(facts, dict) or "environ" not in facts:
        return result
    lines = result["stdout"].splitlines()
    for key in keys:
        facts["environ"].pop(key, None)
    lines[-1] = json.dumps(facts, sort_keys=True)
    return dict(result, stdout="\n".join(lines))


def served_flag(result):
    try:
        return json.loads(result["stdout"].splitlines()[-1]).get("served")
    except (ValueError, IndexError, AttributeError):
        return None


def compare_layout(finderd_python, venv, argv0, daemon, tmp, programs, path_env=None,
                   relocate_to=None, enable_args=()):
    """Stock results (launcher disabled) against each launcher variant, program by program.

    The venv is enabled first, so that a relocated venv moves with the launcher
    in it; it ends disabled. Returns the launcher runs' served flags."""
    base_prefix = json.loads(subprocess.run(
        [argv0 if not path_env else os.path.join(venv, "bin", "python"), "-c",
         "import sys, json; print(json.dumps(sys.base_prefix))"], capture_output=True, text=True,
        env=support.clean_env("/nonexistent", FINDERD="off", PATH=path_env or os.environ["PATH"]),
        check=True).stdout)
    cwd = prepare_cwd(tmp)
    launcher(finderd_python, "enable", venv, args=enable_args)
    if relocate_to:
        shutil.rmtree(relocate_to, ignore_errors=True)
        shutil.move(venv, relocate_to)
        argv0 = argv0.replace(venv, relocate_to)
        venv = relocate_to
    variants = {
        "served": dict(socket_path=daemon.socket),
        "off": dict(socket_path=daemon.socket, FINDERD="off"),
        "absent": dict(socket_path=os.path.join(tmp, "no-daemon.sock")),
    }
    results = {name: {} for name in variants}
    for program in programs:
        for name, kwargs in variants.items():
            results[name][program[0]] = run_program(argv0, program, cwd, base_prefix=base_prefix,
                                                    path_env=path_env, **kwargs)
    launcher(finderd_python, "disable", venv)
    stock = {program[0]: run_program(argv0, program, cwd, daemon.socket, base_prefix,
                                     path_env=path_env, FINDERD="off")
             for program in programs}
    served = {}
    for name in variants:
        for pid, result in results[name].items():
            expected = stock[pid]
            got = result
            # The runs differ in FINDERD / FINDERD_SOCKET only, as the test set them.
            keys = ("FINDERD", "FINDERD_SOCKET")
            expected, got = without_environ_of(expected, keys), without_environ_of(got, keys)
            if name == "served":
                served[pid] = served_flag(got)
            got = strip_served(got)
            expected = strip_served(expected)
            assert got == expected, "%s, %s: the launcher differs from stock:\n%s" % (
                pid, name, diff(expected, got))
    return served, stock


def strip_served(result):
    try:
        facts = json.loads(result["stdout"].splitlines()[-1])
    except (ValueError, IndexError):
        return result
    if not isinstance(facts, dict) or "served" not in facts:
        return result
    facts.pop("served")
    lines = result["stdout"].splitlines()
    lines[-1] = json.dumps(facts, sort_keys=True)
    return dict(result, stdout="\n".join(lines))


def diff(expected, got):
    lines = []
    for key in ("returncode", "stderr", "stdout"):
        if expected[key] != got[key]:
            a, b = expected[key], got[key]
            try:
                fa, fb = json.loads(a.splitlines()[-1]), json.loads(b.splitlines()[-1])
                for k in sorted(set(fa) | set(fb)):
                    va, vb = fa.get(k), fb.get(k)
                    if va == vb:
                        continue
                    if isinstance(va, dict) and isinstance(vb, dict):
                        va = {x: va.get(x) for x in set(va) | set(vb) if va.get(x) != vb.get(x)}
                        vb = {x: vb.get(x) for x in va}
                    lines.append("  %s.%s: stock %s\n     launcher %s" % (
                        key, k, repr(va)[:600], repr(vb)[:600]))
                continue
            except (ValueError, IndexError, AttributeError):
                pass
            lines.append("  %s: stock %r\n     launcher %r" % (key, a[-1500:], b[-1500:]))
    return "\n".join(lines)


# ------------------------------------------------------------------ the layouts


def test_default_venv_of_symlinks_is_exactly_stock(finderd_home, base_python, shared_daemon, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    before = bin_state(venv)
    served, stock = compare_layout(finderd_home, venv, os.path.join(venv, "bin", "python"),
                                   shared_daemon, tmp, PROGRAMS)
    assert bin_state(venv) == before, "disable did not restore bin/ exactly"
    # Served where a daemon serves (not under -I/-E: they ignore FINDERD_SOCKET).
    assert served["c"] and served["m"] and served["script"] and served["stdin"], served
    assert not served["I"] and not served["E"], served
    # The exit statuses are stock's, signals included.
    assert stock["keyboardinterrupt"]["returncode"] == -signal.SIGINT
    assert stock["sigterm"]["returncode"] == -signal.SIGTERM
    assert stock["exit-3"]["returncode"] == 3 and stock["bad-option"]["returncode"] == 2


def test_venv_of_copies_is_exactly_stock(finderd_home, base_python, shared_daemon, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "venv"), copies=True)
    before = bin_state(venv)
    programs = [p for p in PROGRAMS if p[0] in FEW]
    served, _ = compare_layout(finderd_home, venv, os.path.join(venv, "bin", "python"),
                               shared_daemon, tmp, programs)
    assert bin_state(venv) == before, "disable did not restore bin/ exactly"
    assert served["c"], served


def test_venv_through_a_symlinked_directory_is_exactly_stock(finderd_home, base_python,
                                                             shared_daemon, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "real-venv"))
    link = os.path.join(tmp, "link-to-venv")
    os.symlink(venv, link)
    programs = [p for p in PROGRAMS if p[0] in FEW]
    served, _ = compare_layout(finderd_home, venv, os.path.join(link, "bin", "python"),
                               shared_daemon, tmp, programs)
    assert served["c"], served


def test_relocated_venv_is_exactly_stock(finderd_home, base_python, shared_daemon, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "made-here"))
    programs = [p for p in PROGRAMS if p[0] in FEW]
    served, _ = compare_layout(finderd_home, venv, os.path.join(venv, "bin", "python"),
                               shared_daemon, tmp, programs,
                               relocate_to=os.path.join(tmp, "moved-there"))
    assert served["c"], served


def test_the_launchers_c_code_is_asan_and_ubsan_clean(finderd_home, base_python, shared_daemon,
                                                      tmp, monkeypatch):
    """The launcher built with ASan and UBSan (client-py/build_launcher.py,
    sanitize=True) runs the default layout's programs exactly as stock, and the
    sanitizers report nothing (the interpreter's own leaks at exit aside)."""
    if support.python_version(base_python) != (3, 11) and not os.environ.get(
            "FINDERD_TEST_ALL_SUITES"):
        pytest.skip("the sanitizer build is checked on 3.11 by default; "
                    "FINDERD_TEST_ALL_SUITES=1 checks all")
    out = os.path.join(tmp, "asan")
    build = ("import sys; sys.path.insert(0, %r); import build_launcher as b; "
             "b.build(%r, %r, %r, %r, sanitize=True)" % (
                 os.path.join(support.ROOT, "client-py"), os.path.join(support.ROOT, "client-py"),
                 os.path.join(support.ROOT, "client-c"), os.path.join(tmp, "asan-build"), out))
    subprocess.run([finderd_home, "-c", build], check=True, capture_output=True,
                   env=dict(os.environ, FINDERD_WERROR="1"), timeout=900)
    monkeypatch.setenv("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1:exitcode=99")
    monkeypatch.setenv("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1:exitcode=98")
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    programs = [p for p in PROGRAMS if p[0] not in ("importtime",)]
    served, _ = compare_layout(finderd_home, venv, os.path.join(venv, "bin", "python"),
                               shared_daemon, tmp, programs,
                               enable_args=("--binary", os.path.join(out, "finderd-python")))
    assert served["c"] and served["m"], served


def test_python_found_on_path_is_exactly_stock(finderd_home, base_python, shared_daemon, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    path_env = os.path.join(venv, "bin") + ":" + os.environ.get("PATH", "/usr/bin:/bin")
    programs = [p for p in PROGRAMS if p[0] in FEW]
    served, _ = compare_layout(finderd_home, venv, "python", shared_daemon, tmp, programs,
                               path_env=path_env)
    assert served["c"], served


def test_the_executable_is_the_launcher_file(finderd_home, base_python, shared_daemon, tmp):
    """What follows the file and nothing else: os.path.realpath(sys.executable)."""
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    code = ("import os, sys, sysconfig; print(os.path.realpath(sys.executable), "
            "sysconfig.get_config_var('projectbase'))")
    python = os.path.join(venv, "bin", "python")
    stock = support.run(python, code, shared_daemon.socket).stdout.split()
    launcher(finderd_home, "enable", venv)
    served = support.run(python, code, shared_daemon.socket).stdout.split()
    launcher(finderd_home, "disable", venv)
    version = "python%d.%d" % support.python_version(base_python)
    assert stock[0] == os.path.realpath(base_python)
    assert served[0] == os.path.join(venv, "bin", version)
    assert served[1] == stock[1] == os.path.dirname(os.path.realpath(base_python))


# ------------------------------------------------------------------ enable, disable, status


def test_enable_disable_restore_exactly_and_status_says_which(finderd_home, base_python, tmp):
    for copies in (False, True):
        venv = make_venv(base_python, os.path.join(tmp, "venv-%s" % copies), copies=copies)
        before = bin_state(venv)
        assert launcher(finderd_home, "status", venv, check=False).returncode == 1
        enabled = launcher(finderd_home, "enable", venv)
        assert "enabled" in enabled.stdout
        again = launcher(finderd_home, "enable", venv)  # idempotent: refreshes the copies
        assert "enabled" in again.stdout
        status = launcher(finderd_home, "status", venv)
        assert "launcher (was" in status.stdout
        assert "served: not served by the launcher" in status.stdout  # no daemon on the default socket
        kept = {n: e for n, e in before.items() if "target" in e and "/" not in e["target"]}
        after_enable = bin_state(venv)
        for name, entry in kept.items():  # python -> python3.X stays as it was
            assert after_enable[name] == entry
        launcher(finderd_home, "disable", venv)
        assert bin_state(venv) == before
        assert not os.path.exists(os.path.join(venv, ".finderd-launcher"))
        refused = launcher(finderd_home, "disable", venv, check=False)
        assert refused.returncode == 2 and "not enabled" in refused.stderr


def test_enable_refuses_what_it_cannot_serve(finderd_home, base_python, tmp):
    not_a_venv = os.path.join(tmp, "plain")
    os.makedirs(not_a_venv)
    refused = launcher(finderd_home, "enable", not_a_venv, check=False)
    assert refused.returncode == 2 and "not a venv" in refused.stderr
    other = [p for p in support.target_pythons()
             if support.python_version(p) != support.python_version(base_python)]
    if other:
        venv = make_venv(other[0], os.path.join(tmp, "other"))
        refused = launcher(finderd_home, "enable", venv, check=False)
        assert refused.returncode == 2 and "built for CPython" in refused.stderr


def test_the_venvs_pth_is_parked_while_enabled(finderd_home):
    """The launcher serves the venv from its first lookup; finderd.pth would only cost
    its compilation at every start. Parked while enabled, the same file back after."""
    venv = os.path.dirname(os.path.dirname(finderd_home))
    pth = support.glob_files(venv, "lib/python*/site-packages/finderd.pth")
    assert len(pth) == 1, pth
    before = os.stat(pth[0])
    launcher(finderd_home, "enable", venv)
    try:
        assert not os.path.exists(pth[0])
        assert launcher(finderd_home, "status", venv).returncode == 0
    finally:
        launcher(finderd_home, "disable", venv)
    after = os.stat(pth[0])
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns,
                                                                 before.st_size)


def test_an_edited_name_is_left_alone_by_disable(finderd_home, base_python, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    launcher(finderd_home, "enable", venv)
    version = "python%d.%d" % support.python_version(base_python)
    target = os.path.join(venv, "bin", version)
    os.unlink(target)
    os.symlink(os.path.realpath(base_python), target)  # someone recreated it
    left = launcher(finderd_home, "disable", venv, check=False)
    assert left.returncode == 1 and version in left.stdout
    assert os.readlink(target) == os.path.realpath(base_python)


# ------------------------------------------------------------------ served, and how


def count_syscalls(argv, env, cwd):
    """(path stats, getdents64, failed opens, all calls) of one run under strace."""
    log = os.path.join(cwd, "strace.log")
    subprocess.run(["strace", "-f", "-qq", "-o", log] + argv, env=env, cwd=cwd, check=True,
                   capture_output=True)
    stats = dents = failed = total = 0
    with open(log, errors="replace") as f:
        for line in f:
            total += 1
            name = re.match(r"^(?:\d+\s+)?(\w+)\(", line)
            name = name.group(1) if name else ""
            if name in ("stat", "lstat", "newfstatat", "statx", "access", "faccessat2",
                        "readlink", "readlinkat") and "AT_EMPTY_PATH" not in line:
                stats += 1
            elif name == "getdents64":
                dents += 1
            elif name in ("openat", "open") and "= -1 ENOENT" in line:
                failed += 1
    return stats, dents, failed, total


def test_served_from_the_first_lookup(finderd_home, base_python, shared_daemon, tmp):
    """A warm `-c pass`: no directory read, no library searched, no getpath probe
    that the listings could answer; FINDERD=off and no daemon cost no extra lookup."""
    if not shutil.which("strace"):
        pytest.skip("strace is not installed")
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    python = os.path.join(venv, "bin", "python")
    env_stock = support.clean_env("/nonexistent")
    stock = count_syscalls([python, "-c", "pass"], env_stock, tmp)
    launcher(finderd_home, "enable", venv)
    env = support.clean_env(shared_daemon.socket)
    support.run(python, "pass", shared_daemon.socket, cwd=tmp)  # the daemon indexes; a plan is learned
    support.run(python, "pass", shared_daemon.socket, cwd=tmp)
    served = count_syscalls([python, "-c", "pass"], env, tmp)
    off = count_syscalls([python, "-c", "pass"], support.clean_env(shared_daemon.socket,
                                                                   FINDERD="off"), tmp)
    absent = count_syscalls([python, "-c", "pass"], env_stock, tmp)
    launcher(finderd_home, "disable", venv)
    stats, dents, failed, _total = served
    assert dents == 0, served
    assert stats + failed <= 10, (served, stock)
    assert stats + dents + failed < (stock[0] + stock[1] + stock[2]) / 5, (served, stock)
    # Off or absent: Py_BytesMain, and the loader searches nothing for libpython.
    for run in (off, absent):
        assert run[0] + run[1] <= stock[0] + stock[1], (run, stock)
        assert run[2] < stock[2], (run, stock)


def test_debug_and_status_tell_the_launcher(finderd_home, base_python, shared_daemon, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    launcher(finderd_home, "enable", venv)
    python = os.path.join(venv, "bin", "python")
    proc = support.run(python, "pass", shared_daemon.socket, cwd=tmp, FINDERD_DEBUG="1")
    assert "finderd: active: served by %s (the finderd-python launcher)" % shared_daemon.socket \
        in proc.stderr
    assert re.search(r"getpath: [1-9]\d* probes answered from listings", proc.stderr), proc.stderr
    absent = support.run(python, "pass", os.path.join(tmp, "none.sock"), cwd=tmp,
                         FINDERD_DEBUG="1")
    assert "finderd-python: not served: %s" % os.path.join(tmp, "none.sock") in absent.stderr
    quiet = support.run(python, "pass", os.path.join(tmp, "none.sock"), cwd=tmp)
    assert quiet.stderr == ""
    # The finderd package, imported under the launcher, reports the launcher's client.
    home_python = finderd_home
    status = support.run(home_python, None, shared_daemon.socket, cwd=tmp,
                         args=("-m", "finderd", "launcher", "status"), check=False)
    assert "launcher:" in status.stdout
    launcher(finderd_home, "disable", venv)


def test_finderd_package_adopts_the_launchers_client(finderd_home, shared_daemon, tmp):
    venv = os.path.dirname(os.path.dirname(finderd_home))
    launcher(finderd_home, "enable", venv)
    try:
        out = support.run_json(finderd_home, "import importlib.util, json, sys, finderd; "
                               "c = finderd.client(); "
                               "print(json.dumps([finderd.state(), c.counters()['answered'] > 0,"
                               " sorted(m for m in sys.modules if m.startswith('finderd')),"
                               " importlib.util.find_spec('finderd._launcher').origin]))",
                               shared_daemon.socket, cwd=tmp)
        status = support.run(finderd_home, None, shared_daemon.socket, cwd=tmp,
                             args=("-m", "finderd", "status"))
    finally:
        launcher(finderd_home, "disable", venv)
    state, answered, modules, origin = out
    assert state == "active: served by %s (the finderd-python launcher)" % shared_daemon.socket
    assert answered and origin == "finderd-python"
    # finderd.pth saw the launcher and did not install a second client.
    assert "finderd._activation" not in modules and "finderd._launcher" in modules
    assert "state: active: served by" in status.stdout


def test_a_learned_plan_makes_a_warm_start_one_round_trip(finderd_home, base_python, daemon, tmp):
    venv = make_venv(base_python, os.path.join(tmp, "venv"))
    launcher(finderd_home, "enable", venv)
    python = os.path.join(venv, "bin", "python")
    code = "import json, email.parser, http.client, argparse, logging"

    def start():
        before = daemon.stats(finderd_home)
        support.run(python, code, daemon.socket, cwd=tmp)
        after = daemon.stats(finderd_home)
        return {k: after[k] - before[k] for k in ("snapshot_requests", "lookup_requests")}

    start()
    start()
    assert start() == {"snapshot_requests": 1, "lookup_requests": 0}
    launcher(finderd_home, "disable", venv)


def test_launcher_is_not_built_before_3_11(base_python):
    if support.python_version(base_python) >= (3, 11):
        pytest.skip("built on 3.11 and later")
    python = support.venv_with_finderd(base_python, "-launcher-home")
    out = subprocess.run([python, "-m", "finderd", "launcher", "status"], capture_output=True,
                         text=True, env=support.clean_env("/nonexistent"))
    assert "launcher: not built:" in out.stdout and "3.%d" % support.python_version(
        base_python)[1] in out.stdout and ".pth client serves it" in out.stdout
    refused = subprocess.run([python, "-m", "finderd", "launcher", "enable"], capture_output=True,
                             text=True, env=support.clean_env("/nonexistent"))
    assert refused.returncode == 2 and "no launcher to enable" in refused.stderr


# ------------------------------------------------------------------ the compatibility cases


@pytest.mark.parametrize("args,env", [
    ((), {}),
    (("-B",), {}),
    ((), {"PYTHONDONTWRITEBYTECODE": "1"}),
    ((), {"PYTHONCASEOK": "1"}),
    (("-X", "frozen_modules=off"), {}),
], ids=["plain", "-B", "dontwritebytecode", "caseok", "frozen-off"])
def test_compat_flags_and_environment(python, shared_daemon, tree_factory, args, env):  # noqa: F811
    """test_compat.py's case under the launcher (its -I case: the next test)."""
    same_as_stock(python, shared_daemon.socket, lambda: tree_factory(BASIC),
                  ["mod", "pkg", "pkg.sub", "missing", "Mod"], args=args, **env)


def test_compat_isolated_is_stock_and_not_served(python, shared_daemon, tree_factory):  # noqa: F811
    """-I: the launcher ignores FINDERD_SOCKET, as CPython ignores PYTHON*, and the
    venv's finderd.pth is parked while the launcher is enabled: a stock run."""
    names = ["mod", "pkg", "pkg.sub", "missing", "Mod"]
    results = []
    for stock in (True, False):
        root = tree_factory(BASIC)
        out = observe(python, shared_daemon.socket, root, names, stock, args=("-I",))
        out["modules"] = json.loads(json.dumps(out["modules"]).replace(root, "<root>"))
        results.append(out)
    assert results[0] == results[1] and not results[1]["active"]



@pytest.fixture
def python(finderd_home):
    """test_compat's cases, imported above, run with the launcher in their venv."""
    venv = os.path.dirname(os.path.dirname(finderd_home))
    launcher(finderd_home, "enable", venv)
    yield finderd_home
    launcher(finderd_home, "disable", venv)

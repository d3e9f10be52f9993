"""A real interpreter imports through a real finderd daemon (issue 2).

Each test compares an interpreter with finderd active against the same
interpreter with FINDERD=off: the answers must be identical, field by field.
"""

import json
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

import support

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "probe_specs.py")


def probe(python, socket_path, *args, stock=False, **env):
    proc = subprocess.run([python, PROBE, *args], capture_output=True, text=True, timeout=600,
                          env=support.clean_env(socket_path, FINDERD="off" if stock else None,
                                                **env))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    report["stderr"] = proc.stderr
    return report


def assert_same_specs(stock, served):
    assert list(stock) == list(served)
    differences = {name: {"stock": stock[name], "finderd": served[name]}
                   for name in stock if stock[name] != served[name]}
    assert not differences, json.dumps(dict(list(differences.items())[:10]), indent=1)


def assert_served(report, at_least=1):
    assert report["state"].startswith("active"), report
    assert report["counters"]["answered"] >= at_least, report


# --------------------------------------------------------------------------
# Same answers as CPython
# --------------------------------------------------------------------------

def test_every_stdlib_and_site_packages_spec_matches_stock(python, shared_daemon):
    stock = probe(python, shared_daemon.socket, "stdlib", stock=True)
    served = probe(python, shared_daemon.socket, "stdlib")
    assert not stock["finderd"]["state"].startswith("active")
    assert_served(served["finderd"], at_least=1000)
    assert len(stock["specs"]) > 500
    assert_same_specs(stock["specs"], served["specs"])
    assert served["stderr"] == stock["stderr"]


def test_ci_set_venv_specs_match_stock(base_python, ci_set_venvs, shared_daemon):
    """Every module of pytest, requests, rich, pydantic, click, pyyaml, jinja2 and their
    dependencies, with the stdlib, in a venv of each interpreter."""
    python = ci_set_venvs(base_python)
    stock = probe(python, shared_daemon.socket, "stdlib", stock=True)
    served = probe(python, shared_daemon.socket, "stdlib")
    assert_served(served["finderd"], at_least=1000)
    assert {"pydantic", "rich", "_pytest", "jinja2", "yaml", "click", "requests"} <= set(stock["specs"])
    assert_same_specs(stock["specs"], served["specs"])
    assert served["stderr"] == stock["stderr"]


def extension_module(python):
    """Copy of a stdlib extension module's file name and path (e.g. _csv)."""
    code = ("import importlib.util, json, sys\n"
            "for name in ('_csv', '_bisect', '_json', '_struct', '_random'):\n"
            "    spec = importlib.util.find_spec(name)\n"
            "    if spec and spec.origin and spec.origin.endswith('.so'):\n"
            "        print(json.dumps([name, spec.origin])); break\n")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         env=support.clean_env("/nonexistent", FINDERD="off")).stdout
    return json.loads(out) if out.strip() else None


def build_tree(root, python):
    """Two sys.path entries exercising what FileFinder distinguishes."""
    a, b = os.path.join(root, "a"), os.path.join(root, "b")
    w = support.write
    w(os.path.join(a, "pkg", "__init__.py"), "where = 'pkg'\n")
    w(os.path.join(a, "pkg", "sub.py"), "where = 'pkg.sub'\n")
    w(os.path.join(a, "pkg", "deep", "__init__.py"))
    w(os.path.join(a, "pkg", "deep", "leaf.py"), "where = 'pkg.deep.leaf'\n")
    w(os.path.join(a, "shadowed.py"), "where = 'a'\n")
    w(os.path.join(b, "shadowed.py"), "where = 'b'\n")
    w(os.path.join(a, "ns", "portion_a.py"), "where = 'ns.portion_a'\n")
    w(os.path.join(b, "ns", "portion_b.py"), "where = 'ns.portion_b'\n")
    w(os.path.join(b, "onlyb.py"), "where = 'onlyb'\n")
    w(os.path.join(a, "notapkg", "README"), "data\n")
    w(os.path.join(a, "both", "__init__.py"), "where = 'both package'\n")
    w(os.path.join(a, "both.py"), "where = 'both module'\n")
    # A module with only a .pyc next to where its source was.
    w(os.path.join(a, "legacy.py"), "where = 'legacy'\n")
    subprocess.run([python, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
                    "cfile=sys.argv[2])", os.path.join(a, "legacy.py"),
                    os.path.join(a, "legacy.pyc")], check=True)
    os.remove(os.path.join(a, "legacy.py"))
    # A stale .pyc: compiled, then the source changed (size differs).
    w(os.path.join(a, "stale.py"), "where = 'old'\n")
    subprocess.run([python, "-m", "py_compile", os.path.join(a, "stale.py")], check=True)
    w(os.path.join(a, "stale.py"), "where = 'new source'\n")
    # Symlinks: to a package elsewhere, to a module, and dangling.
    other = os.path.join(root, "elsewhere", "linkedpkg")
    w(os.path.join(other, "__init__.py"), "where = 'linkedpkg'\n")
    os.symlink(other, os.path.join(a, "linkedpkg"))
    os.symlink(os.path.join(b, "onlyb.py"), os.path.join(a, "alias.py"))
    os.symlink(os.path.join(root, "nowhere.py"), os.path.join(a, "dangling.py"))
    # A name that is not UTF-8.
    with open(os.path.join(a.encode(), b"caf\xe9.py"), "w") as f:
        f.write("where = 'latin-1 name'\n")
    ext = extension_module(python)
    if ext:
        shutil.copy(ext[1], os.path.join(a, os.path.basename(ext[1])))
    return [a, b], ext


TREE_MODULES = ["pkg", "pkg.sub", "pkg.deep", "pkg.deep.leaf", "shadowed", "ns", "ns.portion_a",
                "ns.portion_b", "onlyb", "notapkg", "both", "legacy", "stale", "linkedpkg",
                "alias", "dangling", "missing", "pkg.missing", "ns.missing"]

IMPORT_VALUES = """
import importlib, json, sys
values = {}
for name in %r:
    try:
        values[name] = getattr(importlib.import_module(name), 'where', '<no where>')
    except ImportError as exc:
        values[name] = type(exc).__name__
print(json.dumps(values))
"""


def test_tree_specs_and_modules_match_stock(python, shared_daemon, tmp):
    entries, ext = build_tree(tmp, python)
    names = TREE_MODULES + ([ext[0]] if ext else [])
    pythonpath = ":".join(entries)
    stock = probe(python, shared_daemon.socket, "names", *names, stock=True, PYTHONPATH=pythonpath)
    served = probe(python, shared_daemon.socket, "names", *names, PYTHONPATH=pythonpath)
    assert_served(served["finderd"])
    assert_same_specs(stock["specs"], served["specs"])
    assert served["stderr"] == stock["stderr"]
    assert served["specs"]["shadowed"]["origin"] == os.path.join(entries[0], "shadowed.py")
    assert served["specs"]["ns"]["submodule_search_locations"] == [
        os.path.join(e, "ns") for e in entries]
    if ext:
        assert served["specs"][ext[0]]["origin"].startswith(entries[0])
    values = [support.run_json(python, IMPORT_VALUES % (TREE_MODULES,), shared_daemon.socket,
                               FINDERD=switch, PYTHONPATH=pythonpath)
              for switch in ("off", None)]
    assert values[0] == values[1]
    assert values[1]["stale"] == "new source"
    assert values[1]["legacy"] == "legacy"


def test_tree_walk_matches_stock(python, shared_daemon, tmp):
    entries, _ = build_tree(tmp, python)
    stock = probe(python, shared_daemon.socket, "tree", *entries, stock=True,
                  PYTHONPATH=":".join(entries))
    served = probe(python, shared_daemon.socket, "tree", *entries, PYTHONPATH=":".join(entries))
    assert_same_specs(stock["specs"], served["specs"])
    assert served["stderr"] == stock["stderr"]


def test_sys_path_entry_added_at_run_time_is_served(python, shared_daemon, tmp):
    support.write(os.path.join(tmp, "late", "latemod.py"), "where = 'late'\n")
    code = ("import json, sys, finderd, importlib\n"
            "sys.path.insert(0, %r)\n"
            "import latemod\n"
            "print(json.dumps([latemod.where, latemod.__file__, finderd.client().describe(%r)]))"
            % (os.path.join(tmp, "late"), os.path.join(tmp, "late")))
    where, path, described = support.run_json(python, code, shared_daemon.socket)
    assert (where, path) == ("late", os.path.join(tmp, "late", "latemod.py"))
    assert described[0] == "served"


# --------------------------------------------------------------------------
# Fresh answers
# --------------------------------------------------------------------------

def test_changes_before_an_interpreter_starts_are_seen(python, daemon, tmp):
    src = os.path.join(tmp, "fresh")
    support.write(os.path.join(src, "first.py"), "where = 1\n")
    code = ("import json, importlib\n"
            "out = {}\n"
            "for name in ('first', 'second', 'third'):\n"
            "    try: out[name] = importlib.import_module(name).where\n"
            "    except ImportError: out[name] = None\n"
            "print(json.dumps(out))")
    run = lambda: support.run_json(python, code, daemon.socket, PYTHONPATH=src)  # noqa: E731
    assert run() == {"first": 1, "second": None, "third": None}
    for i in range(5):
        # Each version has its own size: stock CPython validates a .pyc by
        # the source's size and mtime in whole seconds, so a same-size
        # rewrite within one second would give a stale import with or
        # without finderd.
        support.write(os.path.join(src, "second.py"), "where = %d\n%s" % (i + 2, "#" * i))
        assert run() == {"first": 1, "second": i + 2, "third": None}
        os.rename(os.path.join(src, "second.py"), os.path.join(src, "third.py"))
        assert run() == {"first": 1, "second": None, "third": i + 2}
        os.remove(os.path.join(src, "third.py"))
        assert run() == {"first": 1, "second": None, "third": None}


IN_PROCESS = """
import importlib, json, os, subprocess, sys, time
src = %(src)r
def make(name, text):
    subprocess.run([sys.executable, '-c', 'open(%%r, "w").write(%%r)' %% (os.path.join(src, name + '.py'), text)],
                   check=True)
def attempt(name):
    sys.modules.pop(name, None)
    try:
        return importlib.import_module(name).where
    except ImportError as exc:
        return type(exc).__name__
log = [attempt('present')]
time.sleep(0.02)  # leave stock's mtime tick, as a real program would
make('created', 'where = "created"')
log.append(attempt('created'))                       # without invalidate_caches
make('created', 'where = "created and changed"')
log.append(attempt('created'))                       # source changed in place
subprocess.run([sys.executable, '-c', 'import os; os.remove(%%r)' %% os.path.join(src, 'created.py')], check=True)
time.sleep(0.02)
log.append(attempt('created'))                       # removed
with open(os.path.join(src, 'written.py'), 'w') as f:
    f.write('where = "written here"')
importlib.invalidate_caches()
log.append(attempt('written'))                       # same process, invalidate_caches
print(json.dumps(log))
"""


def test_in_process_freshness_matches_stock(python, daemon, tmp):
    expected = ["present", "created", "created and changed", "ModuleNotFoundError",
                "written here"]
    for switch in ("off", None):
        src = os.path.join(tmp, "inproc-%s" % (switch or "on"))
        support.write(os.path.join(src, "present.py"), "where = 'present'\n")
        log = support.run_json(python, IN_PROCESS % {"src": src}, daemon.socket,
                               FINDERD=switch, PYTHONPATH=src, PYTHONDONTWRITEBYTECODE="1")
        assert log == expected, (switch, log)


# A thread announces a change (the audit event comes before the system call,
# which runs without the GIL), another thread's question revalidates the
# directory before the change exists, and only then is the change made: the
# changing thread's import must still see it. The daemon is stopped once
# the other thread has asked, so nothing but the client's own bookkeeping
# can tell it of the new file; the change is made through libc, which
# raises no second audit event.
ANNOUNCED_THEN_MADE = """
import ctypes, importlib, json, os, signal, sys, threading
src, daemon_pid = os.environ["ANNOUNCED_SRC"], int(os.environ["ANNOUNCED_DAEMON_PID"])
path = os.path.join(src, "late.py")
flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
def another_thread_asks():
    try:
        importlib.import_module("not_here_at_all")
    except ImportError:
        pass
importlib.import_module("present")
sys.audit("open", path, "w", flags)
asker = threading.Thread(target=another_thread_asks)
asker.start()
asker.join()
os.kill(daemon_pid, signal.SIGSTOP)
try:
    fd = ctypes.CDLL(None, use_errno=True).open(os.fsencode(path), flags, 0o644)
    assert fd >= 0, ctypes.get_errno()
    os.write(fd, b"where = 'late'\\n")
    os.close(fd)
    try:
        got = importlib.import_module("late").where
    except ImportError as exc:
        got = type(exc).__name__
finally:
    os.kill(daemon_pid, signal.SIGCONT)
print(json.dumps(got))
"""


def test_a_change_revalidated_by_another_thread_before_it_is_made_is_seen(python, daemon, tmp):
    # A lease far longer than the test: only the client can know.
    daemon.stop()
    daemon.start("--lease-ms", "60000")
    src = os.path.join(tmp, "announced")
    support.write(os.path.join(src, "present.py"), "where = 'present'\n")
    got = support.run_json(python, ANNOUNCED_THEN_MADE, daemon.socket, PYTHONPATH=src,
                           PYTHONDONTWRITEBYTECODE="1", FINDERD_TIMEOUT_MS="1000",
                           ANNOUNCED_SRC=src, ANNOUNCED_DAEMON_PID=str(daemon.proc.pid))
    assert got == "late"


# --------------------------------------------------------------------------
# Graceful absence
# --------------------------------------------------------------------------

def stdlib_set_specs(python, socket_path, **env):
    names = ["json", "asyncio", "email.parser", "http.client", "argparse", "logging", "subprocess"]
    return probe(python, socket_path, "names", *names, **env)


def test_no_daemon_is_stock_and_loads_nothing(python, tmp):
    missing = os.path.join(tmp, "no-such.sock")
    out = support.run(python, "import json, sys; print('finderd' in sys.modules)", missing)
    assert out.stdout.strip() == "False" and out.stderr == ""
    report = stdlib_set_specs(python, missing)
    assert report["finderd"] == {"state": "not loaded"}


def test_finderd_off_loads_nothing(python, shared_daemon):
    out = support.run(python, "import json, sys; print('finderd' in sys.modules)",
                      shared_daemon.socket, FINDERD="off")
    assert out.stdout.strip() == "False"


def test_dead_socket_file_falls_back_quietly(python, tmp):
    path = os.path.join(tmp, "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()  # the file stays, nobody listens: ECONNREFUSED
    stock = stdlib_set_specs(python, path, stock=True)
    served = stdlib_set_specs(python, path)
    assert served["finderd"]["state"].startswith("fell back"), served["finderd"]
    assert_same_specs(stock["specs"], served["specs"])
    assert served["stderr"] == stock["stderr"]


class BadServer:
    """A Unix socket peer that answers every connection with @behaviour."""

    def __init__(self, path, behaviour):
        self.path, self.behaviour = path, behaviour
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.connections = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)
            try:
                if self.behaviour == "garbage":
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n" + os.urandom(256))
                elif self.behaviour == "close":
                    conn.close()
                # "silent": accept and never answer
            except OSError:
                pass

    def close(self):
        self.sock.close()
        for c in self.connections:
            c.close()


@pytest.mark.parametrize("behaviour", ["garbage", "close", "silent"])
def test_misbehaving_server_falls_back_quickly(python, tmp, behaviour):
    path = os.path.join(tmp, "bad.sock")
    server = BadServer(path, behaviour)
    try:
        stock = stdlib_set_specs(python, path, stock=True)
        started = time.monotonic()
        served = stdlib_set_specs(python, path, FINDERD_TIMEOUT_MS="50",
                                  FINDERD_CONNECT_TIMEOUT_MS="20")
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert served["finderd"]["state"].startswith("fell back"), served["finderd"]
    assert_same_specs(stock["specs"], served["specs"])
    assert served["stderr"] == stock["stderr"]
    assert elapsed < 30  # a hang would hit the subprocess timeout instead


# --------------------------------------------------------------------------
# Costs nothing it need not
# --------------------------------------------------------------------------

def test_loads_no_module_beyond_its_own(python, shared_daemon):
    code = "import json, sys; print(json.dumps(sorted(sys.modules)))"
    stock = set(support.run_json(python, code, shared_daemon.socket, FINDERD="off"))
    served = set(support.run_json(python, code, shared_daemon.socket))
    assert served - stock <= {"finderd", "finderd._activation", "finderd._native", "atexit"}
    assert not {"socket", "grpc", "asyncio", "threading", "re"} & (served - stock)


def test_import_storm_produces_no_inotify_events(python, finderd_bin, tmp):
    """Reading a watched tree (open, read, close of every module) is invisible
    to the daemon: its inotify mask has no IN_OPEN/IN_ACCESS/IN_CLOSE_NOWRITE.
    The daemon logs every event it reads at trace level; none may name the
    tree (other directories, such as an ancestor in a busy /tmp, may have
    their own traffic)."""
    src = os.path.join(tmp, "storm")
    names = ["m%03d" % i for i in range(300)]
    for name in names:
        support.write(os.path.join(src, "storm_pkg", name + ".py"), "x = %r\n" % name)
    support.write(os.path.join(src, "storm_pkg", "__init__.py"))
    code = "import importlib\nfor n in %r: importlib.import_module('storm_pkg.' + n)" % (names,)
    # Write the .pyc files first: creating them is a namespace change.
    support.run(python, code, "/nonexistent", cwd=src, PYTHONPATH=src, FINDERD="off")
    daemon = support.Daemon(finderd_bin, os.path.join(tmp, "daemon"))
    os.makedirs(daemon.workdir)
    daemon.start(log_level="trace")
    try:
        for _ in range(3):
            proc = support.run(python, code + "\nimport finderd; print(finderd.state())",
                               daemon.socket, cwd=src, PYTHONPATH=src)
            assert proc.stdout.startswith("active"), proc.stdout
        time.sleep(0.2)
        stats = daemon.stats(python)
    finally:
        daemon.stop()
    events = [line for line in daemon.log().splitlines() if "inotify event" in line]
    assert not [line for line in events if src in line], events
    assert stats["watches"] > 0 and stats["directories"] > 0, stats

"""Helpers for the end-to-end tests: interpreters, venvs, the daemon."""

import glob
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENVS = os.environ.get("FINDERD_TEST_VENVS") or os.path.join(ROOT, "build", "test-venvs")
SUPPORTED = ((3, 9), (3, 10), (3, 11), (3, 12), (3, 13))


def python_version(python):
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True).stdout
    return tuple(int(x) for x in out.strip().split("."))


def target_pythons():
    """The base interpreters under test, one per supported minor version."""
    listed = os.environ.get("FINDERD_TEST_PYTHONS")
    if listed:
        return [p for p in listed.split(":") if p]
    found = {}
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.*", "bin", "python3.*")))
    candidates += [shutil.which("python3") or ""]
    for path in candidates:
        if not path or not re.search(r"python3(\.\d+)?$", path) or not os.access(path, os.X_OK):
            continue
        try:
            version = python_version(path)
        except (OSError, subprocess.CalledProcessError):
            continue
        if version in SUPPORTED and version not in found:
            found[version] = path
    return [found[v] for v in sorted(found)]


def python_id(python):
    return "py%d.%d" % python_version(python)


# The CI set of scenario S3 (docs/design.md).
CI_SET = ["pytest", "requests", "rich", "pydantic", "click", "pyyaml", "jinja2"]


def venv_with_finderd(base_python, name="", packages=()):
    """A fresh venv of @base_python with ./client-py (and @packages) installed."""
    version = "%d.%d" % python_version(base_python)
    venv = os.path.join(VENVS, version + name)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([base_python, "-m", "venv", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    # FINDERD_WERROR: the launcher's C sources build without a warning.
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    os.path.join(ROOT, "client-py"), *packages], check=True,
                   env=dict(os.environ, FINDERD_WERROR="1"))
    return python


# The client deadline of tests that check answers, not speed: a loaded
# machine must not turn a slow first crawl into a fallback (tests of the
# deadline set their own).
PATIENT_MS = 5000
PATIENT_US = PATIENT_MS * 1000

# For the programs of interpreters under test (prepend it to their code):
# new_module(name, value) writes NAME.py with VALUE into argv[1] and imports it.
NEW_MODULE = r"""
import importlib, os, sys
def new_module(name, value):
    with open(os.path.join(sys.argv[1], name + ".py"), "w") as f:
        f.write("VALUE = %r\n" % value)
    return importlib.import_module(name).VALUE
"""


def plain_venv(base_python, path, copies=False):
    """A fresh venv of @base_python at @path, nothing installed (--copies: no symlinks)."""
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([base_python, "-m", "venv", "--without-pip"] + (["--copies"] if copies else [])
                   + [path], check=True)
    return path


def launcher(finderd_python, action, venv, check=True, args=()):
    """`python -m finderd launcher ACTION VENV` with the finderd of @finderd_python."""
    proc = subprocess.run([finderd_python, "-m", "finderd", "launcher", *args, action, venv],
                          capture_output=True, text=True, env=clean_env("/nonexistent"))
    if check and proc.returncode != 0:
        raise AssertionError("launcher %s %s failed:\n%s%s" % (action, venv, proc.stdout,
                                                                proc.stderr))
    return proc


def glob_files(root, pattern):
    return sorted(glob.glob(os.path.join(root, pattern)))


def clean_env(socket_path, **extra):
    """An environment without the caller's Python or finderd settings.

    FINDERD_SOCKET is always set, so no test can reach a daemon that happens
    to run on the machine's default socket. The call deadline is PATIENT_MS.
    """
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "ASAN_OPTIONS",
                    "UBSAN_OPTIONS")}
    env["FINDERD_SOCKET"] = socket_path
    env["FINDERD_TIMEOUT_MS"] = env["FINDERD_CONNECT_TIMEOUT_MS"] = str(PATIENT_MS)
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run(python, code, socket_path, cwd=None, check=True, timeout=120, args=(), **env):
    """Run @code (None: only @args) in @python with finderd pointed at @socket_path."""
    argv = [python, *args] + (["-c", code] if code is not None else [])
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          env=clean_env(socket_path, **env), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("python failed (%d):\nstdout:\n%s\nstderr:\n%s"
                             % (proc.returncode, proc.stdout, proc.stderr))
    return proc


def run_json(python, code, socket_path, **kwargs):
    """Run @code, which prints one JSON document as its last line of stdout."""
    proc = run(python, code, socket_path, **kwargs)
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Daemon:
    """`finderd serve` on a socket in @workdir: the one way the Python tests
    (tests/python, tests/reliability) and the benchmark start the real daemon,
    bound by itself (start) or socket-activated (activate).

    @wrap: a command prefix that execs it (setpriv, prlimit, unshare...),
    @env: more environment.
    """

    # Like systemd's start limit: a daemon that keeps failing is not started forever.
    MAX_ACTIVATIONS = 50

    def __init__(self, binary, workdir, wrap=(), env=None):
        self.binary = binary
        self.workdir = workdir
        self.socket = os.path.join(workdir, "finderd.sock")
        self.log_path = os.path.join(workdir, "finderd.log")
        self.wrap = list(wrap)
        self.env = env or {}
        self.proc = None
        self.args = ()
        self.daemons = []         # every daemon process started, in order
        self.listener = None      # the activating socket (activate)
        self.activating = None    # the thread that starts daemons on it

    def argv(self, *extra_args):
        return self.wrap + [self.binary, "serve", "--socket", self.socket, *extra_args]

    def _spawn(self, argv, log_level, pass_fds=()):
        with open(self.log_path, "ab") as log:
            env = dict(os.environ, RUST_LOG="finderd=%s" % log_level, **self.env)
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env,
                                         stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        self.daemons.append(self.proc)
        return self.proc

    def start(self, *extra_args, log_level="info", wait=True):
        self.args = extra_args
        self._spawn(self.argv(*extra_args), log_level)
        if wait:
            self.wait_ready()
        return self

    def activate(self, *extra_args, log_level="info"):
        """systemd's socket activation, again after every exit: hold the
        listening socket and, whenever a connection waits and no daemon runs,
        start one with the socket as descriptor 3 (LISTEN_FDS=1, LISTEN_PID),
        as systemd does for finderd.socket. stop() ends it."""
        self.args = extra_args
        listener = self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket)
        listener.listen(512)
        fd = listener.fileno()
        # bash gives the daemon its own pid as LISTEN_PID, then execs it.
        argv = ["bash", "-c", 'exec 3<&%d; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"' % fd, "bash",
                *self.argv(*extra_args)]

        def activate():
            # Until stop() takes the listener (it closes it once this returns).
            while self.listener is listener and len(self.daemons) < self.MAX_ACTIVATIONS:
                running = self.alive()
                if running or not select.select([listener], [], [], 0.02)[0]:
                    time.sleep(0.005 if running else 0)
                    continue
                self._spawn(argv, log_level, pass_fds=(fd,))

        self.activating = threading.Thread(target=activate, daemon=True)
        self.activating.start()
        return self

    def wait_ready(self, timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("finderd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            if accepting(self.socket):
                return
            time.sleep(0.01)
        raise AssertionError("finderd did not listen on %s:\n%s" % (self.socket, self.log()))

    @property
    def pid(self):
        """The daemon's own pid (a wrapper execs it)."""
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM (after SIGCONT, should a test have stopped it); SIGKILL
        after @timeout. Socket activation ends first: no daemon starts again."""
        listener, self.listener = self.listener, None
        if listener is not None:
            self.activating.join()
            listener.close()
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stats(self, python):
        """The daemon's Stats RPC, read through the Python client (with a
        deadline for a loaded machine, not the library's 50 ms)."""
        return run_json(python, "import json, finderd._native as n; "
                                "print(json.dumps(n.Client(%r, connect_timeout_us=%d, call_timeout_us=%d)"
                                ".daemon_stats()))" % (self.socket, PATIENT_US, PATIENT_US),
                        self.socket, FINDERD="off")


def accepting(path):
    """Whether something accepts connections on the Unix socket @path."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

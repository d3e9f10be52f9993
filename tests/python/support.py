"""Helpers for the end-to-end tests: interpreters, venvs, the daemon."""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
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


# The CI set of DESIGN.md's scenario S3.
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
    to run on the machine's default socket. The call deadline is generous:
    these tests check answers, not speed, and a loaded machine must not turn
    a slow first crawl into a fallback (tests of the deadline set their own).
    """
    env = {k: v for k, v in os.environ.items()
           if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "ASAN_OPTIONS",
                    "UBSAN_OPTIONS")}
    env["FINDERD_SOCKET"] = socket_path
    env["FINDERD_TIMEOUT_MS"] = env["FINDERD_CONNECT_TIMEOUT_MS"] = "5000"
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
    """`finderd serve` on a socket in @workdir."""

    def __init__(self, binary, workdir):
        self.binary = binary
        self.workdir = workdir
        self.socket = os.path.join(workdir, "finderd.sock")
        self.log_path = os.path.join(workdir, "finderd.log")
        self.proc = None

    def start(self, *extra_args, log_level="info"):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "serve", "--socket", self.socket, *extra_args],
                                     stdout=log, stderr=log,
                                     env=dict(os.environ, RUST_LOG="finderd=%s" % log_level))
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("finderd exited with %s:\n%s" % (self.proc.returncode, self.log()))
            if self._accepting():
                return
            time.sleep(0.01)
        raise AssertionError("finderd did not listen on %s:\n%s" % (self.socket, self.log()))

    def _accepting(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stats(self, python):
        """The daemon's Stats RPC, read through the Python client (with the patient
        deadlines of clean_env: a busy machine must not fail a test that counts)."""
        return run_json(python, "import json, finderd._native as n; "
                                "print(json.dumps(n.Client(%r, 5000000, 5000000)"
                                ".daemon_stats()))" % self.socket,
                        self.socket, FINDERD="off")


def write(path, text=""):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)

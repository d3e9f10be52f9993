"""Shared helpers for the deploy tests: the real daemon binary, real
systemd-socket-activate, a real NOTIFY_SOCKET listener, real interpreters.

Environment:
  FINDERD_BIN            the daemon binary (default: target/debug/finderd)
  FINDERD_DEPLOY_TOOLS   the bin/ of the venv holding the validators
                         (default: build/deploy-venv/bin, made by deploy/tests/run)
"""

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import support  # noqa: E402,F401  (tests/python/support.py, for the tests: how they start a plain daemon)
TOOLS = os.environ.get("FINDERD_DEPLOY_TOOLS") or os.path.join(ROOT, "build", "deploy-venv", "bin")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long or machine-changing checks (deploy/tests/run --slow)")


def tool(name):
    """A validator from the deploy venv, or a program on PATH."""
    path = os.path.join(TOOLS, name)
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if not found:
        pytest.fail("%s not found (deploy/tests/run installs it)" % name)
    return found


def run(argv, check=True, **kwargs):
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    result = subprocess.run(argv, **kwargs)
    if check and result.returncode != 0:
        pytest.fail("%s exited %d\nstdout:\n%s\nstderr:\n%s"
                    % (" ".join(map(str, argv)), result.returncode, result.stdout, result.stderr))
    return result


@pytest.fixture(scope="session")
def finderd_bin():
    path = os.path.abspath(os.environ.get("FINDERD_BIN") or os.path.join(ROOT, "target", "debug", "finderd"))
    if not os.access(path, os.X_OK):
        pytest.fail("finderd binary not found at %s: run `cargo build -p finderd`" % path)
    return path


def host_python():
    """The interpreter the client venv is made from: pyenv's 3.11 like scripts/lib.sh, else this one."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    versions = os.path.join(root, "versions")
    if os.path.isdir(versions):
        for name in sorted(os.listdir(versions)):
            candidate = os.path.join(versions, name, "bin", "python3.11")
            if name.startswith("3.11.") and os.access(candidate, os.X_OK):
                return candidate
    return shutil.which("python3") or sys.executable


@pytest.fixture(scope="session")
def client_python(tmp_path_factory):
    """bin/python of a fresh venv with the finderd client installed from ./client-py."""
    venv = str(tmp_path_factory.mktemp("client") / "venv")
    run([host_python(), "-m", "venv", venv])
    python = os.path.join(venv, "bin", "python")
    # Build in a copy: pip writes build/ and *.egg-info into the source tree.
    src = str(tmp_path_factory.mktemp("client-src"))
    shutil.copytree(os.path.join(ROOT, "client-py"), os.path.join(src, "client-py"),
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    shutil.copytree(os.path.join(ROOT, "client-c"), os.path.join(src, "client-c"),
                    ignore=shutil.ignore_patterns("build", "__pycache__"))
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         os.path.join(src, "client-py")], timeout=600)
    return python


# The first request of a fresh daemon crawls the venv and the stdlib; a debug
# build can take longer than the client's 50 ms deadline (the interpreter
# would then run stock, correctly). The tests check serving, not latency.
CLIENT_TIMEOUTS = {"FINDERD_TIMEOUT_MS": "10000", "FINDERD_CONNECT_TIMEOUT_MS": "10000"}


def served_import(python, socket_path, module_dir, module="deploy_probe"):
    """Imports a fresh module through the daemon at socket_path; returns the
    client's debug lines. Fails unless the interpreter says it is served."""
    os.makedirs(module_dir, exist_ok=True)
    with open(os.path.join(module_dir, module + ".py"), "w") as f:
        f.write("VALUE = 42\n")
    env = dict(os.environ, FINDERD_SOCKET=socket_path, FINDERD_DEBUG="1",
               PYTHONPATH=module_dir, PYTHONDONTWRITEBYTECODE="1")
    env.pop("FINDERD", None)
    env.update(CLIENT_TIMEOUTS)
    result = run([python, "-c", "import %s, finderd; assert %s.VALUE == 42; print(finderd.state())"
                  % (module, module)], env=env, timeout=60)
    assert "served by %s" % socket_path in result.stdout + result.stderr, result.stdout + result.stderr
    return result


# ---------------------------------------------------------------- units


def read_unit(path):
    """The unit's settings as {section: [(key, value), ...]} (comments dropped,
    continuation lines joined)."""
    sections, current, pending = {}, None, ""
    with open(path) as f:
        for raw in f:
            line = pending + raw.rstrip("\n")
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            stripped = line.strip()
            if not stripped or stripped[0] in "#;":
                continue
            if stripped.startswith("["):
                current = sections.setdefault(stripped.strip("[]"), [])
                continue
            key, _, value = stripped.partition("=")
            current.append((key.strip(), value.strip()))
    return sections


def unit_values(path, section, key):
    return [v for k, v in read_unit(path).get(section, []) if k == key]


def exec_start(path, specifiers=None):
    """ExecStart= of a unit as argv, with %-specifiers replaced."""
    values = [v for v in unit_values(path, "Service", "ExecStart") if v]
    assert len(values) == 1, values
    line = values[0]
    for spec, value in (specifiers or {}).items():
        line = line.replace(spec, value)
    if specifiers is not None:
        assert "%" not in line, "unreplaced specifier in %r" % line
    return shlex.split(line)


# ---------------------------------------------------------------- systemd


class NotifyListener:
    """A NOTIFY_SOCKET: an AF_UNIX datagram socket collecting sd_notify messages."""

    def __init__(self, path):
        self.path = path
        self.messages = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(path)
        self._sock.settimeout(0.2)
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop:
            try:
                data = self._sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append(data.decode())
                self._cond.notify_all()

    def fields(self):
        """Every KEY=VALUE received, in order."""
        with self._cond:
            return [line for m in self.messages for line in m.split("\n") if line]

    def wait_for(self, field, timeout=15):
        """Waits until a message carries `field` (e.g. "READY=1") or a field starting with it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if any(line == field or line.startswith(field) for line in m.split("\n")):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail("no %s from the daemon within %ss; got %r" % (field, timeout, self.messages))
                self._cond.wait(left)

    def close(self):
        self._stop = True
        self._thread.join()
        self._sock.close()


class Activated:
    """`systemd-socket-activate -l SOCKET ... ARGV`: systemd's socket
    activation for real. It listens on SOCKET, and on the first connection
    execs ARGV with LISTEN_FDS=1, LISTEN_PID and NOTIFY_SOCKET (so the
    process it becomes is the daemon)."""

    def __init__(self, argv, socket_path, notify_path, env=None, log_path=None, wrapper=()):
        self.socket_path = socket_path
        self.daemon_pid = None
        self.notify = NotifyListener(notify_path)
        os.chmod(notify_path, 0o777)
        self.log_path = log_path or socket_path + ".log"
        cmd = list(wrapper) + ["systemd-socket-activate", "-l", socket_path,
                               "-E", "NOTIFY_SOCKET=" + notify_path]
        for key in (env or {}):
            cmd += ["-E", "%s=%s" % (key, env[key])]
        cmd += list(argv)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 10
        while not os.path.exists(socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("systemd-socket-activate did not listen on %s:\n%s" % (socket_path, self.log()))
            time.sleep(0.02)

    def log(self):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def daemon_started(self):
        """Whether the activator has exec'ed the daemon (it says so in its log)."""
        return "Execing" in self.log()

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail("daemon did not stop within %ss of %s:\n%s" % (timeout, sig, self.log()))
        return self.proc.returncode

    def close(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        # Under a wrapper (strace) the daemon is not the activator's process.
        if self.daemon_pid:
            try:
                with open("/proc/%d/cmdline" % self.daemon_pid, "rb") as f:
                    still_ours = b" serve" in f.read().replace(b"\0", b" ")
                if still_ours:
                    os.kill(self.daemon_pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
        self.notify.close()
        self._log.close()


@pytest.fixture
def activated():
    started = []

    def start(*args, **kwargs):
        a = Activated(*args, **kwargs)
        started.append(a)
        return a

    yield start
    for a in started:
        a.close()


def health(finderd_bin, socket_path, timeout=20):
    """`finderd health --socket`: exit status 0 iff SERVING."""
    return run([finderd_bin, "health", "--socket", socket_path], check=False, timeout=timeout)


def exposure(output):
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", output)
    assert match, output
    return float(match.group(1)), match.group(2)

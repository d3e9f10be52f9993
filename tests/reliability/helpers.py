"""The reliability suite's tools: a daemon that can be run as another user,
under rlimits or in another mount namespace, killed with SIGKILL, measured
(RSS, descriptors, the Stats RPC); interpreters started and checked."""

import json
import os
import signal
import socket
import subprocess
import time

import support
import wire

NOBODY = 65534


class Daemon:
    """`finderd serve` on a socket in @workdir.

    @user: run as this uid/gid (setpriv), @nofile: RLIMIT_NOFILE (prlimit),
    @wrap: a command prefix (e.g. unshare), @env: extra environment.
    """

    def __init__(self, binary, workdir, user=None, nofile=None, wrap=(), env=None):
        self.binary = binary
        self.workdir = workdir
        self.socket = os.path.join(workdir, "finderd.sock")
        self.log_path = os.path.join(workdir, "finderd.log")
        self.user = user
        self.nofile = nofile
        self.wrap = list(wrap)
        self.env = env or {}
        self.proc = None
        self.args = ()

    def argv(self, *extra_args):
        argv = [self.binary, "serve", "--socket", self.socket, *extra_args]
        if self.nofile:
            argv = ["prlimit", "--nofile=%d:%d" % (self.nofile, self.nofile), "--"] + argv
        if self.user is not None:
            argv = ["setpriv", "--reuid=%d" % self.user, "--regid=%d" % self.user, "--clear-groups",
                    "--"] + argv
        return self.wrap + argv

    def start(self, *extra_args, log_level="info", wait=True):
        self.args = extra_args
        if self.user is not None:
            os.chown(self.workdir, self.user, self.user)
            os.chmod(self.workdir, 0o755)
        log = open(self.log_path, "ab")
        env = dict(os.environ, RUST_LOG="finderd=%s" % log_level, **self.env)
        self.proc = subprocess.Popen(self.argv(*extra_args), stdout=log, stderr=log, env=env,
                                     stdin=subprocess.DEVNULL)
        log.close()
        if wait:
            self.wait_ready()
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
        """The daemon's own pid (below setpriv/prlimit/unshare, which exec it)."""
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def rss_kib(self):
        return proc_status(self.pid, "VmRSS")

    def hwm_kib(self):
        return proc_status(self.pid, "VmHWM")

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def settled_fds(self):
        """The descriptor count once the daemon has answered a request.

        The socket accepts before the daemon has created its inotify
        descriptor and io_uring rings, so a count taken right after start can
        be short by those. One answered Stats (its connection closed and
        gone) is the baseline later counts compare with."""
        self.stats()
        counts = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts.append(self.fds())
            if len(counts) >= 5 and len(set(counts[-5:])) == 1:
                break
            time.sleep(0.05)
        return counts[-1]

    def channel(self, timeout=30):
        return wire.Channel(self.socket, timeout=timeout)

    def stats(self):
        ch = self.channel()
        try:
            return ch.stats()
        finally:
            ch.close()


def proc_status(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def accepting(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# Client deadlines for tests about who gets served, not how fast: a slow CI
# machine must not turn CPU contention into a fallback. A daemon that blocks
# still fails them, at the deadline.
PATIENT_DEADLINES = {"FINDERD_CONNECT_TIMEOUT_MS": "10000", "FINDERD_TIMEOUT_MS": "30000"}


def wait_for(predicate, timeout, step=0.005):
    """True once @predicate() is, False after @timeout seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def env_for(socket_path, **extra):
    """A clean environment for an interpreter under test (support.clean_env)."""
    return support.clean_env(socket_path, **extra)


STATE = "import sys as _s, json as _j; print(_j.dumps({'state': _s.modules['finderd'].state(), 'v': %s}))"


def spawn(python, code, socket_path, cwd=None, **env):
    """An interpreter running @code; stdout, stderr piped."""
    return subprocess.Popen([python, "-c", code], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(socket_path, **env),
                            stdin=subprocess.DEVNULL)


def finish(proc, timeout=120):
    """(returncode, stdout, stderr); a hang past @timeout is a failure."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("interpreter hung for %d s:\n%s\n%s" % (timeout, out, err)) from None
    return proc.returncode, out, err


def last_json(out):
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def percentile(values, p):
    if not values:
        return 0
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def write(path, text=""):
    support.write(path, text)


def tree_for_nobody(path):
    """Make every ancestor of @path searchable by others (pytest's tmp is 0700)."""
    path = os.path.abspath(path)
    while path not in ("/", ""):
        st = os.stat(path)
        if not st.st_mode & 0o001:
            os.chmod(path, (st.st_mode & 0o7777) | 0o005)
        path = os.path.dirname(path)


PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peer.py")


def peer_python():
    """An interpreter any uid can run, of the grpc venv's minor version."""
    import sys
    system = "/usr/bin/python%d.%d" % sys.version_info[:2]
    return system if os.access(system, os.X_OK) else sys.executable


def run_peer(socket_path, method, user=None, groups=None, wrap=(), timeout=60, **args):
    """peer.py as @user (uid=gid, supplementary @groups) under @wrap: its results."""
    argv = [peer_python(), PEER, socket_path, method, json.dumps(args)]
    if user is not None:
        group_opt = ["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"]
        argv = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user] + group_opt + ["--"] + argv
    argv = list(wrap) + argv
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.environ["FINDERD_RELIABILITY_GRPC_SITE"], "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError("peer failed (%d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def statuses(results):
    """{path: (status, reason)} of a peer's first result."""
    return {d["path"]: (d["status"], d["reason"]) for d in results[0]["directories"]}

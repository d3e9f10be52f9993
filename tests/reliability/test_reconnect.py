"""Long-lived interpreters across daemon restarts (issue 16): a running
interpreter that loses its daemon falls back to stock CPython at once, keeps
importing right, reconnects at a later import with bounded backoff, and is
served again, exactly, by the new daemon. Also with threads importing,
after fork(), when the daemon exits idle under connected interpreters (and
socket activation starts it again), and for 100 interpreters at once.

Real `finderd`, real interpreters (the `python` fixture's venv); nothing is
mocked. No assertion depends on speed: every wait is bounded by a hang
guard, and backoff is checked against the time that actually passed.
"""

import json
import math
import os
import subprocess
import threading
import time

import support
from conftest import figure
from helpers import PATIENT_DEADLINES, env_for, percentile, wait_for

HANG_GUARD = 120
# The library's first pause between reconnect attempts (finderd.h), of
# which up to half is taken off at random.
FIRST_PAUSE_S = 0.1

# Imports until @stop exists, in @threads threads: each writes a module of
# its own and imports it (the value must be the one written), then imports
# a stdlib module again. One JSON line whenever the client's state changes
# (fallbacks, reconnects, attempts), with the imports made so far; a last
# line with the totals. With "go" as argv[5] it waits for a line on stdin
# before it starts, and stops once it has been served again.
LOOP = r"""
import importlib, json, os, sys, threading, time
finderd = sys.modules["finderd"]
tree, me, stop, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
wait_for_go = sys.argv[5:] == ["go"]
pause = 0.05 if wait_for_go else 0.005
# Stdlib modules none of which imports another: each thread re-imports its own.
STDLIB = ["colorsys", "difflib", "shlex", "textwrap", "csv", "uuid", "fractions", "calendar",
          "quopri", "getopt"]
lock = threading.Lock()
totals = {"imports": 0, "wrong": [], "errors": []}
seen = [None]

def status():
    client = finderd.client()  # None: fell back at start, never served
    return client.status() if client else {"fallbacks": 0, "reconnects": 0, "attempts": 0}

def report(**extra):
    now = tuple(status()[k] for k in ("fallbacks", "reconnects", "attempts"))
    with lock:
        if now == seen[0] and not extra:
            return status
        seen[0] = now
        sys.stdout.write(json.dumps(dict(extra, fallbacks=now[0], reconnects=now[1],
                                         attempts=now[2], imports=totals["imports"],
                                         state=finderd.state(), t=time.monotonic())) + "\n")
        sys.stdout.flush()

def done():
    if wait_for_go:
        return status()["reconnects"] > 0 or finderd.client() is None
    return os.path.exists(stop)

def work(t):
    i = 0
    while not done():
        name = "m_%s_%d_%d" % (me, t, i)
        with open(os.path.join(tree, name + ".py"), "w") as f:
            f.write("VALUE = %d\n" % i)
        try:
            got = importlib.import_module(name).VALUE
            std = STDLIB[(i * threads + t) % len(STDLIB)]
            sys.modules.pop(std, None)
            importlib.import_module(std)
        except Exception as exc:
            with lock:
                totals["errors"].append("%s: %r" % (name, exc))
            got = None
        with lock:
            totals["imports"] += 2
            if got != i:
                totals["wrong"].append((name, got))
        report()
        i += 1
        time.sleep(pause)

report(ready=True)
if wait_for_go:
    sys.stdin.readline()
workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
report(done=True, wrong=totals["wrong"][:10], errors=totals["errors"][:10],
       n_wrong=len(totals["wrong"]), n_errors=len(totals["errors"]))
"""


class Running:
    """A long-lived interpreter running LOOP; its lines collected as they come."""

    def __init__(self, python, socket_path, tree, me, stop, threads=1, go=False, **env):
        os.makedirs(tree, exist_ok=True)
        argv = [python, "-c", LOOP, tree, str(me), stop, str(threads)] + (["go"] if go else [])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=env_for(socket_path, PYTHONPATH=tree, **env))
        self.lines, self.errors = [], []
        self.readers = [threading.Thread(target=self._read, daemon=True),
                        threading.Thread(target=self._read_errors, daemon=True)]
        for reader in self.readers:
            reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.append(json.loads(line))

    def _read_errors(self):
        self.errors.append(self.proc.stderr.read())

    def last(self):
        return self.lines[-1] if self.lines else {}

    def served(self, reconnects=0):
        last = self.last()
        return last.get("reconnects", -1) >= reconnects and last.get("state", "").startswith("active")

    def go(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def finish(self):
        """The last line; the interpreter must exit 0 within the hang guard."""
        try:
            self.proc.wait(HANG_GUARD)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("interpreter hung; last said %s" % self.last()) from None
        for reader in self.readers:
            reader.join(HANG_GUARD)
        assert self.proc.returncode == 0, "".join(self.errors)[-3000:]
        return self.last()


def all_served(running, reconnects=0):
    return all(r.served(reconnects) for r in running)


def check_exact(final):
    assert final.get("done") and final["n_wrong"] == 0 and final["n_errors"] == 0, final


# ---------------------------------------------------------------- restarts

def test_restarts_under_running_interpreters(make_daemon, python, tmp):
    """4 interpreters, 2 importing threads each, write and import modules
    non-stop while the daemon is restarted 20 times on the same socket
    (SIGKILL and SIGTERM in turn): every import right, each interpreter
    falls back once per restart and is served again before the next one."""
    d = make_daemon()
    stop = os.path.join(tmp, "stop")
    running = [Running(python, d.socket, os.path.join(tmp, "tree%d" % n), n, stop, threads=2,
                       **PATIENT_DEADLINES) for n in range(4)]
    assert wait_for(lambda: all_served(running), HANG_GUARD), [r.last() for r in running]
    restarts, back_s = 20, []
    for k in range(1, restarts + 1):
        d.kill9() if k % 2 else d.stop()
        time.sleep(0.05)  # down a moment: imports race the restart
        d.start()
        listening = time.monotonic()
        assert wait_for(lambda k=k: all_served(running, k), HANG_GUARD, step=0.01), \
            [r.last() for r in running]
        back_s.append(time.monotonic() - listening)
    with open(stop, "w"):
        pass
    finals = [r.finish() for r in running]
    figure("restarts under running interpreters", restarts=restarts, interpreters=len(running),
           threads_each=2, imports=sum(f["imports"] for f in finals),
           wrong=sum(f["n_wrong"] for f in finals), errors=sum(f["n_errors"] for f in finals),
           reconnects=[f["reconnects"] for f in finals], fallbacks=[f["fallbacks"] for f in finals],
           attempts=[f["attempts"] for f in finals],
           all_served_again_after_s_max=round(max(back_s), 2),
           all_served_again_after_s_p50=round(percentile(back_s, 50), 2))
    for f in finals:
        check_exact(f)
        assert f["fallbacks"] == f["reconnects"] == restarts, f
        assert f["state"].startswith("active: served by %s again" % d.socket), f


FORK_WHILE_FALLEN_BACK = support.NEW_MODULE + r"""
import json, time
finderd = sys.modules["finderd"]
def say(**what):
    print(json.dumps(dict(what, state=finderd.state(), status=finderd.client().status())),
          flush=True)
got = {"before": new_module("before_outage", "b")}
say(ready=True)
sys.stdin.readline()
got["lost"] = new_module("while_lost", "l")
pid = os.fork()
who = "child" if pid == 0 else "parent"
say(who=who, forked=True)
for i in range(20000):
    got[who] = new_module("after_fork_%s_%d" % (who, i), who)
    if finderd.client().status()["reconnects"]:
        break
    time.sleep(0.01)
say(who=who, v=got)
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_fork_while_fallen_back(make_daemon, python, tmp):
    """An interpreter loses its daemon (SIGKILL) and forks before it is back:
    once the daemon is restarted, parent and child each reconnect, on a
    connection of their own, and are served again."""
    tree = os.path.join(tmp, "tree")
    os.makedirs(tree)
    d = make_daemon()
    proc = subprocess.Popen([python, "-c", FORK_WHILE_FALLEN_BACK, tree], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(d.socket, PYTHONPATH=tree, **PATIENT_DEADLINES))
    lines = []
    assert json.loads(proc.stdout.readline())["ready"], proc.stderr.read()
    d.kill9()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    while len(lines) < 2:
        lines.append(json.loads(proc.stdout.readline()))
    d.start()
    try:
        out, err = proc.communicate(timeout=HANG_GUARD)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("hung: %s" % (proc.communicate(),)) from None
    assert proc.returncode == 0, err
    lines += [json.loads(line) for line in out.splitlines()]
    forked = {line["who"]: line for line in lines if line.get("forked")}
    back = {line["who"]: line for line in lines if "v" in line}
    figure("fork while fallen back", **{who: line["state"] for who, line in back.items()})
    for who in ("parent", "child"):
        assert forked[who]["state"].startswith("fell back to stock: lost the daemon"), forked
        assert back[who]["v"] == {"before": "b", "lost": "l", who: who}, back
        assert back[who]["status"]["reconnects"] == 1, back
        assert back[who]["state"].startswith("active"), back


def fell_back_at(lines):
    return min(line["t"] for line in lines if line["fallbacks"])


def test_kill9_and_an_outage_under_a_running_interpreter(make_daemon, python, tmp):
    """SIGKILL under 2 running interpreters, then 2 s without a daemon (its
    socket file left behind): imports go on, right, from the filesystem, and
    reconnect attempts follow the backoff instead of the imports. Back on
    the same socket, the daemon serves them again."""
    d = make_daemon()
    stop = os.path.join(tmp, "stop")
    running = [Running(python, d.socket, os.path.join(tmp, "tree%d" % n), n, stop,
                       FINDERD_DEBUG="1", **PATIENT_DEADLINES) for n in range(2)]
    assert wait_for(lambda: all_served(running), HANG_GUARD), [r.last() for r in running]
    d.kill9()
    killed = time.monotonic()
    assert wait_for(lambda: all(r.last()["fallbacks"] == 1 for r in running), HANG_GUARD)
    time.sleep(2)  # the outage
    down = [list(r.lines) for r in running]
    d.start()
    assert wait_for(lambda: all_served(running, 1), HANG_GUARD), [r.last() for r in running]
    with open(stop, "w"):
        pass
    finals = [r.finish() for r in running]

    outage = []
    for lines in down:
        lost = next(line for line in lines if line["fallbacks"] == 1)
        end = lines[-1]
        outage.append({"s": end["t"] - lost["t"], "attempts": end["attempts"] - lost["attempts"],
                       "imports": end["imports"] - lost["imports"]})
    fell_back_state = next(line for line in down[0] if line["fallbacks"] == 1)["state"]
    figure("kill -9 and an outage under running interpreters", interpreters=len(running),
           outage=outage, fell_back_state=fell_back_state,
           detected_after_kill_s=max(0.0, round(fell_back_at(down[0]) - killed, 2)),
           imports=sum(f["imports"] for f in finals), wrong=sum(f["n_wrong"] for f in finals),
           attempts=[f["attempts"] for f in finals])
    for f in finals:
        check_exact(f)
        assert f["fallbacks"] == f["reconnects"] == 1, f
    for r in running:  # FINDERD_DEBUG: lost, attempts that failed, back
        said = "".join(r.errors)
        for line in ("finderd: lost the daemon at %s: " % d.socket,
                     "finderd: reconnect to %s failed: " % d.socket,
                     "finderd: served again by %s (reconnect 1)" % d.socket):
            assert line in said, (line, said[-2000:])
    assert fell_back_state.startswith("fell back to stock: lost the daemon at %s" % d.socket)
    assert "reconnecting at" in fell_back_state
    for o in outage:
        # Pauses double from 0.1 s (less up to half): the attempts an
        # outage of o["s"] seconds allows, however many imports it saw.
        bound = 2 + math.ceil(math.log2(max(o["s"], FIRST_PAUSE_S) / (FIRST_PAUSE_S / 2)))
        assert o["attempts"] <= bound, (o, bound)
        assert o["imports"] > o["attempts"], o


# ---------------------------------------------------------------- idle exit

def test_idle_exit_with_idle_interpreters_connected(finderd_bin, python, tmp):
    """Socket activation with `--idle-exit 1`: 5 interpreters are served,
    then sit idle with their connections open. The daemon exits on its own
    all the same; their next imports start a new one through the socket and
    are served by it."""
    workdir = os.path.join(tmp, "activated")
    os.makedirs(workdir)
    activated = support.Daemon(finderd_bin, workdir).activate("--idle-exit", "1")
    stop = os.path.join(tmp, "stop")
    try:
        running = [Running(python, activated.socket,
                           os.path.join(tmp, "tree%d" % n), n, stop, go=True, **PATIENT_DEADLINES)
                   for n in range(5)]
        assert wait_for(lambda: all(r.last().get("ready") for r in running), HANG_GUARD)
        first = activated.daemons[0]
        code = first.wait(HANG_GUARD)
        for r in running:
            r.go()
        finals = [r.finish() for r in running]
        later = activated.daemons[1:]
        figure("idle exit with idle interpreters connected", interpreters=len(running),
               first_daemon_exit_code=code,
               daemons_started=len(activated.daemons),
               served_again=sum(f["state"].startswith("active") for f in finals),
               attempts=[f["attempts"] for f in finals])
    finally:
        activated.stop()
    assert code == 0, activated.log()
    assert "idle; exiting" in activated.log()
    assert later, "no daemon was started again"
    for f in finals:
        check_exact(f)
        # Each lost the connection it held when the daemon exited, and came back.
        assert f["fallbacks"] == f["reconnects"] == 1 and f["state"].startswith("active"), f


# ---------------------------------------------------------------- 100 at once

def test_reconnect_under_100_interpreters_at_once(make_daemon, python, tmp):
    """100 interpreters served, the daemon restarted (SIGTERM) under them,
    then all import at once: every one is served again, every import right."""
    d = make_daemon()
    stop = os.path.join(tmp, "stop")
    running = [Running(python, d.socket, os.path.join(tmp, "tree%d" % n), n, stop, go=True,
                       **PATIENT_DEADLINES) for n in range(100)]
    assert wait_for(lambda: all(r.last().get("ready") for r in running), HANG_GUARD)
    served_at_start = sum(r.last()["state"].startswith("active") for r in running)
    d.stop()
    d.start()
    started = time.monotonic()
    for r in running:
        r.go()
    finals = [r.finish() for r in running]
    wall = time.monotonic() - started
    stats = d.stats()
    attempts = [f["attempts"] for f in finals]
    figure("reconnect under 100 interpreters at once", interpreters=len(running),
           served_at_start=served_at_start,
           served_again=sum(f["state"].startswith("active") for f in finals),
           needed_more_than_one_attempt=sum(a > 1 for a in attempts), attempts_max=max(attempts),
           wrong=sum(f["n_wrong"] for f in finals), all_back_wall_s=round(wall, 1),
           daemon_snapshots=stats.get("snapshot_requests"), daemon_rss_kib=d.rss_kib(),
           daemon_request_p99_us=stats.get("request_latency", {}).get("p99_us"))
    for f in finals:
        check_exact(f)
    assert served_at_start == len(running)
    assert all(f["reconnects"] == 1 and f["state"].startswith("active") for f in finals)

"""Load: hundreds of interpreters starting at once through one daemon, and
a churn soak (files created, rewritten, renamed and deleted across 50
watched roots while interpreters import from them)."""

import os
import random
import threading
import time

import pytest

from conftest import LONG, figure
from helpers import finish, last_json, percentile, spawn, write

# The product's default deadlines (client-py/src/finderd/_activation.py):
# under load a client may fall back, which is allowed; failing is not.
DEFAULT_DEADLINES = {"FINDERD_CONNECT_TIMEOUT_MS": "20", "FINDERD_TIMEOUT_MS": "50"}


def stdlib_and_tree_code():
    return ("import sys, json, email.parser, http.client, argparse, logging, loadpkg.mod as m; "
            "print(json.dumps({'v': m.VALUE, 'state': sys.modules['finderd'].state()}))")


def start_many(python, socket_path, tree, count, cwd):
    procs = []
    for _ in range(count):
        procs.append((time.monotonic(), spawn(python, stdlib_and_tree_code(), socket_path, cwd=cwd,
                                              PYTHONPATH=tree, **DEFAULT_DEADLINES)))
    return procs


@pytest.mark.parametrize("count", [500])
def test_hundreds_of_interpreters_at_once(daemon, python, tmp, count):
    tree = os.path.join(tmp, "tree")
    write(os.path.join(tree, "loadpkg", "__init__.py"))
    write(os.path.join(tree, "loadpkg", "mod.py"), "VALUE = 'loaded'\n")
    rounds = 3 if LONG else 1
    served = fell_back = failures = 0
    walls = []
    started = time.monotonic()
    for _ in range(rounds):
        procs = start_many(python, daemon.socket, tree, count, tmp)
        for t0, proc in procs:
            rc, out, err = finish(proc, timeout=300)
            walls.append(time.monotonic() - t0)
            got = last_json(out) if rc == 0 else None
            if rc != 0 or not got or got["v"] != "loaded":
                failures += 1
                print("FAILED (%s): %s %s" % (rc, out[-500:], err[-2000:]))
            elif got["state"].startswith("active"):
                served += 1
            else:
                fell_back += 1
    elapsed = time.monotonic() - started
    stats = daemon.stats()
    latency = stats.get("request_latency", {})
    figure("500 concurrent interpreters", interpreters=count * rounds, served=served,
           fell_back=fell_back, failures=failures, wall_s=round(elapsed, 1),
           interpreter_wall_p99_s=round(percentile(walls, 99), 2),
           daemon_request_p50_us=latency.get("p50_us"), daemon_request_p99_us=latency.get("p99_us"),
           daemon_request_max_us=latency.get("max_us"), daemon_rss_kib=daemon.rss_kib(),
           daemon_peak_rss_kib=daemon.hwm_kib(), snapshots=stats.get("snapshot_requests"))
    assert failures == 0
    assert served + fell_back == count * rounds
    assert daemon.alive()


class Churn:
    """50 roots of modules; the expected value of every module name."""

    def __init__(self, base, roots=50, per_root=4):
        self.base = base
        self.roots = [os.path.join(base, "r%02d" % i) for i in range(roots)]
        self.locks = [threading.Lock() for _ in self.roots]
        self.expected = [dict() for _ in self.roots]   # name -> value or None (deleted)
        self.clock = 1_600_000_000                       # unique mtime seconds per write
        self.clock_lock = threading.Lock()
        self.counter = 0
        self.mutations = {"create": 0, "modify": 0, "rename": 0, "delete": 0}
        for i, root in enumerate(self.roots):
            os.makedirs(root)
            for k in range(per_root):
                self.put(i, "m%02d_%d" % (i, k))

    def tick(self):
        with self.clock_lock:
            self.clock += 1
            self.counter += 1
            return self.clock, self.counter

    def put(self, i, name):
        when, value = self.tick()
        path = os.path.join(self.roots[i], name + ".py")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write("VALUE = %d\n" % value)
        os.utime(tmp, (when, when))
        os.replace(tmp, path) if random.random() < 0.5 else self._rewrite(tmp, path)
        self.expected[i][name] = value

    @staticmethod
    def _rewrite(tmp, path):
        # In place: same inode, new contents (IN_CLOSE_WRITE, not a rename).
        with open(tmp) as f:
            text = f.read()
        st = os.stat(tmp)
        os.unlink(tmp)
        with open(path, "w") as f:
            f.write(text)
        os.utime(path, (st.st_mtime, st.st_mtime))

    def mutate(self, i, rng):
        present = [n for n, v in self.expected[i].items() if v is not None]
        op = rng.choice(["create", "modify", "modify", "rename", "delete"] if present else ["create"])
        if op == "create":
            _, n = self.tick()
            self.put(i, "m%02d_n%d" % (i, n))
        elif op == "modify":
            self.put(i, rng.choice(present))
        elif op == "rename":
            old = rng.choice(present)
            _, n = self.tick()
            new = "m%02d_n%d" % (i, n)
            os.rename(os.path.join(self.roots[i], old + ".py"), os.path.join(self.roots[i], new + ".py"))
            self.expected[i][new] = self.expected[i][old]
            self.expected[i][old] = None
        else:
            old = rng.choice(present)
            os.unlink(os.path.join(self.roots[i], old + ".py"))
            self.expected[i][old] = None
        self.mutations[op] += 1


CHECK_CODE = r"""
import importlib, json, sys
names = NAMES
got = {}
for name in names:
    try:
        got[name] = importlib.import_module(name).VALUE
    except ModuleNotFoundError:
        got[name] = None
    except Exception as exc:
        got[name] = 'error: %r' % (exc,)
print(json.dumps({'v': got, 'state': sys.modules['finderd'].state()}))
"""


def test_churn_soak(daemon, python, tmp):
    seconds = 1800 if LONG else 30
    churn = Churn(os.path.join(tmp, "roots"))
    path = ":".join(churn.roots)
    stop = threading.Event()
    rng = random.Random(8)
    errors = []

    def background():
        brng = random.Random(9)
        try:
            while not stop.is_set():
                i = brng.randrange(len(churn.roots))
                if churn.locks[i].acquire(blocking=False):
                    try:
                        churn.mutate(i, brng)
                    finally:
                        churn.locks[i].release()
                time.sleep(0.002)
        except Exception as exc:  # a broken mutator must fail the test
            errors.append(repr(exc))

    # Warm up: every root indexed once, then the figures' starting point.
    warm = spawn(python, "import m00_0", daemon.socket, cwd=tmp, PYTHONPATH=path)
    assert finish(warm)[0] == 0
    rss0, fds0, watches0 = daemon.rss_kib(), daemon.fds(), daemon.stats().get("watches")
    mutator = threading.Thread(target=background, daemon=True)
    mutator.start()
    checks = stale = wrong = failures = fell_back = 0
    examples = []
    deadline = time.monotonic() + seconds
    lock_order = list(range(len(churn.roots)))
    while time.monotonic() < deadline:
        chosen = sorted(rng.sample(lock_order, 3))
        for i in chosen:
            churn.locks[i].acquire()
        try:
            for i in chosen:
                churn.mutate(i, rng)
            expected = {}
            for i in chosen:
                expected.update(churn.expected[i])
            code = CHECK_CODE.replace("NAMES", repr(sorted(expected)))
            rc, out, err = finish(spawn(python, code, daemon.socket, cwd=tmp, PYTHONPATH=path))
        finally:
            for i in chosen:
                churn.locks[i].release()
        checks += 1
        got = last_json(out) if rc == 0 else None
        if got is None:
            failures += 1
            examples.append(err[-1500:])
            continue
        if not got["state"].startswith("active"):
            fell_back += 1
        for name, want in expected.items():
            have = got["v"].get(name)
            if isinstance(have, str) and have.startswith("error"):
                wrong += 1
                examples.append((name, want, have))
            elif have != want:
                stale += 1
                examples.append((name, want, have))
    stop.set()
    mutator.join(10)
    rss1, fds1, stats = daemon.rss_kib(), daemon.fds(), daemon.stats()
    figure("churn soak", seconds=seconds, roots=len(churn.roots), interpreters=checks,
           mutations=sum(churn.mutations.values()), **{"mutations_" + k: v for k, v in churn.mutations.items()},
           stale=stale, wrong_imports=wrong, failures=failures, fell_back=fell_back,
           rss_kib_start=rss0, rss_kib_end=rss1, fds_start=fds0, fds_end=fds1,
           watches_start=watches0, watches_end=stats.get("watches"),
           inotify_events=stats.get("inotify_events"), overflows=stats.get("overflows"))
    assert errors == [], errors
    assert (stale, wrong, failures) == (0, 0, 0), examples[:10]
    assert checks > 0
    # Flat: no descriptor leak; memory bounded (the index of 50 roots is small).
    assert fds1 <= fds0 + 4, (fds0, fds1)
    assert rss1 <= rss0 * 1.5 + 16 * 1024, (rss0, rss1)

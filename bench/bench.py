"""finderd benchmarks: stock CPython against finderd, side by side, S1 to S6.

Run through `bench/run`, which builds the daemon, libfinderd and the load
generator first. This driver creates fresh venvs under build/bench/, starts
its own daemon on a socket there, measures every selected scenario with its
variants interleaved run by run, and writes bench/results.json,
bench/RESULTS.md and bench/plots/.

Variants of an interpreter scenario (same workload, same run):
  stock    a venv without finderd
  finderd  a venv with the finderd client, daemon running (warm: it has seen
           the paths; "first" runs restart the daemon before each run)
  bound    the same client answering from a recorded answer, no daemon
           (needs the client's FINDERD_RECORD/FINDERD_REPLAY hook; reported
           "not measured" until the client has it)
  launcher the finderd venv with the finderd-python launcher enabled
           (`python -m finderd launcher enable`), daemon running: served from
           the first lookup, not from the first import after site
  absent   (scenario "absent") the finderd venv with no daemon running; and
           "launcher" there: the launcher venv with no daemon running
  pth      (scenario "absent") a venv whose only addition is a one-line .pth
           doing one os.stat
"""

import argparse
import datetime
import glob
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import harness  # noqa: E402
import namespaces  # noqa: E402  (tests/python/namespaces.py: the daemon's and pods' namespaces)
import report  # noqa: E402
import support  # noqa: E402  (tests/python/support.py: how Python starts the daemon)

STDLIB_SET = "import json, asyncio, email.parser, http.client, argparse, logging, subprocess"
CI_PACKAGES = ["pytest", "requests", "rich", "pydantic", "click", "pyyaml", "jinja2"]
CI_IMPORTS = "import pytest, requests, rich, pydantic, click, yaml, jinja2"
PYTEST_ARGV = ["-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
LONGPATH_ENTRIES = 200
LONGPATH_IMPORTED = 50
TREE_DIRS, TREE_FILES = 1000, 100  # S6: a 100k-file tree
PTH_LINE = ("import os; os.environ.get('FINDERD', '').lower() != 'off' and "
            "os.path.exists(os.environ.get('FINDERD_SOCKET') or '/run/finderd/finderd.sock')\n")

# Timed runs per variant: (full, quick). At least 30 in the full run.
RUNS = {"S1": (200, 20), "absent": (300, 30), "S2": (100, 10), "S3": (50, 8), "S3p": (40, 6),
        "S4": (100, 10), "S5": (40, 5), "S5p": (40, 4)}
PLAN_BYTES_PER_UID = 64 * 1024 * 1024  # the daemon's default is 8 MiB; see Bench.setup()
PREFETCH_BUDGETS_KB = (0, 64, 256, 1024, 4096)  # FINDERD_PREFETCH_KB; the client's default is 256
PREFETCH_RUNS = (20, 3)  # interleaved rounds of the prefetch sweep: (full, quick)
FIRST_RUNS = (5, 2)  # daemon restarts for "first run" samples: (full, quick)
IMPORTTIME_RUNS = (5, 1)

# S7 (issue 15): (jobs, interpreters per job), full and quick. Each job is a new
# rootless pod (user, mount and PID namespaces) with the venv on an overlayfs.
S7_SIZE = {"full": (10, 20), "quick": (2, 3)}
# Goals of issue 15 for S7: later jobs' wall ratio (finderd/stock) on hot local
# disk and on the FUSE variant of S5; round trips of each later job's first start.
S7_GOALS = {"local": 0.97, "fuse": 0.30, "first_start_round_trips": 1}

# Goals of issue 6: wall ratio and post-site lookup ratio (finderd/stock), at most.
GOALS = {"S1": (1.03, 0.10), "S2": (0.98, 0.05), "S3": (0.96, 0.05), "S3p": (0.96, 0.05),
         "S4": (0.55, 0.02), "S5": (0.25, 0.05), "S5p": (0.25, 0.05), "absent": (1.02, None)}
S6_GOALS = {"lookup_p99_us": 100.0, "rps": 50000.0, "bytes_per_entry": 200.0,
            "crawl_seconds": 0.5, "connect_snapshot_p50_us": 100.0}
# S6's raw Unix-socket floor: bytes each way of one exchange (client request, daemon
# reply with its HTTP/2 frames), as strace shows them on the daemon for the Lookup of
# the json package directory and for the Snapshot of S2's sys.path (preface and
# SETTINGS included) on the 2-core machine.
S6_FLOOR_BYTES = {"lookup": (189, 346), "connect-snapshot": (417, 19900)}
# S6 --s6-steps: rounds of the interleaved comparison of daemon builds.
S6_STEP_ROUNDS = {"full": 5, "quick": 1}
# Goals of issue 13, the launcher against stock: wall ratio at most; whole-run lookups
# (the dynamic loader's included) at most this share of stock's, or (S1) this many.
LAUNCHER_GOALS = {"S1": {"wall": 0.96, "lookups_max": 10},
                  "absent": {"wall": 1.00},
                  "S2": {"wall": 0.97, "lookups_ratio": 0.10},
                  "S3": {"wall": 0.96, "lookups_ratio": 0.10},
                  "S3p": {"wall": 0.96, "lookups_ratio": 0.10},
                  "S4": {"wall": 0.45, "lookups_ratio": 0.10},
                  "S5": {"wall": 0.22, "lookups_ratio": 0.10},
                  "S5p": {"wall": 0.22, "lookups_ratio": 0.10}}


def log(message):
    sys.stderr.write("bench: %s\n" % message)
    sys.stderr.flush()


def sh(argv, **kwargs):
    kwargs.setdefault("check", True)
    return subprocess.run(argv, **kwargs)


# --------------------------------------------------------------------------- daemon


class Daemon(support.Daemon):
    """The benchmark's own `finderd serve` on a socket under build/bench/run
    (the tests' daemon, logging warnings only), started again for each
    first sight of the paths."""

    def __init__(self, binary, rundir, extra_args=()):
        super().__init__(binary, rundir)
        self.extra_args = list(extra_args)

    def start(self, extra_args=None):
        args = self.extra_args if extra_args is None else list(extra_args)
        return super().start(*args, log_level="warn")

    def stop(self, timeout=10):
        super().stop(timeout)
        self.proc = None

    def restart(self, extra_args=None):
        """A new daemon process: an empty index, first sight of every path."""
        self.stop()
        self.start(extra_args)

    def stats(self):
        out = sh([self.binary, "stats", "--socket", self.socket, "--json"],
                 capture_output=True, text=True).stdout
        return json.loads(out)

    def rss_bytes(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def under_ptrace(variant):
    """@variant for a counting run under strace: ptrace slows each of the
    client's own system calls several times, which can push a served start
    past the client's 50 ms deadline and count a fallback to stock instead.
    The counts are of system calls, not time, so the deadline is lifted."""
    argv, env, cwd = variant
    return argv, dict(env, FINDERD_TIMEOUT_MS="5000", FINDERD_CONNECT_TIMEOUT_MS="5000"), cwd


def requests_of(before, after):
    return {"snapshot": after["snapshot_requests"] - before["snapshot_requests"],
            "lookup": after["lookup_requests"] - before["lookup_requests"]}


# --------------------------------------------------------------------------- S7: jobs in pods

# Runs in each job (a pod), with the image's base interpreter (-I -S): one JSON
# command per line on stdin, one JSON reply per line on stdout. A command runs
# one interpreter ("argv", "env", "cwd"), optionally under strace ("strace": the
# log's path) or with its stderr kept ("stderr": true); the reply gives its
# wall and CPU time (user+sys, from wait4) as harness.timed_run measures them.
JOB_DRIVER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    cmd = json.loads(line)
    argv = cmd["argv"]
    if cmd.get("strace"):
        argv = [cmd["strace_bin"], "-f", "-qq", "-T", "-o", cmd["strace"]] + argv
    err = subprocess.PIPE if cmd.get("stderr") else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=cmd["env"], cwd=cmd["cwd"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err)
    text = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0 and not text:
        text = subprocess.run(argv, env=cmd["env"], cwd=cmd["cwd"], capture_output=True,
                              text=True, errors="replace").stderr
    print(json.dumps({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rc": rc,
                      "stderr": text[-4000:]}), flush=True)
"""


class Job:
    """A job container: a new rootless pod (user, mount and PID namespaces)
    whose @app is an overlayfs of @image, with the S7 daemon's socket
    directory at @app/run; its interpreters start one after another, each
    timed inside the pod (JOB_DRIVER)."""

    def __init__(self, image, app, sockdir, pods):
        os.makedirs(pods, exist_ok=True)
        self.pod = os.path.join(pods, "pod-%d" % next(Job._serial))
        shutil.rmtree(self.pod, ignore_errors=True)
        upper, work = namespaces.pod_dirs(self.pod, rootless=True)
        self.errlog = open(self.pod + ".log", "w")
        argv = namespaces.pod_argv(True, image, upper, work, app, sockdir,
                                   [namespaces.IMAGE_PYTHON, "-I", "-S", "-c", JOB_DRIVER])
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errlog, text=True, start_new_session=True)

    _serial = iter(range(1, 1 << 30))

    def run(self, argv, env, cwd, strace=None, stderr=False):
        """One interpreter in this job: (wall seconds, CPU seconds, stderr)."""
        cmd = {"argv": argv, "env": env, "cwd": cwd, "stderr": stderr}
        if strace:
            cmd.update(strace=strace, strace_bin=shutil.which("strace") or "strace")
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.errlog.flush()
            with open(self.errlog.name) as f:
                raise RuntimeError("the job (pod) ended: %s" % f.read()[-2000:])
        reply = json.loads(line)
        if reply["rc"] != 0:
            raise RuntimeError("%s failed in the job (%d): %s" % (argv, reply["rc"],
                                                                  reply["stderr"]))
        return reply["wall"], reply["cpu"], reply["stderr"]

    def strace_counts(self, argv, env, cwd):
        """@argv under `strace -f -T` in this job, counted by harness.parse_log."""
        log_path = os.path.join(self.pod, "strace-%d.log" % next(Job._serial))
        self.run(argv, env, cwd, strace=log_path)
        with open(log_path, errors="replace") as f:
            return harness.parse_log(f)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.errlog.close()
        shutil.rmtree(self.pod, ignore_errors=True)


class NodeDaemon:
    """S7's daemon: unprivileged (as nobody, no capabilities, when this runs
    as root), in a mount and PID namespace of its own where the pods' mount
    point is an empty tmpfs (namespaces.daemon_argv, as deploy/tests/
    test_views.py runs it): it reads a job's files through that job's view
    only."""

    def __init__(self, binary, hidden, sockdir, extra_args):
        self.binary, self.hidden, self.sockdir = binary, hidden, sockdir
        self.socket = os.path.join(sockdir, "finderd.sock")
        self.extra_args = list(extra_args)
        self.proc = None

    def start(self):
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        if os.geteuid() == 0:
            os.chown(self.sockdir, namespaces.NOBODY, namespaces.NOBODY)
            argv = namespaces.daemon_argv(self.binary, self.hidden, self.socket, self.extra_args)
        else:  # already unprivileged; the pods' mount point is empty here anyway
            argv = [self.binary, "serve", "--socket", self.socket, "--socket-mode", "666",
                    *self.extra_args]
        self.log = open(os.path.join(os.path.dirname(self.sockdir), "finderd.log"), "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log,
                                     stdin=subprocess.DEVNULL, start_new_session=True,
                                     env=dict(os.environ, RUST_LOG="finderd=warn"))
        deadline = time.monotonic() + 30
        while sh([self.binary, "health", "--socket", self.socket], capture_output=True,
                 check=False).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the S7 daemon did not start (see %s)" % self.log.name)
            time.sleep(0.1)

    def stop(self):
        if self.proc is None:
            return
        # Its own session: the unshare wrapper and the daemon in its PID namespace.
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass
        self.proc = None
        self.log.close()

    def restart(self):
        self.stop()
        self.start()

    def stats(self):
        out = sh([self.binary, "stats", "--socket", self.socket, "--json"],
                 capture_output=True, text=True).stdout
        return json.loads(out)


# --------------------------------------------------------------------------- set-up


def make_venv(python, path, wheels, requirements=(), local_wheels=(), pth=None, installer=None):
    """A fresh venv at @path with @requirements from the wheel cache, all .pyc compiled
    (pip run by @installer, default @python)."""
    shutil.rmtree(path, ignore_errors=True)
    sh([python, "-m", "venv", "--without-pip", path])
    vpy = os.path.join(path, "bin", "python")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    site = sh([vpy, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
              capture_output=True, text=True, env=env).stdout.strip()
    if requirements or local_wheels:
        # The base interpreter's pip installs into the venv, so no venv gets pip (or
        # ensurepip's setuptools and its distutils-precedence.pth) that another lacks.
        python = installer or python
        cmd = [python, "-m", "pip", "--python", vpy, "install", "-q", "--no-index",
               "--find-links", wheels, *requirements, *local_wheels]
        if sh(cmd, env=env, check=False).returncode != 0:  # pip < 22.3 has no --python
            sh([python, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
                "--target", site, *requirements, *local_wheels], env=env)
    if pth:
        with open(os.path.join(site, "bench_stat.pth"), "w") as f:
            f.write(pth)
    # .pyc files as a normal install leaves them (the environment of this machine may set
    # PYTHONDONTWRITEBYTECODE); timed runs never write any.
    sh([vpy, "-m", "compileall", "-q", "-j", "0", site], env=env, stdout=subprocess.DEVNULL)
    return vpy


def enable_launcher(vpy):
    """finderd-python in place of the venv's python (`python -m finderd launcher enable`)."""
    venv = os.path.dirname(os.path.dirname(vpy))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FINDERD"))}
    proc = sh([vpy, "-m", "finderd", "launcher", "enable", venv], capture_output=True, text=True,
              env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError("cannot enable the launcher in %s: %s%s" % (venv, proc.stdout,
                                                                        proc.stderr))


def fetch_wheels(python, wheels):
    """Cache the CI set's wheels in build/bench/wheels (from PyPI the first time)."""
    os.makedirs(wheels, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    have = sh([python, "-m", "pip", "download", "-q", "--no-index", "--find-links", wheels,
               "-d", wheels, *CI_PACKAGES], env=env, check=False,
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    if not have:
        log("downloading the CI set's wheels into %s" % wheels)
        sh([python, "-m", "pip", "download", "-q", "-d", wheels, *CI_PACKAGES], env=env)


def build_client_wheel(python, outdir):
    shutil.rmtree(outdir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    sh([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", outdir,
        os.path.join(ROOT, "client-py")], env=env, stdout=subprocess.DEVNULL)
    return glob.glob(os.path.join(outdir, "finderd-*.whl"))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def make_suite(path):
    """A small pytest suite: 20 files, 10 tests and a parametrized one each."""
    shutil.rmtree(path, ignore_errors=True)
    write(os.path.join(path, "pytest.ini"), "[pytest]\ntestpaths = tests\n")
    write(os.path.join(path, "tests", "conftest.py"),
          "import pytest\n\n\n@pytest.fixture\ndef numbers():\n    return list(range(10))\n")
    for i in range(20):
        body = ["import json", "import pytest", ""]
        for j in range(10):
            body += ["", "def test_case_%d(numbers):" % j,
                     "    assert sum(numbers) + %d == 45 + %d" % (j, j), ""]
        body += ["", "@pytest.mark.parametrize('value', range(5))",
                 "def test_param(value):", "    assert json.loads(json.dumps(value)) == value", ""]
        write(os.path.join(path, "tests", "test_mod_%02d.py" % i), "\n".join(body))


def make_longpath(path):
    """S4: 200 sys.path entries, one small distribution each (rules_python/Nix style)."""
    shutil.rmtree(path, ignore_errors=True)
    entries = []
    for i in range(LONGPATH_ENTRIES):
        entry = os.path.join(path, "e%03d" % i)
        pkg = os.path.join(entry, "dist_e%03d" % i)
        write(os.path.join(pkg, "__init__.py"),
              '"""Distribution %d."""\n\nVERSION = "1.0.%d"\n' % (i, i))
        for mod in ("core", "util", "extra"):
            write(os.path.join(pkg, mod + ".py"),
                  "def %s_%d(x):\n    return x + %d\n\nNAME = %r\n" % (mod, i, i, mod))
        info = os.path.join(entry, "dist_e%03d-1.0.dist-info" % i)
        write(os.path.join(info, "METADATA"),
              "Metadata-Version: 2.1\nName: dist-e%03d\nVersion: 1.0\n" % i)
        write(os.path.join(info, "top_level.txt"), "dist_e%03d\n" % i)
        write(os.path.join(info, "RECORD"), "")
        entries.append(entry)
    return entries


def longpath_imports():
    """50 `dist_eNNN.core` imports spread evenly over the 200 entries (every 4th)."""
    step = LONGPATH_ENTRIES // LONGPATH_IMPORTED
    names = ["dist_e%03d.core" % (i * step + step - 1) for i in range(LONGPATH_IMPORTED)]
    return "import " + ", ".join(names)


def make_tree(path):
    """S6: TREE_DIRS directories of TREE_FILES small files (reused when complete)."""
    marker = os.path.join(path, ".complete-%dx%d" % (TREE_DIRS, TREE_FILES))
    dirs = [os.path.join(path, "d%04d" % i) for i in range(TREE_DIRS)]
    if not os.path.exists(marker):
        shutil.rmtree(path, ignore_errors=True)
        for d in dirs:
            os.makedirs(d)
            for j in range(TREE_FILES):
                with open(os.path.join(d, "mod_%03d.py" % j), "w") as f:
                    f.write("X = %d\n" % j)
        write(marker, "")
    return dirs


def parse_engines(help_text):
    """({engine name: serve arguments}, note) from `finderd serve --help` (clap's format).

    An option whose help mentions io_uring with "[possible values: ...]" gives one
    engine per value (e.g. auto, sync, uring); a plain switch gives the default and
    the switched one. Without one: the default engine alone, and a note saying so.
    """
    lines = help_text.splitlines()
    flag_line = re.compile(r"^\s*(?:-\w,\s*)?(--[a-z0-9][a-z0-9-]*)")
    for i, line in enumerate(lines):
        if "uring" not in line.lower():
            continue
        j = i
        while j >= 0 and not flag_line.match(lines[j]):
            j -= 1
        if j < 0:
            continue
        flag = flag_line.match(lines[j]).group(1)
        k = j + 1
        while k < len(lines) and not flag_line.match(lines[k]):
            k += 1
        block = " ".join(lines[j:k])
        values = re.search(r"possible values: ([^\]]+)\]", block)
        # `--help` lists them one per line instead: "- uring: Batched ...".
        listed = [m.group(1) for m in map(re.compile(r"^\s*-\s+([a-z0-9_-]+):").match,
                                          lines[j:k]) if m]
        if values or listed:
            names = listed or [v.strip() for v in values.group(1).split(",") if v.strip()]
            if any("uring" in v for v in names):
                return {v: [flag, v] for v in names}, None
        elif "<" not in lines[j]:  # a switch
            if "no-" in flag:
                return {"default (io_uring)": [], "sync": [flag]}, None
            return {"default (sync)": [], "io_uring": [flag]}, None
    return {"default": []}, ("this daemon build has no io_uring engine option in `finderd serve "
                             "--help`; crawled with its default (synchronous) engine only")


# --------------------------------------------------------------------------- machine


def machine_info(python):
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    pyver = sh([python, "-c", "import sys; print(sys.version.split()[0])"],
               capture_output=True, text=True).stdout.strip()
    commit = sh(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                text=True, check=False).stdout.strip() or "unknown"
    dirty = sh(["git", "-C", ROOT, "--no-optional-locks", "status", "--porcelain", "-uno"],
               capture_output=True, text=True, check=False).stdout.strip()
    return {"host": platform.node(), "kernel": platform.release(), "cpu": cpu,
            "cores": os.cpu_count(), "memory_gib": round(mem_kb / 2 ** 20, 1),
            "python": pyver, "python_path": python,
            "commit": commit + ("+dirty" if dirty else ""),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_busy_sample():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def busy_fraction(start, end):
    total = end[0] - start[0]
    return round(1.0 - (end[1] - start[1]) / total, 3) if total > 0 else None


# --------------------------------------------------------------------------- measuring


def importtime(argv, env, cwd, runs):
    """Per-module self time (median over @runs, microseconds) from -X importtime."""
    per_module = {}
    for _ in range(runs):
        proc = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, cwd=cwd,
                              capture_output=True, text=True)
        for line in proc.stderr.splitlines():
            m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
            if m:
                per_module.setdefault(m.group(4).strip(), []).append(int(m.group(1)))
    return {name: statistics.median(v) for name, v in per_module.items()}


def importtime_diff(stock, finderd, top=8):
    names = set(stock) | set(finderd)
    diffs = sorted(((finderd.get(n, 0) - stock.get(n, 0), n) for n in names), reverse=True)
    return {"stock_total_us": sum(stock.values()), "finderd_total_us": sum(finderd.values()),
            "largest_increases": [{"module": n, "stock_us": stock.get(n, 0),
                                   "finderd_us": finderd.get(n, 0), "delta_us": d}
                                  for d, n in diffs[:top] if d > 0],
            "largest_decreases": [{"module": n, "stock_us": stock.get(n, 0),
                                   "finderd_us": finderd.get(n, 0), "delta_us": d}
                                  for d, n in diffs[::-1][:top] if d < 0]}


def summarize(values):
    median, iqr = harness.spread(values)
    return {"n": len(values), "median_ms": round(median, 3), "iqr_ms": round(iqr, 3),
            "min_ms": round(min(values) * 1e3, 3), "mean_ms": round(statistics.mean(values) * 1e3, 3),
            "stdev_ms": round(statistics.stdev(values) * 1e3, 3) if len(values) > 1 else 0.0}


class Bench:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.work = os.path.join(ROOT, "build", "bench")
        self.root = os.path.join(self.work, "root")       # what the scenarios touch
        self.fuse = os.path.join(self.work, "fuse")       # bindfs mount of root/ (S5)
        self.rundir = os.path.join(self.work, "run")
        self.python = args.python
        self.results = {}
        self.mounted = False

    # ---- set-up

    def setup(self):
        self.unmount()
        os.makedirs(self.rundir, exist_ok=True)
        for stale in glob.glob(os.path.join(self.rundir, "*")):
            if os.path.isfile(stale) or os.path.islink(stale) or stale.endswith(".sock"):
                try:
                    os.unlink(stale)
                except OSError:
                    pass
        os.makedirs(self.root, exist_ok=True)
        self.absent_socket = os.path.join(self.rundir, "no-daemon.sock")
        self.cwd = os.path.join(self.root, "cwd")
        os.makedirs(self.cwd, exist_ok=True)
        wheels = os.path.join(self.work, "wheels")
        need_ci = any(s in self.selected for s in ("S3", "S3p", "S5", "S5p", "prefetch"))
        if need_ci or "S7" in self.selected:
            fetch_wheels(self.python, wheels)
        log("building the client wheel")
        client = build_client_wheel(self.python, os.path.join(self.work, "client-wheel"))
        log("creating fresh venvs under %s" % self.root)
        self.venv = {
            "stock": make_venv(self.python, os.path.join(self.root, "venv-stock"), wheels),
            "finderd": make_venv(self.python, os.path.join(self.root, "venv-finderd"), wheels,
                                 local_wheels=client),
            "launcher": make_venv(self.python, os.path.join(self.root, "venv-launcher"), wheels,
                                  local_wheels=client),
            "pth": make_venv(self.python, os.path.join(self.root, "venv-pth"), wheels,
                             pth=PTH_LINE),
        }
        if need_ci:
            self.venv["ci-stock"] = make_venv(self.python, os.path.join(self.root, "ci-stock"),
                                              wheels, CI_PACKAGES)
            self.venv["ci-finderd"] = make_venv(self.python, os.path.join(self.root, "ci-finderd"),
                                                wheels, CI_PACKAGES, local_wheels=client)
            self.venv["ci-launcher"] = make_venv(self.python,
                                                 os.path.join(self.root, "ci-launcher"), wheels,
                                                 CI_PACKAGES, local_wheels=client)
            make_suite(os.path.join(self.root, "suite"))
        for name in ("launcher", "ci-launcher"):
            if name in self.venv:
                enable_launcher(self.venv[name])
        if "S4" in self.selected:
            self.longpath = make_longpath(os.path.join(self.root, "longpath"))
        self.client_wheel, self.wheels = client, wheels
        self.base_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
                         "LANG": "C.UTF-8"}
        # One uid runs every variant here, so the .pth client's and the launcher's plans
        # (with the compiled files of S5, several MiB each) share that uid's plan budget:
        # raised, so that one variant's plan does not evict the other's.
        self.daemon = Daemon(self.args.finderd, self.rundir,
                             extra_args=["--max-plan-bytes-per-uid", str(PLAN_BYTES_PER_UID)])
        self.daemon.start()
        status = sh([self.venv["finderd"], "-m", "finderd", "status"], capture_output=True,
                    text=True, check=False, cwd=self.cwd,
                    env=dict(self.base_env, FINDERD_SOCKET=self.daemon.socket))
        if status.returncode != 0:
            raise RuntimeError("finderd does not activate in the bench venv:\n" + status.stdout
                               + status.stderr)

    def mount(self):
        """bindfs of root/ at fuse/ with the kernel's attribute, entry and negative caches off."""
        if not os.path.exists("/dev/fuse"):
            return "/dev/fuse is missing"
        if not shutil.which("bindfs"):
            return "bindfs is not installed (apt-get install bindfs)"
        os.makedirs(self.fuse, exist_ok=True)
        proc = subprocess.run(["bindfs", "-o", "attr_timeout=0,entry_timeout=0,negative_timeout=0",
                               self.root, self.fuse], capture_output=True, text=True)
        if proc.returncode != 0:
            return "bindfs failed: %s" % proc.stderr.strip()
        self.mounted = True
        return None

    def unmount(self):
        if os.path.ismount(self.fuse):
            for cmd in (["fusermount", "-u", self.fuse], ["umount", self.fuse],
                        ["umount", "-l", self.fuse]):
                if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
                    break
        self.mounted = False

    # ---- scenarios

    def runs_for(self, sid):
        full, quick = RUNS[sid]
        n = quick if self.quick else full
        return self.args.runs if self.args.runs else n

    def env(self, **extra):
        return dict(self.base_env, **extra)

    def interpreter_scenario(self, sid, title, command, stock_py, finderd_py, argv, cwd,
                             extra_env=None, prefix=None, launcher_py=None):
        """Measure one interpreter workload: stock, finderd (first and warm), launcher, bound."""
        log("%s: %s" % (sid, title))
        t_start, busy0, load0 = time.monotonic(), cpu_busy_sample(), loadavg()
        extra_env = extra_env or {}
        if prefix:  # the same venvs, reached through another path (the FUSE mount)
            stock_py = stock_py.replace(self.root, prefix, 1)
            finderd_py = finderd_py.replace(self.root, prefix, 1)
            launcher_py = launcher_py and launcher_py.replace(self.root, prefix, 1)
            cwd = cwd.replace(self.root, prefix, 1)
        stock = ([stock_py, *argv], self.env(FINDERD_SOCKET=self.daemon.socket, **extra_env), cwd)
        finderd = ([finderd_py, *argv], self.env(FINDERD_SOCKET=self.daemon.socket, **extra_env),
                   cwd)
        launcher = launcher_py and ([launcher_py, *argv],
                                    self.env(FINDERD_SOCKET=self.daemon.socket, **extra_env), cwd)
        off = ([finderd_py, *argv], self.env(FINDERD="off", **extra_env), cwd)
        # .pyc files exist (compileall); one run of each warms the page cache.
        for variant in (stock, off):
            harness.timed_run(*variant)

        # First runs: a new daemon process before each, so it sees every path for the first time.
        first = {"stock_ms": [], "finderd_ms": [], "requests": [], "launcher_ms": [],
                 "launcher_requests": []}
        for _ in range(FIRST_RUNS[1] if self.quick else FIRST_RUNS[0]):
            self.daemon.restart()
            before = self.daemon.stats()
            first["finderd_ms"].append(harness.timed_run(*finderd)[0] * 1e3)
            first["requests"].append(requests_of(before, self.daemon.stats()))
            first["stock_ms"].append(harness.timed_run(*stock)[0] * 1e3)
            if launcher:
                self.daemon.restart()
                before = self.daemon.stats()
                first["launcher_ms"].append(harness.timed_run(*launcher)[0] * 1e3)
                first["launcher_requests"].append(requests_of(before, self.daemon.stats()))
        # Did the client stay active? (FINDERD_DEBUG=1 says when it falls back to stock.)
        self.daemon.restart()
        first_fallback = self.fallback(finderd)
        self.daemon.restart()
        first_counts = harness.strace_counts(*under_ptrace(finderd))

        # Warm: the daemon has seen the paths (the strace run above was its first sight).
        before = self.daemon.stats()
        warm_fallback = self.fallback(finderd)
        warm_requests = requests_of(before, self.daemon.stats())
        if launcher:
            # As for finderd above: this daemon process sees the launcher's paths for the
            # first time in a run that cannot time out (strace lifts the deadline); that run
            # teaches it the plan's directories, the next one (on slow filesystems) the
            # compiled files read. A restart forgets plans kept in memory.
            harness.strace_counts(*under_ptrace(launcher))
            harness.timed_run(*under_ptrace(launcher))
            before = self.daemon.stats()
            launcher_fallback = self.fallback(launcher)
            launcher_requests = requests_of(before, self.daemon.stats())

        # The bound: the client answering from a recorded answer, no daemon.
        bound, bound_reason = None, None
        record = os.path.join(self.rundir, "%s.replay" % sid)
        if os.path.exists(record):
            os.unlink(record)
        harness.timed_run(finderd[0], dict(finderd[1], FINDERD_RECORD=record), cwd)
        if os.path.exists(record):
            # finderd.pth activates the client only when FINDERD_SOCKET names an
            # existing file: point it at the recording (nothing listens there).
            bound = (finderd[0], self.env(FINDERD_REPLAY=record, FINDERD_SOCKET=record,
                                          **extra_env), cwd)
        else:
            bound_reason = ("the client has no record/replay hook yet (FINDERD_RECORD=FILE "
                            "wrote nothing); see bench/README.md, 'The bound'")

        presite = harness.strace_counts([stock_py, "-S", "-c", "pass"], stock[1], cwd)
        # site's own lookups (site-packages, .pth files, sitecustomize): after -S's, but made
        # before any .pth client can answer.
        site_only = harness.strace_counts([stock_py, "-c", "pass"], stock[1], cwd)
        counts = {"stock": harness.strace_counts(*stock, timed=True),
                  "finderd": harness.strace_counts(*under_ptrace(finderd), timed=True)}
        if launcher:
            counts["launcher"] = harness.strace_counts(*under_ptrace(launcher), timed=True)
        if bound:
            counts["bound"] = harness.strace_counts(*bound, timed=True)

        variants = {"stock": stock, "finderd": finderd}
        if launcher:
            variants["launcher"] = launcher
        if bound:
            variants["bound"] = bound
        runs = self.runs_for(sid)
        before = self.daemon.stats()
        times = harness.interleaved_runs(variants, runs, warmup=2)
        loop_requests = requests_of(before, self.daemon.stats())
        finderd_runs = runs + 2

        profile = importtime_diff(
            importtime(*stock, IMPORTTIME_RUNS[1] if self.quick else IMPORTTIME_RUNS[0]),
            importtime(*finderd, IMPORTTIME_RUNS[1] if self.quick else IMPORTTIME_RUNS[0]))

        # The launcher's own lookups after site: minus its own `-S -c pass`.
        presites = {"launcher": harness.strace_counts(
            *under_ptrace(([launcher_py, "-S", "-c", "pass"], launcher[1], cwd)))} \
            if launcher else {}
        result = self.assemble(sid, title, command, times, counts, presite, presites=presites)
        result["first_run"] = {
            "runs": len(first["finderd_ms"]),
            "stock_median_ms": round(statistics.median(first["stock_ms"]), 3),
            "finderd_median_ms": round(statistics.median(first["finderd_ms"]), 3),
            "wall_ratio": round(statistics.median(first["finderd_ms"])
                                / statistics.median(first["stock_ms"]), 4),
            "requests_per_start": first["requests"],
            "counts": first_counts.as_dict(),
            "post_site_lookups": first_counts.minus(presite).lookups,
        }
        if launcher:  # the timed rounds ran both clients: count finderd's share only
            loop_requests = {k: max(0, v - launcher_requests[k] * finderd_runs)
                             for k, v in loop_requests.items()}
        result["round_trips"] = {
            "first": {"snapshot": statistics.median(r["snapshot"] for r in first["requests"]),
                      "lookup": statistics.median(r["lookup"] for r in first["requests"])},
            "warm": warm_requests,
            "warm_mean_over_timed_runs": {k: round(v / finderd_runs, 3)
                                          for k, v in loop_requests.items()},
        }
        result["site_lookups"] = site_only.minus(presite).lookups
        result["fallback"] = {"first": first_fallback, "warm": warm_fallback}
        if launcher:
            result["launcher"] = self.launcher_summary(
                sid, result, counts, first, launcher_requests, launcher_fallback, presite)
        result["bound"] = "measured" if bound else "not measured: " + bound_reason
        result["importtime"] = profile
        result["machine_load"] = {"loadavg_start": load0, "loadavg_end": loadavg(),
                                  "cpu_busy_fraction": busy_fraction(busy0, cpu_busy_sample()),
                                  "seconds": round(time.monotonic() - t_start, 1)}
        self.results[sid] = result
        log("%s: stock %.2f ms, finderd %.2f ms, ratio %.3f; post-site lookups %d -> %d"
            % (sid, result["stock_median_ms"], result["finderd_median_ms"], result["wall_ratio"],
               result["variants"]["stock"]["post_site_lookups"],
               result["variants"]["finderd"]["post_site_lookups"]))

    def launcher_summary(self, sid, result, counts, first, warm_requests, fallback, presite):
        """The launcher against stock (issue 13's goals): wall, whole-run lookups, what remains."""
        goals = LAUNCHER_GOALS.get(sid, {})
        lv, sv = result["variants"]["launcher"], result["variants"]["stock"]
        stock_whole, whole = counts["stock"].whole_run_lookups, counts["launcher"].whole_run_lookups
        remaining = {}
        for name, path, err in counts["launcher"].lookup_calls:
            key = "%s %s%s" % (name, path, " (%s)" % err if err else "")
            remaining[key] = remaining.get(key, 0) + 1
        out = {
            "wall_ratio": lv["wall_ratio"]["ratio"], "wall_ratio_ci95": lv["wall_ratio"]["ci95"],
            "paired": lv["wall_ratio"]["paired"], "cpu_ratio": lv["cpu_ratio"]["ratio"],
            "median_ms": lv["wall"]["median_ms"], "stock_median_ms": sv["wall"]["median_ms"],
            "whole_run_lookups": whole, "stock_whole_run_lookups": stock_whole,
            "whole_run_lookups_ratio": round(whole / stock_whole, 4) if stock_whole else None,
            "stock_presite_whole_run_lookups": presite.whole_run_lookups,
            "remaining_lookups": sorted(remaining.items(), key=lambda kv: -kv[1]),
            "round_trips_warm": warm_requests,
            "fallback_warm": fallback,
            "goals": goals,
        }
        if first["launcher_ms"]:
            out["first_run"] = {
                "median_ms": round(statistics.median(first["launcher_ms"]), 3),
                "stock_median_ms": round(statistics.median(first["stock_ms"]), 3),
                "wall_ratio": round(statistics.median(first["launcher_ms"])
                                    / statistics.median(first["stock_ms"]), 4),
                "requests_per_start": first["launcher_requests"]}
        log("%s: launcher %.2f ms, ratio %.3f; whole-run lookups %d -> %d"
            % (sid, out["median_ms"], out["wall_ratio"], stock_whole, whole))
        return out

    def assemble(self, sid, title, command, times, counts, presite, baseline="stock",
                 subject="finderd", presites=None):
        variants = {}
        for name in times["wall"]:
            v = {"wall": summarize(times["wall"][name]), "cpu": summarize(times["cpu"][name])}
            if name in counts:
                v["counts"] = counts[name].as_dict()
                post = counts[name].minus((presites or {}).get(name, presite))
                v["post_site"] = {k: post[k] for k in post.KINDS}
                v["post_site_lookups"] = post.lookups
            if name != baseline:
                ratio, lo, hi = harness.ratio_interval(times["wall"][name], times["wall"][baseline])
                pr, plo, phi = harness.paired_ratio_interval(times["wall"][name],
                                                             times["wall"][baseline])
                cr, clo, chi = harness.ratio_interval(times["cpu"][name], times["cpu"][baseline])
                v["wall_ratio"] = {"ratio": round(ratio, 4), "ci95": [round(lo, 4), round(hi, 4)],
                                   "paired": round(pr, 4), "paired_ci95": [round(plo, 4),
                                                                           round(phi, 4)]}
                v["cpu_ratio"] = {"ratio": round(cr, 4), "ci95": [round(clo, 4), round(chi, 4)]}
            variants[name] = v
        s, f = variants[baseline], variants[subject]
        lookup_ratio = (f["post_site_lookups"] / s["post_site_lookups"]
                        if s.get("post_site_lookups") else None)
        wall_goal, lookup_goal = GOALS.get(sid, (None, None))
        return {
            "id": sid, "title": title, "command": command,
            "runs": len(times["wall"][baseline]),
            "mode": "quick" if self.quick else "full",
            "measured": self.meta["date"], "commit": self.meta["commit"],
            "presite": presite.as_dict(),
            "variants": variants,
            "wall_ratio": f["wall_ratio"]["ratio"],
            "wall_ratio_ci95": f["wall_ratio"]["ci95"],
            "lookup_syscalls_ratio": round(lookup_ratio, 4) if lookup_ratio is not None else None,
            "stock_median_ms": s["wall"]["median_ms"], "finderd_median_ms": f["wall"]["median_ms"],
            "stock_counts": s.get("counts"), "finderd_counts": f.get("counts"),
            "goals": {"wall_ratio_max": wall_goal, "lookup_syscalls_ratio_max": lookup_goal},
        }

    @staticmethod
    def fallback(variant):
        """Run @variant once with FINDERD_DEBUG=1: the client's fall-back message, or None."""
        argv, env, cwd = variant
        proc = subprocess.run(argv, env=dict(env, FINDERD_DEBUG="1"), cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              errors="replace")
        said = [line for line in proc.stderr.splitlines()
                if line.startswith("finderd:") and "fell back" in line]
        return said[0][len("finderd: "):] if said else None

    def absent_scenario(self):
        """finderd installed, no daemon: against stock and a one-line .pth doing one stat."""
        sid = "absent"
        log("absent: finderd installed, no daemon running")
        t_start, busy0, load0 = time.monotonic(), cpu_busy_sample(), loadavg()
        env = self.env(FINDERD_SOCKET=self.absent_socket)
        variants = {"stock": ([self.venv["stock"], "-c", "pass"], env, self.cwd),
                    "absent": ([self.venv["finderd"], "-c", "pass"], env, self.cwd),
                    "pth": ([self.venv["pth"], "-c", "pass"], env, self.cwd),
                    "launcher": ([self.venv["launcher"], "-c", "pass"], env, self.cwd)}
        presite = harness.strace_counts([self.venv["stock"], "-S", "-c", "pass"], env, self.cwd)
        counts = {name: harness.strace_counts(*v) for name, v in variants.items()}
        times = harness.interleaved_runs(variants, self.runs_for(sid), warmup=3)
        result = self.assemble(sid, "finderd installed, no daemon running (`python -c pass`)",
                               "python -c pass", times, counts, presite, subject="absent")
        pth = result["variants"]["pth"]
        absent = result["variants"]["absent"]
        r, lo, hi = harness.ratio_interval(times["wall"]["absent"], times["wall"]["pth"])
        result["absent_vs_pth"] = {"ratio": round(r, 4), "ci95": [round(lo, 4), round(hi, 4)]}
        result["lookups_absent_minus_pth"] = absent["post_site_lookups"] - pth["post_site_lookups"]
        lv = result["variants"]["launcher"]
        r, lo, hi = harness.ratio_interval(times["wall"]["launcher"], times["wall"]["absent"])
        result["launcher"] = {
            "wall_ratio": lv["wall_ratio"]["ratio"], "wall_ratio_ci95": lv["wall_ratio"]["ci95"],
            "paired": lv["wall_ratio"]["paired"], "cpu_ratio": lv["cpu_ratio"]["ratio"],
            "median_ms": lv["wall"]["median_ms"],
            "vs_absent": {"ratio": round(r, 4), "ci95": [round(lo, 4), round(hi, 4)]},
            "whole_run_lookups": counts["launcher"].whole_run_lookups,
            "stock_whole_run_lookups": counts["stock"].whole_run_lookups,
            "absent_whole_run_lookups": counts["absent"].whole_run_lookups,
            "goals": LAUNCHER_GOALS["absent"]}
        result["machine_load"] = {"loadavg_start": load0, "loadavg_end": loadavg(),
                                  "cpu_busy_fraction": busy_fraction(busy0, cpu_busy_sample()),
                                  "seconds": round(time.monotonic() - t_start, 1)}
        self.results[sid] = result
        log("absent: stock %.2f ms, absent %.2f ms (%.3f), one-line .pth %.2f ms (%.3f)"
            % (result["stock_median_ms"], absent["wall"]["median_ms"], result["wall_ratio"],
               pth["wall"]["median_ms"], pth["wall_ratio"]["ratio"]))

    # ---- S7

    def s7_setup(self):
        """S7's images (the CI set's venv of the system 3.11, stock and with the
        client), the pods' mount point and the unprivileged daemon. Returns
        why S7 cannot run here, or None."""
        self.s7dir = os.path.join(self.work, "s7")
        os.makedirs(self.s7dir, exist_ok=True)
        os.chmod(self.s7dir, 0o755)  # the daemon (nobody) and the pods' uid walk it
        reason = namespaces.rootless_pods_unavailable(self.s7dir)
        if reason:
            return reason
        path = self.s7dir
        while path != "/":  # every directory above must be searchable by them too
            if not os.stat(path).st_mode & 0o001:
                return "%s is not searchable by other users (the daemon runs as nobody)" % path
            path = os.path.dirname(path)
        images = os.path.join(self.s7dir, "images")
        self.s7images = images
        log("S7: images (venvs of %s) under %s" % (namespaces.IMAGE_PYTHON, images))
        for name, wheel in (("stock", ()), ("finderd", self.client_wheel)):
            make_venv(namespaces.IMAGE_PYTHON, os.path.join(images, name, "venv"), self.wheels,
                      CI_PACKAGES, local_wheels=wheel, installer=self.python)
            os.makedirs(os.path.join(images, name, "cwd"), exist_ok=True)
        sh(["chmod", "-R", "a+rX", images])
        self.s7app = os.path.join(self.s7dir, "app")  # where every job mounts its image
        sockdir = os.path.join(self.s7dir, "sock")
        for d in (self.s7app, sockdir):
            os.makedirs(d, exist_ok=True)
        self.s7daemon = NodeDaemon(self.args.finderd, self.s7app, sockdir,
                                   ["--max-plan-bytes-per-uid", str(PLAN_BYTES_PER_UID)])
        self.s7fuse = os.path.join(self.s7dir, "fuse")
        return None

    def s7_mount(self):
        """The images through bindfs (S5's options, and allow_other: the pods'
        uid reads them), for the FUSE variant. Returns why not, or None."""
        if not os.path.exists("/dev/fuse"):
            return "/dev/fuse is missing"
        if not shutil.which("bindfs"):
            return "bindfs is not installed (apt-get install bindfs)"
        os.makedirs(self.s7fuse, exist_ok=True)
        opts = "attr_timeout=0,entry_timeout=0,negative_timeout=0"
        if os.geteuid() == 0:
            opts += ",allow_other"
        proc = subprocess.run(["bindfs", "-o", opts, self.s7images, self.s7fuse],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            return "bindfs failed: %s" % proc.stderr.strip()
        return None

    def s7_unmount(self):
        fuse = getattr(self, "s7fuse", None)
        if fuse and os.path.ismount(fuse):
            for cmd in (["fusermount", "-u", fuse], ["umount", fuse], ["umount", "-l", fuse]):
                if shutil.which(cmd[0]) and subprocess.run(cmd, capture_output=True).returncode == 0:
                    break

    def s7_jobs(self):
        jobs, starts = S7_SIZE["quick" if self.quick else "full"]
        if self.args.jobs:
            jobs = self.args.jobs
        if self.args.runs:
            starts = self.args.runs
        return max(2, jobs), max(2, starts)

    def s7(self):
        """S7: job containers without privilege, stock against finderd (issue 15)."""
        log("S7: job containers (rootless pods, venv on overlayfs)")
        t_start, load0 = time.monotonic(), loadavg()
        jobs, starts = self.s7_jobs()
        out = {"id": "S7", "title": "job containers: rootless pods, venv on an overlayfs",
               "command": "python -c '%s' (the CI set), %d interpreters per job, %d jobs"
                          % (CI_IMPORTS, starts, jobs),
               "mode": "quick" if self.quick else "full", "measured": self.meta["date"],
               "commit": self.meta["commit"], "jobs": jobs, "starts_per_job": starts,
               "goals": S7_GOALS, "variants": {}}
        reason = self.s7_setup()
        if reason:
            log("S7 skipped: %s" % reason)
            out["skipped"] = reason
            self.results["S7"] = out
            return
        out["daemon_user"] = "nobody, no capabilities" if os.geteuid() == 0 else \
            "the benchmark's user (not root)"
        try:
            out["variants"]["local"] = self.s7_measure(self.s7images, jobs, starts)
            reason = self.s7_mount()
            if reason:
                log("S7 on FUSE skipped: %s" % reason)
                out["variants"]["fuse"] = {"skipped": reason}
            else:
                try:
                    out["variants"]["fuse"] = self.s7_measure(
                        self.s7fuse, self.args.fuse_jobs or jobs, starts)
                finally:
                    self.s7_unmount()
        finally:
            self.s7daemon.stop()
        out["machine_load"] = {"loadavg_start": load0, "loadavg_end": loadavg(),
                               "seconds": round(time.monotonic() - t_start, 1)}
        self.results["S7"] = out

    def s7_measure(self, images, jobs, starts):
        """@jobs jobs of @starts interpreters each, stock and finderd side by side: a stock
        job and a finderd job (new pods) open together, their interpreters alternating in
        random order. The daemon is new (no plan) before the first job."""
        where = "FUSE" if images == getattr(self, "s7fuse", None) else "local"
        t_start, busy0, load0 = time.monotonic(), cpu_busy_sample(), loadavg()
        app, sockdir = self.s7app, self.s7daemon.sockdir
        python = os.path.join(app, "venv", "bin", "python")
        cwd = os.path.join(app, "cwd")
        env = self.env(FINDERD_SOCKET=os.path.join(app, "run", "finderd.sock"))
        if os.geteuid() == 0:
            env["FINDERD_DAEMON_USER"] = "nobody"
        argv = [python, "-c", CI_IMPORTS]
        image = {name: os.path.join(images, name) for name in ("stock", "finderd")}
        pods = os.path.join(self.s7dir, "pods")

        def job(name):
            return Job(image[name], app, sockdir, pods)

        # The page cache warm: one stock start and one of the finderd image with the client
        # off (it does not reach the daemon), in a job each.
        for name, e in (("stock", env), ("finderd", dict(env, FINDERD="off"))):
            j = job(name)
            try:
                j.run(argv, e, cwd)
            finally:
                j.close()
        self.s7daemon.restart()  # no plan, no view: the first job is the daemon's first sight
        rng = random.Random()
        per_job = []
        stats = self.s7daemon.stats()
        first_stats = stats
        for number in range(jobs):
            running = {"stock": job("stock"), "finderd": job("finderd")}
            row = {"wall": {"stock": [], "finderd": []}, "cpu": {"stock": [], "finderd": []},
                   "requests": []}
            try:
                for _ in range(starts):
                    order = ["stock", "finderd"]
                    rng.shuffle(order)
                    for name in order:
                        wall, cpu, _ = running[name].run(argv, env, cwd)
                        row["wall"][name].append(wall)
                        row["cpu"][name].append(cpu)
                        if name == "finderd":
                            after = self.s7daemon.stats()
                            row["requests"].append(requests_of(stats, after))
                            stats = after
            finally:
                for j in running.values():
                    j.close()
            per_job.append(row)
            if number == 0:
                first_stats = stats
            log("S7 %s: job %d: stock %.1f ms, finderd %.1f ms; first start %s round trips"
                % (where, number + 1, statistics.median(row["wall"]["stock"]) * 1e3,
                   statistics.median(row["wall"]["finderd"]) * 1e3,
                   sum(row["requests"][0].values())))
        later_daemon = {k: stats[k] - first_stats[k] for k in (
            "snapshot_requests", "lookup_requests", "directories_served", "hits", "misses",
            "crawls_sync", "crawls_uring", "mtime_checks", "mtime_recrawls", "evictions")
            if isinstance(stats.get(k), int)}
        # The daemon's own latencies over the whole measurement (both jobs kinds' starts).
        later_daemon["request_latency"] = stats.get("request_latency")
        later_daemon["refresh_latency"] = stats.get("refresh_latency")
        # Compiled files served from memory, and which filesystems counted as slow.
        plans, first_plans = stats.get("plans") or {}, first_stats.get("plans") or {}
        for key in ("cached_files_served", "cached_bytes_served", "compiled_reads_sync",
                    "compiled_reads_uring", "compiled_reads_changed", "deadline_replies"):
            if isinstance(plans.get(key), int):
                later_daemon[key] = plans[key] - first_plans.get(key, 0)
        later_daemon["slow_devices"] = plans.get("slow_devices")
        later_daemon["filesystems"] = stats.get("filesystems")

        # Did the client stay served? A later job's first and second start with FINDERD_DEBUG=1
        # (the client's normal deadline), then the same under strace (deadline lifted) for
        # the lookups; stock and its `-S -c pass` in a stock job.
        fallback, counts, traced_requests = {}, {}, {}
        j = job("finderd")
        try:
            for label in ("first_start", "second_start"):
                _, _, text = j.run(argv, dict(env, FINDERD_DEBUG="1"), cwd, stderr=True)
                said = [line for line in text.splitlines()
                        if line.startswith("finderd:") and "fell back" in line]
                fallback[label] = said[0][len("finderd: "):] if said else None
        finally:
            j.close()
        j = job("finderd")
        try:
            traced = under_ptrace((argv, env, cwd))
            for label in ("finderd_first_start", "finderd_second_start"):
                before = self.s7daemon.stats()
                counts[label] = j.strace_counts(*traced)
                traced_requests[label] = requests_of(before, self.s7daemon.stats())
        finally:
            j.close()
        j = job("stock")
        try:
            presite = j.strace_counts([python, "-S", "-c", "pass"], env, cwd)
            counts["stock"] = j.strace_counts(argv, env, cwd)
        finally:
            j.close()
        return self.s7_assemble(where, per_job, counts, presite, fallback, traced_requests,
                                later_daemon, t_start, busy0, load0)

    def s7_assemble(self, where, per_job, counts, presite, fallback, traced_requests,
                    later_daemon, t_start, busy0, load0):
        def pooled(rows, kind, name):
            return [x for r in rows for x in r[kind][name]]

        def compare(rows, label):
            stock, fd = pooled(rows, "wall", "stock"), pooled(rows, "wall", "finderd")
            cs, cf = pooled(rows, "cpu", "stock"), pooled(rows, "cpu", "finderd")
            ratio, lo, hi = harness.ratio_interval(fd, stock)
            pr, plo, phi = harness.paired_ratio_interval(fd, stock)
            trips = [sum(r.values()) for row in rows for r in row["requests"]]
            return {"what": label, "starts": len(stock),
                    "stock": {"wall": summarize(stock), "cpu": summarize(cs)},
                    "finderd": {"wall": summarize(fd), "cpu": summarize(cf)},
                    "wall_ratio": round(ratio, 4), "wall_ratio_ci95": [round(lo, 4), round(hi, 4)],
                    "paired": round(pr, 4), "paired_ci95": [round(plo, 4), round(phi, 4)],
                    "cpu_ratio": round(statistics.median(cf) / statistics.median(cs), 4),
                    "round_trips_mean": round(statistics.mean(trips), 3),
                    "round_trips_max": max(trips)}

        first, later = per_job[:1], per_job[1:]
        first_starts = [{"wall": {n: r["wall"][n][:1] for n in ("stock", "finderd")},
                         "cpu": {n: r["cpu"][n][:1] for n in ("stock", "finderd")},
                         "requests": r["requests"][:1]} for r in later]
        rest = [{"wall": {n: r["wall"][n][1:] for n in ("stock", "finderd")},
                 "cpu": {n: r["cpu"][n][1:] for n in ("stock", "finderd")},
                 "requests": r["requests"][1:]} for r in later]
        goal = S7_GOALS["fuse" if where == "FUSE" else "local"]
        post = {name: c.minus(presite).lookups for name, c in counts.items()}
        out = {
            "where": where,
            "first_job": compare(first, "the first job (a new daemon: no plan, no view)"),
            "later_jobs": compare(later, "every start of the later jobs"),
            "later_first_starts": compare(first_starts, "the first start of each later job"),
            "later_other_starts": compare(rest, "the other starts of the later jobs"),
            "first_start_round_trips": [r["requests"][0] for r in later],
            "first_job_round_trips": per_job[0]["requests"],
            "per_job": [{"stock_median_ms": round(statistics.median(r["wall"]["stock"]) * 1e3, 3),
                         "finderd_median_ms": round(statistics.median(r["wall"]["finderd"]) * 1e3,
                                                    3),
                         "round_trips": [sum(x.values()) for x in r["requests"]]}
                        for r in per_job],
            "counts": {name: c.as_dict() for name, c in counts.items()},
            "presite": presite.as_dict(),
            "post_site_lookups": post,
            "traced_round_trips": traced_requests,
            "fallback": fallback,
            "daemon_later_jobs": later_daemon,
            "goal_wall_ratio": goal,
            "machine_load": {"loadavg_start": load0, "loadavg_end": loadavg(),
                             "cpu_busy_fraction": busy_fraction(busy0, cpu_busy_sample()),
                             "seconds": round(time.monotonic() - t_start, 1)},
        }
        lj, fs = out["later_jobs"], out["later_first_starts"]
        log("S7 %s: later jobs stock %.1f ms, finderd %.1f ms, ratio %.3f; first starts ratio "
            "%.3f, round trips %s; post-site lookups %d -> %d" % (
                where, lj["stock"]["wall"]["median_ms"], lj["finderd"]["wall"]["median_ms"],
                lj["wall_ratio"], fs["wall_ratio"],
                [sum(r.values()) for r in out["first_start_round_trips"]],
                post["stock"], post["finderd_first_start"]))
        return out

    # ---- S6

    def engines(self):
        """The daemon's refresh engines and how to select each (from `serve --help`)."""
        help_text = sh([self.args.finderd, "serve", "--help"], capture_output=True,
                       text=True).stdout
        return parse_engines(help_text)

    def s6(self):
        log("S6: the daemon alone")
        t_start, load0 = time.monotonic(), loadavg()
        out = {"id": "S6", "title": "the daemon alone", "mode": "quick" if self.quick else "full",
               "measured": self.meta["date"], "commit": self.meta["commit"], "rpc": [],
               "crawl": {}, "goals": S6_GOALS}
        seconds = "1" if self.quick else "3"
        stdlib = sh([self.python, "-c", "import json, os; print(os.path.dirname(json.__file__))"],
                    capture_output=True, text=True).stdout.strip()
        s2_path = sh([self.venv["stock"], "-c", "import sys, json; print(json.dumps(sys.path[1:]))"],
                     capture_output=True, text=True, cwd=self.cwd).stdout
        self.daemon.restart()
        for mode, clients, paths in [("lookup", 1, [stdlib]), ("lookup", 2, [stdlib]),
                                     ("lookup", 16, [stdlib]),
                                     ("snapshot", 1, json.loads(s2_path)),
                                     ("connect-snapshot", 1, json.loads(s2_path))]:
            argv = [self.args.loadgen, mode, "--socket", self.daemon.socket, "--clients",
                    str(clients), "--seconds", seconds]
            for p in paths:
                argv += ["--path", p]
            row = json.loads(sh(argv, capture_output=True, text=True).stdout)
            row["what"] = {"lookup": "Lookup of one directory (%s), persistent connection" % stdlib,
                           "snapshot": "Snapshot of S2's sys.path, persistent connection",
                           "connect-snapshot": "connect + Snapshot of S2's sys.path + close "
                                               "(one interpreter start-up's cost)"}[mode]
            out["rpc"].append(row)
            log("S6 %s x%d: %.0f req/s, p50 %.1f us, p99 %.1f us"
                % (mode, clients, row["rps"], row["p50_us"], row["p99_us"]))
        out["floor"] = self.s6_floor(seconds)
        if self.args.s6_steps:
            out["steps"] = self.s6_steps(stdlib, json.loads(s2_path))
        # Cold crawl: a new daemon per engine and repetition, one Lookup of all 1000 directories.
        tree = os.path.join(self.work, "tree100k")
        dirs = make_tree(tree)
        listing = os.path.join(self.rundir, "tree100k.list")
        write(listing, "\n".join(dirs) + "\n")
        engines, note = self.engines()
        out["crawl"] = {"tree": "%d directories x %d files" % (TREE_DIRS, TREE_FILES),
                        "page_cache": "dropped before each crawl" if self.args.drop_caches
                        else "hot (the daemon is cold: a new process before each crawl)",
                        "note": note, "engines": {}}
        reps = 1 if self.quick else 3
        for engine, flags in engines.items():
            samples = []
            for _ in range(reps):
                self.daemon.restart(flags)
                base = self.daemon.stats()
                rss0 = self.daemon.rss_bytes()
                if self.args.drop_caches:
                    sh(["sync"])
                    write("/proc/sys/vm/drop_caches", "3\n")
                row = json.loads(sh([self.args.loadgen, "crawl", "--socket", self.daemon.socket,
                                     "--list", listing], capture_output=True, text=True).stdout)
                st = self.daemon.stats()
                rss1 = self.daemon.rss_bytes()
                entries = st["entries"] - base["entries"]
                row.update({"rss_before": rss0, "rss_after": rss1, "indexed_entries": entries,
                            "rss_bytes_per_entry": round((rss1 - rss0) / entries, 1) if entries else None,
                            "index_bytes_per_entry": round((st["index_bytes"] - base["index_bytes"])
                                                           / entries, 1) if entries else None,
                            "crawls_sync": st.get("crawls_sync"),
                            "crawls_uring": st.get("crawls_uring"),
                            "refresh_p50_us": st.get("refresh_latency", {}).get("p50_us"),
                            "refresh_p99_us": st.get("refresh_latency", {}).get("p99_us")})
                samples.append(row)
            med = lambda key: statistics.median(s[key] for s in samples if s[key] is not None)  # noqa
            out["crawl"]["engines"][engine] = {
                "samples": samples, "seconds_median": round(med("seconds"), 4),
                "rss_bytes_per_entry_median": med("rss_bytes_per_entry"),
                "index_bytes_per_entry_median": med("index_bytes_per_entry")}
            log("S6 crawl (%s): %.3f s, %s B RSS/entry" % (
                engine, med("seconds"), med("rss_bytes_per_entry")))
        self.daemon.restart([])
        out["machine_load"] = {"loadavg_start": load0, "loadavg_end": loadavg(),
                               "seconds": round(time.monotonic() - t_start, 1)}
        self.results["S6"] = out

    def s6_floor(self, seconds):
        """The raw Unix-socket floor of S6's exchanges, measured beside them."""
        rows = []
        # "poll": the client waits as libfinderd does while its replies come
        # quickly (client-c/src/spin.h): the floor of the one-client rows.
        for what, clients, connect, wait in [("lookup", 1, False, "block"),
                                             ("lookup", 1, False, "poll"),
                                             ("lookup", 16, False, "block"),
                                             ("connect-snapshot", 1, True, "block"),
                                             ("connect-snapshot", 1, True, "poll")]:
            request, reply = S6_FLOOR_BYTES[what]
            argv = [self.args.loadgen, "floor", "--clients", str(clients), "--seconds", seconds,
                    "--request-bytes", str(request), "--reply-bytes", str(reply)]
            argv += (["--connect"] if connect else []) + (["--poll"] if wait == "poll" else [])
            row = json.loads(sh(argv, capture_output=True, text=True).stdout)
            row.update({"like": what, "request_bytes": request, "reply_bytes": reply,
                        "connect": connect, "wait": wait})
            rows.append(row)
            log("S6 floor %s x%d (client waits: %s): %.0f req/s, p50 %.1f us, p99 %.1f us"
                % (what, clients, wait, row["rps"], row["p50_us"], row["p99_us"]))
        return rows

    def s6_steps(self, stdlib, s2_path):
        """--s6-steps LABEL=BINARY[+VAR=VALUE...],...: daemon builds (and the load
        generator's environment: FINDERD_NO_SPIN=1 for a client that never polls)
        compared in rounds, each round every build in a random order and the floor
        beside them; medians over the rounds (issue 16: where the time goes)."""
        steps = []
        for item in self.args.s6_steps.split(","):
            label, _, rest = item.partition("=")
            binary, *assignments = rest.split("+")
            env = dict(a.split("=", 1) for a in assignments)
            waits = "block" if env.get("FINDERD_NO_SPIN") else "poll"
            steps.append({"label": label, "binary": os.path.abspath(binary), "env": env,
                          "client_waits": waits, "rounds": []})
        floor = []
        seconds = "1" if self.quick else "2"
        calls = [("lookup", 1, [stdlib]), ("lookup", 16, [stdlib]),
                 ("connect-snapshot", 1, s2_path)]
        for _ in range(S6_STEP_ROUNDS["quick" if self.quick else "full"]):
            order = list(range(len(steps) + 1))
            random.shuffle(order)
            for i in order:
                if i == len(steps):
                    floor.append(self.s6_floor(seconds))
                    continue
                step = steps[i]
                daemon = Daemon(step["binary"], os.path.join(self.rundir, "step%d" % i))
                os.makedirs(daemon.workdir, exist_ok=True)
                daemon.start()
                try:
                    rows = []
                    for mode, clients, paths in calls:
                        argv = [self.args.loadgen, mode, "--socket", daemon.socket, "--clients",
                                str(clients), "--seconds", seconds]
                        for p in paths:
                            argv += ["--path", p]
                        rows.append(json.loads(sh(argv, capture_output=True, text=True,
                                                  env=dict(os.environ, **step["env"])).stdout))
                finally:
                    daemon.stop()
                step["rounds"].append({"load": loadavg()[0], "rows": rows})
        med = statistics.median
        for step in steps:
            rounds = step.pop("rounds")
            step["loadavg"] = [r["load"] for r in rounds]
            step["median"] = [{key: med(r["rows"][k][key] for r in rounds)
                               for key in ("rps", "p50_us", "p90_us", "p99_us")}
                              for k in range(len(calls))]
            log("S6 step %s: lookup x1 p50 %.1f p99 %.1f us; x16 %.0f req/s; connect+Snapshot "
                "p50 %.1f us" % (step["label"], step["median"][0]["p50_us"],
                                 step["median"][0]["p99_us"], step["median"][1]["rps"],
                                 step["median"][2]["p50_us"]))
        def floor_median(like, clients, wait):
            rows = [next(r for r in f if (r["like"], r["clients"], r["wait"]) ==
                         (like, clients, wait)) for f in floor]
            return {key: med(r[key] for r in rows) for key in ("rps", "p50_us", "p90_us",
                                                               "p99_us")}

        floors = {wait: [floor_median(mode, clients, wait if clients == 1 else "block")
                         for mode, clients, _ in calls] for wait in ("block", "poll")}
        return {"calls": ["%s x%d" % (mode, clients) for mode, clients, _ in calls],
                "rounds": len(floor), "builds": steps, "floor": floors["block"],
                "floor_poll": floors["poll"]}

    # ---- driver

    def prefetch_sweep(self):
        """First runs (no learned plan) of the CI set at each prefetch budget.

        The daemon learns no plans (--max-plans 0), so every start is a first
        run as far as plans go, with a warm index: what is left is the
        snapshot's guess (package directories of the sys.path entries, up to
        the client's FINDERD_PREFETCH_KB) against the follow-up Lookups it saves.
        """
        log("prefetch: first-run budget sweep on the CI set")
        t_start, busy0, load0 = time.monotonic(), cpu_busy_sample(), loadavg()
        self.daemon.restart(self.daemon.extra_args + ["--max-plans", "0"])
        try:
            v = self.venv
            env = self.env(FINDERD_SOCKET=self.daemon.socket)
            variants = {"stock": ([v["ci-stock"], "-c", CI_IMPORTS], env, self.cwd)}
            for kb in PREFETCH_BUDGETS_KB:
                variants["%d KiB" % kb] = ([v["ci-finderd"], "-c", CI_IMPORTS],
                                          dict(env, FINDERD_PREFETCH_KB=str(kb)), self.cwd)
            trips = {}
            for name, variant in variants.items():
                harness.timed_run(*variant)  # the index warm for every budget
                if name != "stock":
                    before = self.daemon.stats()
                    harness.timed_run(*variant)
                    trips[name] = requests_of(before, self.daemon.stats())
            times = harness.interleaved_runs(
                variants, PREFETCH_RUNS[1] if self.quick else PREFETCH_RUNS[0], warmup=1)
        finally:
            self.daemon.restart()
        stock = statistics.median(times["wall"]["stock"])
        rows = []
        for kb in PREFETCH_BUDGETS_KB:
            name = "%d KiB" % kb
            wall = statistics.median(times["wall"][name])
            rows.append({"budget_kib": kb, "wall_median_ms": round(wall * 1e3, 3),
                         "wall_ratio": round(wall / stock, 4),
                         "cpu_median_ms": round(statistics.median(times["cpu"][name]) * 1e3, 3),
                         "lookup_round_trips": trips[name]["lookup"]})
        self.results["prefetch"] = {
            "id": "prefetch", "title": "first-run prefetch budget (CI set, no plan)",
            "measured": self.meta["date"], "commit": self.meta["commit"],
            "runs": len(times["wall"]["stock"]), "stock_wall_median_ms": round(stock * 1e3, 3),
            "rows": rows,
            "machine_load": {"loadavg_start": load0, "loadavg_end": loadavg(),
                             "cpu_busy_fraction": busy_fraction(busy0, cpu_busy_sample()),
                             "seconds": round(time.monotonic() - t_start, 1)},
        }

    def run(self):
        self.selected = self.args.only
        self.meta = machine_info(self.python)
        self.meta["loadavg_start"] = loadavg()
        self.meta["mode"] = "quick" if self.quick else "full"
        started = time.monotonic()
        try:
            self.setup()
            sel = self.selected
            v = self.venv
            if "S1" in sel:
                self.interpreter_scenario("S1", "`python -c pass` in a clean venv", "python -c pass",
                                          v["stock"], v["finderd"], ["-c", "pass"], self.cwd,
                                          launcher_py=v["launcher"])
            if "absent" in sel:
                self.absent_scenario()
            if "S2" in sel:
                self.interpreter_scenario("S2", "stdlib set", "python -c '%s'" % STDLIB_SET,
                                          v["stock"], v["finderd"], ["-c", STDLIB_SET], self.cwd,
                                          launcher_py=v["launcher"])
            if "S3" in sel:
                self.interpreter_scenario("S3", "CI set: import the seven packages",
                                          "python -c '%s'" % CI_IMPORTS, v["ci-stock"],
                                          v["ci-finderd"], ["-c", CI_IMPORTS], self.cwd,
                                          launcher_py=v["ci-launcher"])
            if "S3p" in sel:
                self.interpreter_scenario("S3p", "CI set: pytest --collect-only on a 20-file suite",
                                          "python " + " ".join(PYTEST_ARGV), v["ci-stock"],
                                          v["ci-finderd"], PYTEST_ARGV,
                                          os.path.join(self.root, "suite"),
                                          launcher_py=v["ci-launcher"])
            if "S4" in sel:
                code = longpath_imports()
                self.interpreter_scenario("S4", "200 PYTHONPATH entries, 50 imports",
                                          "PYTHONPATH=<200 entries> python -c 'import "
                                          "dist_e003.core, dist_e007.core, ... (50)'",
                                          v["stock"], v["finderd"], ["-c", code], self.cwd,
                                          extra_env={"PYTHONPATH": ":".join(self.longpath)},
                                          launcher_py=v["launcher"])
            fuse_wanted = [s for s in ("S5", "S5p") if s in sel]
            if fuse_wanted:
                reason = self.mount()
                if reason:
                    log("S5 skipped: %s" % reason)
                    for sid in fuse_wanted:
                        self.results[sid] = {"id": sid, "skipped": reason,
                                             "measured": self.meta["date"],
                                             "commit": self.meta["commit"]}
                else:
                    try:
                        if "S5" in sel:
                            self.interpreter_scenario(
                                "S5", "S3 imports, venv on FUSE (bindfs, caches off)",
                                "python -c '%s' (venv through bindfs)" % CI_IMPORTS,
                                v["ci-stock"], v["ci-finderd"], ["-c", CI_IMPORTS], self.cwd,
                                prefix=self.fuse, launcher_py=v["ci-launcher"])
                        if "S5p" in sel:
                            self.interpreter_scenario(
                                "S5p", "S3 pytest --collect-only, venv and suite on FUSE",
                                "python " + " ".join(PYTEST_ARGV) + " (through bindfs)",
                                v["ci-stock"], v["ci-finderd"], PYTEST_ARGV,
                                os.path.join(self.root, "suite"), prefix=self.fuse,
                                launcher_py=v["ci-launcher"])
                    finally:
                        self.unmount()
            if "prefetch" in sel:
                self.prefetch_sweep()
            if "S6" in sel:
                self.s6()
            if "S7" in sel:
                self.s7()
        finally:
            if getattr(self, "daemon", None):
                self.daemon.stop()
            if getattr(self, "s7daemon", None):
                self.s7daemon.stop()
            self.s7_unmount()
            self.unmount()
        self.meta["loadavg_end"] = loadavg()
        self.meta["seconds"] = round(time.monotonic() - started, 1)
        return self.results


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few runs: a check, not a result")
    parser.add_argument("--only", default="", help="comma-separated ids: S1,S2,S3,S4,S5,S6,S7,absent,"
                        "prefetch (S3 includes S3p, S5 includes S5p)")
    parser.add_argument("--runs", type=int, default=0, help="timed runs per variant (overrides; "
                        "S7: interpreters per job)")
    parser.add_argument("--jobs", type=int, default=0, help="S7: jobs (new pods) per variant")
    parser.add_argument("--fuse-jobs", type=int, default=0,
                        help="S7 on FUSE: jobs (default: --jobs; a FUSE job takes ~4x longer)")
    parser.add_argument("--s7", action="store_true",
                        help="add S7 (about 6 minutes) to the run; --only S7 runs it alone")
    parser.add_argument("--python", required=True, help="base interpreter for the venvs")
    parser.add_argument("--finderd", required=True, help="the release daemon binary")
    parser.add_argument("--loadgen", required=True, help="bench/loadgen.c, built")
    parser.add_argument("--drop-caches", action="store_true",
                        help="S6: drop the page cache before each crawl (root; disturbs others)")
    parser.add_argument("--s6-steps", default="",
                        help="S6: LABEL=BINARY[+VAR=VALUE...],... daemon builds (and the load "
                             "generator's environment) compared in interleaved rounds with the "
                             "raw Unix-socket floor (RESULTS.md: where the time goes)")
    parser.add_argument("--out", default=HERE, help="where results.json, RESULTS.md, plots/ go")
    args = parser.parse_args()
    everything = ["S1", "absent", "S2", "S3", "S3p", "S4", "S5", "S5p", "prefetch", "S6", "S7"]
    if args.only:
        wanted = set()
        for item in args.only.split(","):
            item = item.strip()
            matched = [s for s in everything if s.lower() == item.lower()
                       or (s.lower().startswith(item.lower()) and s[-1] == "p"
                           and s[:-1].lower() == item.lower())]
            if not matched:
                parser.error("unknown scenario %r (known: %s)" % (item, ", ".join(everything)))
            wanted.update(matched)
        args.only = [s for s in everything if s in wanted]
    else:
        # S7 (new pods, 400 interpreters per variant, FUSE too) takes longer than the
        # rest of a full run allows: only on request.
        args.only = [s for s in everything if s != "S7" or args.s7]
    bench = Bench(args)

    def terminated(signum, _frame):  # unmount and stop the daemon on SIGTERM/SIGHUP too
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    signal.signal(signal.SIGHUP, terminated)
    results = bench.run()
    # Keep the raw results even if the report fails: a full run takes a while.
    with open(os.path.join(bench.work, "last-run.json"), "w") as f:
        json.dump({"meta": bench.meta, "scenarios": results}, f, indent=1)
    report.write_all(args.out, bench.meta, results, os.path.join(HERE))
    log("done in %.0f s: %s, %s, %s" % (bench.meta["seconds"],
                                         os.path.join(args.out, "RESULTS.md"),
                                         os.path.join(args.out, "results.json"),
                                         os.path.join(args.out, "plots")))


if __name__ == "__main__":
    main()

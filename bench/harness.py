"""Measuring an interpreter start-up: syscall counts from strace, wall time.

Used by scripts/demo and bench/run. Everything is measured side by side in
one run: variants are interleaved run by run so that drift in the machine's
state hits them alike, and results are reported as ratios.
"""

import math
import os
import random
import re
import statistics
import subprocess
import tempfile
import time

# strace line: optional pid, syscall name, arguments, result.
_CALL = re.compile(r"^(?:\[pid\s+\d+\]\s+|\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+|\?)(?:\s+(\w+))?")
STAT_CALLS = {"stat", "lstat", "newfstatat", "fstatat64", "statx", "stat64", "lstat64",
              "access", "faccessat", "faccessat2", "readlink", "readlinkat"}


class Counts(dict):
    """Syscall counts of one run, by kind."""

    KINDS = ("path_stats", "fd_stats", "getdents64", "openat", "openat_dir", "enoent", "total")

    def __init__(self):
        super().__init__((k, 0) for k in self.KINDS)

    @property
    def lookups(self):
        """What a finder's lookups cost: stats of paths, and directory reads."""
        return self["path_stats"] + self["getdents64"]

    def minus(self, other):
        out = Counts()
        for k in self.KINDS:
            out[k] = self[k] - other[k]
        return out


def classify(line, counts):
    m = _CALL.match(line)
    if not m:
        return
    name, args, result, errname = m.groups()
    counts["total"] += 1
    if errname == "ENOENT":
        counts["enoent"] += 1
    if name == "fstat" or (name in STAT_CALLS and "AT_EMPTY_PATH" in args and ', "",' in args):
        counts["fd_stats"] += 1
    elif name in STAT_CALLS:
        counts["path_stats"] += 1
    elif name == "getdents64":
        counts["getdents64"] += 1
    elif name in ("openat", "open"):
        counts["openat"] += 1
        if "O_DIRECTORY" in args:
            counts["openat_dir"] += 1


def strace_counts(argv, env, cwd=None):
    """Run @argv under `strace -f` and count its syscalls by kind."""
    with tempfile.NamedTemporaryFile(prefix="finderd-strace-", suffix=".log") as log:
        proc = subprocess.run(["strace", "-f", "-qq", "-o", log.name, *argv], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError("%s failed under strace: %s" % (argv, proc.stderr[-2000:]))
        counts = Counts()
        with open(log.name, errors="replace") as f:
            for line in f:
                classify(line, counts)
    return counts


def wall_time(argv, env, cwd=None):
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError("%s failed: %s" % (argv, proc.stderr[-2000:].decode(errors="replace")))
    return elapsed


def interleaved_times(variants, runs, warmup=2):
    """Wall times per variant name; each round runs every variant once, in random order."""
    times = {name: [] for name in variants}
    for i in range(warmup + runs):
        order = list(variants.items())
        random.shuffle(order)
        for name, (argv, env, cwd) in order:
            t = wall_time(argv, env, cwd)
            if i >= warmup:
                times[name].append(t)
    return times


def ratio_interval(numerator, denominator, resamples=2000, seed=1):
    """Median ratio and a 95% bootstrap interval of median(num)/median(den)."""
    rng = random.Random(seed)
    point = statistics.median(numerator) / statistics.median(denominator)
    samples = []
    for _ in range(resamples):
        n = [rng.choice(numerator) for _ in numerator]
        d = [rng.choice(denominator) for _ in denominator]
        samples.append(statistics.median(n) / statistics.median(d))
    samples.sort()
    lo = samples[int(0.025 * resamples)]
    hi = samples[min(resamples - 1, int(math.ceil(0.975 * resamples)))]
    return point, lo, hi


def spread(values):
    """Median and interquartile range, in milliseconds."""
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return statistics.median(values) * 1e3, (q[2] - q[0]) * 1e3

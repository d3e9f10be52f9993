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

# strace line: optional pid, syscall name, arguments, result (and, with -T, its time).
_PID = r"^(?:\[pid\s+(\d+)\]\s+|(\d+)\s+)?"
_RESULT = r"\s+=\s+(-?\d+|-?0x[0-9a-f]+|\?)(?:\s+([A-Z][A-Z0-9_]*))?(.*)$"
_CALL = re.compile(_PID + r"(\w+)\((.*)\)" + _RESULT)
_ELAPSED = re.compile(r"<(\d+\.\d+)>\s*$")
# A call interrupted by another process's line (strace -f): "NAME(ARGS <unfinished ...>",
# finished later by "<... NAME resumed>ARGS) = RESULT".
_UNFINISHED = re.compile(_PID + r"(\w+)\((.*)<unfinished \.\.\.>\s*$")
_RESUMED = re.compile(_PID + r"<\.\.\. (\w+) resumed>(.*)\)" + _RESULT)
STAT_CALLS = {"stat", "lstat", "newfstatat", "fstatat64", "statx", "stat64", "lstat64",
              "access", "faccessat", "faccessat2", "readlink", "readlinkat"}


class Counts(dict):
    """Syscall counts of one run, by kind.

    path_stats: stat-family calls on a path (stat, lstat, newfstatat, statx,
    access, readlink... with a non-empty path); fd_stats: fstat and
    AT_EMPTY_PATH stats of an open descriptor; getdents64; openat (of which
    openat_dir with O_DIRECTORY); enoent: calls of any kind that failed with
    ENOENT; total: every call. `seconds` holds, when the log had `strace -T`
    times, the time per kind (inflated by ptrace: compare kinds, not runs).
    """

    KINDS = ("path_stats", "fd_stats", "getdents64", "openat", "openat_dir", "open_failed",
             "enoent", "total")

    def __init__(self):
        super().__init__((k, 0) for k in self.KINDS)
        self.seconds = {}
        self.lookup_calls = []  # (call, path) of each whole-run lookup, in order

    @property
    def lookups(self):
        """What a finder's lookups cost: stats of paths, and directory reads."""
        return self["path_stats"] + self["getdents64"]

    @property
    def whole_run_lookups(self):
        """Every lookup of a run, the dynamic loader's included: path stats,
        directory reads, and opens that failed (a search trying a place)."""
        return self["path_stats"] + self["getdents64"] + self["open_failed"]

    def minus(self, other):
        out = Counts()
        for k in self.KINDS:
            out[k] = self[k] - other[k]
        return out

    def as_dict(self):
        out = dict(self)
        out["lookups"] = self.lookups
        out["whole_run_lookups"] = self.whole_run_lookups
        if self.seconds:
            out["seconds"] = {k: round(v, 6) for k, v in sorted(self.seconds.items())}
        return out


def kind_of(name, args):
    """The Counts kind of one call (None for kinds only counted in the total)."""
    if name in ("fstat", "fstat64") or (name in STAT_CALLS and "AT_EMPTY_PATH" in args
                                        and ', "",' in args):
        return "fd_stats"
    if name in STAT_CALLS:
        return "path_stats"
    if name == "getdents64":
        return "getdents64"
    if name in ("openat", "open", "openat2"):
        return "openat"
    return None


_FIRST_PATH = re.compile(r'"((?:[^"\\]|\\.)*)"')


def _count(counts, name, args, errname, tail):
    m = _ELAPSED.search(tail)
    elapsed = m.group(1) if m else None
    counts["total"] += 1
    if errname == "ENOENT":
        counts["enoent"] += 1
    kind = kind_of(name, args)
    if kind is not None:
        counts[kind] += 1
        if kind == "openat" and "O_DIRECTORY" in args:
            counts["openat_dir"] += 1
        if kind == "openat" and errname in ("ENOENT", "ENOTDIR"):
            counts["open_failed"] += 1
        if kind in ("path_stats", "getdents64") or (kind == "openat" and errname in ("ENOENT",
                                                                                      "ENOTDIR")):
            path = _FIRST_PATH.search(args)
            counts.lookup_calls.append((name, path.group(1) if path else "", errname or ""))
    if elapsed is not None:
        key = kind or "other"
        counts.seconds[key] = counts.seconds.get(key, 0.0) + float(elapsed)


def classify(line, counts, pending=None):
    """Count one line of an `strace -f` log into @counts.

    @pending (a dict, one per log) joins calls split into "<unfinished ...>"
    and "<... resumed>" halves; without it the resumed half is still counted,
    from the arguments it carries. Signal, exit and other lines are ignored.
    """
    m = _CALL.match(line)
    if m:
        _pid1, _pid2, name, args, _result, errname, tail = m.groups()
        _count(counts, name, args, errname, tail)
        return
    m = _UNFINISHED.match(line)
    if m:
        if pending is not None:
            pending[(m.group(1) or m.group(2), m.group(3))] = m.group(4)
        return
    m = _RESUMED.match(line)
    if m:
        pid1, pid2, name, rest, _result, errname, tail = m.groups()
        head = pending.pop((pid1 or pid2, name), "") if pending is not None else ""
        _count(counts, name, head + rest, errname, tail)


def parse_log(lines):
    """Counts of a whole `strace -f` log (an iterable of lines)."""
    counts = Counts()
    pending = {}
    for line in lines:
        classify(line, counts, pending)
    return counts


def strace_counts(argv, env, cwd=None, timed=False):
    """Run @argv under `strace -f` and count its syscalls by kind (-T times when @timed)."""
    with tempfile.NamedTemporaryFile(prefix="finderd-strace-", suffix=".log") as log:
        flags = ["-f", "-qq"] + (["-T"] if timed else [])
        proc = subprocess.run(["strace", *flags, "-o", log.name, *argv], env=env, cwd=cwd,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError("%s failed under strace: %s" % (argv, proc.stderr[-2000:]))
        with open(log.name, errors="replace") as f:
            counts = parse_log(f)
    return counts


def timed_run(argv, env, cwd=None):
    """Run @argv once; (wall seconds, child CPU seconds user+sys).

    Output goes to /dev/null; on failure the run is repeated with its output
    captured, for the error message.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        again = subprocess.run(argv, env=env, cwd=cwd, capture_output=True)
        raise RuntimeError("%s failed (%d): %s" % (argv, proc.returncode,
                                                   again.stderr[-2000:].decode(errors="replace")))
    return elapsed, usage.ru_utime + usage.ru_stime


def wall_time(argv, env, cwd=None):
    return timed_run(argv, env, cwd)[0]


def interleaved_times(variants, runs, warmup=2):
    """Wall times per variant name; each round runs every variant once, in random order."""
    return interleaved_runs(variants, runs, warmup)["wall"]


def interleaved_runs(variants, runs, warmup=2, seed=None):
    """Wall and CPU times per variant: {"wall": {name: [s...]}, "cpu": {...}}.

    Each round runs every variant once, in a random order, so that drift in the
    machine's state (other load, frequency, caches) hits all variants alike.
    """
    rng = random.Random(seed)
    out = {"wall": {name: [] for name in variants}, "cpu": {name: [] for name in variants}}
    for i in range(warmup + runs):
        order = list(variants.items())
        rng.shuffle(order)
        for name, (argv, env, cwd) in order:
            wall, cpu = timed_run(argv, env, cwd)
            if i >= warmup:
                out["wall"][name].append(wall)
                out["cpu"][name].append(cpu)
    return out


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


def paired_ratio_interval(numerator, denominator, resamples=2000, seed=1):
    """Median of per-round ratios num[i]/den[i] and its 95% bootstrap interval.

    For interleaved runs (round i ran both), this cancels drift between rounds.
    """
    rng = random.Random(seed)
    ratios = [n / d for n, d in zip(numerator, denominator)]
    point = statistics.median(ratios)
    samples = sorted(statistics.median([rng.choice(ratios) for _ in ratios])
                     for _ in range(resamples))
    return point, samples[int(0.025 * resamples)], samples[min(resamples - 1,
                                                               int(math.ceil(0.975 * resamples)))]


def spread(values):
    """Median and interquartile range, in milliseconds."""
    q = statistics.quantiles(values, n=4) if len(values) >= 4 else [min(values), 0, max(values)]
    return statistics.median(values) * 1e3, (q[2] - q[0]) * 1e3

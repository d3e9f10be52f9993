"""The demo's measurement: one workload, stock CPython against finderd."""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))

import harness  # noqa: E402

STDLIB_SET = "import json, asyncio, email.parser, http.client, argparse, logging, subprocess"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", required=True, help="venv interpreter with finderd installed")
    parser.add_argument("--runs", type=int, default=30, help="timed runs of each variant")
    args = parser.parse_args()

    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "XDG_RUNTIME_DIR")}
    stock_env = dict(base, FINDERD="off")
    finderd_env = dict(base)
    workload = [args.python, "-c", STDLIB_SET]

    # Warm up: the daemon indexes the directories, the interpreter writes its .pyc files.
    for env in (stock_env, finderd_env):
        harness.wall_time(workload, env)
    presite = harness.strace_counts([args.python, "-S", "-c", "pass"], stock_env)
    counts = {name: harness.strace_counts(workload, env)
              for name, env in (("stock", stock_env), ("finderd", finderd_env))}
    post = {name: c.minus(presite) for name, c in counts.items()}
    times = harness.interleaved_times({"stock": (workload, stock_env, None),
                                       "finderd": (workload, finderd_env, None)}, args.runs)

    rows = [
        ("stat-family calls on paths", "path_stats"),
        ("getdents64", "getdents64"),
        ("openat", "openat"),
        ("failed with ENOENT", "enoent"),
        ("all syscalls", "total"),
    ]
    print("\n%-34s %10s %10s" % ("whole run", "stock", "finderd"))
    for label, key in rows:
        print("%-34s %10d %10d" % (label, counts["stock"][key], counts["finderd"][key]))
    s, f = counts["stock"].whole_run_lookups, counts["finderd"].whole_run_lookups
    print("\nlookups, whole run (path stats, getdents64, failed opens; the dynamic loader's too):")
    print("  stock %d, finderd %d: finderd makes %.1f%% of stock's" % (s, f, 100.0 * f / max(s, 1)))
    s, f = post["stock"].lookups, post["finderd"].lookups
    if f >= 0:  # the launcher answers before site too: fewer than `-S -c pass` makes
        print("lookups after site (path stats + getdents64, minus `python -S -c pass`):")
        print("  stock %d, finderd %d: finderd makes %.1f%% of stock's"
              % (s, f, 100.0 * f / max(s, 1)))
    (sm, siqr), (fm, fiqr) = harness.spread(times["stock"]), harness.spread(times["finderd"])
    ratio, lo, hi = harness.ratio_interval(times["finderd"], times["stock"])
    print("\nwall time over %d interleaved runs each (median, IQR):" % args.runs)
    print("  stock %.2f ms (%.2f), finderd %.2f ms (%.2f)" % (sm, siqr, fm, fiqr))
    print("  finderd/stock = %.3f (95%% CI %.3f-%.3f): saved %.2f ms per start"
          % (ratio, lo, hi, sm - fm))


if __name__ == "__main__":
    main()

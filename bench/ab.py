"""A regression check: this tree's finderd against a baseline commit's, side by side.

    bench/ab REV [--runs N] [--out FILE]

A ratio against stock moves when stock's time moves (the page cache, the
VM's neighbours, the day), so "no regression beyond noise" is measured by
running both finderd builds in the same rounds. This builds REV's daemon
and Python client from a git worktree under build/bench/ab/, makes three
venvs of one interpreter (stock; REV's client; this tree's client), starts
both daemons warm, and times S1 (`python -c pass`), S2 (the stdlib set),
S3 (the CI set's seven packages, in three more venvs that have them) and S4
(200 PYTHONPATH entries, 50 imports) with the three variants interleaved in
random order, round by round. S5 (FUSE) is left to bench/run. It prints, and writes to bench/AB.md, the median times and
the paired ratio this tree / REV with its 95% bootstrap interval: an
interval that holds 1.0 is no change beyond noise.
"""

import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402  (its venvs, S4's tree, the daemon, machine facts)
import harness  # noqa: E402

WORK = os.path.join(bench.ROOT, "build", "bench", "ab")


def build_baseline(rev, python):
    """REV's release daemon and client wheel: (daemon path, wheel path)."""
    commit = bench.sh(["git", "-C", bench.ROOT, "rev-parse", "--short=12", rev + "^{commit}"],
                      capture_output=True, text=True).stdout.strip()
    src = os.path.join(WORK, "src-" + commit)
    if not os.path.isdir(src):
        bench.sh(["git", "-C", bench.ROOT, "worktree", "add", "--detach", src, commit],
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.log("building %s's daemon (release)" % commit)
    bench.sh(["cargo", "build", "--release", "--locked", "-p", "finderd"], cwd=src,
             stdout=subprocess.DEVNULL)
    wheels = os.path.join(WORK, "wheel-" + commit)
    shutil.rmtree(wheels, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    bench.sh([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels,
              os.path.join(src, "client-py")], env=env, stdout=subprocess.DEVNULL)
    wheel = [os.path.join(wheels, w) for w in os.listdir(wheels) if w.endswith(".whl")]
    return commit, os.path.join(src, "target", "release", "finderd"), wheel


def scenarios(longpath):
    """(id, the venvs it runs in, argv after the interpreter, extra environment)."""
    return [
        ("S1", "plain", ["-c", "pass"], {}),
        ("S2", "plain", ["-c", bench.STDLIB_SET], {}),
        ("S3", "ci", ["-c", bench.CI_IMPORTS], {}),
        ("S4", "plain", ["-c", bench.longpath_imports()], {"PYTHONPATH": ":".join(longpath)}),
    ]


def make_venvs(python, wheels, base_wheel, head_wheel):
    """{(set, variant): interpreter}: "plain" venvs, and "ci" ones with the CI set."""
    venv = {}
    for kind, requirements in (("plain", ()), ("ci", bench.CI_PACKAGES)):
        for name, local in (("stock", ()), ("base", base_wheel), ("head", head_wheel)):
            path = os.path.join(WORK, "venv-%s-%s" % (kind, name))
            venv[kind, name] = bench.make_venv(python, path, wheels, requirements,
                                               local_wheels=local)
    return venv


def measure(variants, runs):
    """{scenario: {"wall": {variant: [s]}, "cpu": ...}} for each scenario."""
    return {sid: harness.interleaved_runs(per_variant, runs, warmup=3, seed=7)
            for sid, per_variant in variants.items()}


def table(results, base, head_commit):
    rows = ["| scenario | stock ms | %s ms | %s ms | %s / %s (95%% CI) | CPU ratio |"
            % (base, head_commit, head_commit, base), "|---|---|---|---|---|---|"]
    for sid, runs in results.items():
        wall, cpu = runs["wall"], runs["cpu"]
        med = {k: harness.spread(v)[0] for k, v in wall.items()}
        point, lo, hi = harness.paired_ratio_interval(wall["head"], wall["base"])
        cpu_point, _, _ = harness.paired_ratio_interval(cpu["head"], cpu["base"])
        rows.append("| %s | %.2f | %.2f | %.2f | %.3f (%.3f-%.3f)%s | %.3f |"
                    % (sid, med["stock"], med["base"], med["head"], point, lo, hi,
                       "" if lo <= 1.0 <= hi else (" slower" if lo > 1.0 else " faster"),
                       cpu_point))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev", help="the baseline commit")
    parser.add_argument("--runs", type=int, default=40, help="timed rounds per scenario")
    parser.add_argument("--out", default=os.path.join(HERE, "AB.md"))
    parser.add_argument("--python", required=True, help="base interpreter for the venvs")
    args = parser.parse_args()
    os.makedirs(WORK, exist_ok=True)
    base, base_daemon, base_wheel = build_baseline(args.rev, args.python)
    head_wheel = bench.build_client_wheel(args.python, os.path.join(WORK, "wheel-head"))
    wheels = os.path.join(bench.ROOT, "build", "bench", "wheels")
    bench.fetch_wheels(args.python, wheels)
    venv = make_venvs(args.python, wheels, base_wheel, head_wheel)
    longpath = bench.make_longpath(os.path.join(WORK, "longpath"))
    daemons = {"base": bench.Daemon(base_daemon, os.path.join(WORK, "run-base")),
               "head": bench.Daemon(os.path.join(bench.ROOT, "target", "release", "finderd"),
                                    os.path.join(WORK, "run-head"))}
    clean = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
             "LANG": "C.UTF-8"}
    variants = {}
    for sid, kind, argv, extra in scenarios(longpath):
        variants[sid] = {
            name: ([venv[kind, name], *argv],
                   dict(clean, **extra, **({"FINDERD_SOCKET": daemons[name].socket}
                                           if name in daemons else {})), WORK)
            for name in ("stock", "base", "head")}
    facts = bench.machine_info(args.python)
    load_start = bench.loadavg()
    for d in daemons.values():
        os.makedirs(d.workdir, exist_ok=True)
        d.start()
    try:
        bench.log("S1-S4: stock, %s and this tree interleaved, %d rounds" % (base, args.runs))
        results = measure(variants, args.runs)
    finally:
        for d in daemons.values():
            d.stop()
    lines = ["# finderd against a baseline commit", "",
             "Generated by `bench/ab %s` (bench/ab.py); rerun it rather than edit." % args.rev,
             "", "| | |", "|---|---|",
             "| date | %s |" % facts["date"], "| this tree | `%s` |" % facts["commit"],
             "| baseline | `%s` |" % base,
             "| machine | %s, %d cores, %s GiB |" % (facts["cpu"], facts["cores"],
                                                    facts["memory_gib"]),
             "| kernel | %s |" % facts["kernel"], "| Python | %s |" % facts["python"],
             "| rounds | %d per scenario, the three variants in random order each round |"
             % args.runs,
             "| load average at start / end | %s / %s |"
             % (" ".join(map(str, load_start)), " ".join(map(str, bench.loadavg()))),
             "", *table(results, base, facts["commit"]), "",
             "Times are medians of wall time. The ratio is the median of the per-round ratios "
             "(this tree / baseline), which cancels drift between rounds; an interval that "
             "holds 1.000 is no change beyond noise. Both daemons are warm and both clients "
             "are the `.pth` client of their commit.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

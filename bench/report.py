"""bench/results.json, bench/RESULTS.md and bench/plots/ from a benchmark run.

Scenarios measured in this run replace those of the same id in an existing
results.json; the others are kept (each carries its own date, commit and
mode), so `bench/run --only S2` refreshes S2 alone.
"""

import json
import os

INTERPRETER = ["S1", "absent", "S2", "S3", "S3p", "S4", "S5", "S5p"]
ORDER = INTERPRETER + ["prefetch", "S6", "S7"]
KIND_LABELS = [("path_stats", "path stats"), ("fd_stats", "fd stats"), ("openat", "openat"),
               ("getdents64", "getdents64"), ("open_failed", "failed opens"),
               ("whole_run_lookups", "lookups: path stats + getdents64 + failed opens"),
               ("enoent", "ENOENT"), ("total", "total")]

# What would close a gap, per scenario (the design's measured bound and the issue that
# brings it); the measured part of each explanation is computed from the run.
CLOSERS = {
    "S1": "nothing after `site` to resolve, so every microsecond is the client's own start-up: "
          "the `.pth` line, importing the `finderd` package and installing the lazy `posix` "
          "proxy. A `-c pass` run should pay only the `.pth` line (docs/design.md: 1.022x): do not "
          "import the package from the `.pth` until an import reaches the finder, or make the "
          "`.pth` install a C-level hook.",
    "S2": "each package the stdlib set enters (`email/`, `http/`, `asyncio/`, `json/`, "
          "`logging/`) that the snapshot did not prefetch costs a follow-up Lookup round trip "
          "(~60 us), more than the ~1-5 us stats it saves on a hot disk. Learned plans (issue 9) "
          "put them all in the first answer; the hot-disk floor is the bound (docs/design.md: "
          "0.965-0.99 of stock).",
    "S3": "as S2: follow-up Lookups for every package directory entered, plus the client's "
          "start-up; on a hot local disk lookups are 1-3.5% of the time, so the goal needs "
          "learned plans (issue 9) and a client that costs nothing beyond one round trip.",
    "S3p": "as S3 (pytest also imports its plugins and the suite's modules, each package "
           "directory a follow-up Lookup without a plan). Some lookups are not the import "
           "system's: pytest's collection stats and lists the suite itself (`os.stat`, "
           "`os.scandir`), which no import finder answers.",
    "S4": "stock's cost is entries x imports: every top-level import asks each of the 200 "
          "FileFinders in turn. finderd answers each of those stats from memory but the Python "
          "loop over path entries remains; one name index over all served entries (issue 9, "
          "docs/design.md: 0.61 of stock in the bound against 0.69 per entry) removes it.",
    "S5": "on FUSE without caches every lookup and every open costs a round trip to the bindfs "
          "process; removing lookups alone stops at about 0.53 of stock (docs/design.md), the rest is "
          "opening and reading `.pyc` files: serving `.pyc` bytes from the daemon (issue 9) "
          "reaches 0.29 in the bound.",
    "S5p": "as S5, and pytest's own stats and listings of the suite (not imports) still go "
           "through FUSE.",
    "absent": "the no-daemon path should cost what a one-line `.pth` with one `stat` costs; "
              "anything more is work done before the socket check (e.g. imports in the `.pth`).",
}


def _load(path):
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) and "scenarios" in data else None
    except (OSError, ValueError):
        return None


def write_all(outdir, meta, results, here):
    os.makedirs(outdir, exist_ok=True)
    json_path = os.path.join(outdir, "results.json")
    old = _load(json_path)
    scenarios = dict(old["scenarios"]) if old else {}
    scenarios.update(results)
    ordered = {k: scenarios[k] for k in ORDER if k in scenarios}
    data = {"meta": meta, "scenarios": ordered}
    with open(json_path, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    plots = write_plots(os.path.join(outdir, "plots"), ordered)
    with open(os.path.join(outdir, "RESULTS.md"), "w") as f:
        f.write(render(meta, ordered, plots, here))


# --------------------------------------------------------------------------- verdicts


def verdict(value, goal, larger_is_better=False):
    if value is None or goal is None:
        return "-"
    if larger_is_better:
        return "met" if value >= goal else "not met by %s" % _num(goal - value)
    return "met" if value <= goal else "not met by %s" % _num(value - goal)


def _num(x):
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 1:
        return "%.2f" % x
    return "%.3f" % x


def _pct(x):
    return "-" if x is None else "%.1f%%" % (100.0 * x)


def _ms(v):
    return "%.2f" % v if v < 100 else "%.1f" % v


# --------------------------------------------------------------------------- markdown


def render(meta, sc, plots, here):
    out = []
    w = out.append
    w("# finderd benchmark results\n")
    w("Generated by `bench/run%s` (bench/bench.py); do not edit by hand: rerun it. "
      "Method and scenario definitions: [README.md](README.md). Raw numbers: "
      "[results.json](results.json).\n" % (" --quick" if meta.get("mode") == "quick" else ""))
    w("| | |\n|---|---|")
    w("| date | %s |" % meta["date"])
    w("| commit | `%s` |" % meta["commit"])
    w("| machine | %s, %s cores, %s GiB |" % (meta["cpu"], meta["cores"], meta["memory_gib"]))
    w("| kernel | %s |" % meta["kernel"])
    w("| Python | %s (`%s`) |" % (meta["python"], meta["python_path"]))
    w("| mode | %s (%s s) |" % (meta["mode"], meta.get("seconds", "?")))
    w("| load average at start / end | %s / %s |\n" % (
        " ".join("%.2f" % x for x in meta["loadavg_start"]),
        " ".join("%.2f" % x for x in meta.get("loadavg_end", []))))
    dates = {s.get("measured") for s in sc.values()}
    if len(dates) > 1:
        w("Scenarios come from more than one run (`--only`): each table names its own date.\n")
    if meta["mode"] == "quick":
        w("> **Quick mode**: few runs per variant; the ratios below are a smoke test, not "
          "results. Run `bench/run` (full) on a quiet machine for numbers to quote.\n")
    busy = max([s.get("machine_load", {}).get("cpu_busy_fraction") or 0 for s in sc.values()]
               + [0])
    # Only the start counts among the load averages: the last scenario (S6's
    # load generator) keeps both cores busy, so the end is always high.
    if meta["loadavg_start"][0] > 1.2 or busy > 0.75:
        w("> **Noisy machine**: the load average was %.2f at the start and the busiest scenario "
          "saw %.0f%% of the CPUs busy (2 cores; the benchmark itself keeps about one busy). "
          "Other work on the machine inflates the spread and can bias small ratios: compare the "
          "CPU-time ratios beside the wall-time ones.\n" % (meta["loadavg_start"][0], 100 * busy))

    w("## Summary against the goals of issue 6\n")
    w("Ratios are finderd/stock, measured side by side in one run (variants interleaved run by "
      "run). Lookups: stat-family calls on paths plus `getdents64`, counted after `site` (the "
      "scenario's count minus that of `python -S -c pass` with the same environment).\n")
    w("| id | workload | stock ms | finderd ms | wall ratio (95% CI) | wall goal | verdict | "
      "post-site lookups stock → finderd | ratio | lookup goal | verdict | round trips per "
      "start, first / warm | bound ratio |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for sid in INTERPRETER:
        s = sc.get(sid)
        if not s:
            continue
        if "skipped" in s:
            w("| %s | %s | skipped: %s |||||||||||" % (sid, s.get("title", ""), s["skipped"]))
            continue
        g = s["goals"]
        if sid == "absent":
            w("| absent | finderd installed, no daemon | %s | %s | %.3f (%.3f-%.3f); vs one-line "
              "`.pth`: %.3f (%.3f-%.3f) | ≤ %.2f and ≤ the `.pth` | %s | %d → %d | %+d vs "
              "`.pth` | equal | %s | - | - |" % (
                  _ms(s["stock_median_ms"]), _ms(s["variants"]["absent"]["wall"]["median_ms"]),
                  s["wall_ratio"], *s["wall_ratio_ci95"], s["absent_vs_pth"]["ratio"],
                  *s["absent_vs_pth"]["ci95"], g["wall_ratio_max"], absent_verdict(s),
                  s["variants"]["stock"]["post_site_lookups"],
                  s["variants"]["absent"]["post_site_lookups"], s["lookups_absent_minus_pth"],
                  "met" if s["lookups_absent_minus_pth"] <= 0 else
                  "not met by %d" % s["lookups_absent_minus_pth"]))
            continue
        rt = s["round_trips"]
        w("| %s | %s | %s | %s | %.3f (%.3f-%.3f) | ≤ %.2f | %s | %d → %d | %s | ≤ %s | %s | "
          "%s / %s | %s |" % (
              sid, s["title"], _ms(s["stock_median_ms"]), _ms(s["finderd_median_ms"]),
              s["wall_ratio"], *s["wall_ratio_ci95"], g["wall_ratio_max"],
              verdict(s["wall_ratio"], g["wall_ratio_max"]),
              s["variants"]["stock"]["post_site_lookups"],
              s["variants"]["finderd"]["post_site_lookups"], _pct(s["lookup_syscalls_ratio"]),
              _pct(g["lookup_syscalls_ratio_max"]),
              verdict(s["lookup_syscalls_ratio"], g["lookup_syscalls_ratio_max"]),
              _rt(rt["first"]), _rt(rt["warm"]), _bound_cell(s)))
    s6 = sc.get("S6")
    if s6:
        for label, value, goal, better in s6_rows(s6):
            w("| S6 | %s | | | %s | %s | %s |||||||" % (
                label, value if isinstance(value, str) else _num(value) if value is not None
                else "not measured", goal, verdict(value if not isinstance(value, str) else None,
                                                   better[0], better[1])))
    w("")
    w("Round trips per start are the daemon's Snapshot + Lookup requests (its Stats RPC before "
      "and after one run): \"first\" is a new daemon process that sees every path for the first "
      "time, \"warm\" the same run once it has. Issue 9's goal for warm runs is 1 (the Snapshot "
      "alone) with at most 2% of stock's post-site lookups.\n")
    w(render_launcher_summary(sc))

    if plots:
        w("## Plots\n")
        for name, caption in plots:
            w("![%s](plots/%s)\n" % (caption, name))

    for sid in INTERPRETER:
        s = sc.get(sid)
        if s:
            w(render_scenario(sid, s, sc.get("S6")))
    if sc.get("prefetch"):
        w(render_prefetch(sc["prefetch"]))
    if s6:
        w(render_s6(s6))
    if sc.get("S7"):
        s3 = sc.get("S3", {})
        w(render_s7(sc["S7"], s3["variants"]["bound"]["wall_ratio"]["ratio"]
                    if s3.get("bound") == "measured" else None))
    w(render_not_done(sc))
    for sub, who in (("daemon", "the daemon's micro-benchmarks"),
                     ("client-c", "libfinderd's micro-benchmarks")):
        path = os.path.join(here, sub, "RESULTS.md")
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            w("## Folded in: %s (`bench/%s/RESULTS.md`)\n" % (who, sub))
            w("\n".join(("#" + line) if line.startswith("#") else line
                        for line in text.splitlines()) + "\n")
    return "\n".join(out) + "\n"


def _rt(r):
    return "%g" % (r["snapshot"] + r["lookup"])


def launcher_verdicts(s):
    """(wall verdict, lookup verdict, lookup goal text) of a scenario's launcher column."""
    lz = s["launcher"]
    g = lz["goals"]
    wall = verdict(lz["wall_ratio"], g.get("wall"))
    if "lookups_max" in g:
        return wall, verdict(lz["whole_run_lookups"], g["lookups_max"]), "≤ %d" % g["lookups_max"]
    if "lookups_ratio" in g:
        return wall, verdict(lz["whole_run_lookups_ratio"], g["lookups_ratio"]), \
            "≤ %s of stock's" % _pct(g["lookups_ratio"])
    return wall, "-", "-"


def render_launcher_summary(sc):
    """Issue 13: finderd-python, the launcher, against stock in the same runs."""
    rows = [sid for sid in INTERPRETER if sc.get(sid, {}).get("launcher")]
    if not rows:
        return ""
    out = ["## Summary against the goals of issue 13: the finderd-python launcher\n",
           "The third column of every scenario: the same venv as finderd's with the launcher "
           "enabled (`python -m finderd launcher enable`), served from its first lookup. "
           "Whole-run lookups count everything, the dynamic loader's search for libraries "
           "included: path stats, `getdents64` and opens that failed. Ratios against stock in the "
           "same run, variants interleaved.\n",
           "| id | stock ms | launcher ms | wall ratio (95% CI) | CPU ratio | wall goal | verdict | "
           "whole-run lookups stock → launcher | lookup goal | verdict | post-site lookups "
           "stock → launcher | round trips per warm start | first run ratio |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for sid in rows:
        s = sc[sid]
        lz = s["launcher"]
        g = lz["goals"]
        if sid == "absent":
            out.append("| absent (no daemon) | %s | %s | %.3f (%.3f-%.3f); vs the finderd venv: "
                       "%.3f | %.3f | ≤ %.2f | %s | %d → %d (finderd venv: %d) | no more than "
                       "the finderd venv | %s | - | - | - |" % (
                           _ms(s["stock_median_ms"]), _ms(lz["median_ms"]), lz["wall_ratio"],
                           *lz["wall_ratio_ci95"], lz["vs_absent"]["ratio"], lz["cpu_ratio"],
                           g["wall"], verdict(lz["wall_ratio"], g["wall"]),
                           lz["stock_whole_run_lookups"], lz["whole_run_lookups"],
                           lz["absent_whole_run_lookups"],
                           "met" if lz["whole_run_lookups"] <= lz["absent_whole_run_lookups"]
                           else "not met by %d" % (lz["whole_run_lookups"]
                                                   - lz["absent_whole_run_lookups"])))
            continue
        wall_v, look_v, look_goal = launcher_verdicts(s)
        rt = lz["round_trips_warm"]
        out.append("| %s | %s | %s | %.3f (%.3f-%.3f) | %.3f | ≤ %.2f | %s | %d → %d (%s) | %s | %s "
                   "| %d → %d | %d + %d | %s |" % (
                       sid, _ms(lz["stock_median_ms"]), _ms(lz["median_ms"]), lz["wall_ratio"],
                       *lz["wall_ratio_ci95"], lz["cpu_ratio"], g["wall"], wall_v,
                       lz["stock_whole_run_lookups"], lz["whole_run_lookups"],
                       _pct(lz["whole_run_lookups_ratio"]), look_goal, look_v,
                       s["variants"]["stock"]["post_site_lookups"],
                       s["variants"]["launcher"]["post_site_lookups"],
                       rt["snapshot"], rt["lookup"],
                       "%.3f" % lz["first_run"]["wall_ratio"] if lz.get("first_run") else "-"))
    out.append("")
    out.append("Each scenario's section below lists the whole-run lookups the launcher still "
               "makes, and says what remains where a goal is not met.\n")
    return "\n".join(out)


def render_launcher(sid, s):
    """A scenario's launcher paragraph: goals, what remains, measured."""
    lz = s.get("launcher")
    if not lz or sid == "absent":
        return ""
    out = []
    w = out.append
    wall_v, look_v, look_goal = launcher_verdicts(s)
    w("**The launcher** (issue 13): wall %.3f of stock (%.3f-%.3f; CPU %.3f), goal ≤ %.2f: **%s**; "
      "whole-run lookups %d against stock's %d (%s), goal %s: **%s**. A warm start made %d "
      "Snapshot and %d Lookup round trips%s.\n" % (
          lz["wall_ratio"], *lz["wall_ratio_ci95"], lz["cpu_ratio"], lz["goals"]["wall"], wall_v,
          lz["whole_run_lookups"], lz["stock_whole_run_lookups"],
          _pct(lz["whole_run_lookups_ratio"]), look_goal, look_v,
          lz["round_trips_warm"]["snapshot"], lz["round_trips_warm"]["lookup"],
          "; it fell back to stock: `%s`" % lz["fallback_warm"] if lz.get("fallback_warm")
          else ""))
    if lz.get("first_run"):
        fr = lz["first_run"]
        reqs = fr["requests_per_start"]
        w("First runs (a new daemon before each): %.3f of stock beside it (%s ms against %s), "
          "with %s Lookup round trips after the Snapshot: the daemon reads every directory of "
          "the start-up request for the first time (the venv, the base interpreter's tree and "
          "the directories getpath checks, up to `/`) and the run teaches it the plan.\n" % (
              fr["wall_ratio"], _ms(fr["median_ms"]), _ms(fr["stock_median_ms"]),
              "/".join(str(r["lookup"]) for r in reqs)))
    if lz["remaining_lookups"]:
        w("Whole-run lookups the launcher still makes (call, path, result; count):\n")
        w("| lookup | n |")
        w("|---|---|")
        for key, n in lz["remaining_lookups"][:25]:
            w("| `%s` | %d |" % (key.replace("|", "/"), n))
        if len(lz["remaining_lookups"]) > 25:
            w("| ... %d more kinds | %d |" % (len(lz["remaining_lookups"]) - 25,
                                             sum(n for _, n in lz["remaining_lookups"][25:])))
        w("")
    if wall_v != "met" or look_v != "met":
        w("**What remains** (measured in this run): %s\n" % launcher_remains(sid, s))
    return "\n".join(out)


def launcher_remains(sid, s):
    lz = s["launcher"]
    v = s["variants"]
    st, lv = v["stock"], v["launcher"]
    parts = []
    delta = lv["wall"]["median_ms"] - st["wall"]["median_ms"]
    cpu_delta = lv["cpu"]["median_ms"] - st["cpu"]["median_ms"]
    waiting = delta - cpu_delta
    parts.append("the launcher's median is %.2f ms %s stock's (%.2f ms); its CPU time ratio is "
                 "%.3f (%+.2f ms of CPU; the other %+.2f ms are time spent waiting: %s)" % (
                     abs(delta), "below" if delta < 0 else "above", st["wall"]["median_ms"],
                     lz["cpu_ratio"], cpu_delta, waiting,
                     "for the daemon's answer (connect and Snapshot) more than stock waits for "
                     "the filesystem" if waiting > 0 else
                     "less than stock waits for the filesystem, the daemon's answer included"))
    saved = lz["stock_whole_run_lookups"] - lz["whole_run_lookups"]
    secs_s = st["counts"].get("seconds", {})
    secs_l = lv["counts"].get("seconds", {})
    parts.append("it removes %d of stock's %d whole-run lookups (under `strace -T` stock's path "
                 "stats and directory reads took %.2f ms, the launcher's %.2f ms)" % (
                     saved, lz["stock_whole_run_lookups"],
                     1e3 * (secs_s.get("path_stats", 0) + secs_s.get("getdents64", 0)),
                     1e3 * (secs_l.get("path_stats", 0) + secs_l.get("getdents64", 0))))
    other = (lv["counts"]["total"] - lz["whole_run_lookups"]) - (
        st["counts"]["total"] - lz["stock_whole_run_lookups"])
    parts.append("it makes %+d other system calls (the connect, the reply, the generation "
                 "file's mapping; fewer failed opens)" % other)
    if "finderd" in v:
        parts.append("the `.pth` client beside it: %.3f" % v["finderd"]["wall_ratio"]["ratio"])
    if sid in ("S3p", "S5p"):
        suite = sum(n for key, n in lz["remaining_lookups"] if "/suite" in key)
        parts.append("%d of the launcher's %d whole-run lookups are pytest's own walk of the "
                     "suite (its `os.stat`, `os.scandir` and `os.path.isfile` calls while it "
                     "collects: the table above), which no import resolver answers" % (
                         suite, lz["whole_run_lookups"]))
    if sid in ("S1",):
        parts.append("`-c pass` imports nothing after `site`: the round trip (connect + Snapshot, "
                     "S6) and getpath's own bytecode, which the launcher runs unchanged (its "
                     "probes answered from the listings rather than a recorded answer trusted), "
                     "are what it pays against the lookups it saves")
    elif sid.startswith("S5"):
        parts.append("on FUSE the `.pyc` reads the daemon does not serve and the files opened "
                     "to read them remain; `site`'s own reads of `.pth` files too")
    elif sid == "S4":
        parts.append("the Python loop over 200 FileFinders per import remains (each answered in "
                     "C by FastFind from the listing): a name index over all served entries, "
                     "one dictionary lookup per top-level name, is not built")
    else:
        parts.append("on a hot local disk the lookups stock makes are 1-3.5% of its time, so "
                     "removing them all leaves the loading itself")
    return "; ".join(parts) + "."


def _bound_cell(s):
    if s.get("bound") == "measured":
        b = s["variants"]["bound"]
        return "%.3f" % b["wall_ratio"]["ratio"]
    return "not measured"


def absent_verdict(s):
    ratio = s["wall_ratio"]
    goal = s["goals"]["wall_ratio_max"]
    vs_pth = s["absent_vs_pth"]
    parts = []
    parts.append(verdict(ratio, goal) + " (vs stock)")
    if vs_pth["ci95"][0] > 1.0:
        parts.append("not met: costs more than the `.pth` line by %.3f" % (vs_pth["ratio"] - 1))
    else:
        parts.append("met (vs `.pth`: CI includes or is below 1)")
    return "; ".join(parts)


def s6_rows(s6):
    g = s6["goals"]
    one = next((r for r in s6["rpc"] if r["mode"] == "lookup" and r["clients"] == 1), None)
    lookups = [r for r in s6["rpc"] if r["mode"] == "lookup"]
    best = max(lookups, key=lambda r: r["rps"]) if lookups else None
    crawl = s6.get("crawl", {}).get("engines", {})
    crawl_best = min((e["seconds_median"] for e in crawl.values()), default=None)
    connect = next((r for r in s6["rpc"] if r["mode"] == "connect-snapshot"), None)
    bpe = min((e["rss_bytes_per_entry_median"] for e in crawl.values()
               if e["rss_bytes_per_entry_median"] is not None), default=None)
    return [
        ("Lookup p99, 1 client (us)", one["p99_us"] if one else None,
         "≤ %g" % g["lookup_p99_us"], (g["lookup_p99_us"], False)),
        ("requests/s, best of 1/2/16 clients%s" % (" (%d)" % best["clients"] if best else ""),
         best["rps"] if best else None, "≥ %g" % g["rps"], (g["rps"], True)),
        ("RSS bytes per indexed entry", bpe, "≤ %g" % g["bytes_per_entry"],
         (g["bytes_per_entry"], False)),
        ("100k-file cold crawl (s)", crawl_best, "≤ %g" % g["crawl_seconds"],
         (g["crawl_seconds"], False)),
    ] + ([("connect + Snapshot p50 (us)", connect["p50_us"],
           "≤ %g" % g["connect_snapshot_p50_us"], (g["connect_snapshot_p50_us"], False))]
         if connect and "connect_snapshot_p50_us" in g else [])


def render_scenario(sid, s, s6):
    out = []
    w = out.append
    w("## %s: %s\n" % (sid, s.get("title", "")))
    if "skipped" in s:
        w("Skipped: %s.\n" % s["skipped"])
        return "\n".join(out)
    w("`%s` — %s run, %d timed runs per variant, measured %s at `%s`; machine load: %s.\n" % (
        s["command"], s["mode"], s["runs"], s["measured"], s["commit"], _load_text(s)))
    v = s["variants"]
    names = list(v)
    header = "| | " + " | ".join(names) + " |"
    w(header)
    w("|---|" + "---|" * len(names))
    w("| wall median ms (IQR) | " + " | ".join(
        "%s (%s)" % (_ms(v[n]["wall"]["median_ms"]), _ms(v[n]["wall"]["iqr_ms"])) for n in names)
      + " |")
    w("| wall min / mean ms | " + " | ".join(
        "%s / %s" % (_ms(v[n]["wall"]["min_ms"]), _ms(v[n]["wall"]["mean_ms"])) for n in names)
      + " |")
    w("| wall ratio to stock (95% CI) | " + " | ".join(
        "%.3f (%.3f-%.3f)" % (v[n]["wall_ratio"]["ratio"], *v[n]["wall_ratio"]["ci95"])
        if "wall_ratio" in v[n] else "1" for n in names) + " |")
    w("| paired per-round ratio (95% CI) | " + " | ".join(
        "%.3f (%.3f-%.3f)" % (v[n]["wall_ratio"]["paired"], *v[n]["wall_ratio"]["paired_ci95"])
        if "wall_ratio" in v[n] else "1" for n in names) + " |")
    w("| CPU (user+sys) median ms, ratio | " + " | ".join(
        "%s, %.3f" % (_ms(v[n]["cpu"]["median_ms"]), v[n]["cpu_ratio"]["ratio"])
        if "cpu_ratio" in v[n] else _ms(v[n]["cpu"]["median_ms"]) for n in names) + " |")
    for key, label in KIND_LABELS:
        w("| %s (whole run) | " % label + " | ".join(
            str(v[n]["counts"].get(key, "-")) if "counts" in v[n] else "-" for n in names) + " |")
    w("| lookups after site | " + " | ".join(
        str(v[n]["post_site_lookups"]) if "post_site_lookups" in v[n] else "-" for n in names)
      + " |")
    w("| lookup syscall time under strace -T, ms (inflated) | " + " | ".join(
        "%.2f" % (1e3 * sum(v[n]["counts"].get("seconds", {}).get(k, 0)
                            for k in ("path_stats", "getdents64")))
        if "counts" in v[n] and v[n]["counts"].get("seconds") else "-" for n in names) + " |")
    w("")
    pre = s["presite"]
    w("`python -S -c pass` in the same environment (before `site`, out of a `.pth` client's "
      "reach): %d lookups (%d path stats, %d getdents64), %d calls in all.%s\n" % (
          pre["lookups"], pre["path_stats"], pre["getdents64"], pre["total"],
          (" `site` itself (`python -c pass` minus that) makes %d of the post-site lookups, "
           "before a `.pth` client can answer any." % s["site_lookups"])
          if "site_lookups" in s else ""))
    if sid == "absent":
        w("Ratios: no daemon/stock %.3f (%.3f-%.3f); no daemon/one-line `.pth` %.3f (%.3f-%.3f); "
          "the `.pth` line alone/stock %.3f. Lookups after site: no daemon %+d against the "
          "`.pth` line.\n" % (s["wall_ratio"], *s["wall_ratio_ci95"], s["absent_vs_pth"]["ratio"],
                              *s["absent_vs_pth"]["ci95"], v["pth"]["wall_ratio"]["ratio"],
                              s["lookups_absent_minus_pth"]))
        w("Goal: at most 1.02 of stock and no more than the one-line `.pth` measured beside it; "
          "lookups equal. Verdict: %s.\n" % absent_verdict(s))
        if s.get("launcher"):
            lz = s["launcher"]
            w("The launcher with no daemon (Py_BytesMain after one failed connect): %.3f of "
              "stock (%.3f-%.3f), %.3f of the finderd venv; whole-run lookups %d (stock %d, the "
              "finderd venv %d: the loader finds libpython by its absolute path instead of "
              "searching). Goal (issue 13): ≤ %.2f of stock: **%s**.\n" % (
                  lz["wall_ratio"], *lz["wall_ratio_ci95"], lz["vs_absent"]["ratio"],
                  lz["whole_run_lookups"], lz["stock_whole_run_lookups"],
                  lz["absent_whole_run_lookups"], lz["goals"]["wall"],
                  verdict(lz["wall_ratio"], lz["goals"]["wall"])))
        return "\n".join(out)
    fr, rt = s["first_run"], s["round_trips"]
    w("First run (a new daemon before each of %d runs) against warm:\n" % fr["runs"])
    w("| | first run | warm |")
    w("|---|---|---|")
    w("| finderd wall median ms | %s | %s |" % (_ms(fr["finderd_median_ms"]),
                                              _ms(s["finderd_median_ms"])))
    w("| stock wall median ms (run beside it) | %s | %s |" % (_ms(fr["stock_median_ms"]),
                                                             _ms(s["stock_median_ms"])))
    w("| ratio | %.3f | %.3f |" % (fr["wall_ratio"], s["wall_ratio"]))
    w("| Snapshot + Lookup round trips per start | %s + %s | %s + %s (mean over the timed runs: "
      "%s + %s) |" % (_g(rt["first"]["snapshot"]), _g(rt["first"]["lookup"]),
                      _g(rt["warm"]["snapshot"]), _g(rt["warm"]["lookup"]),
                      _g(rt["warm_mean_over_timed_runs"]["snapshot"]),
                      _g(rt["warm_mean_over_timed_runs"]["lookup"])))
    w("| lookups after site | %d | %d |" % (fr["post_site_lookups"],
                                           v["finderd"]["post_site_lookups"]))
    w("| all syscalls | %d | %d |" % (fr["counts"]["total"], v["finderd"]["counts"]["total"]))
    fb = s.get("fallback", {})
    w("| client fell back to stock (one run with `FINDERD_DEBUG=1`) | %s | %s |" % (
        _fb(fb.get("first")), _fb(fb.get("warm"))))
    w("")
    if s.get("bound") != "measured":
        w("Bound (client answering from a recorded answer, no daemon): %s.\n" % s["bound"])
    g = s["goals"]
    wall_v = verdict(s["wall_ratio"], g["wall_ratio_max"])
    look_v = verdict(s["lookup_syscalls_ratio"], g["lookup_syscalls_ratio_max"])
    w("Goals (issue 6): wall ≤ %.2f: **%s** (%.3f); post-site lookups ≤ %s of stock's: **%s** "
      "(%s).\n" % (g["wall_ratio_max"], wall_v, s["wall_ratio"],
                   _pct(g["lookup_syscalls_ratio_max"]), look_v, _pct(s["lookup_syscalls_ratio"])))
    if wall_v != "met" or look_v != "met":
        w(explain(sid, s, s6))
    w(render_launcher(sid, s))
    return "\n".join(out)


def _fb(message):
    return "no" if not message else "**yes**: `%s`" % message.replace("|", "/")


def _g(x):
    return "%g" % x


def _load_text(s):
    m = s.get("machine_load", {})
    parts = []
    if m.get("loadavg_start"):
        parts.append("load average %.2f → %.2f" % (m["loadavg_start"][0], m["loadavg_end"][0]))
    if m.get("cpu_busy_fraction") is not None:
        parts.append("CPU busy %.0f%% (of 2 cores; this harness ≈ 50%%)"
                     % (100 * m["cpu_busy_fraction"]))
    return ", ".join(parts) or "not recorded"


def explain(sid, s, s6):
    """Why a goal is not met, from this run's measurements, and what would close it."""
    v = s["variants"]
    st, fd = v["stock"], v["finderd"]
    delta = fd["wall"]["median_ms"] - st["wall"]["median_ms"]
    lines = ["**Why** (from this run's profile):\n"]
    saved = st["post_site_lookups"] - fd["post_site_lookups"]
    secs_s = st["counts"].get("seconds", {})
    secs_f = fd["counts"].get("seconds", {})
    look_s = 1e3 * (secs_s.get("path_stats", 0) + secs_s.get("getdents64", 0))
    look_f = 1e3 * (secs_f.get("path_stats", 0) + secs_f.get("getdents64", 0))
    lines.append("- Median wall time: finderd %.2f ms, stock %.2f ms (%s %.2f ms; CPU time ratio "
                 "%.3f). finderd %s %d post-site lookups (stock %d, finderd %d); under `strace "
                 "-T` the lookup calls took %.2f ms in stock and %.2f ms with finderd (ptrace "
                 "inflates each call several times, so the real saving is smaller)." % (
                     fd["wall"]["median_ms"], st["wall"]["median_ms"],
                     "saved" if delta <= 0 else "added", abs(delta), fd["cpu_ratio"]["ratio"],
                     "removed" if saved >= 0 else "added", abs(saved), st["post_site_lookups"],
                     fd["post_site_lookups"], look_s, look_f))
    site = s.get("site_lookups")
    goal = s["goals"]["lookup_syscalls_ratio_max"]
    if site is not None and goal is not None and s["lookup_syscalls_ratio"] is not None \
            and s["lookup_syscalls_ratio"] > goal:
        lines.append("- Of finderd's %d post-site lookups, %d are `site`'s own (`python -c pass` "
                     "minus `python -S -c pass` in the same environment: site-packages, `.pth` "
                     "files, `sitecustomize`%s), made before any `.pth` client can answer; %d "
                     "come after. The goal of %s of stock's %d is %d lookups: a `.pth` client "
                     "cannot go below %d, only an interpreter that embeds libfinderd (or a finder "
                     "installed before `site`) can." % (
                         fd["post_site_lookups"], site,
                         ", and in S4 the stdlib imports of `site` itself walking all 200 entries"
                         if sid == "S4" else "", fd["post_site_lookups"] - site, _pct(goal),
                         st["post_site_lookups"], int(goal * st["post_site_lookups"]), site))
    rt = s["round_trips"]["warm"]
    lookup_p50 = connect_p50 = None
    if s6:
        for r in s6.get("rpc", []):
            if r["mode"] == "lookup" and r["clients"] == 1:
                lookup_p50 = r["p50_us"]
            if r["mode"] == "connect-snapshot":
                connect_p50 = r["p50_us"]
    rtt = ""
    if lookup_p50 is not None:
        rtt = " (S6: a Lookup round trip is %.0f us at p50, connect + Snapshot %.0f us)" % (
            lookup_p50, connect_p50 or 0)
    lines.append("- A warm start made %d Snapshot and %d follow-up Lookup round trips%s." % (
        rt["snapshot"], rt["lookup"], rtt))
    fd_other = fd["counts"]["total"] - fd["counts"]["path_stats"] - fd["counts"]["getdents64"]
    st_other = st["counts"]["total"] - st["counts"]["path_stats"] - st["counts"]["getdents64"]
    lines.append("- Other system calls: %d with finderd against %d in stock (%+d%s); `openat` "
                 "%d against %d." % (
                     fd_other, st_other, fd_other - st_other,
                     (": the client's connect, `dlopen` of `_native`, the generation file's "
                      "mapping, reading the reply" if rt["snapshot"] else
                      ": no round trip was made, so these are the `.pth` importing the `finderd` "
                      "package (finding, opening and reading its `.pyc`)")
                     if fd_other > st_other else "",
                     fd["counts"]["openat"], st["counts"]["openat"]))
    fr = s.get("first_run")
    fb = s.get("fallback", {})
    if fb.get("first") or (fr and fr["post_site_lookups"] > 0.5 * st["post_site_lookups"]
                           > fd["post_site_lookups"]):
        lines.append("- First runs: %d post-site lookups (stock %d). The client fell back to "
                     "stock (%s): a call did not come back within the deadline "
                     "(`FINDERD_TIMEOUT_MS`, 50 ms by default) while the daemon read these "
                     "directories for the first time, so a first run pays the wait and saves "
                     "nothing; the daemon finishes the crawl and the next run is served." % (
                         fr["post_site_lookups"], st["post_site_lookups"],
                         "`%s`" % fb["first"] if fb.get("first") else "inferred from the counts"))
    if fb.get("warm"):
        lines.append("- A warm run fell back to stock too (`%s`): a follow-up Lookup of a "
                     "directory the daemon had not read yet (first sight of a package "
                     "directory) took longer than the deadline, and the rest of that process "
                     "ran stock. Mean follow-up Lookups per timed run: %s." % (
                         fb["warm"], s["round_trips"]["warm_mean_over_timed_runs"]["lookup"]))
    inc = s.get("importtime", {}).get("largest_increases", [])[:4]
    if inc:
        lines.append("- `python -X importtime` (median self time per module): the largest "
                     "increases with finderd are " + ", ".join(
                         "`%s` %+.2f ms" % (i["module"], i["delta_us"] / 1e3) for i in inc)
                     + "; the first module imported after `site` carries the client's "
                       "activation (loading `_native`, connecting, the Snapshot).")
    if s.get("bound") != "measured":
        lines.append("- The bound is not measured yet, so the split between the round trip and "
                     "the client's own start-up is inferred from the lines above.")
    lines.append("\n**What would close it**: %s\n" % CLOSERS.get(sid, ""))
    return "\n".join(lines)


def render_s6(s6):
    out = []
    w = out.append
    w("## S6: the daemon alone\n")
    w("%s run, measured %s at `%s`; load average %.2f → %.2f. Load generator: "
      "`bench/loadgen.c` over libfinderd, one thread and connection per client, back-to-back "
      "calls; latency per call on the client side. On 2 cores the generator's threads compete "
      "with the daemon for CPU.\n" % (s6["mode"], s6["measured"], s6["commit"],
                                      s6["machine_load"]["loadavg_start"][0],
                                      s6["machine_load"]["loadavg_end"][0]))
    w("| call | clients | requests/s | p50 us | p90 us | p99 us | max us | errors |")
    w("|---|---|---|---|---|---|---|---|")
    for r in s6["rpc"]:
        w("| %s | %d | %.0f | %.1f | %.1f | %.1f | %.1f | %d |" % (
            r["what"], r["clients"], r["rps"], r["p50_us"], r["p90_us"], r["p99_us"],
            r["max_us"], r["errors"]))
    w("")
    if s6.get("floor"):
        w("The raw Unix-socket floor, measured in the same run (`loadgen floor`: the same "
          "bytes each way, answered by a thread doing blocking `read`/`write`, no HTTP/2, no "
          "daemon; `--connect`: a new connection per exchange). The client waits for each "
          "reply in a blocking `read` (block), or as libfinderd does while its replies come "
          "quickly (poll: non-blocking receives and `sched_yield` for up to 200 us first, "
          "client-c/src/spin.h):\n")
        w("| like | clients | client waits | bytes (request / reply) | requests/s | p50 us | "
          "p99 us |")
        w("|---|---|---|---|---|---|---|")
        for r in s6["floor"]:
            w("| %s | %d | %s | %d / %d | %.0f | %.1f | %.1f |" % (
                r["like"], r["clients"], r.get("wait", "block"), r["request_bytes"],
                r["reply_bytes"], r["rps"], r["p50_us"], r["p99_us"]))
        w("")
    if s6.get("steps"):
        w(render_s6_steps(s6["steps"]))
    c = s6.get("crawl", {})
    if c:
        w("Cold crawl: %s; page cache %s; one Lookup of every directory sent to a new daemon "
          "process, timed on the client side.%s\n" % (
              c["tree"], c["page_cache"], (" Note: " + c["note"] + ".") if c.get("note") else ""))
        w("| engine | seconds (median) | RSS bytes per entry | index bytes per entry | "
          "entries | crawls sync / io_uring |")
        w("|---|---|---|---|---|---|")
        for name, e in c["engines"].items():
            last = e["samples"][-1]
            w("| %s | %.3f | %s | %s | %s | %s / %s |" % (
                name, e["seconds_median"], e["rss_bytes_per_entry_median"],
                e["index_bytes_per_entry_median"], last["indexed_entries"], last["crawls_sync"],
                last["crawls_uring"]))
        w("")
    w("| goal | measured | verdict |")
    w("|---|---|---|")
    for label, value, goal, better in s6_rows(s6):
        w("| %s %s | %s | %s |" % (label, goal, "not measured" if value is None else _num(value),
                                    verdict(value, better[0], better[1])))
    w("")
    against = s6_against_floor(s6)
    if against:
        w(against)
    return "\n".join(out)


def s6_against_floor(s6):
    """The latency goals beside the raw Unix-socket floor of the same run:
    a goal below the floor cannot be met by any daemon on this machine. The
    floor waits as libfinderd does: polling first where the run measured it."""
    floor = {}
    for r in sorted(s6.get("floor", []), key=lambda r: r.get("wait", "block") == "poll"):
        floor[(r["like"], r["clients"])] = r
    rpc = {(r["mode"], r["clients"]): r for r in s6["rpc"] if "mode" in r}
    pairs = [("Lookup p99, 1 client", ("lookup", 1), ("lookup", 1), "p99_us",
              s6["goals"]["lookup_p99_us"]),
             ("connect + Snapshot p50", ("connect-snapshot", 1), ("connect-snapshot", 1),
              "p50_us", s6["goals"].get("connect_snapshot_p50_us"))]
    parts = []
    for label, mine, theirs, key, goal in pairs:
        if mine not in rpc or theirs not in floor:
            continue
        value, base = rpc[mine][key], floor[theirs][key]
        note = " (the goal, %g us, is below the floor on this machine)" % goal \
            if goal is not None and base > goal else ""
        parts.append("%s %.1f us = %.2f× the floor's %.1f us (client waits: %s)%s" % (
            label, value, value / base, base, floor[theirs].get("wait", "block"), note))
    if not parts:
        return ""
    return "Against the raw Unix-socket floor of this run: %s.\n" % "; ".join(parts)


def render_s6_steps(steps):
    """S6: where the time goes: daemon builds, one per step, against the floor."""
    out = ["### S6: where the time goes\n",
           "Each row a daemon build (one commit of issue 16's work; the client's environment "
           "after a +), measured in %d rounds "
           "(every build and the raw Unix-socket floor once per round, in a random order; "
           "medians of the rounds); ×floor: the build's figure over the floor's of the same "
           "run whose client waits as the build's does (requests/s: the floor's over the "
           "build's; 16 clients never poll). Load average per round: "
           "%s.\n" % (steps["rounds"], "; ".join(
               "%s %s" % (b["label"], ", ".join("%.2f" % x for x in b["loadavg"]))
               for b in steps["builds"])),
           "| build | Lookup x1 p50 us (×floor) | Lookup x1 p99 us (×floor) | "
           "Lookup x16 requests/s (×floor) | Lookup x16 p99 us | connect + Snapshot p50 us "
           "(×floor) |",
           "|---|---|---|---|---|---|"]
    floors = {"block": steps["floor"], "poll": steps.get("floor_poll")}
    rows = [("raw Unix-socket floor, client blocks", floors["block"], None)]
    if floors["poll"]:
        rows.append(("raw Unix-socket floor, client polls", floors["poll"], None))
    for b in steps["builds"]:
        label = b["label"] + "".join(" +%s=%s" % kv for kv in b.get("env", {}).items())
        rows.append((label, b["median"], floors[b.get("client_waits", "block")] or
                     floors["block"]))
    for label, m, f in rows:
        out.append("| %s | %.1f%s | %.1f%s | %.0f%s | %.1f | %.1f%s |" % (
            label, m[0]["p50_us"], _times(m[0]["p50_us"], f and f[0]["p50_us"]),
            m[0]["p99_us"], _times(m[0]["p99_us"], f and f[0]["p99_us"]),
            m[1]["rps"], _times(f and f[1]["rps"], f and m[1]["rps"]),
            m[1]["p99_us"],
            m[2]["p50_us"], _times(m[2]["p50_us"], f and f[2]["p50_us"])))
    return "\n".join(out) + "\n"


def _times(value, base):
    """ (value/base), or nothing without a base."""
    return " (%.1f)" % (value / base) if base else ""


def render_prefetch(p):
    """The first-run prefetch budget sweep: which budget wins."""
    out = ["## First runs: the prefetch budget\n",
           "Without a learned plan the Snapshot carries the listings of package directories "
           "of the `sys.path` entries up to the client's budget (`FINDERD_PREFETCH_KB`); what "
           "it leaves out costs a follow-up Lookup. The CI set (S3's imports) with a daemon "
           "that learns no plans (`--max-plans 0`) and a warm index, %d interleaved rounds, "
           "measured %s at `%s`; stock median %s ms.\n" % (
               p["runs"], p["measured"], p["commit"], _ms(p["stock_wall_median_ms"])),
           "| budget | finderd median ms | ratio to stock | CPU median ms | follow-up Lookups |",
           "|---|---|---|---|---|"]
    best = min(p["rows"], key=lambda r: r["wall_median_ms"])
    for r in p["rows"]:
        out.append("| %d KiB%s | %s | %.3f | %s | %d |" % (
            r["budget_kib"], " (fastest)" if r is best else "", _ms(r["wall_median_ms"]),
            r["wall_ratio"], _ms(r["cpu_median_ms"]), r["lookup_round_trips"]))
    out.append("\nThe client's default is 256 KiB. From the second run on, the learned plan "
               "replaces the guess (S3: one round trip per start).\n")
    return "\n".join(out) + "\n"


def render_s7(s, local_bound=None):
    """S7 (issue 15): job containers without privilege, first job and later jobs.
    @local_bound: S3's bound ratio (the same imports, local disk), when measured."""
    out = ["## S7: job containers without privilege (issue 15)\n"]
    w = out.append
    if "skipped" in s:
        w("Skipped: %s.\n" % s["skipped"])
        return "\n".join(out) + "\n"
    g = s["goals"]
    w("`%s` — %s run, measured %s at `%s`. Each job is a new rootless pod (`setpriv` to an "
      "unprivileged uid, `unshare` of user, mount and PID namespaces) whose venv (the system "
      "3.11's, with the CI set) is an overlayfs of an image, the daemon's socket directory "
      "bind-mounted in; the daemon runs as %s in namespaces of its own and reads each job's "
      "files through the root the job's client passes at connect (its view). A stock job and "
      "a finderd job run side by side, their interpreters alternating in random order; the "
      "daemon is new before the first job (no plan, no view). Every start of a job is a new "
      "connection; a view lives while a connection holds it and `view_linger_ms` after (10 s "
      "by default), so a job's first start reads its directories in a new view, from the plan "
      "learned before, and its other starts find that view warm. Round trips: the daemon's "
      "Snapshot + Lookup requests (Stats RPC after each finderd start). Machine load: %s.\n"
      % (s["command"], s["mode"], s["measured"], s["commit"], s.get("daemon_user", "?"),
         _load_text(s)))
    w("| variant | starts | stock ms (IQR) | finderd ms (IQR) | wall ratio (95% CI) | paired | "
      "CPU ratio | round trips per start (mean, max) | goal | verdict |")
    w("|---|---|---|---|---|---|---|---|---|---|")
    for name, v in s["variants"].items():
        if "skipped" in v:
            w("| %s | skipped: %s |||||||||" % (name, v["skipped"]))
            continue
        goal = v["goal_wall_ratio"]
        for key in ("first_job", "later_jobs", "later_first_starts", "later_other_starts"):
            c = v[key]
            judged = key == "later_jobs"
            w("| %s: %s | %d | %s (%s) | %s (%s) | %.3f (%.3f-%.3f) | %.3f | %.3f | %.2f, %d | "
              "%s | %s |" % (
                  name, c["what"], c["starts"], _ms(c["stock"]["wall"]["median_ms"]),
                  _ms(c["stock"]["wall"]["iqr_ms"]), _ms(c["finderd"]["wall"]["median_ms"]),
                  _ms(c["finderd"]["wall"]["iqr_ms"]), c["wall_ratio"], *c["wall_ratio_ci95"],
                  c["paired"], c["cpu_ratio"], c["round_trips_mean"], c["round_trips_max"],
                  "≤ %.2f" % goal if judged else "-",
                  verdict(c["wall_ratio"], goal) if judged else "-"))
    w("")
    w("First start of each later job, round trips (goal: %d each):\n" % g["first_start_round_trips"])
    w("| variant | Snapshot + Lookup per later job | verdict | post-site lookups: stock → "
      "finderd first start → second start | whole-run lookups stock → finderd first start | "
      "client fell back? (first / second start) |")
    w("|---|---|---|---|---|---|")
    for name, v in s["variants"].items():
        if "skipped" in v:
            continue
        trips = [r["snapshot"] + r["lookup"] for r in v["first_start_round_trips"]]
        detail = ", ".join("%d+%d" % (r["snapshot"], r["lookup"])
                           for r in v["first_start_round_trips"])
        worst = max(trips)
        p = v["post_site_lookups"]
        c = v["counts"]
        w("| %s | %s | %s | %d → %d → %d | %d → %d | %s / %s |" % (
            name, detail, "met" if worst <= g["first_start_round_trips"] else
            "not met: up to %d" % worst, p["stock"], p["finderd_first_start"],
            p["finderd_second_start"], c["stock"]["whole_run_lookups"],
            c["finderd_first_start"]["whole_run_lookups"],
            _fb(v["fallback"]["first_start"]), _fb(v["fallback"]["second_start"])))
    w("")
    w("Per job (median ms, stock / finderd; round trips of each start):\n")
    for name, v in s["variants"].items():
        if "skipped" in v:
            continue
        w("- %s: " % name + "; ".join(
            "job %d: %s / %s [%s]" % (i + 1, _ms(j["stock_median_ms"]), _ms(j["finderd_median_ms"]),
                                      " ".join(str(t) for t in j["round_trips"]))
            for i, j in enumerate(v["per_job"])))
    w("")
    w(s7_where(s, local_bound))
    return "\n".join(out) + "\n"


def _s7_followups(v):
    """What the round trips past the Snapshot say (the first starts of later jobs)."""
    extra = [r["lookup"] + r["snapshot"] - 1 for r in v["first_start_round_trips"]]
    if not extra or max(extra) <= 0:
        return (" The first start of each later job made one round trip: the learned plan "
                "carried across views.")
    return (" The first starts of later jobs made %.1f round trips past the Snapshot on "
            "average (up to %d): the plan carried across views, but a request whose crawl "
            "runs past its deadline is answered with what is indexed (daemon/src/wire/"
            "service.rs, `at_deadline`), and the client asks again with a Lookup for each "
            "directory left out, while the crawl goes on. What would close it (not measured "
            "here): the new view's plan crawled in one io_uring batch within the deadline, or "
            "one index shared by the views that see the same device and inode (an image's lower "
            "layer), so that a new job finds the plan's directories read." % (
                sum(extra) / len(extra), max(extra)))


def s7_where(s, local_bound=None):
    """Where the time goes, from this run's measurements."""
    out = ["### S7: where the time goes\n"]
    for name, v in s["variants"].items():
        if "skipped" in v:
            continue
        lj, fs = v["later_jobs"], v["later_first_starts"]
        st, fd = lj["stock"]["wall"]["median_ms"], lj["finderd"]["wall"]["median_ms"]
        c = v["counts"]
        cs, cf = c["stock"], c["finderd_first_start"]
        sec_s, sec_f = cs.get("seconds", {}), cf.get("seconds", {})
        look_s = sec_s.get("path_stats", 0) + sec_s.get("getdents64", 0)
        look_f = sec_f.get("path_stats", 0) + sec_f.get("getdents64", 0)
        d = v["daemon_later_jobs"]
        later_starts = lj["starts"]
        jobs = len(v["per_job"]) - 1
        met = lj["wall_ratio"] <= v["goal_wall_ratio"]
        out.append(
            "- **%s**: later jobs %s: finderd %s ms against stock %s ms per start (%+.1f ms, "
            "ratio %.3f, goal ≤ %.2f; CPU ratio %.3f); their first starts %.3f. Lookups after "
            "`site` %d → %d (whole run %d → %d); under `strace -T` the stock start spent %.1f ms "
            "in path stats and `getdents64` (ptrace-inflated), finderd's first start %.1f ms, "
            "and made %d system calls against stock's %d. Over the %d later jobs (%d starts) the "
            "daemon answered %d Snapshot and %d Lookup requests, served %s directories and read "
            "%s (crawls, a `statx` of every entry), %s per start: a job's first start comes "
            "in a new view, whose index is empty, and reads the plan's directories; its other "
            "starts reuse the view while it lingers (daemon/src/views.rs, `view_linger_ms`); "
            "they ran at %.3f of stock (CPU %.3f), the first starts at %.3f.%s" % (
                name, "meet the goal" if met else "do not meet the goal", _ms(fd), _ms(st),
                fd - st, lj["wall_ratio"], v["goal_wall_ratio"], lj["cpu_ratio"],
                fs["wall_ratio"], v["post_site_lookups"]["stock"],
                v["post_site_lookups"]["finderd_first_start"], cs["whole_run_lookups"],
                cf["whole_run_lookups"], look_s * 1e3, look_f * 1e3, cf["total"], cs["total"],
                jobs, later_starts, d.get("snapshot_requests", 0), d.get("lookup_requests", 0),
                d.get("directories_served", "?"),
                d.get("crawls_sync", 0) + d.get("crawls_uring", 0),
                "%.0f" % ((d.get("crawls_sync", 0) + d.get("crawls_uring", 0)) / later_starts)
                if later_starts else "?", v["later_other_starts"]["wall_ratio"],
                v["later_other_starts"]["cpu_ratio"], fs["wall_ratio"], _s7_followups(v))
            + _s7_compiled(d)
            + (_s7_bound(local_bound, v["goal_wall_ratio"]) if name == "local" else ""))
    return "\n".join(out) + "\n"


def _s7_bound(bound, goal):
    """What removing every lookup can give at most, for the local variant."""
    if bound is None:
        return ""
    return (" The most any finderd can gain here is the lookups' share: S3 runs the same "
            "imports on local disk, and its bound (the client answering every lookup from a recorded "
            "answer, no daemon) is %.3f of stock%s." % (
                bound, "; the goal of %.2f is below it" % goal if bound > goal else ""))


def _s7_compiled(d):
    """What the later jobs got of compiled files from memory (runs that count it)."""
    if "cached_files_served" not in d:
        return ""
    reads = d.get("compiled_reads_sync", 0) + d.get("compiled_reads_uring", 0)
    return (" Compiled files: %d served from memory (%.1f MiB), %d read by the daemon for "
            "plans, %d of them not the file listed." % (
                d["cached_files_served"], d.get("cached_bytes_served", 0) / 2 ** 20, reads,
                d.get("compiled_reads_changed", 0)))

def render_not_done(sc):
    out = ["## Not measured, and why\n"]
    bounds = [sid for sid in INTERPRETER if sid in sc and sc[sid].get("bound", "").startswith("not")]
    if bounds:
        out.append("- **Bound** (%s): %s" % (", ".join(bounds), sc[bounds[0]]["bound"]))
    for sid in INTERPRETER + ["S7"]:
        if sid in sc and "skipped" in sc[sid]:
            out.append("- **%s**: skipped: %s." % (sid, sc[sid]["skipped"]))
    fuse = sc.get("S7", {}).get("variants", {}).get("fuse", {})
    if "skipped" in fuse:
        out.append("- **S7 on FUSE**: skipped: %s." % fuse["skipped"])
    s6 = sc.get("S6")
    if s6 and s6.get("crawl", {}).get("note"):
        out.append("- **S6 io_uring against synchronous**: %s." % s6["crawl"]["note"])
    out.append("- **Cold crawl on FUSE**: not in this harness (100k stats at ~150 us each through "
               "bindfs would take 15 s per crawl); issue 3 asks the daemon's own benchmark for it.")
    missing = [s for s in ORDER if s not in sc]
    if missing:
        out.append("- Not run in the runs recorded here: %s." % ", ".join(missing))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- plots


def _save(fig, plotdir, name):
    fig.savefig(os.path.join(plotdir, name + ".svg"))
    if os.environ.get("BENCH_PNG"):  # for looking at them where SVG is not shown
        fig.savefig(os.path.join(plotdir, name + ".png"), dpi=90)


def write_plots(plotdir, sc):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(plotdir, exist_ok=True)
    made = []
    ids = [sid for sid in INTERPRETER if sid in sc and "skipped" not in sc[sid]]
    if not ids:
        return made
    colors = {"stock": "#7f7f7f", "finderd": "#1f77b4", "bound": "#2ca02c", "absent": "#ff7f0e",
              "pth": "#9467bd", "finderd first": "#aec7e8", "launcher": "#d62728"}

    # Start-up time per scenario (small multiples: the scales differ by 100x).
    cols = min(4, len(ids))
    rows = (len(ids) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, sid in zip(axes.flat, ids):
        s = sc[sid]
        names, med, err = [], [], []
        for n, v in s["variants"].items():
            names.append(n)
            med.append(v["wall"]["median_ms"])
            err.append(v["wall"]["iqr_ms"] / 2)
        if "first_run" in s:
            names.append("finderd first")
            med.append(s["first_run"]["finderd_median_ms"])
            err.append(0)
        ax.bar(range(len(names)), med, yerr=err, capsize=3,
               color=[colors.get(n, "#333333") for n in names])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels([n.replace(" ", "\n") for n in names], fontsize=7)
        ratio = s["wall_ratio"]
        ax.set_title("%s  (ratio %.3f)" % (sid, ratio), fontsize=9)
        ax.set_ylabel("ms (median, IQR)", fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(ids):]:
        ax.axis("off")
    fig.suptitle("Start-up wall time per scenario (%s run)" % sc[ids[0]]["mode"], fontsize=10)
    fig.tight_layout()
    _save(fig, plotdir, "startup_time")
    plt.close(fig)
    made.append(("startup_time.svg", "start-up time per scenario"))

    # Wall ratio with CI against the goal.
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ids) + 1.2))
    for i, sid in enumerate(ids):
        s = sc[sid]
        r, (lo, hi) = s["wall_ratio"], s["wall_ratio_ci95"]
        ax.errorbar([r], [i], xerr=[[r - lo], [hi - r]], fmt="o", color="#1f77b4", capsize=3,
                    label="finderd (.pth)" if i == 0 else None)
        goal = s["goals"]["wall_ratio_max"]
        if goal:
            ax.plot([goal], [i], marker="|", markersize=14, color="#1f77b4")
        lz = s.get("launcher")
        if lz:
            r, (lo, hi) = lz["wall_ratio"], lz["wall_ratio_ci95"]
            ax.errorbar([r], [i + 0.25], xerr=[[r - lo], [hi - r]], fmt="s", color="#d62728",
                        capsize=3, label="launcher" if i == 0 else None)
            if lz["goals"].get("wall"):
                ax.plot([lz["goals"]["wall"]], [i + 0.25], marker="|", markersize=14,
                        color="#d62728")
    ax.axvline(1.0, color="#7f7f7f", linewidth=0.8, linestyle="--")
    ax.set_yticks(range(len(ids)))
    ax.set_yticklabels(ids)
    ax.invert_yaxis()
    ax.set_xlabel("wall time / stock (95% bootstrap CI); bars: the goals (issue 6, issue 13)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    _save(fig, plotdir, "wall_ratio")
    plt.close(fig)
    made.append(("wall_ratio.svg", "wall-time ratio against goal"))

    # Syscalls stacked by kind.
    kinds = [("path_stats", "path stats", "#d62728"), ("getdents64", "getdents64", "#ff7f0e"),
             ("fd_stats", "fd stats", "#9467bd"), ("openat", "openat", "#1f77b4"),
             ("other", "other", "#c7c7c7")]
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, sid in zip(axes.flat, ids):
        s = sc[sid]
        bars = [(n, v["counts"]) for n, v in s["variants"].items() if "counts" in v]
        if "first_run" in s:
            bars.append(("finderd first", s["first_run"]["counts"]))
        bottom = [0] * len(bars)
        for key, label, color in kinds:
            vals = []
            for _, c in bars:
                if key == "other":
                    vals.append(c["total"] - c["path_stats"] - c["getdents64"] - c["fd_stats"]
                                - c["openat"])
                else:
                    vals.append(c[key])
            ax.bar(range(len(bars)), vals, bottom=bottom, color=color, label=label)
            bottom = [b + x for b, x in zip(bottom, vals)]
        ax.axhline(s["presite"]["lookups"], color="black", linewidth=0.8, linestyle=":")
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels([n.replace(" ", "\n") for n, _ in bars], fontsize=7)
        ax.set_title(sid, fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    for ax in list(axes.flat)[len(ids):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(kinds), fontsize=8)
    fig.suptitle("System calls per run by kind (strace -f); dotted: pre-site lookups",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _save(fig, plotdir, "syscalls")
    plt.close(fig)
    made.append(("syscalls.svg", "system calls by kind"))
    return made

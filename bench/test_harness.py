"""Self-test of the benchmark harness: strace line classification and statistics.

    python -m pytest bench/test_harness.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402

LOG = r'''
1234  execve("/v/bin/python", ["/v/bin/python", "-c", "pass"], 0x7ffd5f1e8a40 /* 3 vars */) = 0
1234  newfstatat(AT_FDCWD, "/v/lib/python3.11/site-packages", {st_mode=S_IFDIR|0755, st_size=4096, ...}, 0) = 0
1234  newfstatat(AT_FDCWD, "/v/lib/python3.11/site-packages/nope.py", 0x7ffc1c0e4a50, 0) = -1 ENOENT (No such file or directory)
1234  newfstatat(3, "", {st_mode=S_IFREG|0644, st_size=1234, ...}, AT_EMPTY_PATH) = 0
1234  fstat(3, {st_mode=S_IFREG|0644, st_size=1234, ...}) = 0
1234  statx(AT_FDCWD, "/usr/lib", AT_STATX_SYNC_AS_STAT, STATX_ALL, {stx_mask=STATX_BASIC_STATS, ...}) = 0
1234  statx(5, "", AT_STATX_SYNC_AS_STAT|AT_EMPTY_PATH, STATX_ALL, {stx_mask=STATX_BASIC_STATS, ...}) = 0
1234  lstat("/v", {st_mode=S_IFDIR|0755, st_size=4096, ...}) = 0
1234  readlink("/v/bin/python", "/usr/bin/python3.11", 4096) = 19
1234  access("/etc/ld.so.preload", R_OK) = -1 ENOENT (No such file or directory)
1234  openat(AT_FDCWD, "/v/lib/python3.11/site-packages", O_RDONLY|O_NONBLOCK|O_CLOEXEC|O_DIRECTORY) = 3
1234  getdents64(3, 0x55d0c4a1e0 /* 12 entries */, 32768) = 384
1234  getdents64(3, 0x55d0c4a1e0 /* 0 entries */, 32768) = 0
1234  openat(AT_FDCWD, "/v/x.pyc", O_RDONLY|O_CLOEXEC) = -1 ENOENT (No such file or directory)
1234  mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f1e2a3b4000
1234  close(3)                                = 0
[pid  1240] openat(AT_FDCWD, "/tmp", O_RDONLY|O_DIRECTORY <unfinished ...>
[pid  1234] read(4, "x", 1)                  = 1
[pid  1240] <... openat resumed>)           = 5
1234  --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=1240} ---
1234  +++ exited with 0 +++
1234  exit_group(0)                           = ?
'''.strip().splitlines()


def test_classification_by_kind():
    counts = harness.parse_log(LOG)
    assert counts["path_stats"] == 6     # 2 newfstatat, statx, lstat, readlink, access
    assert counts["fd_stats"] == 3       # AT_EMPTY_PATH newfstatat and statx, fstat
    assert counts["getdents64"] == 2
    assert counts["openat"] == 3
    assert counts["openat_dir"] == 2     # the second joined from its resumed half
    assert counts["enoent"] == 3
    assert counts["total"] == 19         # every call (exit_group too); signals, exits are not
    assert counts.lookups == 8


def test_resumed_half_without_pending_is_still_counted():
    counts = harness.Counts()
    harness.classify('[pid  9] <... newfstatat resumed>0x7ffc, 0) = -1 ENOENT (No such file)', counts)
    assert counts["path_stats"] == 1 and counts["enoent"] == 1 and counts["total"] == 1


def test_times_with_dash_T():
    counts = harness.parse_log([
        '7  newfstatat(AT_FDCWD, "/a", 0x1, 0) = -1 ENOENT (No such file or directory) <0.000020>',
        '7  getdents64(3, 0x1 /* 2 entries */, 32768) = 48 <0.000010>',
        '7  close(3) = 0 <0.000005>',
    ])
    assert counts["path_stats"] == 1 and counts["getdents64"] == 1 and counts["total"] == 3
    assert abs(counts.seconds["path_stats"] - 20e-6) < 1e-12
    assert abs(counts.seconds["other"] - 5e-6) < 1e-12


def test_minus_and_post_site():
    whole = harness.parse_log(LOG)
    presite = harness.parse_log(LOG[:3])
    post = whole.minus(presite)
    assert post["path_stats"] == 4 and post.lookups == 6
    assert whole.as_dict()["lookups"] == 8


def test_ratio_intervals():
    stock = [0.010 + 0.0001 * (i % 5) for i in range(40)]
    faster = [t * 0.5 for t in stock]
    point, lo, hi = harness.ratio_interval(faster, stock)
    assert abs(point - 0.5) < 1e-9 and lo <= point <= hi
    point, lo, hi = harness.paired_ratio_interval(faster, stock)
    assert abs(point - 0.5) < 1e-9 and abs(lo - 0.5) < 1e-9 and abs(hi - 0.5) < 1e-9
    median_ms, iqr_ms = harness.spread(stock)
    assert 10.0 <= median_ms <= 10.5 and iqr_ms >= 0


def test_timed_run_reports_wall_and_cpu():
    wall, cpu = harness.timed_run([sys.executable, "-c", "pass"], dict(os.environ))
    assert wall > 0 and cpu >= 0


def test_engines_from_serve_help():
    import bench

    clap = """Run the daemon.

Usage: finderd serve [OPTIONS]

Options:
      --socket <PATH>
          Unix socket
      --refresh-engine <ENGINE>
          How directories are read: io_uring batches, synchronous statx, or chosen per
          filesystem by measurement

          [default: auto]
          [possible values: auto, sync, uring]

      --max-watches <N>
          Most inotify watches
"""
    engines, note = bench.parse_engines(clap)
    assert note is None
    assert engines == {"auto": ["--refresh-engine", "auto"], "sync": ["--refresh-engine", "sync"],
                       "uring": ["--refresh-engine", "uring"]}
    # The form `--help` prints once the values have their own help.
    listed = """Options:
      --refresh-engine <ENGINE>
          How crawls stat directory entries. (restart to change) [default: auto]

          Possible values:
          - auto:  Measure both per filesystem and keep the faster
          - sync:  One system call per entry
          - uring: Batched `IORING_OP_STATX`

      --uring-batch <N>
          Entries per io_uring submission. [default: 64]
"""
    engines, note = bench.parse_engines(listed)
    assert note is None
    assert engines == {"auto": ["--refresh-engine", "auto"], "sync": ["--refresh-engine", "sync"],
                       "uring": ["--refresh-engine", "uring"]}
    engines, note = bench.parse_engines("Options:\n      --socket <PATH>\n          socket\n")
    assert engines == {"default": []} and "no io_uring" in note


def test_s7_renders_goals_round_trips_and_skips():
    import report

    def compare(stock_ms, finderd_ms, trips):
        wall = lambda ms: {"median_ms": ms, "iqr_ms": 1.0}  # noqa: E731
        return {"what": "w", "starts": 20, "stock": {"wall": wall(stock_ms)},
                "finderd": {"wall": wall(finderd_ms)}, "wall_ratio": finderd_ms / stock_ms,
                "wall_ratio_ci95": [0.9, 1.1], "paired": finderd_ms / stock_ms, "cpu_ratio": 1.0,
                "round_trips_mean": trips, "round_trips_max": trips}

    counts = {"whole_run_lookups": 10, "total": 100, "seconds": {"path_stats": 0.001}}
    local = {"goal_wall_ratio": 0.97, "first_job": compare(250, 260, 6),
             "later_jobs": compare(250, 240, 1), "later_first_starts": compare(250, 245, 1),
             "later_other_starts": compare(250, 240, 1),
             "first_start_round_trips": [{"snapshot": 1, "lookup": 0}] * 9,
             "per_job": [{"stock_median_ms": 250, "finderd_median_ms": 240, "round_trips": [1]}],
             "post_site_lookups": {"stock": 1600, "finderd_first_start": 40,
                                   "finderd_second_start": 40},
             "counts": {"stock": counts, "finderd_first_start": counts},
             "fallback": {"first_start": None, "second_start": None},
             "daemon_later_jobs": {"snapshot_requests": 180, "lookup_requests": 0}}
    s7 = {"id": "S7", "goals": {"first_start_round_trips": 1}, "command": "c", "mode": "full",
          "measured": "d", "commit": "x", "variants": {"local": local,
                                                       "fuse": {"skipped": "no bindfs"}}}
    text = report.render_s7(s7)
    assert "| local: w | 20 | 250.0 (1.00) | 240.0 (1.00) | 0.960" in text
    assert "≤ 0.97 | met |" in text and "| local | 1+0, 1+0" in text
    assert "| fuse | skipped: no bindfs |" in text
    local["first_start_round_trips"][0] = {"snapshot": 1, "lookup": 3}
    local["first_start_round_trips"] = [{"snapshot": 1, "lookup": 3}]
    assert "not met: up to 4" in report.render_s7(s7)
    assert "Skipped: no user namespaces." in report.render_s7({"skipped": "no user namespaces"})


def test_s7_pods_are_rootless_overlay_mounts():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "tests", "python"))
    import namespaces

    argv = namespaces.pod_argv(True, "/img", "/u", "/w", "/app", "/sock", ["py", "-c", "x"])
    assert "--user" in argv and "--map-root-user" in argv and "--mount" in argv
    assert argv[-9:] == ["sh", "/img", "/u", "/w", "/app", "/sock", "py", "-c", "x"]
    assert "mount -t overlay" in namespaces.POD_SCRIPT
    daemon = namespaces.daemon_argv("/bin/finderd", "/app", "/sock/finderd.sock")
    assert "--no-new-privs" in " ".join(daemon) and daemon[-6:-4] == ["/bin/finderd", "serve"]


def test_s6_goals_are_set_against_the_floor_the_client_waits_like():
    import report

    def floor(wait, p50, p99):
        return {"like": "lookup", "clients": 1, "wait": wait, "p50_us": p50, "p99_us": p99}

    s6 = {"goals": {"lookup_p99_us": 100},
          "rpc": [{"mode": "lookup", "clients": 1, "p50_us": 40.0, "p99_us": 90.0}],
          "floor": [floor("poll", 18.0, 36.0), floor("block", 60.0, 110.0)]}
    text = report.s6_against_floor(s6)
    assert "90.0 us = 2.50× the floor's 36.0 us (client waits: poll)" in text
    assert "below the floor" not in text
    s6["floor"] = [floor("block", 60.0, 110.0)]  # an older run: blocking floor only
    text = report.s6_against_floor(s6)
    assert "the floor's 110.0 us (client waits: block)" in text and "below the floor" in text

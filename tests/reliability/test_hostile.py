"""Hostile peers, bad input and fuzzing (issue 8, docs/reliability.md).

Contracts (../shared/DESIGN.md): nobody learns through the daemon what they
could not learn themselves (no names, no fingerprints, not even existence);
bad input gets a clear gRPC status naming what was wrong and breaks nothing.

The unprivileged peer is user nobody (65534), run with setpriv; the private
directories belong to uid 12345. The daemon runs as root (it can read
everything, so only its peer policy stands between nobody and the names).
"""

import ctypes
import glob
import json
import os
import pwd
import random
import shutil
import struct
import subprocess
import threading
import time

import pytest

import rawh2
import wire
from conftest import HERE, LONG, figure
from helpers import (NOBODY, PATIENT_DEADLINES, finish, last_json, peer_python, run_peer, spawn,
                     tree_for_nobody, wait_for, write)

OTHER_UID = 12345
HOSTILE_PEER = os.path.join(HERE, "hostile_peer.py")
CORPUS = os.path.join(HERE, "corpus")


def needs_root_and_nobody():
    if os.geteuid() != 0:
        pytest.skip("needs root (setpriv, chown)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv(1) missing")
    try:
        pwd.getpwuid(NOBODY)
    except KeyError:
        pytest.skip("no user nobody (65534)")
    if not os.access(peer_python(), os.X_OK):
        pytest.skip("no interpreter runnable by nobody")


def hostile_daemon(make_daemon, *args):
    """A root daemon whose socket nobody may connect to."""
    needs_root_and_nobody()
    d = make_daemon("--socket-mode", "666", *args)
    tree_for_nobody(d.socket)
    return d


def hostile(socket_path, job, user=NOBODY, timeout=300, wait=True):
    """hostile_peer.py as @user (a Popen, its stdin a pipe, when not @wait)."""
    argv = [peer_python(), HOSTILE_PEER, socket_path, json.dumps(job)]
    if user is not None:
        argv = ["setpriv", "--reuid=%d" % user, "--regid=%d" % user, "--clear-groups", "--"] + argv
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.environ["FINDERD_RELIABILITY_GRPC_SITE"], "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            stdin=subprocess.DEVNULL if wait else subprocess.PIPE)
    return collect(proc, timeout) if wait else proc


def collect(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError("hostile peer hung for %d s:\n%s" % (timeout, err[-3000:])) from None
    if proc.returncode != 0:
        raise AssertionError("hostile peer failed (%d):\n%s\n%s" % (proc.returncode, out, err))
    return json.loads(out.strip().splitlines()[-1])


def collect_exit(proc, timeout=60):
    """Waits for a hostile peer started with wait=False whose stdin is closed."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("hostile peer did not exit after stdin closed") from None


def owned(path, mode, uid=OTHER_UID):
    os.chown(path, uid, uid)
    os.chmod(path, mode)


# ---------------------------------------------------------------- 1. no disclosure

def private_layout(tmp):
    """Directories nobody may not list, each named secret_* inside, and the
    ones it may; returns (paths to ask, secret names)."""
    tree_for_nobody(tmp)
    j = lambda *p: os.path.join(tmp, *p)  # noqa: E731
    write(j("private", "secret_top.py"))
    write(j("private", "inner", "secret_inner.py"))
    write(j("private", "inner", "deeper", "secret_deeper.py"))
    write(j("searchonly", "secret_so_name.py"))
    write(j("searchonly", "readable", "visible.py"))
    write(j("searchonly", "closed", "secret_closed.py"))
    write(j("public", "pkg", "public_mod.py"))
    for d in ("private/inner/deeper", "private/inner", "searchonly/readable"):
        owned(j(d), 0o755)
    owned(j("private"), 0o700)
    owned(j("searchonly"), 0o711)
    owned(j("searchonly", "closed"), 0o700)
    for f in glob.glob(j("**", "*.py"), recursive=True):
        owned(f, 0o644)
    os.symlink(j("private", "inner"), j("link_inner"))
    os.symlink(j("private"), j("link_top"))
    os.symlink("private/inner/deeper", j("link_rel"))
    tree_for_nobody(j("public", "pkg"))
    asked = [j("private"), j("private", "inner"), j("private", "inner", "deeper"),
             j("private", "missing"), j("private", "inner", "missing"),
             j("link_inner"), j("link_inner", "deeper"), j("link_top"), j("link_top", "inner"),
             j("link_rel"), j("searchonly"), j("searchonly", "closed"), j("searchonly", "readable"),
             j("searchonly", "missing"), j("searchonly", "closed", "missing"), j("public", "pkg")]
    secret = ["secret_top.py", "secret_inner.py", "secret_deeper.py", "secret_so_name.py",
              "secret_closed.py", "inner", "deeper", "readable", "closed"]
    return asked, secret


def check_no_disclosure(asked, stock, directories, secret):
    """Each answer against what nobody learns by itself (listdir, stat)."""
    problems = []
    by_path = {}
    for d in directories:
        by_path.setdefault(d["path"], d)
        names = set(d["entries"])
        own = stock.get(d["path"], {})
        if d["status"] == "SERVED":
            if own.get("listdir") is None:
                problems.append(("served what nobody cannot list", d["path"], sorted(names)))
            elif sorted(names) != own["listdir"]:
                problems.append(("listing differs from nobody's own", d["path"]))
        elif d["status"] == "ABSENT":
            if own.get("stat") not in (2, 20):  # ENOENT, ENOTDIR
                problems.append(("existence disclosed", d["path"], own))
        else:
            if names or d["mode"] or d["generation"]:
                problems.append(("names or fingerprints with %s" % d["status"], d["path"]))
            if any(s in d["reason"] for s in secret):
                problems.append(("reason names a secret", d["path"], d["reason"]))
            if own.get("listdir") is not None:
                problems.append(("refused what nobody can list", d["path"], d["reason"]))
    for path in asked:
        if path in stock and path not in by_path:
            problems.append(("not answered", path))
    return problems


def test_unprivileged_peer_learns_nothing_it_could_not_list(make_daemon, tmp):
    d = hostile_daemon(make_daemon)
    asked, secret = private_layout(tmp)
    # The daemon (root) has crawled and holds every listing first.
    ch = d.channel()
    warm = ch.lookup([os.fsencode(p) for p in asked])["directories"]
    assert sum(x["status"] == wire.SERVED for x in warm) >= 10, warm
    # Root learns a plan naming private directories under key K.
    key = "hostile-plan-" + tmp
    planned = [os.path.join(tmp, p) for p in ("private/inner", "private/inner/deeper",
                                              "searchonly/closed", "public/pkg")]
    code, body = ch.call("Report", wire.report_request(key.encode(), [os.fsencode(p) for p in planned]))
    assert code == "OK", body
    root_snapshot = None
    for _ in range(50):  # the plan is adopted by the keeper thread
        code, body = ch.call("Snapshot", wire.snapshot_request([tmp.encode()], program_key=key.encode()))
        root_snapshot = [v for f, _, v in wire.fields(body) if f == 6]
        if root_snapshot and root_snapshot[0] >= 4:
            break
        time.sleep(0.1)
    assert root_snapshot and root_snapshot[0] >= 4, "root's plan never served: %s" % root_snapshot
    ch.close()

    stock = hostile(d.socket, {"op": "stock", "paths": asked})
    results = hostile(d.socket, {"op": "calls", "calls": [
        {"method": "Snapshot", "sys_path": asked},
        {"method": "Lookup", "paths": asked},
        # Root's key: nobody must not get root's plan (nor its public part).
        {"method": "Snapshot", "sys_path": [tmp], "program_key": key},
        # nobody's own Report naming the private directories, then its Snapshot.
        {"method": "Report", "program_key": key + "-nobody", "directories": planned},
        {"method": "Snapshot", "sys_path": [tmp], "program_key": key + "-nobody"},
        {"method": "Snapshot", "sys_path": [tmp], "program_key": key + "-nobody"},
    ]})
    assert all(r["code"] == "OK" for r in results), results
    snapshot, lookup, stolen_plan, _, own_plan, own_plan2 = results
    problems = check_no_disclosure(asked, stock, snapshot["directories"][:len(asked)], secret)
    problems += check_no_disclosure(asked, stock, lookup["directories"], secret)
    extra = snapshot["directories"][len(asked):]  # prefetched: only what nobody may list
    problems += check_no_disclosure([], stock, [x for x in extra if x["path"] in stock], secret)
    for x in extra:
        if any(s in x["path"].rsplit("/", 1)[-1] or s in x["entries"] for s in secret):
            problems.append(("prefetched a secret", x["path"]))
    # Root's plan is root's: nobody's Snapshot with root's key carries none of it.
    if stolen_plan["planned"] or len(stolen_plan["directories"]) > 2:
        problems.append(("another uid's plan served", stolen_plan))
    for plan_reply in (own_plan, own_plan2):
        for x in plan_reply["directories"][1:]:
            if x["path"] != os.path.join(tmp, "public", "pkg"):
                problems.append(("own plan served a private directory", x["path"]))
        problems += check_no_disclosure([], stock, [x for x in plan_reply["directories"]
                                                    if x["path"] in stock], secret)
    status = {x["path"][len(tmp):]: x["status"] for x in lookup["directories"]}
    print("nobody's answers:", json.dumps(status, indent=1))
    figure("hostile: no disclosure to an unprivileged peer", paths_asked=len(asked),
           served=sum(v == "SERVED" for v in status.values()),
           not_served=sum(v == "NOT_SERVED" for v in status.values()),
           absent=sum(v == "ABSENT" for v in status.values()),
           root_plan_directories=root_snapshot[0], stolen_plan_directories=stolen_plan["planned"],
           own_plan_directories=own_plan2["planned"], disclosures=len(problems))
    assert problems == [], problems
    # What stock allows, nobody gets: a 0755 directory inside a 0711 one.
    assert status["/searchonly/readable"] == "SERVED"
    assert status["/searchonly/missing"] == "ABSENT"
    for hidden in ("/private", "/private/inner", "/private/missing", "/link_inner", "/link_rel",
                   "/link_top/inner", "/searchonly", "/searchonly/closed",
                   "/searchonly/closed/missing"):
        assert status[hidden] == "NOT_SERVED", (hidden, status[hidden])


# ---------------------------------------------------------------- 2. check/crawl race

SWAPPER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b, stop, seconds = sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3], float(sys.argv[4])
AT_FDCWD, RENAME_EXCHANGE = -100, 2
swaps = 0
deadline = time.monotonic() + seconds
while not os.path.exists(stop) and time.monotonic() < deadline:
    if libc.renameat2(AT_FDCWD, a, AT_FDCWD, b, RENAME_EXCHANGE) != 0:
        sys.exit("renameat2: errno %d" % ctypes.get_errno())
    swaps += 1
    if swaps % 8 == 0:
        time.sleep(0.0002)  # each side also holds for a moment
print(swaps)
"""


def race_layout(tmp):
    """race/x: a public directory with `inner/`, swapped (RENAME_EXCHANGE)
    with race/x.link -> private, whose `inner/` is 0755 inside a 0700
    directory of another uid: nobody may list race/x/inner only while x is
    the public directory."""
    tree_for_nobody(tmp)
    race = os.path.join(tmp, "race")
    private = os.path.join(tmp, "private")
    write(os.path.join(private, "secret_top.py"))
    write(os.path.join(private, "inner", "secret_inner.py"))
    write(os.path.join(private, "inner", "secret_inner2.py"))
    owned(os.path.join(private, "inner"), 0o755)
    owned(private, 0o700)
    write(os.path.join(race, "x", "public_top.py"))
    write(os.path.join(race, "x", "inner", "public_inner.py"))
    os.symlink(private, os.path.join(race, "x.link"))
    tree_for_nobody(os.path.join(race, "x", "inner"))
    return race, ["secret_top.py", "secret_inner.py", "secret_inner2.py"]


@pytest.mark.parametrize("requests", [pytest.param(3000, id="3000"),
                                      pytest.param(30000, id="30000", marks=pytest.mark.long)])
def test_swap_to_symlink_between_check_and_crawl_never_discloses(make_daemon, tmp, requests):
    if not hasattr(ctypes.CDLL(None), "renameat2"):
        pytest.skip("no renameat2 in libc")
    d = hostile_daemon(make_daemon)
    race, secret = race_layout(tmp)
    x = os.path.join(race, "x")
    stop = os.path.join(tmp, "stop")
    swapper = subprocess.Popen([peer_python(), "-c", SWAPPER, x, x + ".link", stop, "600"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        peers = [hostile(d.socket, {"op": "race", "method": method, "paths": paths,
                                    "count": requests // 2, "seconds": 400 if LONG else 80,
                                    "secret": secret}, wait=False)
                 for method, paths in (("Lookup", [os.path.join(x, "inner"), x]),
                                       ("Snapshot", [os.path.join(x, "inner")]))]
        got = [collect(p, timeout=900) for p in peers]
    finally:
        open(stop, "w").close()
        out, err = swapper.communicate(timeout=60)
    assert swapper.returncode == 0, err
    swaps = int(out.strip())
    assert d.alive(), d.log()[-3000:]
    statuses = {}
    for g in got:
        for k, v in g["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    sent = sum(g["requests"] for g in got)
    leaks = sum(g["leak_count"] for g in got)
    reasons = {}
    for g in got:
        for k, v in g["reasons"].items():
            reasons[k[:60]] = reasons.get(k[:60], 0) + v
    print("NOT_SERVED reasons:", reasons, "peer seconds:", [g["seconds"] for g in got])
    figure("hostile: dir/symlink swap race", requests=sent, swaps=swaps,
           served=statuses.get("SERVED", 0), not_served=statuses.get("NOT_SERVED", 0),
           absent=statuses.get("ABSENT", 0), errors=sum(v for g in got for k, v in g["codes"].items()
                                                         if k != "OK"),
           leaks=leaks)
    assert leaks == 0, [g["leaks"] for g in got]
    assert all(set(g["codes"]) == {"OK"} for g in got), [g["codes"] for g in got]
    assert sent >= requests * 0.9 or LONG is False and sent >= 500, sent
    # Both sides of the race were seen (else it tested nothing).
    assert statuses.get("SERVED", 0) > 0 and statuses.get("NOT_SERVED", 0) > 0, statuses


# ---------------------------------------------------------------- 3. one peer floods

def test_flooding_peer_is_limited_and_others_are_served(make_daemon, python, tmp):
    limit = 16
    d = hostile_daemon(make_daemon, "--max-requests-per-peer", str(limit))
    flood_dir = os.path.join(tmp, "flood")
    os.makedirs(flood_dir)
    tree = os.path.join(tmp, "tree")
    write(os.path.join(tree, "floodpkg", "__init__.py"))
    write(os.path.join(tree, "floodpkg", "mod.py"), "VALUE = 'served'\n")
    tree_for_nobody(flood_dir)
    rss_before = d.rss_kib()
    # Every flood request crawls 20 paths no one asked before (blocking
    # pool), so hundreds are in flight at once.
    waves, concurrency = (8, 400) if LONG else (3, 400)
    flooder = hostile(d.socket, {"op": "flood", "concurrency": concurrency, "channels": 4,
                                 "waves": waves, "prefix": flood_dir, "per_request": 20},
                      wait=False)
    # Meanwhile root's interpreters start (10 at a time: under the limit)
    # and root asks raw Lookups in a loop.
    code = ("import sys, json, floodpkg.mod as m; "
            "print(json.dumps({'v': m.VALUE, 'state': sys.modules['finderd'].state()}))")
    raw = {"OK": 0}
    stop = threading.Event()

    def raw_loop():
        ch = d.channel()
        while not stop.is_set():
            c, _ = ch.call("Lookup", wire.lookup_request([tree.encode()]))
            raw[c] = raw.get(c, 0) + 1
        ch.close()

    looper = threading.Thread(target=raw_loop)
    looper.start()
    served = fell_back = failed = 0
    try:
        for _ in range(2):
            procs = [spawn(python, code, d.socket, PYTHONPATH=tree, **PATIENT_DEADLINES) for _ in range(10)]
            for p in procs:
                rc, out, err = finish(p, timeout=300)
                got = last_json(out) if rc == 0 else None
                if not got or got["v"] != "served":
                    failed += 1
                    print("FAILED", rc, out[-300:], err[-1500:])
                elif got["state"].startswith("active"):
                    served += 1
                else:
                    fell_back += 1
                    print("fell back:", got["state"])
        flood = collect(flooder, timeout=600)
    finally:
        stop.set()
        looper.join(60)
    rss_after = d.rss_kib()
    stats = d.stats()
    assert d.alive(), d.log()[-3000:]
    codes = flood["codes"]
    figure("hostile: one peer floods", limit=limit, flood_requests=sum(codes.values()),
           flood_ok=codes.get("OK", 0), flood_resource_exhausted=codes.get("RESOURCE_EXHAUSTED", 0),
           other_interpreters=served + fell_back + failed, other_served=served,
           other_fell_back=fell_back, other_failed=failed, other_raw_ok=raw.get("OK", 0),
           other_raw_errors=sum(v for k, v in raw.items() if k != "OK"),
           peer_limit_rejections=stats.get("peer_limit_rejections", 0),
           rss_kib_before=rss_before, rss_kib_after=rss_after)
    assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}, flood
    assert codes.get("RESOURCE_EXHAUSTED", 0) > 0, flood
    assert codes.get("OK", 0) > 0, flood
    for message in flood["messages"].get("RESOURCE_EXHAUSTED", []):
        assert "peer uid 65534" in message and "max_requests_per_peer = %d" % limit in message, message
    assert failed == 0 and fell_back == 0 and served == 20
    assert set(raw) == {"OK"} and raw["OK"] > 0, raw
    assert stats["peer_limit_rejections"] >= codes["RESOURCE_EXHAUSTED"]


def test_a_peer_holding_connections_is_bounded_and_others_are_served(make_daemon, python, tmp):
    """One uid opens connections and never sends a request: past
    max_connections_per_peer they are refused with a GOAWAY naming the limit,
    other users' interpreters are served meanwhile, and a close frees a place."""
    limit, count = 8, 20
    d = hostile_daemon(make_daemon, "--max-connections-per-peer", str(limit))
    tree = os.path.join(tmp, "tree")
    write(os.path.join(tree, "heldpkg", "__init__.py"), "VALUE = 'served'\n")
    tree_for_nobody(tree)
    holder = hostile(d.socket, {"op": "hold", "count": count, "wait": 3}, wait=False)
    try:
        held = json.loads(holder.stdout.readline() or "null")
        assert held, holder.stderr.read()[-3000:]
        nobody_while_held = run_peer(d.socket, "lookup", user=NOBODY, paths=[tree])[0]["code"]
        code = ("import sys, json, heldpkg as m; "
                "print(json.dumps({'v': m.VALUE, 'state': sys.modules['finderd'].state()}))")
        procs = [spawn(python, code, d.socket, PYTHONPATH=tree, **PATIENT_DEADLINES) for _ in range(5)]
        others = [last_json(finish(p)[1]) for p in procs]
        stats = d.stats()
    finally:
        holder.stdin.close()
        collect_exit(holder)
    wait_for(lambda: d.stats()["open_connections"] <= 1, 10, step=0.05)
    nobody_after = run_peer(d.socket, "lookup", user=NOBODY, paths=[tree])[0]
    limits = {entry["name"]: entry["value"] for entry in stats["limits"]}
    figure("hostile: one peer holds connections", limit=limit, opened=count, held=held["held"],
           refused=held["refused"], goaway_codes=held["goaway_codes"],
           refused_without_goaway=held["refused_without_goaway"],
           connection_limit_rejections=stats["connection_limit_rejections"],
           nobody_while_held=nobody_while_held, others_served=sum(
               1 for o in others if o and o["state"].startswith("active")),
           nobody_after_close=nobody_after["code"])
    assert (held["held"], held["refused"]) == (limit, count - limit), held
    assert held["goaway_codes"] == [0xB], held  # ENHANCE_YOUR_CALM
    assert held["goaway_texts"] == [
        "peer uid %d holds %d connections, the limit max_connections_per_peer = %d"
        % (NOBODY, limit, limit)], held
    assert held["refused_without_goaway"] == 0, held
    assert nobody_while_held != "OK"
    assert all(o and o["v"] == "served" and o["state"].startswith("active") for o in others), others
    # The holder's refusals and the nobody peer's (grpc may try twice).
    assert stats["connection_limit_rejections"] >= count - limit + 1, stats
    assert limits.get("max_connections_per_peer") == limit, limits
    assert nobody_after["code"] == "OK", nobody_after
    assert d.alive()


# ---------------------------------------------------------------- 4. bad input

def nested_groups(depth):
    return wire.key(99, 3) * depth + wire.key(99, 4) * depth


def bad_inputs(tmp):
    """(name, method, body, expected code, text the message or reason must contain)."""
    ok_dir = os.path.join(tmp, "ok").encode()
    odd = os.path.join(tmp, "odd").encode() + b"/caf\xe9\xff"
    v = wire.f_varint
    interp = wire.interpreter()
    return [
        ("empty Lookup (no version)", "Lookup", b"", "INVALID_ARGUMENT", "protocol_version is missing"),
        ("empty Snapshot", "Snapshot", b"", "INVALID_ARGUMENT", "protocol_version is missing"),
        ("wrong version", "Lookup", wire.lookup_request([ok_dir], version=2),
         "FAILED_PRECONDITION", "protocol_version 2 is not supported"),
        ("version 2^32-1", "Snapshot", wire.snapshot_request([ok_dir], version=2**32 - 1),
         "FAILED_PRECONDITION", "protocol_version 4294967295 is not supported"),
        # A uint32 field truncates a longer varint (protobuf's rule): 2^40 is 0.
        ("version over 32 bits", "Lookup", v(1, 2**40) + wire.f_bytes(2, ok_dir),
         "INVALID_ARGUMENT", "protocol_version is missing"),
        ("Report without program_key", "Report", wire.report_request(b"", [ok_dir]),
         "INVALID_ARGUMENT", "program_key is empty"),
        ("Report without version", "Report", wire.report_request(b"k", [ok_dir], version=0),
         "INVALID_ARGUMENT", "protocol_version is missing"),
        ("generations not one per path", "Lookup",
         wire.lookup_request([ok_dir, ok_dir], known_generations=[1]),
         "INVALID_ARGUMENT", "known_generations has 1 entries but paths has 2"),
        ("relative path", "Lookup", wire.lookup_request([b"tmp/x"]),
         "INVALID_ARGUMENT", 'paths[0] is not an absolute path: "tmp/x"'),
        ("relative non-UTF-8 sys_path", "Snapshot", wire.snapshot_request([ok_dir, b"\xff\xfe/x"]),
         "INVALID_ARGUMENT", 'sys_path[1] is not an absolute path: "\\xff\\xfe/x"'),
        ("empty path", "Lookup", wire.lookup_request([b""]),
         "INVALID_ARGUMENT", 'paths[0] is not an absolute path: ""'),
        ("relative Report directory", "Report", wire.report_request(b"k", [b"rel"]),
         "INVALID_ARGUMENT", 'directories[0] is not an absolute path: "rel"'),
        ("NUL byte in path", "Lookup", wire.lookup_request([ok_dir + b"\0/x"]),
         "NOT_SERVED", "contains a NUL byte"),
        ("'..' component", "Lookup", wire.lookup_request([ok_dir + b"/../ok"]),
         "NOT_SERVED", "'..' component"),
        ("'.' component", "Lookup", wire.lookup_request([ok_dir + b"/."]), "NOT_SERVED", "'.' component"),
        ("empty component", "Snapshot", wire.snapshot_request([b"/" + ok_dir]),
         "NOT_SERVED", "empty component"),
        ("trailing slash", "Lookup", wire.lookup_request([ok_dir + b"/"]), "NOT_SERVED", "trailing '/'"),
        ("longer than PATH_MAX", "Lookup", wire.lookup_request([b"/a" * 3000]),
         "NOT_SERVED", "longer than PATH_MAX"),
        ("non-UTF-8 path (exists)", "Lookup", wire.lookup_request([odd]), "SERVED", ""),
        ("non-UTF-8 path (absent)", "Lookup", wire.lookup_request([odd + b"\xfe"]), "ABSENT", ""),
        ("100k sys_path entries", "Snapshot", wire.snapshot_request([b"/x"] * 100_000),
         "RESOURCE_EXHAUSTED", "sys_path has 100000 entries, over the limit max_sys_path_entries = 4096"),
        ("100k Lookup paths", "Lookup", wire.lookup_request([b"/x"] * 100_000),
         "RESOURCE_EXHAUSTED", "paths has 100000 entries, over the limit max_lookup_paths = 4096"),
        ("100k Report directories", "Report", wire.report_request(b"k", [b"/x"] * 100_000),
         "RESOURCE_EXHAUSTED", "directories has 100000 entries, over the limit max_report_paths"),
        ("1 MiB program_key in a Report", "Report", wire.report_request(b"k" * (1 << 20), [ok_dir]),
         "RESOURCE_EXHAUSTED", "program_key is 1048576 bytes, over the limit max_program_key_bytes = 65536"),
        ("1 MiB program_key in a Snapshot (no plan)", "Snapshot",
         wire.snapshot_request([ok_dir], program_key=b"k" * (1 << 20)), "SERVED", ""),
        ("5 MiB request", "Lookup", wire.lookup_request([b"/" + b"x" * (5 << 20)]),
         "RESOURCE_EXHAUSTED", "over the limit max_request_bytes = 4194304"),
        ("not protobuf", "Lookup", b"\xff\xff\xff\xff", "INVALID_ARGUMENT",
         "request body is not a valid LookupRequest"),
        ("truncated varint", "Snapshot", b"\x08\x80", "INVALID_ARGUMENT",
         "request body is not a valid SnapshotRequest"),
        ("length past the end", "Lookup", v(1, 1) + wire.key(2, 2) + wire.varint(1000) + b"/x",
         "INVALID_ARGUMENT", "request body is not a valid LookupRequest"),
        ("length 2^62", "Lookup", v(1, 1) + wire.key(2, 2) + wire.varint(1 << 62),
         "INVALID_ARGUMENT", "request body is not a valid LookupRequest"),
        ("wrong wire type", "Lookup", wire.f_bytes(1, b"\x01"), "INVALID_ARGUMENT",
         "request body is not a valid LookupRequest"),
        ("invalid wire type 7", "Stats", bytes([0x0F]), "INVALID_ARGUMENT",
         "request body is not a valid StatsRequest"),
        ("field number 0", "Lookup", bytes([0x00, 0x01]), "INVALID_ARGUMENT",
         "request body is not a valid LookupRequest"),
        ("non-UTF-8 string field", "Snapshot",
         v(1, 1) + wire.f_bytes(2, wire.f_bytes(2, b"\xff\xfe")), "INVALID_ARGUMENT",
         "request body is not a valid SnapshotRequest"),
        ("groups nested 1000 deep", "Snapshot", v(1, 1) + nested_groups(1000),
         "INVALID_ARGUMENT", "recursion limit"),
        ("interpreter with nested groups", "Snapshot",
         v(1, 1) + wire.f_bytes(2, interp + nested_groups(200)), "INVALID_ARGUMENT", "recursion limit"),
        ("unknown fields only (no version)", "Lookup", wire.f_bytes(50, b"x" * 100) + v(51, 7),
         "INVALID_ARGUMENT", "protocol_version is missing"),
        ("unknown fields around a valid request", "Lookup",
         wire.f_bytes(50, b"junk") + wire.lookup_request([ok_dir]) + v(51, 7), "SERVED", ""),
        ("packed generations garbage", "Lookup",
         v(1, 1) + wire.f_bytes(2, ok_dir) + wire.f_bytes(3, b"\xff" * 11), "INVALID_ARGUMENT",
         "request body is not a valid LookupRequest"),
        ("unknown method", "/finderd.v1.Finder/Delete", b"", "UNIMPLEMENTED",
         'no method "/finderd.v1.Finder/Delete" here; this daemon serves '),
        ("unknown service", "/finderd.v2.Finder/Snapshot", b"", "UNIMPLEMENTED",
         'no method "/finderd.v2.Finder/Snapshot" here; this daemon serves '),
        ("unknown method of a served library service", "/grpc.health.v1.Health/Delete", b"",
         "UNIMPLEMENTED", "finderd.v1.Finder"),
    ]


def grpc_call(ch, method, body):
    return ch.call(method, body, timeout=60)


def test_bad_input_gets_a_clear_status_and_breaks_nothing(daemon, python, tmp):
    os.makedirs(os.path.join(tmp, "ok"))
    os.makedirs(os.fsdecode(os.path.join(tmp, "odd").encode() + b"/caf\xe9\xff"))
    ch = daemon.channel()
    rows, failures = [], []
    for name, method, body, want, text in bad_inputs(tmp):
        code, reply = grpc_call(ch, method, body)
        if want in ("SERVED", "NOT_SERVED", "ABSENT"):
            got = "error %s: %s" % (code, reply)
            if code == "OK":
                dirs = wire.decode_reply(reply, 4 if method == "Snapshot" else 3)["directories"]
                got = "%s %s" % (dirs[0]["status_name"], dirs[0]["reason"])
                ok = dirs[0]["status_name"] == want and text in dirs[0]["reason"]
            else:
                ok = False
        else:
            got = "%s %s" % (code, reply)
            ok = code == want and text in reply and reply
        rows.append((name, got[:160]))
        if not ok:
            failures.append((name, want, text, got[:300]))
    ch.close()
    # What grpcio will not send: by hand.
    rawh2.ensure_hpack()
    raw_rows = raw_bad_inputs(daemon.socket, tmp)
    for name, want, text, outcome in raw_rows:
        if outcome.get("kind") == "status":
            got = "%s %s" % (rawh2.GRPC_CODES.get(int(outcome["grpc-status"] or -1), outcome["grpc-status"]),
                             outcome["grpc-message"])
        else:
            got = "%s %s" % (outcome["kind"], outcome.get("error", ""))
        rows.append((name, got[:160]))
        if not (got.startswith(want) and text in got):
            failures.append((name, want, text, got[:300]))
    for name, got in rows:
        print("%-45s -> %s" % (name, got))
    # Still serving: Stats and a real interpreter.
    assert daemon.alive(), daemon.log()[-3000:]
    tree = os.path.join(tmp, "tree")
    write(os.path.join(tree, "afterbad.py"), "VALUE = 'fine'\n")
    rc, out, err = finish(spawn(python, "import sys, json, afterbad; print(json.dumps({'v': afterbad.VALUE,"
                                " 'state': sys.modules['finderd'].state()}))", daemon.socket,
                                PYTHONPATH=tree))
    got = last_json(out)
    stats = daemon.stats()
    figure("hostile: bad input", cases=len(rows), clear_answers=len(rows) - len(failures),
           failures=len(failures), rejected_requests=stats.get("rejected_requests", 0),
           interpreter_after=got["state"] if got else "failed")
    assert failures == [], "\n".join(map(str, failures))
    assert rc == 0 and got["v"] == "fine" and got["state"].startswith("active"), (out, err)


def raw_bad_inputs(socket_path, tmp):
    """Malformed gRPC framing and HTTP/2, one connection each."""
    valid = wire.lookup_request([os.path.join(tmp, "ok").encode()])
    F = rawh2.frame
    cases = [
        ("compressed flag, no grpc-encoding", wire.grpc_frame(valid, compressed=True), (), None,
         "INTERNAL", "compressed"),
        ("compressed flag, grpc-encoding gzip", wire.grpc_frame(b"not gzip", compressed=True),
         (("grpc-encoding", "gzip"),), None, "UNIMPLEMENTED", "gzip"),
        ("flag byte 0x80", b"\x80" + wire.grpc_frame(valid)[1:], (), None, "INTERNAL", ""),
        ("message prefix longer than the data", b"\x00" + struct.pack(">I", 1000) + valid, (), None,
         "INTERNAL", ""),
        ("truncated message prefix", b"\x00\x00", (), None, "INTERNAL", ""),
        # tonic answers the first message and does not check content-type.
        ("two messages in a unary call", wire.grpc_frame(valid) * 2, (), None, "OK", ""),
        ("no message at all", b"", (), None, "INTERNAL", "Missing request message"),
        ("content-type not grpc", wire.grpc_frame(valid), (("content-type", "text/plain"),), None,
         "OK", ""),
        # HTTP/2 errors: GOAWAY or RST_STREAM with PROTOCOL_ERROR (1), STREAM_CLOSED (5).
        ("DATA on stream 0", None, (), lambda s: F(rawh2.DATA, 1, 0, b"x"), "goaway 1", ""),
        ("RST then DATA", None, (), lambda s: F(rawh2.RST_STREAM, 0, s, b"\0\0\0\x08") +
         F(rawh2.DATA, 1, s, wire.grpc_frame(valid)), "rst 5", ""),
        ("window update of 0", None, (), lambda s: F(rawh2.WINDOW_UPDATE, 0, s, b"\0\0\0\0") +
         F(rawh2.DATA, 1, s, wire.grpc_frame(valid)), "goaway 1", ""),
        ("bad HPACK in trailers", None, (), lambda s: F(rawh2.DATA, 0, s, wire.grpc_frame(valid)) +
         F(rawh2.HEADERS, 0x5, s, b"\xff\xff\xff\xff"), "goaway 1", ""),
    ]
    out = []
    for name, data, headers, frames, want, text in cases:
        conn = rawh2.Connection(socket_path)
        try:
            outcome = conn.call("/finderd.v1.Finder/Lookup", data, extra_headers=headers, frames=frames)
        finally:
            conn.close()
        out.append((name, want, text, outcome))
    # Garbage instead of frames after the preface.
    conn = rawh2.Connection(socket_path)
    conn.send(b"\x00\x00\x04\xff\x00\x00\x00\x00\x01garbage" + os.urandom(64))
    out.append(("garbage frames after the preface", "goaway", "", conn.outcome(1)))
    conn.close()
    return out


# ---------------------------------------------------------------- 5. request fuzzing

METHODS = ("Snapshot", "Lookup", "Report", "Stats")
REPLY_FIELDS = {"Snapshot": 4, "Lookup": 3}
CODES = {"OK", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED",
         "INTERNAL"}


def corpus_requests():
    """The seed corpus: tests/reliability/corpus/<method>-<name>.bin."""
    seeds = []
    for path in sorted(glob.glob(os.path.join(CORPUS, "*.bin"))):
        method = os.path.basename(path).split("-", 1)[0].capitalize()
        with open(path, "rb") as f:
            seeds.append((method, f.read()))
    return seeds


def test_corpus_is_valid_requests():
    """The seeds decode as the requests they name (rebuild with
    `python tests/reliability/corpus/build.py`)."""
    seeds = corpus_requests()
    assert len(seeds) >= 8, seeds
    for method, body in seeds:
        fields = wire.fields(body)
        if method != "Stats":
            assert (1, 0, 1) in fields, (method, body[:40])


def mutate(rng, seeds):
    method, body = rng.choice(seeds)
    body = bytearray(body)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        what = rng.randrange(11)
        at = rng.randrange(len(body) + 1)
        if what == 0 and body:                          # bit flip
            body[min(at, len(body) - 1)] ^= 1 << rng.randrange(8)
        elif what == 1:                                  # random bytes in
            body[at:at] = os.urandom(rng.randrange(1, 16))
        elif what == 2 and body:                         # cut a range
            del body[at:at + rng.randrange(1, 32)]
        elif what == 3:                                  # truncate
            del body[at:]
        elif what == 4:                                  # splice another seed
            other = rng.choice(seeds)[1]
            cut = rng.randrange(len(other) + 1)
            body[at:] = other[cut:]
        elif what == 5:                                  # an extra field, any wire type
            field = rng.choice((1, 2, 3, 4, 5, 6, 7, 15, 16, 100, 2**29 - 1))
            wt = rng.choice((0, 1, 2, 3, 4, 5, 6, 7))
            extra = wire.key(field, wt)
            if wt == 0:
                extra += wire.varint(rng.choice((0, 1, 2, 2**32, 2**63, 2**64 - 1)))
            elif wt == 2:
                n = rng.choice((0, 1, 5, 300, 70000))
                extra += wire.varint(n) + os.urandom(min(n, 4096))
            elif wt in (1, 5):
                extra += os.urandom(8 if wt == 1 else 4)
            body[at:at] = extra
        elif what == 6:                                  # a huge length
            body[at:at] = wire.key(rng.choice((2, 3, 4)), 2) + wire.varint(rng.choice((2**31, 2**62)))
        elif what == 7:                                  # a hostile path
            path = rng.choice((b"/" + os.urandom(rng.randrange(1, 40)), b"/a/../b", b"//", b"/\0",
                               b"rel", b"/" + b"a/" * 2100, b"/proc/self/root", b"/tmp/\xff\xfe"))
            body[at:at] = wire.f_bytes(rng.choice((2, 3)), path)
        elif what == 8:                                  # nested groups
            body[at:at] = nested_groups(rng.choice((2, 50, 101, 500)))
        elif what == 9:                                  # repeat a chunk
            chunk = body[at:at + rng.randrange(1, 64)]
            body[at:at] = chunk * rng.randrange(2, 50)
        else:                                            # another method's body
            method = rng.choice(METHODS)
    return method, bytes(body)


def well_formed(method, code, reply):
    """None when (code, reply) is a well-formed answer, else why not."""
    if code not in CODES:
        return "unexpected code %s: %s" % (code, reply)
    if code != "OK":
        return None if reply else "%s without a message" % code
    try:
        if method in REPLY_FIELDS:
            out = wire.decode_reply(reply, REPLY_FIELDS[method])
            for d in out["directories"]:
                if d["status"] not in (1, 2, 3, 4):
                    return "directory status %s" % d["status"]
                if d["status"] == 2 and not d["reason"]:
                    return "NOT_SERVED without a reason"
        elif method == "Stats":
            wire.decode_stats(reply)
        elif reply:
            return "Report reply not empty"
    except (ValueError, struct.error) as error:
        return "reply does not decode: %s" % error
    return None


def test_request_fuzz(make_daemon, python, tmp):
    """Random and mutated requests for FINDERD_FUZZ_SECONDS (default 20;
    600 with FINDERD_RELIABILITY_LONG): the daemon never dies, every answer
    is a well-formed gRPC status (a message with every error), and a real
    interpreter is served afterwards."""
    seconds = float(os.environ.get("FINDERD_FUZZ_SECONDS", "600" if LONG else "20"))
    seed = int(os.environ.get("FINDERD_FUZZ_SEED", "0")) or random.randrange(1, 2**31)
    rng = random.Random(seed)
    d = make_daemon("--max-request-bytes", str(1 << 20))
    seeds = corpus_requests()
    ch = d.channel(timeout=60)
    iterations, codes, bad, crashes = 0, {}, [], 0
    raw_cases = raw_outcomes = 0
    rawh2.ensure_hpack()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if rng.random() < 0.02:
            method, body = rng.choice(seeds)
        elif rng.random() < 0.03:
            method, body = rng.choice(METHODS), os.urandom(rng.randrange(0, 200))
        else:
            method, body = mutate(rng, seeds)
        if rng.random() < 0.02:
            # Framing by hand: any flag byte, any declared length.
            raw_cases += 1
            framed = bytes([rng.choice((0, 1, 2, 0x80, 0xFF))]) + struct.pack(
                ">I", rng.choice((len(body), len(body) + 1, max(0, len(body) - 1), 2**31))) + body
            conn = rawh2.Connection(d.socket)
            try:
                outcome = conn.call("/finderd.v1.Finder/" + method, framed)
            finally:
                conn.close()
            if outcome["kind"] == "status" and outcome["grpc-status"] is not None:
                raw_outcomes += 1
            elif outcome["kind"] not in ("rst", "goaway"):
                bad.append(("raw", method, framed[:80].hex(), outcome))
        else:
            code, reply = ch.call(method, body)
            codes[code] = codes.get(code, 0) + 1
            why = well_formed(method, code, reply)
            if why:
                bad.append((method, body[:200].hex(), why))
        iterations += 1
        if iterations % 500 == 0 and not d.alive():
            break
    ch.close()
    if not d.alive():
        crashes += 1
    tree = os.path.join(tmp, "tree")
    write(os.path.join(tree, "afterfuzz.py"), "VALUE = 'fine'\n")
    got = None
    if d.alive():
        rc, out, err = finish(spawn(python, "import sys, json, afterfuzz; print(json.dumps({'v': "
                                    "afterfuzz.VALUE, 'state': sys.modules['finderd'].state()}))",
                                    d.socket, PYTHONPATH=tree))
        got = last_json(out) if rc == 0 else None
    figure("hostile: request fuzzing", seconds=seconds, seed=seed, iterations=iterations,
           raw_framing_cases=raw_cases, codes=codes, malformed_answers=len(bad), crashes=crashes,
           rss_kib=d.rss_kib() if d.alive() else 0,
           interpreter_after=got["state"] if got else "failed")
    assert crashes == 0, d.log()[-5000:]
    assert bad == [], bad[:10]
    assert got and got["v"] == "fine" and got["state"].startswith("active"), got
    assert iterations > 0

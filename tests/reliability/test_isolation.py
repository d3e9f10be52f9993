"""Isolation (docs/security.md): a daemon shared by every user of a host
never reads, reveals or keeps for one user what that user could not
itself, and one user can neither make another's imports stale nor starve
them.

The daemon runs as root (it can read everything: only its gate stands
between the users and the files). Two unprivileged uids, run with setpriv:
ATTACKER, with a shell's worth of means (its own directories, symlinks,
renames, any request on the socket), and VICTIM, whose private files the
attacks aim at. Every attack checks its positive control too (what the
victim, or the attacker on its own files, does get), so a daemon that
served nothing would fail.

Classes (the issue's numbering):
  1. file bytes of another user (compiled files served from memory);
  2. metadata through symlinks;
  3. side channels (Stats, generation slots, /proc magic links);
  4. one user starving or damaging the others (plans, deep trees, repeated
     paths, slots, request bodies);
  5. one user making another's imports stale (watch exhaustion).
"""

import glob
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest

import rawh2
from conftest import HERE, figure
from helpers import PATIENT_DEADLINES, peer_python, percentile, tree_for_nobody, wait_for

ATTACKER = 23001
VICTIM = 23002
ATTACKER_PY = os.path.join(HERE, "attacker.py")
TAG = "cpython-311"
SECRET = b"VICTIM-SECRET-BYTECODE " * 40


def needs_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (setpriv, chown)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv(1) missing")
    if not os.access(peer_python(), os.X_OK):
        pytest.skip("no interpreter runnable by other uids")


def as_user(uid, socket_path, steps, timeout=300):
    """attacker.py as @uid: one result per step."""
    argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "--",
            peer_python(), ATTACKER_PY, socket_path, "-"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=peer_env(),
                          input=json.dumps(steps) + "\n")
    assert proc.returncode == 0, "uid %d failed:\n%s\n%s" % (uid, proc.stdout, proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def peer(uid, socket_path, steps):
    """attacker.py as @uid, running: its steps on stdin's first line, which
    stays open (steps such as warm_starts go on until it closes)."""
    argv = ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "--",
            peer_python(), ATTACKER_PY, socket_path, "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=peer_env())
    proc.stdin.write(json.dumps(steps) + "\n")
    proc.stdin.flush()
    return proc


def peer_env():
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONPATH": os.environ["FINDERD_RELIABILITY_GRPC_SITE"]}


def rpc(uid, socket_path, method, **fields):
    return as_user(uid, socket_path, [dict(do="rpc", method=method, **fields)])[0]


def directory(reply, path):
    found = [d for d in reply["directories"] if d["path"] == path]
    assert found, "%s not in %s" % (path, [d["path"] for d in reply["directories"]])
    return found[0]


def entry(listing, name):
    found = [e for e in listing["entries"] if e["name"] == name]
    assert found, "%s not in %s" % (name, listing["path"])
    return found[0]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def write(path, data=b"", mode=0o644, uid=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if uid is not None:
        os.chown(path, uid, uid)


def own(path, uid, mode):
    os.chown(path, uid, uid)
    os.chmod(path, mode)


class Homes:
    """/base/victim (0755) with private/ (0700) and public/ (0755) trees,
    and /base/attacker (0755), all owned by their users."""

    def __init__(self, base):
        self.base = base
        os.makedirs(base)
        tree_for_nobody(base)
        os.chmod(base, 0o755)
        self.victim = os.path.join(base, "victim")
        self.attacker = os.path.join(base, "attacker")
        self.private = os.path.join(self.victim, "private")
        self.public = os.path.join(self.victim, "public")
        self.pkg = os.path.join(self.private, "pkg")
        self.cache = os.path.join(self.pkg, "__pycache__")
        self.secret_pyc = os.path.join(self.cache, "secret.%s.pyc" % TAG)
        write(os.path.join(self.pkg, "__init__.py"))
        write(os.path.join(self.pkg, "secret_mod.py"), b"token = 'victim'\n")
        write(self.secret_pyc, SECRET, mode=0o600)
        os.makedirs(os.path.join(self.private, "secret_name_dir"))
        self.shared_pyc = os.path.join(self.public, "pkg", "__pycache__", "shared.%s.pyc" % TAG)
        write(os.path.join(self.public, "pkg", "__init__.py"))
        write(self.shared_pyc, b"PUBLIC-BYTECODE " * 8, mode=0o644)
        os.makedirs(self.attacker)
        for root, dirs, files in os.walk(self.victim):
            for name in dirs:
                own(os.path.join(root, name), VICTIM, 0o755)
            for name in files:
                path = os.path.join(root, name)
                own(path, VICTIM, stat.S_IMODE(os.stat(path).st_mode))
        own(self.victim, VICTIM, 0o755)
        own(self.private, VICTIM, 0o700)
        own(self.attacker, ATTACKER, 0o755)

    def a(self, *parts):
        return os.path.join(self.attacker, *parts)


@pytest.fixture
def homes(tmp):
    needs_root()
    base = os.path.join(tmp, "base")
    yield Homes(base)
    # Python's rmtree recurses per level: a chain 1,500 deep is removed here,
    # with rm (fts), so that no later pytest run trips on it.
    subprocess.run(["rm", "-rf", "--one-file-system", base], check=False)


@pytest.fixture
def root_daemon(make_daemon, homes):
    """A root daemon every uid may connect to, for which every filesystem it
    has measured is slow (`--slow-stat-ns 0`), so compiled files are served
    from memory; a first crawl of 64 entries measures the test's one."""
    d = make_daemon("--socket-mode", "666", "--slow-stat-ns", "0")
    tree_for_nobody(d.socket)
    calibrate = os.path.join(homes.base, "calibrate")
    for i in range(64):
        write(os.path.join(calibrate, "m%02d.py" % i))
    ch = d.channel()
    ch.lookup([calibrate.encode()])
    ch.close()
    return d


# ------------------------------------------------------- 1. file bytes of another user

def planned_files(uid, socket_path, key, files, directories=()):
    """@uid reports a plan naming @files, then starts it: the files served."""
    rpc(uid, socket_path, "Report", program_key=key, directories=list(directories),
        bytecode_files=list(files))
    reply = rpc(uid, socket_path, "Snapshot", paths=[], program_key=key,
                bytecode_bytes=1 << 20)
    assert reply["code"] == "OK", reply
    return reply["files"]


def test_a_plan_through_a_symlink_then_a_same_fingerprint_decoy_never_gets_the_victims_bytes(
        root_daemon, homes):
    s = root_daemon.socket
    # Control: the victim's own plan gets its bytes (they are now cached).
    served = planned_files(VICTIM, s, "victim", [homes.secret_pyc], [homes.cache])
    assert [f["sha"] for f in served] == [sha(SECRET)]
    link = homes.a("link")
    via_link = os.path.join(link, "__pycache__", os.path.basename(homes.secret_pyc))
    as_user(ATTACKER, s, [{"do": "symlink", "target": homes.pkg, "path": link}])
    assert planned_files(ATTACKER, s, "attack", [via_link], [os.path.dirname(via_link)]) == []
    # A decoy of the same name, size and mtime, then the link on it.
    st = os.stat(homes.secret_pyc)
    decoy = homes.a("decoy", "__pycache__", os.path.basename(homes.secret_pyc))
    decoy_bytes = b"D" * len(SECRET)
    as_user(ATTACKER, s, [
        {"do": "mkdir", "path": os.path.dirname(decoy)},
        {"do": "write", "path": decoy, "data": decoy_bytes.decode(), "mtime_ns": st.st_mtime_ns},
        {"do": "symlink", "target": homes.a("decoy"), "path": link}])
    served = planned_files(ATTACKER, s, "attack", [via_link], [os.path.dirname(via_link)])
    assert sha(SECRET) not in [f["sha"] for f in served]
    assert [f["sha"] for f in served] == [sha(decoy_bytes)], "the decoy's own bytes"
    figure("isolation_decoy", attacks=2, leaks=0)


def test_a_symlink_swapped_during_snapshots_never_leaks_the_victims_bytes(root_daemon, homes):
    s = root_daemon.socket
    planned_files(VICTIM, s, "victim", [homes.secret_pyc], [homes.cache])
    link = homes.a("flip")
    name = os.path.basename(homes.secret_pyc)
    decoy = homes.a("decoy", "__pycache__", name)
    via_link = os.path.join(link, "__pycache__", name)
    # The decoy has the secret's size and mtime: a read that follows the
    # link after the listing was checked would find the fingerprint it wants.
    mtime = os.stat(homes.secret_pyc).st_mtime_ns
    as_user(ATTACKER, s, [
        {"do": "mkdir", "path": os.path.dirname(decoy)},
        {"do": "write", "path": decoy, "data": "D" * len(SECRET), "mtime_ns": mtime},
        {"do": "symlink", "target": homes.a("decoy"), "path": link},
        {"do": "rpc", "method": "Report", "program_key": "flip",
         "directories": [os.path.dirname(via_link)], "bytecode_files": [via_link]}])
    raced = as_user(ATTACKER, s, [{
        "do": "swap_race", "link": link, "targets": [homes.a("decoy"), homes.pkg],
        "method": "Snapshot", "program_key": "flip", "bytecode_bytes": 1 << 20,
        "seconds": 6, "secret_sha": [sha(SECRET)]}])[0]
    figure("isolation_swap_race", requests=raced["requests"], files=raced["files_served"],
           leaks=raced["leak_count"])
    assert raced["requests"] > 10, raced
    assert raced["leak_count"] == 0, raced


def test_bytes_cached_before_a_chmod_600_are_not_served_after_it(root_daemon, homes):
    s = root_daemon.socket
    shared = sha(b"PUBLIC-BYTECODE " * 8)
    cache = os.path.dirname(homes.shared_pyc)
    served = planned_files(ATTACKER, s, "reader", [homes.shared_pyc], [cache])
    assert [f["sha"] for f in served] == [shared], "readable: served (control)"
    os.chmod(homes.shared_pyc, 0o600)
    served = planned_files(ATTACKER, s, "reader", [homes.shared_pyc], [cache])
    assert shared not in [f["sha"] for f in served]
    assert [f["sha"] for f in planned_files(VICTIM, s, "owner", [homes.shared_pyc], [cache])] \
        == [shared], "its owner still gets them"


def test_fifos_devices_hard_links_and_files_outside_pycache_are_never_served(root_daemon, homes):
    s = root_daemon.socket
    cache = homes.a("pkg", "__pycache__")
    os.makedirs(cache)
    fifo = os.path.join(cache, "fifo.%s.pyc" % TAG)
    os.mkfifo(fifo)
    device = os.path.join(cache, "null.%s.pyc" % TAG)
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    hard = os.path.join(cache, "hard.%s.pyc" % TAG)
    os.link(homes.secret_pyc, hard)  # as root: what protected_hardlinks=0 would allow
    loose = homes.a("pkg", "loose.%s.pyc" % TAG)
    write(loose, b"LOOSE")
    own_pyc = os.path.join(cache, "own.%s.pyc" % TAG)
    write(own_pyc, b"OWN-BYTES")
    for root, dirs, files in os.walk(homes.a("pkg")):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), ATTACKER, ATTACKER)
    os.chown(hard, VICTIM, VICTIM)
    started = time.monotonic()
    served = planned_files(ATTACKER, s, "odd", [fifo, device, hard, loose, own_pyc], [cache])
    figure("isolation_odd_files", seconds=round(time.monotonic() - started, 2))
    assert [f["sha"] for f in served] == [sha(b"OWN-BYTES")], served


# ------------------------------------------------------- 2. metadata through symlinks

def test_symlinks_into_a_directory_the_peer_cannot_search_read_as_its_own_stat_would(
        root_daemon, homes):
    s = root_daemon.socket
    secret_mod = os.path.join(homes.pkg, "secret_mod.py")
    as_user(ATTACKER, s, [
        {"do": "symlink", "target": secret_mod, "path": homes.a("peek")},
        {"do": "symlink", "target": homes.pkg, "path": homes.a("peekdir")},
        {"do": "symlink", "target": "../victim/private/pkg/secret_mod.py",
         "path": homes.a("dotdot")}])
    hidden = {"kind": 3, "mode": 0, "mtime_ns": 0, "size": 0}

    def seen_by(uid):
        listing = directory(rpc(uid, s, "Lookup", paths=[homes.attacker]), homes.attacker)
        assert listing["status"] == "SERVED", listing
        return {name: {k: entry(listing, name)[k] for k in hidden}
                for name in ("peek", "peekdir", "dotdot")}

    attacker = seen_by(ATTACKER)
    assert attacker == {name: hidden for name in attacker}, attacker
    victim = seen_by(VICTIM)
    assert victim["peek"]["size"] == os.path.getsize(secret_mod), "the owner follows (control)"
    assert victim["peekdir"]["kind"] == 2, "SYMLINK_DIR for the owner"
    # Updated live: still nothing for the attacker after the target changes.
    with open(secret_mod, "ab") as f:
        f.write(b"# grown\n")
    assert seen_by(ATTACKER) == attacker
    assert seen_by(VICTIM)["peek"]["size"] == os.path.getsize(secret_mod)


# ------------------------------------------------------- 3. side channels

def test_stats_tell_a_peer_only_its_own_figures(root_daemon, homes):
    s = root_daemon.socket
    rpc(VICTIM, s, "Lookup", paths=[homes.pkg, homes.private])
    before = rpc(ATTACKER, s, "Stats")
    assert before.get("own_figures_only") == 1, before
    assert before.get("entries", 0) == 0 and before.get("roots", 0) == 0, before
    looked = rpc(ATTACKER, s, "Lookup", paths=[homes.pkg, os.path.join(homes.private, "nope")])
    assert {d["status"] for d in looked["directories"]} == {"NOT_SERVED"}
    after = rpc(ATTACKER, s, "Stats")
    for gauge in ("entries", "index_bytes", "directories", "watches"):
        assert after.get(gauge, 0) == before.get(gauge, 0), (gauge, before, after)
    assert after["requests"] == before["requests"] + 2  # its Lookup and the first Stats
    whole = root_daemon.stats()
    assert whole["entries"] > 0, "root sees the daemon's figures (control)"


def test_generation_slots_tell_nothing_of_names_the_peer_cannot_look_up(root_daemon, homes):
    s = root_daemon.socket
    genfile = s + ".gen"
    rpc(VICTIM, s, "Lookup", paths=[homes.victim])
    probes = [os.path.join(homes.private, "secret_name_dir"),
              os.path.join(homes.private, "missing_name"),
              os.path.join(homes.private, "secret_name_dir", "deeper")]
    done = as_user(ATTACKER, s, [
        {"do": "genfile", "path": genfile},
        {"do": "rpc", "method": "Lookup", "paths": probes},
        {"do": "genfile", "path": genfile}])
    assert {d["status"] for d in done[1]["directories"]} == {"NOT_SERVED"}
    assert done[0]["slots_sha"] == done[2]["slots_sha"], "no slot moved"
    # Control: the attacker's own directories do get slots.
    own = directory(rpc(ATTACKER, s, "Lookup", paths=[homes.attacker]), homes.attacker)
    assert own["slot"] != 0


def test_proc_magic_links_are_not_followed(root_daemon, homes):
    s = root_daemon.socket
    secret_dir = os.path.join(homes.private, "secret_name_dir")
    sleeper = subprocess.Popen(["setpriv", "--reuid=%d" % VICTIM, "--regid=%d" % VICTIM,
                                "--clear-groups", "--", "sleep", "60"], cwd=secret_dir)
    try:
        assert wait_for(lambda: os.path.realpath("/proc/%d/cwd" % sleeper.pid) == secret_dir, 10)
        cwd = "/proc/%d/cwd" % sleeper.pid
        done = as_user(ATTACKER, s, [
            {"do": "symlink", "target": cwd, "path": homes.a("proc")},
            {"do": "rpc", "method": "Lookup",
             "paths": [cwd, "/proc/%d" % sleeper.pid, homes.a("proc"), "/proc/self/cwd"]},
            {"do": "rpc", "method": "Lookup", "paths": [homes.attacker]}])
    finally:
        sleeper.kill()
        sleeper.wait()
    for d in done[1]["directories"]:
        assert d["status"] == "NOT_SERVED" and not d["entries"], d
    assert entry(directory(done[2], homes.attacker), "proc")["kind"] == 3
    # The victim itself cannot learn its own cwd through the daemon either:
    # /proc answers by rules other than mode bits; it is never walked.
    victim = rpc(VICTIM, s, "Lookup", paths=[cwd])
    assert directory(victim, cwd)["status"] == "NOT_SERVED"


# ------------------------------------------------------- 4. starving or damaging the others

def test_a_flood_of_reports_leaves_other_users_plans_in_memory_and_after_a_restart(
        make_daemon, homes):
    state = os.path.join(homes.base, "state")
    os.makedirs(state)
    args = ("--socket-mode", "666", "--state-dir", state, "--max-state-bytes", "262144",
            "--max-plan-bytes-per-uid", "131072")
    d = make_daemon(*args)
    tree_for_nobody(d.socket)
    os.chmod(homes.public, 0o755)
    planned = os.path.join(homes.public, "pkg")
    rpc(VICTIM, d.socket, "Report", program_key="victim", directories=[planned])
    flood = [{"do": "rpc", "method": "Report", "program_key": "flood%d" % i,
              "directories": [homes.a("x" * 200, "%04d" % j) for j in range(40)]}
             for i in range(300)]
    results = as_user(ATTACKER, d.socket, flood)
    assert all(r["code"] == "OK" for r in results)

    def victim_planned(daemon):
        reply = rpc(VICTIM, daemon.socket, "Snapshot", paths=[], program_key="victim")
        return reply["planned"]

    assert victim_planned(d) == 1
    d.stop()
    d.start(*args)
    assert victim_planned(d) == 1, "the victim's plan survives the restart"
    size = os.path.getsize(os.path.join(state, "plans.state"))
    figure("isolation_plan_flood", reports=300, state_bytes=size)
    assert size <= 262144


def test_a_deep_chain_costs_bounded_memory_and_others_are_served(make_daemon, homes, python):
    d = make_daemon("--socket-mode", "666")
    tree_for_nobody(d.socket)
    chain = [homes.attacker]
    for _ in range(1500):
        chain.append(os.path.join(chain[-1], "d"))
        os.mkdir(chain[-1])
        os.chown(chain[-1], ATTACKER, ATTACKER)
    baseline = d.hwm_kib()
    flood = [{"do": "rpc", "method": "Lookup", "paths": chain, "brief": True}] * 40
    latencies, out = victim_warm_starts_beside(d, homes, lambda: peer(ATTACKER, d.socket, flood))
    grown_mib = (d.hwm_kib() - baseline) / 1024
    # The control: the same victim beside a uid that only burns a core for
    # as long, asking finderd nothing. What the flood adds over it is what
    # finderd lets one uid cost another.
    burn = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 1.5:\n    pass\n"
    control, _ = victim_warm_starts_beside(d, homes, lambda: subprocess.Popen(
        ["setpriv", "--reuid=%d" % ATTACKER, "--regid=%d" % ATTACKER, "--clear-groups", "--",
         peer_python(), "-c", burn], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    figure("isolation_deep_chain", depth=1500, rss_growth_mib=round(grown_mib, 1),
           victim_p50_ms=round(percentile(latencies, 50), 2),
           victim_p99_ms=round(percentile(latencies, 99), 2), victim_requests=len(latencies),
           control_p99_ms=round(percentile(control, 99), 2))
    assert grown_mib <= 256, grown_mib
    replies = json.loads(out.strip().splitlines()[-1])
    assert all(r["code"] in ("OK", "RESOURCE_EXHAUSTED") for r in replies), replies


def victim_warm_starts_beside(d, homes, start_other):
    """The victim's warm-start latencies (ms) while the process
    @start_other starts (of another uid) runs; and its stdout. The victim
    is a process of its own uid, as another user's interpreters are."""
    victim = peer(VICTIM, d.socket, [{"do": "warm_starts", "interval_ms": 5,
                                      "paths": [os.path.join(homes.public, "pkg")]}])
    try:
        assert json.loads(victim.stdout.readline()) == {"ready": True}, victim.stderr.read()
        other = start_other()
        out, err = other.communicate(timeout=600)
        assert other.returncode == 0, err
    finally:
        warm, victim_err = victim.communicate(input="", timeout=120)
    assert victim.returncode == 0, victim_err
    return json.loads(warm.strip().splitlines()[-1])[0]["latencies_ms"], out


def test_a_directory_named_many_times_is_answered_once(root_daemon, homes):
    s = root_daemon.socket
    big = homes.a("big")
    os.makedirs(big)
    for i in range(5000):
        open(os.path.join(big, "module_%04d.py" % i), "w").close()
    once = rpc(ATTACKER, s, "Lookup", paths=[big])
    many = rpc(ATTACKER, s, "Lookup", paths=[big] * 300)
    figure("isolation_repeated_path", once_bytes=once["bytes"], repeated_bytes=many["bytes"])
    assert len(many["directories"]) == 300
    assert {d["status"] for d in many["directories"][1:]} == {"UNCHANGED"}
    assert many["bytes"] < 2 * once["bytes"]


def test_one_uid_cannot_take_every_generation_slot(make_daemon, homes):
    d = make_daemon("--socket-mode", "666", "--generation-slots", "2048")
    tree_for_nobody(d.socket)
    missing = [homes.a("missing%05d" % i) for i in range(4000)]
    steps = [{"do": "rpc", "method": "Lookup", "paths": missing[i:i + 500]}
             for i in range(0, len(missing), 500)]
    as_user(ATTACKER, d.socket, steps)
    victim = rpc(VICTIM, d.socket, "Lookup", paths=[homes.victim, homes.public])
    slots = [dd["slot"] for dd in victim["directories"]]
    assert all(slot != 0 for slot in slots), victim


def test_request_bodies_held_short_of_complete_are_bounded_per_uid(make_daemon, homes):
    rawh2.ensure_hpack()
    d = make_daemon("--socket-mode", "666")
    tree_for_nobody(d.socket)
    d.settled_fds()
    baseline = d.rss_kib()
    argv = ["setpriv", "--reuid=%d" % ATTACKER, "--regid=%d" % ATTACKER, "--clear-groups", "--",
            peer_python(), ATTACKER_PY, d.socket,
            json.dumps([{"do": "hold", "connections": 400, "streams": 16, "bytes": 48 * 1024}])]
    holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=peer_env())
    try:
        held = json.loads(holder.stdout.readline())
        time.sleep(2)  # let the daemon read what was sent
        grown_mib = (d.rss_kib() - baseline) / 1024
        ch = d.channel()
        victim = ch.lookup([homes.public.encode()])["directories"][0]
        ch.close()
    finally:
        out, err = holder.communicate(input="", timeout=120)
    result = json.loads(out.strip().splitlines()[-1])[0]
    figure("isolation_held_bodies", held_streams=held["held"], refused=result["refused"],
           rss_growth_mib=round(grown_mib, 1))
    assert victim["status_name"] == "SERVED", "others are still served"
    assert grown_mib <= 160, grown_mib
    assert result["refused"] > 0, result


# ------------------------------------------------------- 5. staleness through another uid

@pytest.fixture(scope="module")
def victim_python():
    """An interpreter any uid may run (the system's), with the client."""
    import support
    if not os.access(peer_python(), os.X_OK) or peer_python() == os.path.realpath(
            __import__("sys").executable):
        pytest.skip("no system interpreter of the grpc venv's version")
    try:
        return support.venv_with_finderd(peer_python(), "-system")
    except subprocess.CalledProcessError as error:
        pytest.skip("cannot build the client for the system interpreter: %s" % error)


@pytest.mark.parametrize("limits", [("--max-watches", "64"),
                                    ("--max-watches", "64", "--max-watches-per-uid", "1000")],
                         ids=["share", "daemon-limit"])
def test_exhausted_watches_never_make_another_users_import_stale(make_daemon, homes,
                                                                  victim_python, limits):
    d = make_daemon("--socket-mode", "666", *limits)
    tree_for_nobody(d.socket)
    empties = [homes.a("empty%03d" % i) for i in range(120)]
    for path in empties:
        os.makedirs(path)
        os.chown(path, ATTACKER, ATTACKER)
    as_user(ATTACKER, d.socket, [{"do": "rpc", "method": "Lookup", "paths": empties}])
    project = os.path.join(homes.victim, "proj")
    module = os.path.join(project, "victim_mod.py")
    write(module, b"value = 1\n", uid=VICTIM)
    own(project, VICTIM, 0o755)
    code = ("import sys, victim_mod, finderd; "
            "print(victim_mod.value, finderd.state().split(':')[0])")

    def victim_imports():
        # Bytecode is written: a stale fingerprint would validate the old
        # .pyc (same size, mtime of another second) and import old code.
        env = {"PATH": os.environ["PATH"], "FINDERD_SOCKET": d.socket, "PYTHONPATH": project,
               **PATIENT_DEADLINES}
        proc = subprocess.run(["setpriv", "--reuid=%d" % VICTIM, "--regid=%d" % VICTIM,
                               "--clear-groups", "--", victim_python, "-c", code],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert victim_imports()[0] == "1"
    assert glob.glob(os.path.join(project, "__pycache__", "victim_mod.*.pyc"))
    # Once more, so that what the daemon holds is the directory with its
    # __pycache__ (the first run's write changed the directory).
    assert victim_imports()[0] == "1"
    before = os.stat(project)
    with open(module, "r+b") as f:  # in place, same size: the directory is untouched
        f.write(b"value = 2\n")
    later = os.stat(module).st_mtime_ns + 5 * 10**9
    os.utime(module, ns=(later, later))
    after = os.stat(project)
    assert (after.st_mtime_ns, after.st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    value, state = victim_imports()
    assert value == "2", "the victim sees its own edit, as stock would"
    assert state == "active", state


# ------------------------------------------------------- bind mounts: what the kernel says

def test_a_bind_mount_is_answered_as_the_kernel_answers_it(root_daemon, homes):
    mountpoint = homes.a("bind")
    os.makedirs(mountpoint)
    os.chown(mountpoint, ATTACKER, ATTACKER)
    if subprocess.run(["mount", "--bind", homes.pkg, mountpoint]).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        os.chmod(homes.pkg, 0o755)
        listing = directory(rpc(ATTACKER, root_daemon.socket, "Lookup", paths=[mountpoint]),
                            mountpoint)
        names = sorted(e["name"] for e in listing["entries"])
        assert listing["status"] == "SERVED" and names == sorted(os.listdir(mountpoint))
        os.chmod(homes.pkg, 0o700)
        listing = directory(rpc(ATTACKER, root_daemon.socket, "Lookup", paths=[mountpoint]),
                            mountpoint)
        assert listing["status"] == "NOT_SERVED" and not listing["entries"]
    finally:
        subprocess.run(["umount", "-l", mountpoint])

"""Learned import plans (issue 9) end to end: real interpreters, a real daemon.

A program's first run reports at exit which package directories it entered;
its next start gets all of them in the Snapshot and needs no Lookup. Every
start, whatever the plan says, sees exactly what stock CPython sees: the
plan names paths, the answers come from the daemon's index.
"""

import json
import os

import support

# Imports a package tree three levels deep and prints what it found: the
# modules' values and which optional modules exist.
PROGRAM = r"""
import importlib, json, sys
import app_pkg.sub.deep.leaf as leaf
import app_pkg.sub.mid as mid
found = {}
for name in ("app_pkg.sub.deep.added", "app_pkg.sub.deep.removed"):
    try:
        found[name] = importlib.import_module(name).VALUE
    except ImportError:
        found[name] = None
print(json.dumps({"leaf": leaf.VALUE, "mid": mid.VALUE, "optional": found}))
"""


def make_tree(root):
    for rel, text in [("app_pkg/__init__.py", ""),
                      ("app_pkg/sub/__init__.py", ""),
                      ("app_pkg/sub/mid.py", "VALUE = 'mid'\n"),
                      ("app_pkg/sub/deep/__init__.py", ""),
                      ("app_pkg/sub/deep/leaf.py", "VALUE = 1\n"),
                      ("app_pkg/sub/deep/removed.py", "VALUE = 'removed'\n")]:
        support.write(os.path.join(root, rel), text)


def start(python, daemon, root, program="app"):
    """One start of the program: its output and the daemon's requests for it."""
    before = daemon.stats(python)
    out = support.run_json(python, PROGRAM, daemon.socket, PYTHONPATH=root,
                           FINDERD_PROGRAM=program)
    after = daemon.stats(python)
    requests = {k: after[k] - before[k] for k in ("snapshot_requests", "lookup_requests")}
    return out, requests


def stock(python, root):
    return support.run_json(python, PROGRAM, "/nonexistent", PYTHONPATH=root, FINDERD="off")


def test_a_learned_plan_makes_the_next_start_one_round_trip(python, daemon, tmp):
    make_tree(tmp)
    first, first_requests = start(python, daemon, tmp)
    assert first == stock(python, tmp)
    assert first_requests["lookup_requests"] >= 1, "the first run enters packages the snapshot lacks"
    warm, warm_requests = start(python, daemon, tmp)
    assert warm == first
    assert warm_requests == {"snapshot_requests": 1, "lookup_requests": 0}, warm_requests


def test_changes_in_planned_packages_are_seen_exactly_as_stock(python, daemon, tmp):
    make_tree(tmp)
    start(python, daemon, tmp)
    start(python, daemon, tmp)
    deep = os.path.join(tmp, "app_pkg", "sub", "deep")
    changes = [
        # modified: new size and mtime (the .pyc written by the last run is stale)
        lambda: support.write(os.path.join(deep, "leaf.py"), "VALUE = 'modified, longer'\n"),
        lambda: os.unlink(os.path.join(deep, "removed.py")),
        lambda: support.write(os.path.join(deep, "added.py"), "VALUE = 'added'\n"),
    ]
    for change in changes:
        change()
        served, _ = start(python, daemon, tmp)
        assert served == stock(python, tmp)
    assert served == {"leaf": "modified, longer", "mid": "mid",
                      "optional": {"app_pkg.sub.deep.added": "added",
                                   "app_pkg.sub.deep.removed": None}}


def test_a_daemon_restart_keeps_the_plan(python, finderd_bin, tmp_path_factory, tmp):
    workdir = str(tmp_path_factory.mktemp("daemon"))
    state = os.path.join(workdir, "state")
    daemon = support.Daemon(finderd_bin, workdir)
    daemon.start("--state-dir", state)
    try:
        make_tree(tmp)
        start(python, daemon, tmp)
        daemon.stop()
        assert os.path.exists(os.path.join(state, "plans.state")), daemon.log()
        daemon.start("--state-dir", state)
        # The new daemon has an empty index: the plan alone names the
        # package directories, so no Lookup is needed even now.
        out, requests = start(python, daemon, tmp)
        assert out == stock(python, tmp)
        assert requests == {"snapshot_requests": 1, "lookup_requests": 0}, requests
        assert "learned plans loaded" in daemon.log()
    finally:
        daemon.stop()


def test_programs_with_different_keys_do_not_share_plans(python, daemon, tmp):
    make_tree(tmp)
    start(python, daemon, tmp, program="one")
    _, warm = start(python, daemon, tmp, program="one")
    _, other_first = start(python, daemon, tmp, program="two")
    assert warm["lookup_requests"] == 0
    assert other_first["lookup_requests"] >= 1, "program two got program one's plan"
    plans = daemon.stats(python)
    assert plans.get("plans", 2) >= 2, json.dumps(plans)

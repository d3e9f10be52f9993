"""finderd removes the lookup syscalls it claims to remove (counts, not timings).

Lookups are stat-family calls on paths plus getdents64, counted after `site`
(a run's count minus that of `python -S -c pass`, which never reaches the
client: see docs/design.md, "What a .pth can and cannot reach").
"""

import os
import shutil
import subprocess
import sys

import pytest

import support

sys.path.insert(0, os.path.join(support.ROOT, "bench"))
import harness  # noqa: E402

STDLIB_SET = "import json, asyncio, email.parser, http.client, argparse, logging, subprocess"

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")


def post_site_lookups(python, code, env, cwd):
    presite = harness.strace_counts([python, "-S", "-c", "pass"], env, cwd=cwd)
    return harness.strace_counts([python, "-c", code], env, cwd=cwd).minus(presite).lookups


def test_stdlib_set_makes_at_most_a_tenth_of_stock_lookups(python, shared_daemon, tmp):
    """Issue 2's bar, for the demo's interpreter and newer. In 3.9 and 3.10 venvs
    setuptools' distutils-precedence.pth adds lookups to `site` itself (stock's
    and finderd's alike), which leaves the same bootstrap at 10-11%; the test
    below holds for every version."""
    if support.python_version(python) < (3, 11):
        pytest.skip("the 10% bar is the demo's (3.11+); see the zero-after-activation test")
    env_on = support.clean_env(shared_daemon.socket)
    env_off = support.clean_env(shared_daemon.socket, FINDERD="off")
    # Warm: the daemon indexes, the interpreter writes its .pyc files.
    support.run(python, STDLIB_SET, shared_daemon.socket, cwd=tmp)
    stock = post_site_lookups(python, STDLIB_SET, env_off, tmp)
    served = post_site_lookups(python, STDLIB_SET, env_on, tmp)
    print("post-site lookups: stock %d, finderd %d (%.1f%%)" % (stock, served, 100.0 * served / stock))
    assert stock > 300
    assert served <= stock // 10


def test_no_lookup_after_activation(python, shared_daemon, tmp):
    """Once the client holds the snapshot (it maps the generation file), the
    stdlib set makes no stat-family call on a path and no getdents64."""
    log = os.path.join(tmp, "strace.log")
    support.run(python, STDLIB_SET, shared_daemon.socket, cwd=tmp)  # warm
    subprocess.run(["strace", "-f", "-qq", "-o", log, python, "-c", STDLIB_SET], cwd=tmp,
                   env=support.clean_env(shared_daemon.socket), check=True)
    after, active = [], False
    with open(log) as f:
        for line in f:
            if ".gen\"" in line and "openat" in line:
                active = True
                continue
            counts = harness.Counts()
            harness.classify(line, counts)
            if active and counts.lookups:
                after.append(line.strip())
    assert active, "the client never mapped the generation file"
    assert after == []


def test_daemon_absent_adds_no_lookup_beyond_the_socket_check(python, tmp):
    missing = os.path.join(tmp, "absent.sock")
    env_on = support.clean_env(missing)
    env_off = support.clean_env(missing, FINDERD="off")
    stock = harness.strace_counts([python, "-c", "pass"], env_off, cwd=tmp)
    absent = harness.strace_counts([python, "-c", "pass"], env_on, cwd=tmp)
    # FINDERD_SOCKET is set, so the .pth line makes exactly one stat(); the
    # venv processes its site-packages twice (lib and lib64), hence up to two.
    assert 1 <= absent["path_stats"] - stock["path_stats"] <= 2
    assert absent["getdents64"] == stock["getdents64"]
    assert absent["openat"] == stock["openat"]

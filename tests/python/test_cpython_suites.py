"""CPython's own import-system test suites pass with finderd active (issue 5).

Each suite runs twice in the same interpreter, stock (FINDERD=off) and with
finderd serving it, and the two runs must fail exactly the same test cases
(none, normally; a case that fails on stock too is reported, not blamed).
They run again with the finderd-python launcher in a venv (issue 13),
against the same venv with the launcher disabled; the suites' own child
interpreters (sys.executable) are the launcher too. By default only CPython
3.11 runs them; FINDERD_TEST_ALL_SUITES=1 (`./scripts/test --slow`) runs
them on every interpreter under test.
"""

import json
import os
import subprocess
import xml.etree.ElementTree as ElementTree

import pytest

import support

SUITES = ["test_importlib", "test_import", "test_pkg", "test_pkgutil", "test_runpy",
          "test_zipimport", "test_site", "test_cmd_line_script"]

RUNNER = """
import atexit, json, sys
def report():
    launcher = sys.modules.get('finderd._launcher')
    finderd = sys.modules.get('finderd') or launcher
    client = launcher.client if launcher else finderd.client() if finderd else None
    state = launcher.state if launcher else finderd.state() if finderd else 'not loaded'
    sys.stderr.write('FINDERD-REPORT %s\\n' % json.dumps(
        {'state': state, 'counters': client.counters() if client else None}))
atexit.register(report)
sys.argv = ['python -m test', '--junit-xml', sys.argv[1]] + sys.argv[2:]
from test.libregrtest.main import main
main()
"""


def failing_cases(junit_path):
    tree = ElementTree.parse(junit_path)
    failing = set()
    for case in tree.iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failing.add("%s.%s" % (case.get("classname"), case.get("name")))
    return failing


def run_suites(python, socket_path, workdir, stock, name=None):
    junit = os.path.join(workdir, "junit-%s.xml" % (name or ("stock" if stock else "finderd")))
    env = support.clean_env(socket_path, FINDERD="off" if stock else None)
    proc = subprocess.run([python, "-c", RUNNER, junit, *SUITES], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=900)
    reports = [line for line in proc.stderr.splitlines() if line.startswith("FINDERD-REPORT ")]
    assert reports, proc.stdout[-3000:] + proc.stderr[-3000:]
    return failing_cases(junit), json.loads(reports[-1].split(" ", 1)[1]), proc


def test_cpython_import_suites_pass_with_finderd(python, shared_daemon, tmp):
    if support.python_version(python) != (3, 11) and not os.environ.get("FINDERD_TEST_ALL_SUITES"):
        pytest.skip("CPython's suites run on 3.11 by default; FINDERD_TEST_ALL_SUITES=1 runs all")
    stock_failures, _, _ = run_suites(python, shared_daemon.socket, tmp, stock=True)
    failures, report, proc = run_suites(python, shared_daemon.socket, tmp, stock=False)
    assert report["state"].startswith("active"), report
    assert report["counters"]["answered"] > 1000, report
    if stock_failures:
        print("failing on stock CPython too:", sorted(stock_failures))
    assert failures == stock_failures, (sorted(failures ^ stock_failures), proc.stdout[-5000:])


def test_cpython_import_suites_pass_under_the_launcher(finderd_home, base_python, shared_daemon,
                                                       tmp):
    if support.python_version(base_python) != (3, 11) and not os.environ.get(
            "FINDERD_TEST_ALL_SUITES"):
        pytest.skip("CPython's suites run on 3.11 by default; FINDERD_TEST_ALL_SUITES=1 runs all")
    venv = support.plain_venv(base_python, os.path.join(tmp, "venv"))
    python = os.path.join(venv, "bin", "python")
    stock_failures, stock_report, _ = run_suites(python, shared_daemon.socket, tmp, stock=True,
                                                 name="disabled")
    assert stock_report["state"] == "not loaded", stock_report
    support.launcher(finderd_home, "enable", venv)
    try:
        failures, report, proc = run_suites(python, shared_daemon.socket, tmp, stock=False,
                                            name="launcher")
    finally:
        support.launcher(finderd_home, "disable", venv)
    assert report["state"].startswith("active") and "launcher" in report["state"], report
    assert report["counters"]["answered"] > 1000, report
    if stock_failures:
        print("failing without the launcher too:", sorted(stock_failures))
    assert failures == stock_failures, (sorted(failures ^ stock_failures), proc.stdout[-5000:])

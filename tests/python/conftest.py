"""Fixtures for the end-to-end tests: the real finderd binary, real venvs.

Every test talks to a `finderd serve` started on a temporary socket, and runs
real interpreters from fresh venvs that have the `finderd` package installed
(built from ./client-py). Nothing here mocks the daemon or CPython.

Environment:
  FINDERD_BIN            the daemon binary (default: target/debug/finderd)
  FINDERD_TEST_PYTHONS   interpreters to test, separated by ':' (default: every
                         CPython 3.9-3.13 found through pyenv, else python3)
  FINDERD_TEST_VENVS     where to build the venvs (default: build/test-venvs)
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "python"))

import support  # noqa: E402


def pytest_generate_tests(metafunc):
    if "base_python" in metafunc.fixturenames:
        pythons = support.target_pythons()
        metafunc.parametrize("base_python", pythons, ids=[support.python_id(p) for p in pythons],
                             indirect=True, scope="session")


@pytest.fixture(scope="session")
def finderd_bin():
    path = os.environ.get("FINDERD_BIN") or os.path.join(ROOT, "target", "debug", "finderd")
    if not os.access(path, os.X_OK):
        pytest.fail("finderd binary not found at %s: run `cargo build -p finderd`" % path)
    return path


@pytest.fixture(scope="session")
def base_python(request):
    """One target interpreter (not a venv)."""
    return request.param


@pytest.fixture(scope="session")
def python(base_python):
    """A venv of one target interpreter with finderd installed: its bin/python."""
    return support.venv_with_finderd(base_python)


@pytest.fixture(scope="session")
def finderd_home(base_python):
    """A venv of @base_python with finderd, and so its finderd-python launcher, installed.

    Its `python -m finderd launcher enable VENV` puts the launcher into other
    venvs of the same interpreter (test_launcher.py, test_cpython_suites.py).
    """
    if support.python_version(base_python) < (3, 11):
        pytest.skip("the launcher needs CPython 3.11 or later "
                    "(test_launcher_is_not_built_before_3_11 checks what 3.9/3.10 say)")
    return support.venv_with_finderd(base_python, "-launcher-home")


@pytest.fixture(scope="session")
def ci_set_venvs():
    """Venvs with scenario S3's CI set (pytest, requests, rich...), one per interpreter."""
    made = {}

    def get(base_python):
        if base_python not in made:
            made[base_python] = support.venv_with_finderd(base_python, "-ci-set", support.CI_SET)
        return made[base_python]

    return get


@pytest.fixture
def tmp(tmp_path):
    return str(tmp_path)


@pytest.fixture
def daemon(finderd_bin, tmp_path_factory):
    """A running `finderd serve` on a private socket; stopped after the test."""
    d = support.Daemon(finderd_bin, str(tmp_path_factory.mktemp("daemon")))
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def shared_daemon(finderd_bin, tmp_path_factory):
    """One daemon for read-only tests that can share it."""
    d = support.Daemon(finderd_bin, str(tmp_path_factory.mktemp("shared-daemon")))
    d.start()
    yield d
    d.stop()

"""Deployments where client and daemon do not share a mount namespace: a pod
and a DaemonSet, a container with /run/finderd mounted in, a service with
PrivateTmp=. The same path names other files there, so the daemon must not
answer for the client's paths from its own view (contract 1 of docs/design.md:
finderd never makes an import fail that stock CPython satisfies).

The client passes its root at connect and the daemon answers its paths
beneath it (daemon/src/views.rs); test_views.py runs the same with an
unprivileged daemon, overlayfs images and pods of their own."""

import os
import shutil
import subprocess
import time

import pytest

from conftest import CLIENT_TIMEOUTS, health, run


def test_client_in_another_mount_namespace_is_not_misanswered(finderd_bin, client_python, tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) to give the daemon its own mount namespace")
    app = tmp_path / "app"
    app.mkdir()
    (app / "only_the_client_sees_me.py").write_text("VALUE = 1\n")
    sock = str(tmp_path / "finderd.sock")
    # The daemon's namespace has an empty tmpfs over app/: like a DaemonSet
    # container, which has its own image where the pod has /app.
    daemon = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount -t tmpfs tmpfs "$1" && exec "$2" serve --socket "$3"', "sh", str(app), finderd_bin, sock],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while health(finderd_bin, sock).returncode != 0:
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the daemon did not start in its own mount namespace")
            time.sleep(0.1)
        env = dict(os.environ, FINDERD_SOCKET=sock, PYTHONPATH=str(app), PYTHONDONTWRITEBYTECODE="1",
                   **CLIENT_TIMEOUTS)
        env.pop("FINDERD", None)
        stock = run([client_python, "-c", "import only_the_client_sees_me"], env=dict(env, FINDERD="off"),
                    check=False)
        if stock.returncode != 0:
            pytest.fail("stock CPython cannot import it either:\n" + stock.stderr)
        # Only this assertion is the expected failure (raises=AssertionError).
        served = run([client_python, "-c", "import only_the_client_sees_me"], env=env, check=False)
        assert served.returncode == 0, "with finderd the import fails:\n" + served.stderr
    finally:
        daemon.terminate()
        daemon.wait(15)

"""One node daemon without privilege serving pods (docs/operating.md,
Kubernetes; daemon/src/views.rs): real mount, PID and user namespaces.

The daemon runs as nobody with no capabilities (setpriv), in a mount and PID
namespace of its own where the pods' paths are an empty tmpfs, like a
DaemonSet without hostPID. Each pod is a mount and PID namespace (rootful:
its processes are root; rootless: a user namespace of an unprivileged uid)
whose /app is an overlayfs of an image: a copy of a venv with the finderd
client, and a module. Two images carry different content at the same path.
The socket directory is bind-mounted into each pod. The pod's interpreter
passes its root at connect; the daemon answers its paths as the pod sees
them, and nothing of one pod reaches another."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import CLIENT_TIMEOUTS, health, run
# tests/python/namespaces.py (on sys.path by conftest): the daemon's and the
# pods' namespaces, shared with the benchmark's S7.
from namespaces import IMAGE_PYTHON, NOBODY, copy_client, daemon_argv, pod_argv, pod_dirs

PROBE = """
import importlib.util, json, os, probe, finderd
client = finderd.client()
here = os.path.dirname(probe.__file__)
print(json.dumps({
    "value": probe.VALUE,
    "only_in_b": importlib.util.find_spec("only_in_b") is not None,
    "state": finderd.state(),
    "described": client.describe(here) if client else None,
    "counters": client.counters() if client else None,
}))
"""


def needs_namespaces():
    if os.geteuid() != 0:
        pytest.skip("needs root to make namespaces and overlay mounts")
    for tool in ("unshare", "setpriv"):
        if not shutil.which(tool):
            pytest.skip("needs %s(1)" % tool)
    if not os.access(IMAGE_PYTHON, os.X_OK):
        pytest.skip("needs %s for the images" % IMAGE_PYTHON)


def make_image(base, name, client_python, modules):
    """An image directory: venv/ (the system 3.11, with the finderd client of
    client_python's venv copied in) and src/ with `modules`."""
    image = os.path.join(base, name)
    venv = os.path.join(image, "venv")
    run([IMAGE_PYTHON, "-m", "venv", "--without-pip", venv])
    site = run([client_python, "-c", "import finderd, os; print(os.path.dirname(os.path.dirname(finderd.__file__)))"]
               ).stdout.strip()
    copy_client(site, venv)
    src = os.path.join(image, "src")
    os.makedirs(src)
    for module, text in modules.items():
        with open(os.path.join(src, module + ".py"), "w") as f:
            f.write(text)
    return image


class Node:
    """The daemon, unprivileged, in namespaces of its own, and the pods."""

    def __init__(self, finderd_bin, base, extra=()):
        self.base = base
        self.finderd_bin = finderd_bin
        self.app = os.path.join(base, "app")  # where every pod mounts its image
        self.sockdir = os.path.join(base, "sock")
        os.makedirs(self.app)
        os.makedirs(self.sockdir)
        os.chown(self.sockdir, NOBODY, NOBODY)
        self.log = open(os.path.join(base, "daemon.log"), "w")
        socket_path = self.socket = os.path.join(self.sockdir, "finderd.sock")
        # A session of its own: the daemon is unshare's child in another PID
        # namespace, and only a signal to the whole group reaches it.
        self.daemon = subprocess.Popen(daemon_argv(finderd_bin, self.app, socket_path, extra),
                                       stdout=self.log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        deadline = time.monotonic() + 30
        while health(finderd_bin, socket_path).returncode != 0:
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail("the unprivileged daemon did not start:\n" + self.daemon_log())
            time.sleep(0.1)

    def daemon_log(self):
        with open(os.path.join(self.base, "daemon.log")) as f:
            return f.read()

    def stats(self):
        """The daemon's Stats, asked as root (every figure)."""
        return json.loads(run([self.finderd_bin, "stats", "--socket", self.socket, "--json"]
                              ).stdout)

    def pod(self, image, rootless, script=PROBE, upper_on_tmpfs=False):
        """Runs `script` with the image's interpreter in a new pod; returns
        what it printed, parsed. @upper_on_tmpfs: the overlay's upper layer
        on another filesystem than the image."""
        pod = tempfile.mkdtemp(prefix="pod-", dir=self.base)
        if upper_on_tmpfs:
            run(["mount", "-t", "tmpfs", "tmpfs", pod])
        try:
            return self._run_pod(pod, image, rootless, script)
        finally:
            if upper_on_tmpfs:
                run(["umount", pod], check=False)

    def _run_pod(self, pod, image, rootless, script):
        upper, work = pod_dirs(pod, rootless)
        app = self.app
        env = {"PATH": "/usr/bin:/bin", "FINDERD_SOCKET": app + "/run/finderd.sock",
               "FINDERD_DAEMON_USER": "nobody", "PYTHONPATH": app + "/src",
               "PYTHONDONTWRITEBYTECODE": "1", **CLIENT_TIMEOUTS}
        result = run(pod_argv(rootless, image, upper, work, app, self.sockdir,
                              [app + "/venv/bin/python", "-c", script]),
                     env=env, check=False, timeout=120)
        if result.returncode != 0:
            pytest.fail("the pod failed:\n%s\n%s\ndaemon:\n%s" % (result.stdout, result.stderr, self.daemon_log()))
        return json.loads(result.stdout.strip().splitlines()[-1])

    def close(self):
        signal_group(self.daemon, signal.SIGTERM)
        try:
            self.daemon.wait(15)
        except subprocess.TimeoutExpired:
            signal_group(self.daemon, signal.SIGKILL)
            self.daemon.wait()
        self.log.close()


def signal_group(proc, signum):
    """@signum to @proc's process group (unshare and the daemon it forked)."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


@pytest.fixture
def base():
    needs_namespaces()
    # World-searchable: the daemon (nobody) and rootless pods walk it.
    path = tempfile.mkdtemp(prefix="finderd-views-", dir="/tmp")
    os.chmod(path, 0o755)
    yield path
    subprocess.run(["umount", "-R", os.path.join(path, "app")], capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("rootless", [False, True], ids=["rootful", "rootless"])
def test_an_unprivileged_node_daemon_serves_each_pod_as_it_sees_itself(finderd_bin, client_python, base,
                                                                      rootless):
    images = {
        "a": make_image(base, "image-a", client_python, {"probe": "VALUE = 'a'\n"}),
        "b": make_image(base, "image-b", client_python, {"probe": "VALUE = 'b'\n", "only_in_b": ""}),
    }
    subprocess.run(["chmod", "-R", "a+rX", images["a"], images["b"]], check=True)
    node = Node(finderd_bin, base)
    try:
        seen = {name: node.pod(image, rootless) for name, image in images.items()}
        again = node.pod(images["a"], rootless)
    finally:
        node.close()
    for name, probe in list(seen.items()) + [("a", again)]:
        assert probe["value"] == name, probe
        assert probe["only_in_b"] == (name == "b"), probe
        assert "served by" in probe["state"], probe
        status, reason = probe["described"][0], probe["described"][1]
        assert status == "served", "%s: %s (%s)" % (name, status, reason)
        assert probe["counters"]["answered"] > 0, probe
        assert probe["counters"]["not_served"] == 0, probe


def test_compiled_files_of_a_lower_layer_on_another_filesystem_are_served(finderd_bin, client_python,
                                                                          base):
    """An overlay whose upper layer is on another filesystem than its image
    (a tmpfs here, as a pod's writable layer; S7 puts the image on FUSE)
    gives the image's files a device of their own, not the overlay's. The
    daemon keeps a planned compiled file only if the file it read is the one
    listed, device included: the file's own. With the overlay counted slow
    (polled), the second pod's Snapshot carries the compiled file its plan
    names."""
    image = make_image(base, "image", client_python, {"probe": "VALUE = 'a'\n"})
    run([IMAGE_PYTHON, "-m", "compileall", "-q", os.path.join(image, "src")])
    subprocess.run(["chmod", "-R", "a+rX", image], check=True)
    node = Node(finderd_bin, base, extra=["--poll-filesystem", "overlay"])
    try:
        probes = [node.pod(image, rootless=False, upper_on_tmpfs=True) for _ in range(2)]
        plans = node.stats()["plans"]
    finally:
        node.close()
    assert [p["value"] for p in probes] == ["a", "a"], probes
    assert plans["cached_files_served"] > 0, json.dumps(plans)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

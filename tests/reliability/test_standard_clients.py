"""Any standard gRPC client, with its defaults, on the Unix socket (issue 16).

On a `unix:` target grpc-core (grpcio) since 1.57 sends the percent-encoded
socket path as `:authority`, and grpc-go (grpcurl), grpc-java and grpc-swift
the path itself; the h2 crate under tonic refuses both as malformed
(`RST_STREAM` with `PROTOCOL_ERROR`). The daemon rewrites such a
connection's header blocks (daemon/src/connection/authority.rs): these tests
use the clients exactly as a user would, with no `grpc.default_authority`
and no `-authority`, against the real daemon.
"""

import json
import os
import re
import subprocess

import pytest

import wire
from conftest import figure

# What each reflection service lists: the daemon's services and itself.
SERVED = {"finderd.v1.Finder", "grpc.health.v1.Health"}
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"
REFLECTION_V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
SERVING = b"\x08\x01"  # grpc.health.v1.HealthCheckResponse{status: SERVING}


@pytest.fixture
def debug_daemon(make_daemon):
    """A daemon that logs what :authority each connection sent."""
    d = make_daemon(start=False)
    d.start(log_level="debug")
    return d


def authorities_rewritten(daemon):
    return sorted(set(re.findall(r"passed on with :authority localhost authority=(\S+)", daemon.log())))


# ---------------------------------------------------------------- grpcio

def list_services_with_grpcio(channel, method):
    """Reflection's list_services over a bidirectional stream, as raw bytes."""
    call = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
    names = set()
    for reply in call(iter([b"\x3a\x00"]), timeout=30):  # ServerReflectionRequest{list_services: ""}
        for field, _, listing in wire.fields(reply):
            if field == 6:  # list_services_response
                names |= {dict((f, v) for f, _, v in wire.fields(service))[1].decode()
                          for _, _, service in wire.fields(listing)}
    return names


def test_grpcio_with_default_options(debug_daemon):
    import grpc

    channel = grpc.insecure_channel("unix:" + debug_daemon.socket)  # as a user writes it
    try:
        check = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None,
                                    response_deserializer=None)
        # Many calls on one connection: later header blocks refer to the
        # entries the first one put in HPACK's dynamic table.
        health = [check(b"", timeout=30) for _ in range(20)]
        services = list_services_with_grpcio(
            channel, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
        services_v1alpha = list_services_with_grpcio(
            channel, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
        stats = wire.decode_stats(channel.unary_unary(
            "/finderd.v1.Finder/Stats", request_serializer=None, response_deserializer=None)(
                b"", timeout=30))
    finally:
        channel.close()
    figure("grpcio %s, default options" % grpc.__version__, health_checks=len(health),
           serving=health.count(SERVING), services=sorted(services),
           authority_sent=authorities_rewritten(debug_daemon))
    assert health == [SERVING] * 20
    assert services == SERVED | {REFLECTION_V1}
    assert services_v1alpha == SERVED | {REFLECTION_V1ALPHA}
    assert stats["pid"] == debug_daemon.pid
    assert authorities_rewritten(debug_daemon), "grpcio sent an :authority h2 accepts: nothing tested"


# ---------------------------------------------------------------- grpcurl

@pytest.fixture(scope="session")
def grpcurl():
    """grpcurl 1.8.6 (grpc-go), installed by conftest._ensure_grpc()."""
    return os.environ["FINDERD_RELIABILITY_GRPCURL"]


def run_grpcurl(grpcurl, socket_path, *args, flags=()):
    """grpcurl -plaintext -unix FLAGS SOCKET ARGS, as its README shows it (no -authority)."""
    proc = subprocess.run([grpcurl, "-plaintext", "-unix", *flags, socket_path, *args],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_grpcurl_with_default_options(debug_daemon, grpcurl):
    sock = debug_daemon.socket
    listed = set(run_grpcurl(grpcurl, sock, "list").split())
    described = run_grpcurl(grpcurl, sock, "describe", "finderd.v1.Finder")
    health = json.loads(run_grpcurl(grpcurl, sock, "grpc.health.v1.Health/Check"))
    stats = json.loads(run_grpcurl(grpcurl, sock, "finderd.v1.Finder/Stats", flags=("-d", "{}")))
    version = subprocess.run([grpcurl, "-version"], capture_output=True, text=True).stderr.strip()
    figure("grpcurl, default options", version=version, services=sorted(listed),
           health=health.get("status"), authority_sent=authorities_rewritten(debug_daemon))
    # grpcurl 1.8 lists through reflection v1alpha only.
    assert listed == SERVED | {REFLECTION_V1ALPHA}
    assert "rpc Snapshot" in described and "rpc Lookup" in described
    assert health == {"status": "SERVING"}
    assert int(stats["pid"]) == debug_daemon.pid
    assert authorities_rewritten(debug_daemon) == [sock]

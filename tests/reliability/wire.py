"""The finderd.v1 wire format by hand, and raw calls to the real daemon.

Requests are encoded here field by field (proto/finderd/v1/finderd.proto),
so a test can send anything: valid requests, requests no generated client
would build (huge counts, any bytes in paths) and bytes that are not
protobuf at all. Calls go through grpcio on the daemon's Unix socket with
identity serializers: what is sent is exactly the bytes built here.
"""

import struct

PROTOCOL_VERSION = 1

# DirectoryStatus
SERVED, NOT_SERVED, ABSENT, UNCHANGED = 1, 2, 3, 4
STATUS_NAMES = {0: "UNSPECIFIED", 1: "SERVED", 2: "NOT_SERVED", 3: "ABSENT", 4: "UNCHANGED"}


# ------------------------------------------------------------------ encoding

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire_type):
    return varint(field << 3 | wire_type)


def f_varint(field, value):
    return key(field, 0) + varint(value)


def f_bytes(field, value):
    if isinstance(value, str):
        value = value.encode()
    return key(field, 2) + varint(len(value)) + value


def interpreter():
    return b"".join([
        f_bytes(1, "cpython"), f_bytes(2, "3.11.7"), f_bytes(3, "cpython-311"),
        f_bytes(4, ".py"), f_bytes(5, ".pyc"),
        f_bytes(6, ".cpython-311-x86_64-linux-gnu.so"), f_bytes(6, ".so"),
    ])


def snapshot_request(sys_path, prefetch_bytes=0, version=PROTOCOL_VERSION, program_key=b"",
                     mount_namespace=0):
    parts = [f_varint(1, version) if version else b"", f_bytes(2, interpreter())]
    parts += [f_bytes(3, p) for p in sys_path]
    if program_key:
        parts.append(f_bytes(4, program_key))
    if prefetch_bytes:
        parts.append(f_varint(5, prefetch_bytes))
    if mount_namespace:
        parts.append(f_varint(7, mount_namespace))
    return b"".join(parts)


def lookup_request(paths, known_generations=(), known_epoch=0, version=PROTOCOL_VERSION,
                   mount_namespace=0):
    parts = [f_varint(1, version) if version else b""]
    parts += [f_bytes(2, p) for p in paths]
    if known_generations:
        packed = b"".join(varint(g) for g in known_generations)
        parts.append(f_bytes(3, packed))
    if known_epoch:
        parts.append(f_varint(4, known_epoch))
    if mount_namespace:
        parts.append(f_varint(5, mount_namespace))
    return b"".join(parts)


# ------------------------------------------------------------------ decoding

def read_varint(buf, at):
    shift = value = 0
    while True:
        if at >= len(buf):
            raise ValueError("truncated varint")
        b = buf[at]
        at += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(buf):
    """(field, wire_type, value) of one message; value is int or bytes."""
    at = 0
    out = []
    while at < len(buf):
        k, at = read_varint(buf, at)
        field, wire_type = k >> 3, k & 7
        if wire_type == 0:
            value, at = read_varint(buf, at)
        elif wire_type == 2:
            n, at = read_varint(buf, at)
            value = bytes(buf[at:at + n])
            if len(value) != n:
                raise ValueError("truncated bytes")
            at += n
        elif wire_type == 1:
            value = struct.unpack_from("<Q", buf, at)[0]
            at += 8
        elif wire_type == 5:
            value = struct.unpack_from("<I", buf, at)[0]
            at += 4
        else:
            raise ValueError("wire type %d" % wire_type)
        out.append((field, wire_type, value))
    return out


def signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_entry(buf):
    e = {"name": b"", "kind": 0, "mode": 0, "mtime_ns": 0, "size": 0}
    for field, _, value in fields(buf):
        if field == 1:
            e["name"] = value
        elif field == 2:
            e["kind"] = value
        elif field == 3:
            e["mode"] = value
        elif field == 4:
            e["mtime_ns"] = signed64(value)
        elif field == 5:
            e["size"] = value
    return e


def decode_directory(buf):
    d = {"path": b"", "status": 0, "reason": "", "error": 0, "generation": 0, "slot": 0,
         "mode": 0, "mtime_ns": 0, "size": 0, "entries": []}
    names = {1: "path", 3: "reason", 4: "error", 5: "generation", 6: "slot", 7: "mode",
             8: "mtime_ns", 9: "size", 2: "status"}
    for field, _, value in fields(buf):
        if field == 10:
            d["entries"].append(decode_entry(value))
        elif field == 3:
            d["reason"] = value.decode("utf-8", "replace")
        elif field == 8:
            d["mtime_ns"] = signed64(value)
        elif field in names:
            d[names[field]] = value
    d["status_name"] = STATUS_NAMES.get(d["status"], str(d["status"]))
    return d


def decode_reply(buf, directories_field):
    """A Snapshot (field 4) or Lookup (field 3) reply: its directories and epoch."""
    out = {"directories": [], "epoch": 0}
    generations_field = 3 if directories_field == 4 else 2
    for field, _, value in fields(buf):
        if field == directories_field:
            out["directories"].append(decode_directory(value))
        elif field == generations_field:
            for f, _, v in fields(value):
                if f == 2:
                    out["epoch"] = v
    return out


def decode_stats(buf):
    """The StatsReply fields the tests read, by number (see the proto)."""
    names = {2: "uptime_ms", 3: "pid", 4: "roots", 5: "directories", 6: "entries",
             7: "index_bytes", 8: "watches", 9: "inotify_events", 10: "overflows",
             11: "degraded_roots", 12: "snapshot_requests", 13: "lookup_requests",
             14: "directories_served", 15: "directories_not_served", 17: "hits", 18: "misses",
             19: "rejected_requests", 25: "polled_roots", 27: "peer_limit_rejections",
             31: "mtime_checks", 32: "mtime_recrawls", 33: "open_connections",
             34: "connection_limit_rejections"}
    hist = {22: "barrier_latency", 23: "refresh_latency", 24: "request_latency"}
    out = {}
    for field, _, value in fields(buf):
        if field in names:
            out[names[field]] = value
        elif field in hist:
            h = {}
            for f, _, v in fields(value):
                h[{1: "count", 2: "sum_us", 3: "max_us", 4: "p50_us", 5: "p99_us"}.get(f, f)] = v
            out[hist[field]] = h
        elif field == 30:
            limit = {"value": 0, **{{1: "name", 2: "value"}[f]: v for f, _, v in fields(value)}}
            limit["name"] = limit["name"].decode()
            out.setdefault("limits", []).append(limit)
    return out


# ------------------------------------------------------------------ calls

class Channel:
    """Raw unary calls to finderd.v1.Finder (and any other method) over grpcio."""

    def __init__(self, socket_path, timeout=30):
        import grpc  # only the tests' venv has it
        self.grpc = grpc
        self.timeout = timeout
        self.channel = grpc.insecure_channel("unix:" + socket_path,
                                             options=[("grpc.default_authority", "localhost"),
                                                      ("grpc.max_receive_message_length", 1 << 30),
                                                      ("grpc.max_send_message_length", 1 << 30),
                                                      ("grpc.enable_retries", 0)])

    def close(self):
        self.channel.close()

    def call(self, method, body, timeout=None):
        """(status code name, reply bytes or error message)."""
        if not method.startswith("/"):
            method = "/finderd.v1.Finder/" + method
        rpc = self.channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            return "OK", rpc(body, timeout=timeout or self.timeout)
        except self.grpc.RpcError as error:
            return error.code().name, error.details() or ""

    def snapshot(self, sys_path, **kwargs):
        code, reply = self.call("Snapshot", snapshot_request(sys_path, **kwargs))
        assert code == "OK", (code, reply)
        return decode_reply(reply, 4)

    def lookup(self, paths, **kwargs):
        code, reply = self.call("Lookup", lookup_request(paths, **kwargs))
        assert code == "OK", (code, reply)
        return decode_reply(reply, 3)

    def stats(self):
        code, reply = self.call("Stats", b"")
        assert code == "OK", (code, reply)
        return decode_stats(reply)


# ------------------------------------------------------------------ hostile peers (test_hostile.py)

def report_request(program_key, directories=(), bytecode_files=(), version=PROTOCOL_VERSION,
                   mount_namespace=0):
    parts = [f_varint(1, version) if version else b""]
    if program_key:
        parts.append(f_bytes(2, program_key))
    parts += [f_bytes(3, d) for d in directories]
    parts += [f_bytes(4, f) for f in bytecode_files]
    if mount_namespace:
        parts.append(f_varint(5, mount_namespace))
    return b"".join(parts)


def grpc_frame(body, compressed=False):
    """The gRPC length-prefixed message: flag byte, u32 length, body."""
    return bytes([1 if compressed else 0]) + struct.pack(">I", len(body)) + body

"""HTTP/2 by hand on the daemon's Unix socket, for what grpcio will not send:
a gRPC message with the compressed flag and no grpc-encoding, bad frames,
garbage after the preface, a DATA frame longer than its message prefix says.

Header blocks are encoded and decoded with the `hpack` package (installed
into the grpc venv by `ensure_hpack`, like conftest's grpcio).
"""

import os
import socket
import struct
import subprocess
import sys

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1


def ensure_hpack():
    try:
        import hpack  # noqa: F401
        return
    except ImportError:
        pass
    site = os.environ["FINDERD_RELIABILITY_GRPC_SITE"]  # VENV/lib/pythonX.Y/site-packages
    python = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(site))), "bin", "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "hpack==4.1.0"], check=True)
    if site not in sys.path:
        sys.path.append(site)
    import hpack  # noqa: F401


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


class Connection:
    """One HTTP/2 connection; `call` sends one gRPC request and reads what
    the server answers for it."""

    def __init__(self, socket_path, timeout=60):
        import hpack
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(socket_path)
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.buffer = b""
        self.next_stream = 1
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def reply(self, data):
        """A frame the protocol asks of us (ACKs, window updates): the
        server may have closed the connection already, after its answer."""
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def headers(self, path, extra=()):
        return self.encoder.encode([(":method", "POST"), (":scheme", "http"), (":path", path),
                                    (":authority", "localhost"), ("content-type", "application/grpc"),
                                    ("te", "trailers"), *extra])

    def call(self, path, data, extra_headers=(), frames=None):
        """Sends HEADERS then `data` as one DATA frame (END_STREAM), or the
        given raw `frames` (callable of the stream id); returns the outcome."""
        stream = self.next_stream
        self.next_stream += 2
        out = frame(HEADERS, END_HEADERS, stream, self.headers(path, extra_headers))
        if frames is None:
            out += frame(DATA, END_STREAM, stream, data)
        else:
            out += frames(stream)
        self.send(out)
        return self.outcome(stream)

    def read_frame(self):
        while len(self.buffer) < 9:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        length = struct.unpack(">I", b"\0" + self.buffer[:3])[0]
        while len(self.buffer) < 9 + length:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        kind, flags = self.buffer[3], self.buffer[4]
        stream = struct.unpack(">I", self.buffer[5:9])[0] & 0x7FFFFFFF
        payload = self.buffer[9:9 + length]
        self.buffer = self.buffer[9 + length:]
        return kind, flags, stream, payload

    def outcome(self, stream):
        """{"kind": "status", "http": ..., "grpc-status": ..., "grpc-message": ..., "data": n}
        or {"kind": "rst"|"goaway", "error": code} or {"kind": "closed"}."""
        headers, data = {}, 0
        while True:
            try:
                got = self.read_frame()
            except socket.timeout:
                return {"kind": "timeout"}
            except ConnectionResetError:
                return {"kind": "closed"}
            if got is None:
                return {"kind": "closed", **({"headers": headers} if headers else {})}
            kind, flags, sid, payload = got
            if kind == SETTINGS and not flags & ACK:
                self.reply(frame(SETTINGS, ACK, 0, b""))
            elif kind == PING and not flags & ACK:
                self.reply(frame(PING, ACK, 0, payload))
            elif kind == GOAWAY:
                error = struct.unpack(">I", payload[4:8])[0]
                return {"kind": "goaway", "error": error, "debug": payload[8:].decode("utf-8", "replace")}
            elif sid != stream:
                continue
            elif kind == RST_STREAM:
                return {"kind": "rst", "error": struct.unpack(">I", payload[:4])[0]}
            elif kind in (HEADERS, CONTINUATION):
                if kind == HEADERS and flags & 0x8:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                if kind == HEADERS and flags & 0x20:  # PRIORITY
                    payload = payload[5:]
                for name, value in self.decoder.decode(payload):
                    headers[name if isinstance(name, str) else name.decode()] = (
                        value if isinstance(value, str) else value.decode("utf-8", "replace"))
                if flags & END_STREAM:
                    return {"kind": "status", "http": headers.get(":status"),
                            "grpc-status": headers.get("grpc-status"),
                            "grpc-message": unquote(headers.get("grpc-message", "")), "data": data}
            elif kind == DATA:
                data += len(payload)
                if payload:  # both windows: a reply over 64 KiB stalls on either
                    increment = struct.pack(">I", len(payload))
                    self.reply(frame(WINDOW_UPDATE, 0, 0, increment)
                               + frame(WINDOW_UPDATE, 0, stream, increment))
                if flags & END_STREAM:
                    return {"kind": "status", "http": headers.get(":status"),
                            "grpc-status": None, "grpc-message": "", "data": data}


def unquote(message):
    """grpc-message is percent-encoded."""
    from urllib.parse import unquote as u
    return u(message)


GRPC_CODES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
              5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
              9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED",
              13: "INTERNAL", 14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}

"""An attacking (or victim) peer for test_isolation.py, run as an
unprivileged uid (setpriv): a list of steps in, one JSON result per step
out (the last line of stdout).

    attacker.py SOCKET STEPS-JSON     (or "-": the steps on stdin's first line)

Steps ("do"):
  rpc       {"method": "Snapshot"|"Lookup"|"Report"|"Stats", "paths": [...],
             "program_key": "...", "directories": [...], "bytecode_files": [...],
             "bytecode_bytes": N, "prefetch_bytes": N, "brief": false}
            -> code; brief: and the reply's size; otherwise for replies
               every directory (path, status, reason, slot, entries with
               kind, mode, mtime_ns, size), the cached files (path, size,
               sha256 of the bytes), planned count; for Stats the decoded
               fields (own_figures_only among them).
  symlink   {"target": T, "path": P}: P becomes a symlink to T (atomically).
  write     {"path": P, "data": "...", "mtime_ns": N}: a file, and its mtime.
  mkdir     {"path": P, "mode": 0o755}
  swap_race {"link": P, "targets": [A, B], "method": ..., request fields,
             "seconds": S, "secret_sha": [hex...]}: P flips between the
             targets in a thread while requests are sent; -> requests sent,
             files served, leaks (files whose bytes hash to a secret).
  genfile   {"path": G}: sha256 of the generation file's slot array.
  hold      {"connections": C, "streams": S, "bytes": B}: on C raw HTTP/2
            connections, S Lookups each whose gRPC message says B bytes
            more than are sent (never completed). Prints {"held": ...}
            once sent, then holds everything until stdin closes, and
            reports how many streams the daemon refused meanwhile.
  warm_starts {"paths": [...], "interval_ms": N}: a warm start's Snapshot
            of the paths every N ms, timed. Prints {"ready": true} once the
            first is answered, goes on until stdin closes, then reports
            every latency in ms (the victim beside a flood).
Paths are strings (surrogateescape for non-UTF-8 bytes).
"""

import hashlib
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire  # noqa: E402

STATS_FIELDS = {5: "directories", 6: "entries", 7: "index_bytes", 8: "watches",
                14: "directories_served", 15: "directories_not_served", 17: "hits",
                18: "misses", 19: "rejected_requests", 35: "own_figures_only",
                36: "peer_uid", 37: "requests", 4: "roots", 9: "inotify_events"}


def fs(paths):
    return [os.fsencode(p) for p in paths]


def request(step):
    method = step["method"]
    key = os.fsencode(step.get("program_key", ""))
    if method == "Snapshot":
        body = wire.snapshot_request(fs(step.get("paths", [])), program_key=key,
                                     prefetch_bytes=step.get("prefetch_bytes", 0))
        if step.get("bytecode_bytes"):
            body += wire.f_varint(6, step["bytecode_bytes"])
        return body
    if method == "Lookup":
        return wire.lookup_request(fs(step.get("paths", [])))
    if method == "Report":
        return wire.report_request(key, fs(step.get("directories", [])),
                                   fs(step.get("bytecode_files", [])))
    if method == "Stats":
        return b""
    raise ValueError(method)


def decode_files(body):
    files = []
    for field, _, value in wire.fields(body):
        if field != 5:
            continue
        f = {1: b"", 2: b""}
        for n, _, v in wire.fields(value):
            f[n] = v
        files.append({"path": os.fsdecode(f[1]), "size": len(f[2]),
                      "sha": hashlib.sha256(f[2]).hexdigest()})
    return files


def decoded(method, code, body):
    if code != "OK":
        return {"code": code, "message": body}
    if method == "Report":
        return {"code": code}
    if method == "Stats":
        out = {"code": code}
        for field, _, value in wire.fields(body):
            if field in STATS_FIELDS:
                out[STATS_FIELDS[field]] = value
        return out
    reply = wire.decode_reply(body, 4 if method == "Snapshot" else 3)
    planned = [v for f, _, v in wire.fields(body) if f == 6] if method == "Snapshot" else []
    return {"code": code, "bytes": len(body), "planned": planned[0] if planned else 0,
            "files": decode_files(body) if method == "Snapshot" else [],
            "directories": [
                {"path": os.fsdecode(d["path"]), "status": d["status_name"],
                 "reason": d["reason"], "slot": d["slot"],
                 "entries": [{"name": os.fsdecode(e["name"]), "kind": e["kind"],
                              "mode": e["mode"], "mtime_ns": e["mtime_ns"], "size": e["size"]}
                             for e in d["entries"]]}
                for d in reply["directories"]]}


def replace_symlink(target, path):
    temporary = "%s.swap-%d" % (path, threading.get_ident())
    os.symlink(target, temporary)
    os.replace(temporary, path)


def swap_race(ch, step):
    stop = threading.Event()
    targets = step["targets"]

    def flip():
        i = 0
        while not stop.is_set():
            replace_symlink(targets[i % 2], step["link"])
            i += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    secret = set(step.get("secret_sha", []))
    sent, served, leaks, codes = 0, 0, [], {}
    deadline = time.monotonic() + step.get("seconds", 5)
    body = request(step)
    try:
        while time.monotonic() < deadline:
            code, reply = ch.call(step["method"], body)
            sent += 1
            codes[code] = codes.get(code, 0) + 1
            if code != "OK":
                continue
            for f in decode_files(reply):
                served += 1
                if f["sha"] in secret:
                    leaks.append(f)
    finally:
        stop.set()
        flipper.join()
    return {"requests": sent, "files_served": served, "leaks": leaks[:10],
            "leak_count": len(leaks), "codes": codes}


def settled(conn):
    """Reads the server's preface (SETTINGS, its connection window update)
    and acknowledges it, so that what is sent next is within its windows."""
    import rawh2
    conn.sock.settimeout(0.5)
    try:
        while True:
            got = conn.read_frame()
            if got is None:
                raise OSError("closed")
            kind, flags, stream, _ = got
            if kind == rawh2.SETTINGS and not flags & rawh2.ACK:
                conn.send(rawh2.frame(rawh2.SETTINGS, rawh2.ACK, 0, b""))
            if kind == rawh2.WINDOW_UPDATE and stream == 0:
                break
    except TimeoutError:
        pass
    finally:
        conn.sock.settimeout(30)


def hold(socket_path, step):
    import struct

    import rawh2
    connections, sent = [], 0
    for _ in range(step["connections"]):
        try:
            conn = rawh2.Connection(socket_path, timeout=30)
            settled(conn)
        except OSError:
            break
        out = b""
        for _ in range(step["streams"]):
            stream = conn.next_stream
            conn.next_stream += 2
            # A message announced larger than what follows: never complete.
            body = struct.pack(">BI", 0, step["bytes"] + 1024) + b"\0" * step["bytes"]
            out += rawh2.frame(rawh2.HEADERS, rawh2.END_HEADERS, stream,
                               conn.headers("/finderd.v1.Finder/Lookup"))
            for at in range(0, len(body), 16384):  # the default SETTINGS_MAX_FRAME_SIZE
                out += rawh2.frame(rawh2.DATA, 0, stream, body[at:at + 16384])
            sent += 1
        try:
            conn.send(out)
        except OSError:
            break
        connections.append(conn)
    print(json.dumps({"held": sent}), flush=True)
    sys.stdin.read()
    refused = set()
    for number, conn in enumerate(connections):
        conn.sock.settimeout(0.2)
        try:
            while True:
                got = conn.read_frame()
                if got is None:
                    break
                kind, flags, stream, _ = got
                if kind == rawh2.RST_STREAM or (kind == rawh2.HEADERS and flags & rawh2.END_STREAM):
                    refused.add((number, stream))
        except OSError:
            pass
        conn.close()
    return {"held": sent, "refused": len(refused)}


def warm_starts(socket_path, step):
    ch = wire.Channel(socket_path, timeout=120)
    body = wire.snapshot_request(fs(step["paths"]))
    ch.call("Snapshot", body)
    print(json.dumps({"ready": True}), flush=True)
    closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), closed.set()), daemon=True).start()
    latencies = []
    while not closed.is_set():
        started = time.monotonic()
        code, _ = ch.call("Snapshot", body)
        if code != "OK":
            raise AssertionError("a warm start was refused: %s" % code)
        latencies.append((time.monotonic() - started) * 1000)
        closed.wait(step["interval_ms"] / 1000)
    ch.close()
    return {"latencies_ms": latencies}


def run(ch, step):
    what = step["do"]
    if what == "rpc":
        code, body = ch.call(step["method"], request(step))
        if step.get("brief"):
            return {"code": code, "bytes": len(body)}
        return decoded(step["method"], code, body)
    if what == "symlink":
        replace_symlink(step["target"], step["path"])
        return {}
    if what == "write":
        with open(step["path"], "wb") as f:
            f.write(step.get("data", "").encode())
        if "mtime_ns" in step:
            os.utime(step["path"], ns=(step["mtime_ns"], step["mtime_ns"]))
        return {}
    if what == "mkdir":
        os.makedirs(step["path"], mode=step.get("mode", 0o755), exist_ok=True)
        return {}
    if what == "swap_race":
        return swap_race(ch, step)
    if what == "genfile":
        with open(step["path"], "rb") as f:
            data = f.read()
        return {"slots_sha": hashlib.sha256(data[64:]).hexdigest()}
    raise ValueError(what)


def main():
    socket_path = sys.argv[1]
    steps = json.loads(sys.stdin.readline() if sys.argv[2] == "-" else sys.argv[2])
    if steps and steps[0]["do"] == "hold":
        print(json.dumps([hold(socket_path, steps[0])]))
        return
    if steps and steps[0]["do"] == "warm_starts":
        print(json.dumps([warm_starts(socket_path, steps[0])]))
        return
    ch = wire.Channel(socket_path, timeout=120)
    try:
        results = [run(ch, step) for step in steps]
    finally:
        ch.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()

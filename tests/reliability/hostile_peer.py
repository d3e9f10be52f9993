"""A hostile finderd peer for test_hostile.py, run as another user
(setpriv): one JSON job in, one JSON result on stdout.

    hostile_peer.py SOCKET JOB-JSON

Jobs ("op"):
  calls  {"calls": [{"method": "Snapshot", "sys_path": [...], "program_key": "..."},
                    {"method": "Lookup", "paths": [...]},
                    {"method": "Report", "program_key": "...", "directories": [...]}]}
         -> one result per call: code, and for replies every directory
            (path, status, reason, entry names), planned_directories, files.
  race   {"method": "Lookup"|"Snapshot", "paths": [...], "count": N, "seconds": S,
          "secret": [names]} -> answers by status, leaks (answers naming a
            secret), codes; stops after N requests or S seconds.
  flood  {"prefix": DIR, "per_request": K, "concurrency": N, "channels": C, "waves": W}
         -> W bursts of N Lookups in flight at once over C connections, each
            of K paths under DIR never asked before: codes counted, a sample
            of error messages.
  hold   {"count": N, "wait": S} -> N connections (preface and SETTINGS sent)
            classified after S seconds: held open, or refused (closed by the
            daemon, with its GOAWAY's error code and debug text). The result
            is printed at once; the held connections stay open until stdin
            closes.
Paths are strings (surrogateescape for non-UTF-8 bytes).
"""

import json
import os
import select
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import rawh2  # noqa: E402
import wire  # noqa: E402


def encode(call):
    method = call["method"]
    fs = [os.fsencode(p) for p in call.get("paths", call.get("sys_path", []))]
    key = os.fsencode(call.get("program_key", ""))
    if method == "Snapshot":
        return wire.snapshot_request(fs, program_key=key, prefetch_bytes=call.get("prefetch_bytes", 0))
    if method == "Lookup":
        return wire.lookup_request(fs)
    if method == "Report":
        return wire.report_request(key, [os.fsencode(p) for p in call.get("directories", [])])
    raise ValueError(method)


def decoded(method, code, body):
    if code != "OK":
        return {"code": code, "message": body}
    if method == "Report":
        return {"code": code}
    reply = wire.decode_reply(body, 4 if method == "Snapshot" else 3)
    planned = [v for f, _, v in wire.fields(body) if f == 6] if method == "Snapshot" else []
    files = [wire.fields(v) for f, _, v in wire.fields(body) if f == 5] if method == "Snapshot" else []
    return {"code": code, "planned": planned[0] if planned else 0, "files": len(files),
            "directories": [
                {"path": os.fsdecode(d["path"]), "status": d["status_name"], "reason": d["reason"],
                 "mode": d["mode"], "generation": d["generation"],
                 "entries": [os.fsdecode(e["name"]) for e in d["entries"]]}
                for d in reply["directories"]]}


def calls(ch, job):
    return [decoded(c["method"], *ch.call(c["method"], encode(c))) for c in job["calls"]]


def race(ch, job):
    secret = set(job["secret"])
    body = encode(job)
    method = job["method"]
    counts, codes, leaks, reasons = {}, {}, [], {}
    started = time.monotonic()
    deadline = time.monotonic() + job.get("seconds", 60)
    sent = 0
    while sent < job["count"] and time.monotonic() < deadline:
        code, reply = ch.call(method, body)
        sent += 1
        codes[code] = codes.get(code, 0) + 1
        if code != "OK":
            continue
        for d in wire.decode_reply(reply, 4 if method == "Snapshot" else 3)["directories"]:
            counts[d["status_name"]] = counts.get(d["status_name"], 0) + 1
            if d["reason"]:
                reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
            names = {os.fsdecode(e["name"]) for e in d["entries"]}
            if names & secret:
                leaks.append({"path": os.fsdecode(d["path"]), "names": sorted(names)})
    return {"requests": sent, "statuses": counts, "codes": codes, "leaks": leaks[:20],
            "leak_count": len(leaks), "reasons": reasons,
            "seconds": round(time.monotonic() - started, 1)}


def flood(socket_path, job):
    """`waves` bursts of `concurrency` Lookups in flight at once, each of
    `per_request` paths under `prefix` no request asked before (crawls)."""
    import grpc
    channels = [grpc.insecure_channel("unix:" + socket_path, options=[
        ("grpc.default_authority", "localhost"), ("grpc.use_local_subchannel_pool", 1),
        ("grpc.max_receive_message_length", 1 << 30), ("grpc.enable_retries", 0)])
        for _ in range(job.get("channels", 4))]
    rpcs = [c.unary_unary("/finderd.v1.Finder/Lookup", request_serializer=None,
                          response_deserializer=None) for c in channels]
    codes, messages = {}, {}
    n = 0
    for wave in range(job.get("waves", 1)):
        futures = []
        for i in range(job["concurrency"]):
            paths = [os.fsencode("%s/w%d-r%d-%d" % (job["prefix"], wave, i, k))
                     for k in range(job.get("per_request", 20))]
            futures.append(rpcs[n % len(rpcs)].future(wire.lookup_request(paths),
                                                     timeout=job.get("timeout", 120)))
            n += 1
        for f in futures:
            try:
                f.result()
                code, message = "OK", ""
            except grpc.RpcError as error:
                code, message = error.code().name, error.details() or ""
            codes[code] = codes.get(code, 0) + 1
            if code != "OK" and len(messages.get(code, [])) < 3:
                messages.setdefault(code, []).append(message)
    for ch in channels:
        ch.close()
    return {"codes": codes, "messages": messages}


def hold(socket_path, job):
    socks = []
    for _ in range(job["count"]):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(socket_path)
        try:
            s.sendall(rawh2.PREFACE + rawh2.frame(rawh2.SETTINGS, 0, 0, b""))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused at accept and closed already: its GOAWAY is still to be read
        socks.append(s)
    received = {s: b"" for s in socks}
    closed = set()
    deadline = time.monotonic() + job.get("wait", 2)
    while len(closed) < len(socks) and time.monotonic() < deadline:
        ready, _, _ = select.select([s for s in socks if s not in closed], [], [],
                                    max(0, deadline - time.monotonic()))
        for s in ready:
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if chunk:
                received[s] += chunk
            else:
                closed.add(s)
    goaways = [goaway_in(received[s]) for s in socks if s in closed]
    print(json.dumps({"held": len(socks) - len(closed), "refused": len(closed),
                      "goaway_codes": sorted({g[0] for g in goaways if g}),
                      "goaway_texts": sorted({g[1] for g in goaways if g}),
                      "refused_without_goaway": sum(1 for g in goaways if not g)}), flush=True)
    sys.stdin.read()
    for s in socks:
        s.close()


def goaway_in(data):
    """(error code, debug text) of the first GOAWAY frame in @data, or None."""
    while len(data) >= 9:
        length = struct.unpack(">I", b"\0" + data[:3])[0]
        kind, payload = data[3], data[9:9 + length]
        if kind == rawh2.GOAWAY and len(payload) >= 8:
            return struct.unpack(">I", payload[4:8])[0], payload[8:].decode(errors="replace")
        data = data[9 + length:]
    return None


def stock(job):
    """What this user could learn itself: listdir and stat of each path."""
    out = {}
    for p in job["paths"]:
        row = {}
        try:
            row["listdir"] = sorted(os.listdir(p))
        except OSError as error:
            row["listdir_errno"] = error.errno
        try:
            os.stat(p)
            row["stat"] = "ok"
        except OSError as error:
            row["stat"] = error.errno
        out[p] = row
    return out


def main():
    socket_path, job = sys.argv[1], json.loads(sys.argv[2])
    if job["op"] == "stock":
        print(json.dumps(stock(job)))
        return
    if job["op"] == "flood":
        print(json.dumps(flood(socket_path, job)))
        return
    if job["op"] == "hold":
        hold(socket_path, job)
        return
    ch = wire.Channel(socket_path, timeout=job.get("timeout", 60))
    try:
        result = calls(ch, job) if job["op"] == "calls" else race(ch, job)
    finally:
        ch.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""A raw finderd peer, run as another user (setpriv) or in another mount
namespace by the tests: one call, its decoded answer as JSON on stdout.

    peer.py SOCKET snapshot|lookup JSON-ARGS

JSON-ARGS: {"paths": [...], "mount_namespace": N (or "self"), "repeat": N}.
Paths are strings (surrogateescape for non-UTF-8 bytes).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import wire  # noqa: E402


def main():
    socket_path, method, args = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    paths = [os.fsencode(p) for p in args.get("paths", [])]
    ns = args.get("mount_namespace", 0)
    if ns == "self":
        ns = os.stat("/proc/self/ns/mnt").st_ino
    ch = wire.Channel(socket_path, timeout=args.get("timeout", 30))
    results = []
    for _ in range(args.get("repeat", 1)):
        if method == "snapshot":
            code, body = ch.call("Snapshot", wire.snapshot_request(
                paths, prefetch_bytes=args.get("prefetch_bytes", 0), mount_namespace=ns))
            reply = wire.decode_reply(body, 4) if code == "OK" else None
        else:
            code, body = ch.call("Lookup", wire.lookup_request(paths, mount_namespace=ns))
            reply = wire.decode_reply(body, 3) if code == "OK" else None
        if reply is None:
            results.append({"code": code, "message": body})
            continue
        results.append({"code": code, "directories": [
            {"path": os.fsdecode(d["path"]), "status": d["status_name"], "reason": d["reason"],
             "entries": [os.fsdecode(e["name"]) for e in d["entries"]]}
            for d in reply["directories"]]})
    ch.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()

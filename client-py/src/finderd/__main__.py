"""python -m finderd status|stats: what finderd does for this interpreter."""

import argparse
import os
import sys

import finderd


def _socket_path():
    from finderd import _native

    return _native.socket_path()


def status(_args):
    """Say whether this interpreter is served, by which socket and daemon."""
    switch = os.environ.get("FINDERD", "")
    print("FINDERD=%s" % (switch or "(unset)"))
    print("socket: %s" % (finderd._socket or _socket_path()))
    print("state: %s" % finderd.state())
    client = finderd.client()
    if client is None:
        return 1
    stats = client.daemon_stats()
    print("daemon: finderd %s (pid %d)" % (stats["daemon_version"], stats["pid"]))
    for path in finderd._request_paths():
        described = client.describe(path) or ("not held", "")
        print("  %-10s %s%s" % (described[0], os.fsdecode(path),
                               "  (%s)" % described[1] if described[1] else ""))
    counters = client.counters()
    print("this process: %(answered)d answered, %(not_served)d sent to the filesystem, "
          "%(lookups)d lookups" % counters)
    return 0


def stats(_args):
    """Print the daemon's counters (the Stats RPC)."""
    from finderd import _native

    client = finderd.client()
    if client is None:
        client = _native.Client(finderd._socket or _socket_path())
    for key, value in sorted(client.daemon_stats().items()):
        print("%-24s %s" % (key, value))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m finderd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help=status.__doc__).set_defaults(run=status)
    commands.add_parser("stats", help=stats.__doc__).set_defaults(run=stats)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

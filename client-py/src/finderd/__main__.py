"""python -m finderd status|doctor|stats|launcher: what finderd does for this interpreter."""

import argparse
import os
import sys

import finderd
from finderd import _activation as activation


def status(_args):
    """Say whether this interpreter is served, by which socket and daemon."""
    switch = os.environ.get("FINDERD", "")
    print("FINDERD=%s" % (switch or "(unset)"))
    print("socket: %s" % (finderd._socket or finderd.socket_path()))
    print("state: %s" % finderd.state())
    client = finderd.client()
    if client is None or client.status()["state"] != "served":
        return 1
    try:
        stats = client.daemon_stats()
    except activation.load_native().Error as exc:
        print("daemon: not answering now (%s)" % (exc.args[1],))
        return 1
    print("daemon: finderd %s (pid %d)" % (stats["daemon_version"], stats["pid"]))
    for path in activation.request_paths():
        described = client.describe(path) or ("not held", "", 0, 0)
        print("  %-10s %s%s" % (described[0], os.fsdecode(path),
                               "  (%s)" % described[1] if described[1] else ""))
    counters = client.counters()
    print("this process: %(answered)d answered, %(not_served)d sent to the filesystem, "
          "%(lookups)d lookups" % counters)
    return 0


def _connect_problem(exc, path):
    """What a failed connect means and what to do about it."""
    import errno

    hints = {
        errno.ENOENT: "no daemon: %s does not exist. Start one with `finderd serve` "
                      "(or `systemctl --user start finderd.socket`), or point FINDERD_SOCKET "
                      "at a running daemon's socket." % path,
        errno.ECONNREFUSED: "no daemon listens on %s (a stale socket file, or not a socket). "
                            "Start `finderd serve`; it replaces a stale socket." % path,
        errno.EACCES: "permission denied connecting to %s: the socket's mode or its "
                      "directory keep this user out. Use a per-user daemon "
                      "($XDG_RUNTIME_DIR/finderd/finderd.sock) or ask the operator." % path,
        errno.ETIMEDOUT: "the daemon at %s did not answer in time (overloaded or stuck): "
                         "see `finderd stats` and its log." % path,
    }
    return hints.get(getattr(exc, "errno", None), "cannot use %s: %s" % (path, exc))


def doctor(_args):
    """Explain why this interpreter is or is not served, and what to do."""
    if os.environ.get("FINDERD", "").lower() == "off":
        print("finderd is disabled in this environment by FINDERD=off: unset it.")
        return 1
    path = finderd._socket or finderd.socket_path()
    print("socket: %s" % path)
    _native = activation.load_native()
    try:
        client = activation.connect(path)
        client.snapshot(activation.request_paths(), **activation.interpreter_identity())
    except _native.Error as exc:
        detail = exc.args[-1]
        if exc.args[0] == _native.EUNTRUSTED:
            print("%s. If you trust that user to answer this interpreter's imports, name it "
                  "in FINDERD_DAEMON_USER." % detail)
        elif "protocol_version" in detail or "version" in exc.args[1]:
            print("the daemon speaks another protocol version (%s): upgrade finderd so that "
                  "the daemon and this client match." % detail)
        else:
            print("the daemon refused this interpreter's request: %s" % detail)
        return 1
    except OSError as exc:
        print(_connect_problem(exc, path))
        return 1
    stats = client.daemon_stats()
    print("daemon: finderd %s (pid %d) answers." % (stats["daemon_version"], stats["pid"]))
    served = 0
    for entry in activation.request_paths():
        status, reason = (client.describe(entry) or ("not held", "", 0, 0))[:2]
        served += status == "served"
        advice = {"not served": "the daemon will not answer for it: %s" % reason,
                  "absent": "it does not exist (stock CPython skips it too)"}.get(status, "")
        print("  %-10s %s%s" % (status, os.fsdecode(entry), "  -- " + advice if advice else ""))
    print("this interpreter: %s" % finderd.state())
    if served == 0:
        print("no sys.path entry is served: imports run stock.")
        return 1
    return 0


def stats(_args):
    """Print the daemon's counters (the Stats RPC)."""
    client = finderd.client()
    if client is None or client.status()["state"] != "served":
        client = activation.connect(finderd._socket or finderd.socket_path())
    for key, value in sorted(client.daemon_stats().items()):
        print("%-24s %s" % (key, value))
    return 0


def launcher(args):
    """Put finderd-python in place of a venv's python (enable), restore it (disable), or say which (status)."""
    from finderd import launcher as launcher_module

    return launcher_module.main(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m finderd", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help=status.__doc__).set_defaults(run=status)
    commands.add_parser("doctor", help=doctor.__doc__).set_defaults(run=doctor)
    commands.add_parser("stats", help=stats.__doc__).set_defaults(run=stats)
    launch = commands.add_parser("launcher", help=launcher.__doc__)
    launch.add_argument("action", choices=["enable", "disable", "status"])
    launch.add_argument("venv", nargs="?", help="the venv (default: this interpreter's, %s)"
                        % sys.prefix)
    launch.add_argument("--binary", help="enable: this launcher build instead of the package's "
                        "(built for this same interpreter)")
    launch.set_defaults(run=launcher)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())

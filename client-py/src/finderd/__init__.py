"""finderd for CPython: imports answered from the finderd daemon's listings.

Loaded by finderd.pth at every start while a daemon runs: kept small, and
importing nothing. See docs/architecture.md and docs/compatibility.md.
"""

import sys

__all__ = ["install", "uninstall", "socket_path", "state", "client"]
__version__ = "0.1.0"

# importlib._bootstrap_external and the posix module it calls; install()
# does nothing on an interpreter whose importlib is not CPython's.
_ext = sys.modules.get("_frozen_importlib_external")
_posix = sys.modules.get("posix")

_socket = None   # the daemon's socket
_proxy = None    # the module that replaced _ext._os
_client = None   # finderd._native.Client once active
_busy = False    # activating: nested stat/listdir go to posix
_reason = "not installed"


# Under the finderd-python launcher, which served this interpreter from its
# first lookup: its client and importlib's posix stand-in are the ones here.
_launcher = sys.modules.get("finderd._launcher")
if _launcher is not None and getattr(_launcher, "proxy", None) is not None:
    _socket, _proxy, _client, _reason = (_launcher.socket, _launcher.proxy, _launcher.client,
                                         _launcher.state)


def socket_path():
    """$FINDERD_SOCKET, else $XDG_RUNTIME_DIR/finderd/finderd.sock, else /run/finderd/finderd.sock."""
    env = sys.modules["os"].environ
    return env.get("FINDERD_SOCKET") or (env.get("XDG_RUNTIME_DIR") or "/run") + "/finderd/finderd.sock"


def install(socket=None):
    """Route importlib's stat/listdir through finderd, from the first import after site on."""
    global _socket, _proxy, _reason
    if _proxy is not None:
        return
    if _posix is None or getattr(_ext, "_os", None) is not _posix:
        _reason = "not installed: this interpreter's importlib is not CPython's"
        return
    _socket = socket or socket_path()
    proxy = type(sys)("posix")
    proxy.__dict__.update(_posix.__dict__)
    proxy.stat = _lazy("stat")
    proxy.listdir = _lazy("listdir")
    _proxy = proxy
    _ext._os = proxy
    _reason = "installed; waiting for the first import after site"


def uninstall(reason="uninstalled"):
    """Give importlib the stock posix back; finderd answers nothing more."""
    global _client, _reason
    if _ext._os is _proxy:
        _ext._os = _posix
    _ext._io = sys.modules["_io"]  # open_code may be served too (_activation)
    if _proxy is not None:
        _proxy.stat = _posix.stat
        _proxy.listdir = _posix.listdir
    client, _client = _client, None
    if client is not None:
        client.close()
    _reason = reason


def _lazy(name):
    """posix.NAME until the first call after site, which activates finderd."""

    def call(*args, **kwargs):
        if not _busy and not getattr(getattr(sys.modules.get("site"), "__spec__", None),
                                     "_initializing", False):
            _activate()
        current = getattr(_proxy, name)
        if current is call:  # not activated (yet): stock
            current = getattr(_posix, name)
        return current(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _activate():
    global _busy, _client, _reason
    _busy = True
    try:
        bootstrap = sys.modules["_frozen_importlib"]
        path = __file__.rpartition("/")[0] + "/_activation.py"
        # Loaded by path with importlib's own loader: no directory walk.
        client = bootstrap._load(_ext.spec_from_file_location("finderd._activation", path)).activate(
            _socket, _proxy)
        _client, _reason = client, "active: served by %s" % (_socket,)
    except Exception as exc:  # any failure: stock CPython from here on
        uninstall("fell back to stock: %s" % (_why(exc),))
        if sys.modules["os"].environ.get("FINDERD_DEBUG", "0") != "0":
            sys.stderr.write("finderd: %s\n" % _reason)
    finally:
        _busy = False


def _why(exc):
    """A failure in words: a finderd._native.Error's texts without its code."""
    args = exc.args
    if type(exc).__name__ == "Error" and len(args) > 1 and isinstance(args[0], int):
        return ": ".join(map(str, args[1:]))
    return str(exc)


def state():
    """One line: what finderd does in this interpreter now."""
    if _client is None:
        return _reason
    said = _describe(_socket, _client.status())
    if _launcher is not None and said.startswith("active:"):
        said += " (the finderd-python launcher)"
    return said


def _times(n):
    return "once" if n == 1 else "%d times" % n


def _describe(socket, status):
    """finderd.state() of an interpreter whose client is @status (Client.status())."""
    if status["state"] == "served":
        if not status["reconnects"]:
            return "active: served by %s" % (socket,)
        return "active: served by %s again (reconnected %s; lost it last: %s)" % (
            socket, _times(status["reconnects"]), status["lost_reason"])
    when = "the next import"
    if status["retry_in_s"] > 0:
        when = "the first import after %.1f s" % status["retry_in_s"]
    tried = ""
    if status["attempts"]:
        tried = " (tried %s so far, the last failed: %s)" % (
            _times(status["attempts"]), status["reason"])
    return "fell back to stock: lost the daemon at %s (%s); reconnecting at %s%s" % (
        socket, status["lost_reason"], when, tried)


def client():
    """The active finderd._native.Client, or None."""
    return _client

"""finderd for CPython: imports resolved from the finderd daemon's listings.

``finderd.pth`` calls :func:`install` at start-up when ``FINDERD`` is not
``off`` and the daemon's socket exists. ``install`` replaces one thing: the
``posix`` module that ``importlib._bootstrap_external`` calls for ``stat``
and ``listdir`` (its ``_os`` global) becomes a copy whose ``stat`` and
``listdir`` are lazy. ``PathFinder``, ``FileFinder``, the loaders,
``sys.path_hooks`` and ``sys.meta_path`` stay CPython's own objects, so every
spec, loader and exception is the one stock CPython produces; only the
system calls behind them are answered from memory.

Imports made while ``site`` runs stay stock. The first ``stat``/``listdir``
after that loads the ``_native`` extension, connects, and fetches one
snapshot; from then on the resolver answers. Anything that fails puts the
stock ``posix`` back and the program runs on as stock CPython; with
``FINDERD_DEBUG=1`` each decision is printed on stderr.

This module is imported at every interpreter start while a daemon runs, so it
imports nothing at module level that the interpreter has not loaded already.
"""

import sys

__all__ = ["install", "uninstall", "state", "client"]
__version__ = "0.1.0"

# importlib._bootstrap_external and the module it calls; absent on interpreters
# other than CPython, where install() does nothing.
_ext = sys.modules.get("_frozen_importlib_external")
_posix = sys.modules.get("posix")

# Defaults; FINDERD_CONNECT_TIMEOUT_MS, FINDERD_TIMEOUT_MS, FINDERD_PREFETCH_KB override.
CONNECT_TIMEOUT_MS = 20
CALL_TIMEOUT_MS = 50
PREFETCH_KB = 256

_socket = None      # the socket install() was given
_proxy = None       # the module that replaced _ext._os
_client = None      # finderd._native.Client once active
_busy = False       # True while activating: nested stat/listdir go to posix
_reason = "not installed"
_debug = False


def _env(name, default=""):
    return sys.modules["os"].environ.get(name, default)


def _say(message):
    if _debug:
        sys.stderr.write("finderd: %s\n" % message)


def install(socket_path):
    """Route importlib's stat/listdir through finderd (idempotent).

    Cheap: nothing connects until the first import after ``site``.
    """
    global _socket, _proxy, _debug, _reason
    if _proxy is not None:
        return
    if _posix is None or getattr(_ext, "_os", None) is not _posix:
        _reason = "not installed: this interpreter's importlib is not CPython's"
        return
    _debug = _env("FINDERD_DEBUG") not in ("", "0")
    _socket = socket_path
    proxy = type(sys)("posix")
    proxy.__dict__.update(_posix.__dict__)
    proxy.stat = _lazy("stat")
    proxy.listdir = _lazy("listdir")
    _proxy = proxy
    _ext._os = proxy
    _reason = "installed; waiting for the first import after site"


def uninstall(reason="uninstalled"):
    """Give importlib the stock ``posix`` back; finderd answers nothing more."""
    global _client, _reason
    if _ext._os is _proxy:
        _ext._os = _posix
    if _proxy is not None:
        _proxy.stat = _posix.stat
        _proxy.listdir = _posix.listdir
    client, _client = _client, None
    if client is not None:
        client.close()
    _reason = reason


def _site_running():
    site = sys.modules.get("site")
    return getattr(getattr(site, "__spec__", None), "_initializing", False)


def _lazy(name):
    """A stand-in for posix.NAME that activates finderd at its first call after site."""

    def call(*args, **kwargs):
        if not _busy and not _site_running():
            _activate()
        current = getattr(_proxy, name)
        if current is call:  # not activated (yet): stock
            current = getattr(_posix, name)
        return current(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


def _ms_setting(name, default):
    try:
        return max(0, int(_env(name, default)))
    except ValueError:
        return default


def _request_paths():
    """sys.path as FileFinder will stat it, as bytes: absolute, no trailing '/'.

    '' and relative entries are joined to the current directory the way
    FileFinder does. 3.9 and 3.10 key '' as "CWD/."; the daemon is asked for
    CWD, and the resolver drops the "." component of paths under it. Forms
    the daemon cannot key (with "..") are answered NOT_SERVED and left to
    posix.
    """
    os = sys.modules["os"]
    cwd = None
    paths = []
    for entry in sys.path:
        if not isinstance(entry, str):
            continue
        if not entry.startswith("/"):
            if cwd is None:
                try:
                    cwd = os.getcwd()
                except OSError:
                    continue
            entry = cwd if entry in ("", ".") else cwd + "/" + entry
        paths.append(os.fsencode(entry.rstrip("/") or "/"))
    return paths


def _interpreter_identity():
    info = sys.version_info
    return dict(
        implementation=sys.implementation.name,
        version="%d.%d.%d" % (info[0], info[1], info[2]),
        cache_tag=sys.implementation.cache_tag,
        source_suffixes=[s.encode() for s in _ext.SOURCE_SUFFIXES],
        bytecode_suffixes=[s.encode() for s in _ext.BYTECODE_SUFFIXES],
        extension_suffixes=[s.encode() for s in _ext.EXTENSION_SUFFIXES],
    )


def _load_native():
    """Import finderd._native from its known place, without a path search.

    importlib's own ExtensionFileLoader and _load() do the work, so the
    module is registered and initialised exactly as an import would; this
    only skips the directory walk that would find the file where we know it
    is. dlopen() of a suffix that was not built fails with ImportError.
    """
    native = sys.modules.get("finderd._native")
    if native is not None:
        return native
    bootstrap = sys.modules["_frozen_importlib"]
    here = __file__.rpartition("/")[0]
    failure = None
    for suffix in _ext.EXTENSION_SUFFIXES:
        path = here + "/_native" + suffix
        loader = _ext.ExtensionFileLoader("finderd._native", path)
        try:
            return bootstrap._load(_ext.spec_from_file_location("finderd._native", path,
                                                                 loader=loader))
        except ImportError as exc:
            failure = exc
    raise ImportError("finderd._native not found in %s: %s" % (here, failure))


def _activate():
    """Connect, fetch the snapshot, and hand stat/listdir to the resolver."""
    global _busy, _client, _reason
    _busy = True
    try:
        _native = _load_native()
        client = _native.Client(
            _socket,
            _ms_setting("FINDERD_CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS) * 1000,
            _ms_setting("FINDERD_TIMEOUT_MS", CALL_TIMEOUT_MS) * 1000,
            epoch_owner=_ext._NamespacePath,
        )
        paths = _request_paths()
        client.snapshot(
            paths,
            prefetch_bytes=_ms_setting("FINDERD_PREFETCH_KB", PREFETCH_KB) * 1024,
            **_interpreter_identity()
        )
    except Exception as exc:  # any failure: stock CPython from here on
        uninstall("fell back to stock: %s" % (exc,))
        _say(_reason)
        return
    finally:
        _busy = False
    _client = client
    _proxy.stat = client.stat
    _proxy.listdir = client.listdir
    _reason = "active: served by %s" % (_socket,)
    if _debug:
        for path in paths:
            _say("%s: %s %s" % ((path,) + (client.describe(path) or ("not held", ""))))
        _say(_reason)


def state():
    """A one-line description of what finderd does in this interpreter."""
    return _reason


def client():
    """The active ``finderd._native.Client``, or None."""
    return _client

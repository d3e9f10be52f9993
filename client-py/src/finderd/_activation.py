"""Activation: load the extension, connect, fetch the start-up answer.

Loaded by finderd.__init__ at the first import after site, and only then.
"""

import sys

_ext = sys.modules["_frozen_importlib_external"]
_bootstrap = sys.modules["_frozen_importlib"]

# Defaults; FINDERD_CONNECT_TIMEOUT_MS, FINDERD_TIMEOUT_MS, FINDERD_PREFETCH_KB and
# FINDERD_BYTECODE_KB override them.
CONNECT_TIMEOUT_MS = 20
CALL_TIMEOUT_MS = 50
PREFETCH_KB = 256
BYTECODE_KB = 32 * 1024
# Longest -c program text that goes into a program key.
KEYED_CODE_CHARS = 4096


def _env(name, default=""):
    return sys.modules["os"].environ.get(name, default)


def debug(message):
    if _env("FINDERD_DEBUG", "0") != "0":
        sys.stderr.write("finderd: %s\n" % message)


def _ms_setting(name, default):
    try:
        return max(0, int(_env(name, default)))
    except ValueError:
        return default


def request_paths():
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


def _program():
    """What is running: "c:CODE", "m:MODULE", "s:/abs/script", or FINDERD_PROGRAM.

    At the first import after site, sys.argv[0] is still "-c" or "-m" for
    those forms; sys.orig_argv (3.10+) holds what follows them. 3.9 keys all
    -c programs alike, and all -m programs alike.
    """
    override = _env("FINDERD_PROGRAM")
    if override:
        return "p:" + override
    first = sys.argv[0] if sys.argv else ""
    if first in ("-c", "-m"):
        return first[1] + ":" + _option_value(first)[:KEYED_CODE_CHARS]
    if first and not first.startswith("/") and first != "-":
        try:
            first = sys.modules["os"].getcwd() + "/" + first
        except OSError:
            pass
    return "s:" + first


def _option_value(option):
    """The value of -c/-m in sys.orig_argv ("" when unknown)."""
    argv = getattr(sys, "orig_argv", ())
    for i, arg in enumerate(argv[1:], 1):
        if arg == option:
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith(option) and not arg.startswith("--"):
            return arg[len(option):]
    return ""


def program_key(paths):
    """The key of this program's learned plan: interpreter, program, sys.path."""
    os = sys.modules["os"]
    head = "%s|%s|" % (sys.implementation.cache_tag, _program())
    return os.fsencode(head) + b"\0".join(paths)


def interpreter_identity():
    info = sys.version_info
    return dict(
        implementation=sys.implementation.name,
        version="%d.%d.%d" % (info[0], info[1], info[2]),
        cache_tag=sys.implementation.cache_tag,
        source_suffixes=[s.encode() for s in _ext.SOURCE_SUFFIXES],
        bytecode_suffixes=[s.encode() for s in _ext.BYTECODE_SUFFIXES],
        extension_suffixes=[s.encode() for s in _ext.EXTENSION_SUFFIXES],
    )


def load_native():
    """Import finderd._native from its known place, without a path search.

    importlib's own ExtensionFileLoader and _load() do the work, so the
    module is registered and initialised exactly as an import would; this
    only skips the directory walk that would find the file where we know it
    is. dlopen() of a suffix that was not built fails with ImportError.
    """
    native = sys.modules.get("finderd._native")
    if native is not None:
        return native
    here = __file__.rpartition("/")[0]
    failure = None
    for suffix in _ext.EXTENSION_SUFFIXES:
        path = here + "/_native" + suffix
        loader = _ext.ExtensionFileLoader("finderd._native", path)
        try:
            return _bootstrap._load(_ext.spec_from_file_location("finderd._native", path,
                                                                  loader=loader))
        except ImportError as exc:
            failure = exc
    raise ImportError("finderd._native not found in %s: %s" % (here, failure))


def daemon_user():
    """Who besides root and this user may listen on the socket: FINDERD_DAEMON_USER.

    Ignored under -E and -I, as PYTHON* variables are: an environment the
    interpreter is told not to trust must not widen whom it trusts.
    """
    return "" if sys.flags.ignore_environment else _env("FINDERD_DAEMON_USER")


def connect(socket):
    """A Client connected to @socket, following importlib.invalidate_caches()."""
    native = load_native()
    try:
        return native.Client(
            socket,
            _ms_setting("FINDERD_CONNECT_TIMEOUT_MS", CONNECT_TIMEOUT_MS) * 1000,
            _ms_setting("FINDERD_TIMEOUT_MS", CALL_TIMEOUT_MS) * 1000,
            epoch_owner=_ext._NamespacePath,
            daemon_user=daemon_user(),
            debug=_env("FINDERD_DEBUG", "0") != "0",
        )
    except native.Error as exc:
        if exc.args[0] == native.EUNTRUSTED:
            raise native.Error(exc.args[0], untrusted_listener(native, socket)) from None
        raise


def untrusted_listener(native, socket):
    """Who listens on @socket, and why this interpreter does not trust it."""
    try:
        pid, uid, _gid = native.socket_peer(socket)
    except OSError as exc:
        return "cannot tell who listens on %s: %s" % (socket, exc)
    configured = daemon_user()
    if sys.flags.ignore_environment and _env("FINDERD_DAEMON_USER"):
        daemon = "FINDERD_DAEMON_USER ignored under -E/-I"
    elif configured:
        daemon = "not the daemon user FINDERD_DAEMON_USER=%s" % configured
    else:
        daemon = "FINDERD_DAEMON_USER is unset"
    return ("%s is held by uid %d (pid %d): not root, not this user (uid %d), %s; "
            "not trusted" % (socket, uid, pid, sys.modules["os"].geteuid(), daemon))


def speed_up_misses(client):
    """Let each served sys.path FileFinder answer "not here" from its listing.

    The finders stay FileFinders: find_spec becomes an instance attribute
    that calls FileFinder.find_spec whenever the listing holds a candidate.
    """
    cache = sys.path_importer_cache
    for entry in sys.path:
        finder = cache.get(entry)
        if type(finder) is _ext.FileFinder and "find_spec" not in vars(finder):
            finder.find_spec = client.fast_find_spec(finder)


def start(socket):
    """A client holding the start-up answer for this interpreter.

    For the benchmark's "bound" only: FINDERD_RECORD=FILE saves the answers
    at exit, FINDERD_REPLAY=FILE answers from such a file with no daemon.
    """
    replay = _env("FINDERD_REPLAY")
    if replay:
        return load_native().replay(replay)
    client = connect(socket)
    paths = request_paths()
    key = program_key(paths)
    client.snapshot(paths, program_key=key,
                    prefetch_bytes=_ms_setting("FINDERD_PREFETCH_KB", PREFETCH_KB) * 1024,
                    bytecode_bytes=_ms_setting("FINDERD_BYTECODE_KB", BYTECODE_KB) * 1024,
                    **interpreter_identity())
    atexit = __import__("atexit")
    atexit.register(_report, client, key)
    record = _env("FINDERD_RECORD")
    if record:
        atexit.register(client.save, record)
    return client


def _report(client, key):
    """At exit: tell the daemon what this run used, when it differs from the plan."""
    try:
        client.report(key)
    except Exception as exc:  # the program is done; nothing to fall back to
        debug("report not sent: %s" % (exc,))


def serve_compiled_files(client):
    """Answer importlib's _io.open_code from compiled files the daemon sent.

    Only where it matters (the daemon sent compiled files, or named a slow
    filesystem whose reads the run reports): elsewhere _io stays stock.
    """
    if not client.reads_compiled_files():
        return
    io = type(sys)("_io")
    io.__dict__.update(_ext._io.__dict__)
    io.open_code = client.open_code
    _ext._io = io


def activate(socket, proxy):
    """Connect, fetch the snapshot, and hand @proxy's stat/listdir to the resolver."""
    client = start(socket)
    paths = request_paths()
    client.track_writes()
    sys.modules["os"].register_at_fork(after_in_child=client.after_fork)
    proxy.stat = client.stat
    proxy.listdir = client.listdir
    speed_up_misses(client)
    serve_compiled_files(client)
    for path in paths:
        debug("%s: %s %s" % ((path,) + (client.describe(path) or ("not held", ""))[:2]))
    debug("active: served by %s" % (socket,))
    return client

"""finderd-python's Python side: the resolver, installed between PEP 587's phases.

The launcher (client-py/launcher/finderd_python.c) compiles this file at
build time, freezes the code into its binary, and runs it in the namespace of
the module ``finderd._launcher``, which it creates itself as soon as CPython's
core phase is done: only builtin and frozen modules exist then, and this file
imports nothing else. The launcher puts these names in that namespace first:

  client        the finderd._native.Client of the launcher's connection, with
                the start-up answer already held
  native        the finderd._native module compiled into the launcher
  socket        the daemon's socket path
  program_key   the key of this program's learned plan (bytes)
  debug         FINDERD_DEBUG was set (and -E/-I were not)
  getpath_done  stop answering getpath's probes from the listings

and calls between_phases() before the main phase, after_main() after it,
and undo() if between_phases() failed. Nothing here changes what any import
resolves to: importlib's PathFinder, FileFinder and loaders stay CPython's,
only their stat/listdir are answered from the daemon's listings, as the
.pth client does (finderd/__init__.py).
"""

import sys
import posix as _posix

# Put in this namespace by the launcher before this code runs (see above).
client = globals()["client"]
socket = globals()["socket"]
debug = globals()["debug"]
getpath_done = globals()["getpath_done"]
getpath_counts = globals()["getpath_counts"]

_ext = sys.modules["_frozen_importlib_external"]
_bootstrap = sys.modules["_frozen_importlib"]

_stock_stat = _posix.stat
_stock_listdir = _posix.listdir
_stock_install = None
_stock_io = None

proxy = None  # what importlib calls posix from now on (finderd/__init__.py adopts it)
state = "starting"

# A module the launcher made, not an import: a spec saying so, for code that
# walks sys.modules and asks each module for its spec.
__spec__ = _bootstrap.ModuleSpec(__name__, None, origin="finderd-python")
__package__ = "finderd"
__loader__ = None


def between_phases():
    """Core phase done, main phase next: install the resolver before anything is imported."""
    global proxy, _stock_install, _stock_io
    proxy = type(sys)("posix")
    proxy.__dict__.update(_posix.__dict__)
    proxy.stat = client.stat
    proxy.listdir = client.listdir
    _ext._os = proxy
    if client.reads_compiled_files():
        # Compiled files the daemon sent (slow filesystems), for every import.
        _stock_io = _ext._io
        io = type(sys)("_io")
        io.__dict__.update(_stock_io.__dict__)
        io.open_code = client.open_code
        _ext._io = io
    # The main phase calculates the path configuration (getpath, answered
    # by the launcher's interposed stat/fopen/readlink), then installs
    # importlib's path finder: that call marks the end of getpath.
    _stock_install = _ext._install
    _ext._install = _install
    # site's own checks (os.path.isdir, os.listdir of site-packages) go
    # through os, which copies posix's functions when it is imported.
    _posix.stat = _site_stat
    _posix.listdir = _site_listdir


def _install(bootstrap_module):
    """_frozen_importlib_external._install, which the main phase calls right after getpath."""
    _ext._install = _stock_install
    getpath_done()
    return _stock_install(bootstrap_module)


def _stat_callers():
    """The functions whose posix.stat() calls are answered while site runs.

    Each returns a bool (os.path.isdir, isfile, exists): the stat_result,
    whose inode and owner fields the listings do not carry, never reaches
    the code that called them, whoever that is.
    """
    genericpath = sys.modules.get("genericpath")
    try:
        return (genericpath.isdir.__code__, genericpath.isfile.__code__,
                genericpath.exists.__code__)
    except AttributeError:
        return ()


def _site_stat(path, *args, **kwargs):
    """posix.stat while the interpreter starts (restored by after_main())."""
    if not args and not kwargs and sys._getframe(1).f_code in _stat_callers():
        return client.stat(path)
    return _stock_stat(path, *args, **kwargs)


def _site_listdir(*args, **kwargs):
    """posix.listdir while the interpreter starts: site.addsitedir's, answered.

    addsitedir keeps the .pth names and sorts them, so the order of the
    listing (sorted here, directory order from the kernel) cannot show.
    """
    if len(args) == 1 and not kwargs:
        addsitedir = getattr(sys.modules.get("site"), "addsitedir", None)
        if sys._getframe(1).f_code is getattr(addsitedir, "__code__", None):
            return client.listdir(args[0])
    return _stock_listdir(*args, **kwargs)


def _restore_os():
    _posix.stat = _stock_stat
    _posix.listdir = _stock_listdir
    os = sys.modules.get("os")
    if os is not None:
        if os.__dict__.get("stat") is _site_stat:
            os.stat = _stock_stat
        if os.__dict__.get("listdir") is _site_listdir:
            os.listdir = _stock_listdir


def _fix_frozen(module):
    """Give a frozen module imported before sys._stdlib_dir existed the
    __file__ and loader state that FrozenImporter gives it afterwards."""
    spec = getattr(module, "__spec__", None)
    loader_state = getattr(spec, "loader_state", None)
    if (loader_state is None or getattr(loader_state, "filename", None)
            or not getattr(sys, "_stdlib_dir", None)):
        return
    ispkg = hasattr(module, "__path__")
    filename, _pkgdir = _bootstrap.FrozenImporter._resolve_filename(
        loader_state.origname, spec.name, ispkg)
    loader_state.filename = filename
    if filename and not hasattr(module, "__file__"):
        module.__file__ = filename


def _speed_up_misses():
    """Each served sys.path FileFinder answers "not here" from its listing (FastFind)."""
    cache = sys.path_importer_cache
    for entry in sys.path:
        finder = cache.get(entry)
        if type(finder) is _ext.FileFinder and "find_spec" not in vars(finder):
            finder.find_spec = client.fast_find_spec(finder)


def after_main():
    """Main phase done (site ran): give os and posix back, and settle in."""
    global state
    _restore_os()
    if _ext._install is _install:
        _ext._install = _stock_install
    _fix_frozen(_ext)
    _speed_up_misses()
    client.track_writes()
    _posix.register_at_fork(after_in_child=client.after_fork)
    state = "active: served by %s (the finderd-python launcher)" % (socket,)
    if debug:
        answered, passed = getpath_counts()
        sys.stderr.write("finderd: getpath: %d probes answered from listings, %d to the "
                         "filesystem\n" % (answered, passed))
        for entry in sys.path:
            described = client.describe(entry) or ("not held", "")
            sys.stderr.write("finderd: %s: %s %s\n" % ((entry,) + tuple(described[:2])))
        sys.stderr.write("finderd: %s\n" % state)


def undo():
    """between_phases() failed: leave everything as stock has it."""
    global proxy, state
    if proxy is not None and _ext._os is proxy:
        _ext._os = _posix
    if _stock_io is not None:
        _ext._io = _stock_io
    if _stock_install is not None and _ext._install is _install:
        _ext._install = _stock_install
    _restore_os()
    proxy = None
    state = "not installed: the launcher could not prepare the interpreter"

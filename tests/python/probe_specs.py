"""Print importlib.util.find_spec() results for many modules, as one JSON line.

Run inside a target interpreter, once with finderd and once with FINDERD=off;
the test compares the two field by field. Usage:

    python probe_specs.py stdlib            every module of the stdlib and site-packages
    python probe_specs.py names NAME...     the given module names
    python probe_specs.py tree DIR...       every module under the given sys.path dirs

Module names are enumerated with os.scandir (which finderd does not touch),
so both runs ask for the same names in the same order.
"""

import importlib.machinery
import importlib.util
import json
import os
import sys
import sysconfig

SUFFIXES = importlib.machinery.all_suffixes()


def module_name(filename):
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def walk(directory, prefix="", depth=0):
    """Module names under @directory, packages before their contents."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError:
        return
    for entry in entries:
        if entry.name == "__pycache__" or entry.name.startswith("."):
            continue
        if entry.is_dir():
            if entry.name.isidentifier() and depth < 6 and entry.name != "site-packages":
                yield prefix + entry.name
                yield from walk(entry.path, prefix + entry.name + ".", depth + 1)
            continue
        name = module_name(entry.name)
        if name and name.isidentifier() and name != "__init__":
            yield prefix + name


def describe(name):
    """The fields of the spec that must match stock CPython's."""
    try:
        spec = importlib.util.find_spec(name)
    except BaseException as exc:  # a parent package that fails to import
        return {"error": type(exc).__name__}
    if spec is None:
        return None
    loader = type(spec.loader)
    locations = spec.submodule_search_locations
    return {
        "name": spec.name,
        "origin": spec.origin,
        "loader": "%s.%s" % (loader.__module__, loader.__qualname__),
        "submodule_search_locations": list(locations) if locations is not None else None,
        "cached": spec.cached,
        "has_location": spec.has_location,
        "parent": spec.parent,
    }


def finderd_report():
    finderd = sys.modules.get("finderd")
    if finderd is None:
        return {"state": "not loaded"}
    client = finderd.client()
    return {"state": finderd.state(), "counters": client.counters() if client else None}


def main(argv):
    mode, args = argv[0], argv[1:]
    if mode == "stdlib":
        paths = sysconfig.get_paths()
        roots = [paths["stdlib"], os.path.join(paths["platstdlib"], "lib-dynload"), paths["purelib"]]
        names = [n for root in roots for n in walk(root)]
    elif mode == "tree":  # the caller puts the dirs on sys.path (PYTHONPATH)
        names = [n for root in args for n in walk(root)]
    else:
        names = args
    seen, results = set(), {}
    for name in names:
        if name not in seen:
            seen.add(name)
            results[name] = describe(name)
    print(json.dumps({"specs": results, "finderd": finderd_report()}))


if __name__ == "__main__":
    main(sys.argv[1:])

"""No program notices finderd but for its speed (issue 5).

Every case runs the same script stock (FINDERD=off) and with finderd, and
compares what the script saw: module values, __file__, __cached__, the
.pyc files written, resources, metadata, exceptions. test_launcher.py runs
the comparisons again with the finderd-python launcher serving the venv.
"""

import glob
import json
import os
import shutil
import subprocess
import zipfile

import pytest

import support

OBSERVE = r"""
import importlib, importlib.util, json, os, sys
out = {}
for name in NAMES:
    try:
        m = importlib.import_module(name)
        out[name] = [getattr(m, 'where', None), getattr(m, '__file__', None),
                     getattr(m, '__cached__', None), type(m.__spec__.loader).__name__]
    except Exception as exc:
        out[name] = type(exc).__name__
written = sorted(os.path.relpath(os.path.join(d, f), ROOT)
                 for d, _, fs in os.walk(ROOT) for f in fs if f.endswith('.pyc'))
finderd = sys.modules.get('finderd')
print(json.dumps({'modules': out, 'pyc': written,
                  'active': bool(finderd and finderd.client()) or 'finderd._launcher' in sys.modules}))
"""


def observe(python, socket_path, root, names, stock, args=(), **env):
    code = "NAMES = %r\nROOT = %r\n" % (names, root) + OBSERVE
    return support.run_json(python, code, socket_path, cwd=root, args=args,
                            FINDERD="off" if stock else None, **env)


def same_as_stock(python, socket_path, make_tree, names, args=(), **env):
    """Build the tree twice (each run writes its own .pyc files) and compare."""
    results = []
    for stock in (True, False):
        root = make_tree()
        result = observe(python, socket_path, root, names, stock, args=args, **env)
        result["modules"] = json.loads(json.dumps(result["modules"]).replace(root, "<root>"))
        results.append(result)
    stock, served = results
    assert served.pop("active"), "finderd was not active"
    stock.pop("active")
    assert served == stock
    return served


@pytest.fixture
def tree_factory(tmp):
    counter = [0]

    def make(files):
        counter[0] += 1
        root = os.path.join(tmp, "tree%d" % counter[0])
        for rel, text in files.items():
            support.write(os.path.join(root, rel), text)
        return root

    return make


BASIC = {"mod.py": "where = 'mod'\n", "pkg/__init__.py": "where = 'pkg'\n",
         "pkg/sub.py": "where = 'pkg.sub'\n"}


@pytest.mark.parametrize("args,env", [
    ((), {}),
    (("-B",), {}),                                   # sys.dont_write_bytecode
    ((), {"PYTHONDONTWRITEBYTECODE": "1"}),
    ((), {"PYTHONCASEOK": "1"}),                     # no effect on Linux, either way
    (("-X", "frozen_modules=off"), {}),
    (("-I",), {}),                                   # isolated: no user site, no PYTHON* env
], ids=["plain", "-B", "dontwritebytecode", "caseok", "frozen-off", "isolated"])
def test_flags_and_environment(python, shared_daemon, tree_factory, args, env):
    same_as_stock(python, shared_daemon.socket, lambda: tree_factory(BASIC),
                  ["mod", "pkg", "pkg.sub", "missing", "Mod"], args=args, **env)


def test_pycache_prefix(python, shared_daemon, tree_factory, tmp):
    prefix = os.path.join(tmp, "pycache-prefix")
    result = same_as_stock(python, shared_daemon.socket, lambda: tree_factory(BASIC),
                           ["mod", "pkg.sub"], PYTHONPYCACHEPREFIX=prefix)
    assert result["modules"]["mod"][2].startswith(prefix)
    assert result["pyc"] == []  # written under the prefix, not in the tree


@pytest.mark.parametrize("mode", ["CHECKED_HASH", "UNCHECKED_HASH", "TIMESTAMP"])
def test_pyc_invalidation_modes(python, shared_daemon, tree_factory, mode):
    """A .pyc compiled in each mode, then the source changed: stock's verdict."""

    def make():
        root = tree_factory({"hashed.py": "where = 'compiled'\n"})
        subprocess.run([python, "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
                        "invalidation_mode=py_compile.PycInvalidationMode.%s)" % mode,
                        os.path.join(root, "hashed.py")], check=True)
        support.write(os.path.join(root, "hashed.py"), "where = 'edited after compile'\n")
        return root

    result = same_as_stock(python, shared_daemon.socket, make, ["hashed"])
    expected = "compiled" if mode == "UNCHECKED_HASH" else "edited after compile"
    assert result["modules"]["hashed"][0] == expected


SYS_PATH_FORMS = r"""
import importlib, json, os, sys, zipfile
root = os.getcwd()
with zipfile.ZipFile('lib.zip', 'w') as z:
    z.writestr('zipped.py', "where = 'zip'\n")
class Hook:
    def __init__(self, path):
        if not path.endswith('/hooked'):
            raise ImportError
    def find_spec(self, name, target=None):
        if name == 'from_hook':
            return importlib.util.spec_from_loader(name, loader=None)
    def invalidate_caches(self):
        pass
import importlib.util
sys.path_hooks.insert(0, Hook)
sys.path[:0] = ['', '.', 'rel', root + '/lib.zip', root + '/missing-dir', root + '/hooked',
                root + '/./dotted', root + '/trailing/']
out = {}
for name in ['cwdmod', 'relmod', 'zipped', 'from_hook', 'dottedmod', 'trailmod', 'nothing']:
    sys.modules.pop(name, None)
    try:
        spec = importlib.util.find_spec(name)
        out[name] = spec and [spec.origin, type(spec.loader).__name__, spec.cached]
    except Exception as exc:
        out[name] = type(exc).__name__
out['cache'] = sorted((k.replace(root, '<root>'), type(v).__name__)
                      for k, v in sys.path_importer_cache.items() if k.startswith(root) or not k.startswith('/'))
finderd = sys.modules.get('finderd')
out['active'] = bool(finderd and finderd.client()) or 'finderd._launcher' in sys.modules
print(json.dumps(out).replace(root, '<root>'))
"""


def test_sys_path_forms_and_hooks(python, shared_daemon, tree_factory):
    """'' and '.', relative, zip, missing, hook-handled, dotted and trailing-slash entries."""
    files = {"cwdmod.py": "", "rel/relmod.py": "", "dotted/dottedmod.py": "",
             "trailing/trailmod.py": "", "hooked/.keep": ""}
    results = []
    for switch in ("off", None):
        root = tree_factory(files)
        results.append(support.run_json(python, SYS_PATH_FORMS, shared_daemon.socket, cwd=root,
                                        FINDERD=switch))
    stock, served = results
    assert served.pop("active") and not stock.pop("active")
    assert served == stock
    assert stock["zipped"][1] == "zipimporter"


RESOURCES = r"""
import importlib, importlib.metadata, json, sys
try:
    from importlib.resources import files
except ImportError:
    files = None
import datapkg
out = {
    'file': datapkg.__file__,
    'data': files('datapkg').joinpath('data.txt').read_text() if files else None,
    'contents': sorted(p.name for p in files('datapkg').iterdir()) if files else None,
    'version': importlib.metadata.version('datapkg'),
    'entry_points': sorted(ep.name for ep in importlib.metadata.distribution('datapkg').entry_points),
    'files': sorted(str(f) for f in importlib.metadata.files('datapkg')),
    'active': bool(sys.modules.get('finderd') and sys.modules['finderd'].client())
              or 'finderd._launcher' in sys.modules,
}
print(json.dumps(out))
"""


def test_resources_and_metadata_of_served_packages(python, shared_daemon, tree_factory):
    files = {
        "datapkg/__init__.py": "", "datapkg/data.txt": "payload\n",
        "datapkg-1.2.3.dist-info/METADATA": "Metadata-Version: 2.1\nName: datapkg\nVersion: 1.2.3\n",
        "datapkg-1.2.3.dist-info/entry_points.txt": "[console_scripts]\ndp = datapkg:main\n",
        "datapkg-1.2.3.dist-info/RECORD": "datapkg/__init__.py,,\ndatapkg/data.txt,,\n",
    }
    results = []
    for switch in ("off", None):
        root = tree_factory(files)
        out = support.run_json(python, RESOURCES, shared_daemon.socket, cwd=root, FINDERD=switch,
                               PYTHONPATH=root)
        results.append(json.loads(json.dumps(out).replace(root, "<root>")))
    stock, served = results
    assert served.pop("active") and not stock.pop("active")
    assert served == stock
    assert stock["version"] == "1.2.3" and stock["data"] in ("payload\n", None)


def test_debug_says_what_it_decides(python, shared_daemon, tmp):
    proc = support.run(python, "import json", shared_daemon.socket, cwd=tmp, FINDERD_DEBUG="1")
    assert "finderd: active: served by %s" % shared_daemon.socket in proc.stderr
    missing = os.path.join(tmp, "dead.sock")
    with open(missing, "w"):
        pass  # exists but is not a socket: the connect fails
    proc = support.run(python, "import json", missing, cwd=tmp, FINDERD_DEBUG="1")
    assert "finderd: fell back to stock:" in proc.stderr
    quiet = support.run(python, "import json", missing, cwd=tmp)
    assert quiet.stderr == ""


def test_status_and_doctor(python, shared_daemon, tmp):
    status = support.run(python, None, shared_daemon.socket, cwd=tmp, args=("-m", "finderd", "status"))
    assert "state: active" in status.stdout and "served" in status.stdout
    doctor = support.run(python, None, shared_daemon.socket, cwd=tmp,
                         args=("-m", "finderd", "doctor"))
    assert "served" in doctor.stdout
    missing = os.path.join(tmp, "nothing.sock")
    doctor = support.run(python, None, missing, cwd=tmp, args=("-m", "finderd", "doctor"),
                         check=False)
    assert doctor.returncode != 0
    assert "no daemon" in doctor.stdout and "finderd serve" in doctor.stdout
    off = support.run(python, None, shared_daemon.socket, cwd=tmp,
                      args=("-m", "finderd", "doctor"), check=False, FINDERD="off")
    assert off.returncode != 0 and "FINDERD=off" in off.stdout


def fresh_venv(base_python, path):
    subprocess.run([base_python, "-m", "venv", path], check=True)
    return os.path.join(path, "bin", "python")


def base_of(python):
    out = subprocess.run([python, "-c", "import sys; print(sys._base_executable)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return out


def site_packages(python):
    return subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_uninstall_leaves_no_trace_and_half_removed_package_is_harmless(python, shared_daemon, tmp):
    venv_python = fresh_venv(base_of(python), os.path.join(tmp, "venv"))
    sp = site_packages(venv_python)
    before = set(os.listdir(sp))
    subprocess.run([venv_python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    os.path.join(support.ROOT, "client-py")], check=True)
    assert {"finderd", "finderd.pth"} <= set(os.listdir(sp))
    active = support.run(venv_python, "import json, finderd; print(finderd.state())",
                         shared_daemon.socket, cwd=tmp)
    assert active.stdout.startswith("active")
    # Half-removed: the package is gone, the .pth is still there.
    shutil.move(os.path.join(sp, "finderd"), os.path.join(tmp, "finderd-moved"))
    half = support.run(venv_python, "import json, sys; print('finderd' in sys.modules)",
                       shared_daemon.socket, cwd=tmp)
    assert half.stdout.strip() == "False" and half.stderr == ""
    shutil.move(os.path.join(tmp, "finderd-moved"), os.path.join(sp, "finderd"))
    subprocess.run([venv_python, "-m", "pip", "uninstall", "-q", "-y", "finderd"], check=True)
    leftovers = {n for n in set(os.listdir(sp)) - before if not n.startswith("__pycache__")}
    assert leftovers == set()
    gone = support.run(venv_python, "import json, sys; print('finderd' in sys.modules)",
                       shared_daemon.socket, cwd=tmp)
    assert gone.stdout.strip() == "False" and gone.stderr == ""


def test_wheel_and_standalone_sdist_build_and_work(python, shared_daemon, tmp):
    if support.python_version(python) != (3, 11) and not os.environ.get("FINDERD_TEST_ALL_SUITES"):
        pytest.skip("packaging is checked on 3.11 by default; FINDERD_TEST_ALL_SUITES=1 runs all")
    builder = fresh_venv(base_of(python), os.path.join(tmp, "builder"))
    subprocess.run([builder, "-m", "pip", "install", "-q", "--disable-pip-version-check", "build"],
                   check=True)
    src = os.path.join(tmp, "src")
    shutil.copytree(os.path.join(support.ROOT, "client-py"), src,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info"))
    # The copy has no ../client-c beside it: this only works if the sdist carries libfinderd.
    subprocess.run([builder, "-m", "build", "--sdist", "--outdir", os.path.join(tmp, "dist"),
                    os.path.join(support.ROOT, "client-py")], check=True, capture_output=True)
    sdist = glob.glob(os.path.join(tmp, "dist", "finderd-*.tar.gz"))[0]
    alone = os.path.join(tmp, "alone")
    os.makedirs(alone)
    subprocess.run([builder, "-m", "build", "--wheel", "--outdir", os.path.join(tmp, "wheels"),
                    sdist], check=True, capture_output=True, cwd=alone)
    wheel = glob.glob(os.path.join(tmp, "wheels", "finderd-*.whl"))[0]
    names = zipfile.ZipFile(wheel).namelist()
    assert "finderd.pth" in names and any(n.startswith("finderd/_native") for n in names)
    user = fresh_venv(base_of(python), os.path.join(tmp, "user"))
    subprocess.run([user, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel],
                   check=True)
    out = support.run(user, "import json, finderd; print(finderd.state())", shared_daemon.socket,
                      cwd=tmp)
    assert out.stdout.startswith("active")


FORKED = r"""
import importlib, json, os, sys
import finderd

def imports(i):
    values = [importlib.import_module('forkpkg%d.sub.m%d' % (i, j)).value for j in range(3)]
    counters = finderd.client().counters()
    return values == [[i, j] for j in range(3)] and counters['lookups'] >= 1 \
        and not counters['gave_up']

pids = []
for i in range(4):
    pid = os.fork()
    if pid == 0:
        os._exit(0 if imports(i) else 1)
    pids.append(pid)
parent = imports(9)
children = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) if hasattr(os, 'waitstatus_to_exitcode')
            else os.waitpid(p, 0)[1] >> 8 for p in pids]
print(json.dumps({'parent': parent, 'children': children, 'state': finderd.state()}))
"""


def test_forked_children_get_their_own_connection(python, shared_daemon, tree_factory):
    """After os.fork() parent and children all need round trips (nested packages
    are not in the snapshot): each must get answers on its own connection."""
    files = {}
    for i in list(range(4)) + [9]:
        files["forkpkg%d/__init__.py" % i] = ""
        files["forkpkg%d/sub/__init__.py" % i] = ""
        for j in range(3):
            files["forkpkg%d/sub/m%d.py" % (i, j)] = "value = [%d, %d]\n" % (i, j)
    root = tree_factory(files)
    out = support.run_json(python, FORKED, shared_daemon.socket, cwd=root, PYTHONPATH=root)
    assert out == {"parent": True, "children": [0, 0, 0, 0],
                   "state": "active: served by %s" % shared_daemon.socket}


def test_recording_and_replay_for_the_benchmark_bound(python, shared_daemon, tmp):
    """FINDERD_RECORD/FINDERD_REPLAY (bench only): a replayed run answers as stock."""
    recording = os.path.join(tmp, "answers.rec")
    code = "import json, email.parser, http.client"
    support.run(python, code, shared_daemon.socket, cwd=tmp, FINDERD_RECORD=recording)
    assert os.path.getsize(recording) > 1000
    check = ("import json, sys, importlib.util, email.parser, http.client, finderd\n"
             "client = finderd.client()\n"
             "print(json.dumps([finderd.state(), client and client.counters()['lookups'],"
             " importlib.util.find_spec('http.client').origin]))")
    stock = support.run_json(python, check, shared_daemon.socket, cwd=tmp, FINDERD="off")
    state, lookups, origin = support.run_json(python, check, recording, cwd=tmp,
                                              FINDERD_REPLAY=recording)
    assert state == "active: served by %s" % recording and lookups == 0
    assert origin == stock[2]


RESTARTED = support.NEW_MODULE + r"""
import json, threading, time
finderd = sys.modules["finderd"]
first = new_module("before_restart", 1)
print(json.dumps({"ready": first, "state": finderd.state()}), flush=True)
sys.stdin.readline()
wrong = []
def imports(who):
    for i in range(5000):
        if new_module("after_%s_%d" % (who, i), i) != i:
            wrong.append((who, i))
        if finderd.client().status()["reconnects"]:
            return
        time.sleep(0.01)
thread = threading.Thread(target=imports, args=("thread",))
thread.start()
imports("main")
thread.join()
print(json.dumps({"wrong": wrong, "state": finderd.state()}), flush=True)
"""


def test_served_again_after_the_daemon_restarts(python, daemon, tmp):
    """A running interpreter (two threads importing) whose daemon is restarted
    on the same socket: every import right meanwhile, then served again."""
    proc = subprocess.Popen([python, "-c", RESTARTED, tmp], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=support.clean_env(daemon.socket, PYTHONPATH=tmp))
    ready = json.loads(proc.stdout.readline() or "{}")
    assert ready.get("state") == "active: served by %s" % daemon.socket, proc.stderr.read()
    daemon.stop()
    daemon.start()
    out, err = proc.communicate("go\n", timeout=120)
    assert proc.returncode == 0, err
    done = json.loads(out.splitlines()[-1])
    assert done["wrong"] == []
    assert done["state"].startswith("active: served by %s again (reconnected once" % daemon.socket), done

"""Create-then-import, thousands of times: zero stale answers (issue 5).

FINDERD_STRESS_CYCLES sets the number of fresh-interpreter cycles (default
50; `./scripts/test --slow` runs 10,000). The in-process loop is cheap and
always runs 2,000 rounds.
"""

import os

import support

CYCLES = int(os.environ.get("FINDERD_STRESS_CYCLES", "50"))

IN_PROCESS = r"""
import importlib, json, os, sys
src = SRC
stale = []
for i in range(ROUNDS):
    name = 'fresh_%d' % (i % 50)
    path = os.path.join(src, name + '.py')
    with open(path, 'w') as f:          # a new module, or a new version of one
        f.write('value = %d\n' % i + '#' * (i % 7))
    sys.modules.pop(name, None)
    try:
        got = importlib.import_module(name).value
    except ImportError as exc:
        got = repr(exc)
    if got != i:
        stale.append((i, got))
    if i % 3 == 0:                       # and gone again
        os.remove(path)
        sys.modules.pop(name, None)
        try:
            importlib.import_module(name)
            stale.append((i, 'still importable after removal'))
        except ModuleNotFoundError:
            pass
finderd = sys.modules['finderd']
print(json.dumps({'stale': stale[:20], 'count': len(stale), 'state': finderd.state()}))
"""


def test_fresh_interpreters_see_every_new_module(python, shared_daemon, tmp):
    src = os.path.join(tmp, "cycles")
    os.makedirs(src)
    code = "import json, sys; import cyc; print(json.dumps([cyc.value, sys.modules['finderd'].state()]))"
    stale = []
    for i in range(CYCLES):
        support.write(os.path.join(src, "cyc.py"), "value = %d\n%s" % (i, "#" * (i % 11)))
        value, state = support.run_json(python, code, shared_daemon.socket, cwd=tmp,
                                        PYTHONPATH=src, PYTHONDONTWRITEBYTECODE="1")
        assert state.startswith("active"), state
        if value != i:
            stale.append((i, value))
    assert stale == []


def test_one_interpreter_writing_and_importing(python, shared_daemon, tmp):
    src = os.path.join(tmp, "inproc")
    os.makedirs(src)
    code = IN_PROCESS.replace("ROUNDS", "2000").replace("SRC", repr(src))
    out = support.run_json(python, code, shared_daemon.socket, cwd=tmp, PYTHONPATH=src,
                           PYTHONDONTWRITEBYTECODE="1")
    assert out["state"].startswith("active"), out
    assert out["count"] == 0, out

"""deploy/ci: the shell recipe, the GitHub composite action and the GitLab
template start a real daemon, export FINDERD_SOCKET, and a job's interpreter
(the client installed from client-py) is served through it. The YAML files
validate against the schemas check-jsonschema vendors."""

import os
import re
import shutil

import yaml

from conftest import CLIENT_TIMEOUTS, DEPLOY, ROOT, health, run, tool

CI = os.path.join(DEPLOY, "ci")
RECIPE = os.path.join(CI, "finderd-runner.sh")
JOB = "import deploy_probe, finderd; assert deploy_probe.VALUE == 42; print(finderd.state())"


def job_dir(tmp_path):
    path = tmp_path / "job"
    path.mkdir(exist_ok=True)
    (path / "deploy_probe.py").write_text("VALUE = 42\n")
    return str(path)


def bash(script, env, check=True):
    return run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], env=env, check=check)


def base_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FINDERD", "GITHUB_", "RUNNER_", "CI_"))}
    env.update(CLIENT_TIMEOUTS)
    env.update(extra)
    return env


def test_recipe_passes_shellcheck():
    result = run(["shellcheck", RECIPE], check=False)
    assert result.returncode == 0, result.stdout


def test_recipe_starts_exports_serves_and_stops(finderd_bin, client_python, tmp_path):
    runner_dir = str(tmp_path / "runner")
    env = base_env(FINDERD_BIN=finderd_bin, FINDERD_RUNNER_DIR=runner_dir,
                   PYTHONPATH=job_dir(tmp_path), PYTHONDONTWRITEBYTECODE="1", FINDERD_DEBUG="1")
    socket = os.path.join(runner_dir, "finderd.sock")
    try:
        job = bash('eval "$(%s start)"\necho "socket=$FINDERD_SOCKET"\n%s -c %r'
                   % (RECIPE, client_python, JOB), env)
        assert "socket=%s" % socket in job.stdout
        assert "served by %s" % socket in job.stdout, job.stdout + job.stderr
        pid = open(os.path.join(runner_dir, "finderd.pid")).read().strip()

        # One daemon per runner: a second start (the next job) reuses it.
        again = bash('eval "$(%s start)"\n%s -c %r' % (RECIPE, client_python, JOB), env)
        assert "reusing finderd %s" % pid in again.stderr, again.stderr
        assert open(os.path.join(runner_dir, "finderd.pid")).read().strip() == pid
        # stats and status from a shell that did not start it (no FINDERD_BIN).
        other = dict(env)
        del other["FINDERD_BIN"]
        stats = run([RECIPE, "stats"], env=other)
        assert re.search(r"snapshot requests\s+2\b", stats.stdout), stats.stdout
        assert run([RECIPE, "status"], env=other).returncode == 0
    finally:
        stop = run([RECIPE, "stop"], env=env, check=False)
    assert stop.returncode == 0 and "stopped finderd" in stop.stderr, stop.stderr
    assert not os.path.exists(socket) and not os.path.exists(os.path.join(runner_dir, "finderd.pid"))
    assert run(["kill", "-0", pid], check=False).returncode != 0, "finderd still runs after stop"
    assert run([RECIPE, "stop"], env=env).returncode == 0
    assert run([RECIPE, "status"], env=env, check=False).returncode != 0


def test_recipe_fails_clearly_without_a_binary(tmp_path):
    env = base_env(FINDERD_BIN=str(tmp_path / "missing"), FINDERD_RUNNER_DIR=str(tmp_path / "r"))
    result = run([RECIPE, "start"], env=env, check=False)
    assert result.returncode != 0 and "no finderd binary" in result.stderr
    assert not result.stdout, "nothing to eval on failure"


def action_checkout(tmp_path):
    """What GitHub checks out for `uses: OWNER/finderd/deploy/ci@REF`: the
    repository (the parts the action uses), with the action in deploy/ci."""
    checkout = tmp_path / "action-checkout"
    shutil.copytree(CI, checkout / "deploy" / "ci")
    for part in ("client-py", "client-c"):
        shutil.copytree(os.path.join(ROOT, part), checkout / part,
                        ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    return checkout


class Expressions:
    """The `${{ }}` expressions action.yml uses: context lookups, string
    literals, `==` and `||`. Anything else fails the test loudly."""

    def __init__(self, contexts):
        self.contexts = contexts

    def value(self, text):
        text = text.strip()
        if "||" in text:
            for part in text.split("||"):
                value = self.value(part)
                if value:
                    return value
            return ""
        if "==" in text:
            left, right = text.split("==")
            return self.value(left) == self.value(right)
        if text.startswith("'") and text.endswith("'"):
            return text[1:-1]
        if re.fullmatch(r"[a-z_]+(\.[A-Za-z0-9_-]+)+", text):
            node = self.contexts
            for key in text.split("."):
                node = node.get(key, "") if isinstance(node, dict) else ""
            return node
        raise AssertionError("expression not understood by the test: %r" % text)

    def substitute(self, text):
        return re.sub(r"\$\{\{(.*?)\}\}", lambda m: str(self.value(m.group(1))), str(text))


def test_action_validates():
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions",
                  os.path.join(CI, "action.yml")], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_steps_run(finderd_bin, client_python, tmp_path):
    """Runs the composite action's steps as a runner would: its bash steps
    for real, with GITHUB_ENV/GITHUB_OUTPUT files and the inputs a workflow
    gives (a prebuilt binary, the client installed into the job's python)."""
    with open(os.path.join(CI, "action.yml")) as f:
        action = yaml.safe_load(f)
    checkout = action_checkout(tmp_path)
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir()
    github_env = tmp_path / "github_env"
    github_env.write_text("")
    inputs = {name: spec.get("default", "") for name, spec in action["inputs"].items()}
    inputs.update({"finderd-binary": finderd_bin, "python": client_python})
    contexts = {"inputs": inputs, "steps": {},
                "github": {"action_path": str(checkout / "deploy" / "ci"), "action_ref": "v0-test"},
                "runner": {"temp": str(runner_temp), "tool_cache": str(tmp_path / "tool-cache"),
                           "os": "Linux", "arch": "X64"}}
    ex = Expressions(contexts)
    ran = []
    try:
        for step in action["runs"]["steps"]:
            if "if" in step and not ex.value(step["if"]):
                continue
            assert "uses" not in step, "a step with uses: ran although a binary was given: %s" % step
            assert step["shell"] == "bash"
            output = tmp_path / ("output-%s" % step["id"] if "id" in step else "output")
            output.write_text("")
            env = base_env(GITHUB_ENV=str(github_env), GITHUB_OUTPUT=str(output),
                           RUNNER_TEMP=str(runner_temp), GITHUB_ACTION_PATH=contexts["github"]["action_path"])
            env.update({k: ex.substitute(v) for k, v in step.get("env", {}).items()})
            bash(ex.substitute(step["run"]), env)
            ran.append(step["name"])
            if "id" in step:
                lines = output.read_text().splitlines()
                contexts["steps"][step["id"]] = {"outputs": dict(line.split("=", 1) for line in lines)}
        assert ran == ["Install the finderd Python client", "Enable the finderd-python launcher",
                       "Start finderd"], ran
        exported = dict(line.split("=", 1) for line in github_env.read_text().splitlines())
        socket = exported["FINDERD_SOCKET"]
        assert socket == str(runner_temp / "finderd" / "finderd.sock")
        assert ex.substitute(action["outputs"]["socket"]["value"]) == socket
        assert health(finderd_bin, socket).returncode == 0

        # A later step of the job: its environment has GITHUB_ENV's lines.
        job = run([client_python, "-c", JOB],
                  env=base_env(PYTHONPATH=job_dir(tmp_path), PYTHONDONTWRITEBYTECODE="1", **exported))
        assert "served by %s" % socket in job.stdout, job.stdout + job.stderr
        if launcher_built(client_python):  # the job's venv runs the launcher
            assert "(the finderd-python launcher)" in job.stdout, job.stdout
    finally:
        run([str(checkout / "deploy" / "ci" / "finderd-runner.sh"), "stop"],
            env=base_env(RUNNER_TEMP=str(runner_temp)), check=False)
        disable_launcher(client_python)


def launcher_built(python):
    out = run([python, "-c", "import finderd.launcher as l; print(l.build_info()[0] is not None)"],
              check=False)
    return out.stdout.strip() == "True"


def disable_launcher(python):
    """Leave the shared client venv as the other tests expect it (the .pth client)."""
    venv = os.path.dirname(os.path.dirname(python))
    if os.path.exists(os.path.join(venv, ".finderd-launcher")):
        run([python, "-m", "finderd", "launcher", "disable", venv], check=False)


def test_recipe_launcher_step(client_python, tmp_path):
    """`finderd-runner.sh launcher PYTHON` enables the launcher in a venv, says why it
    does not for an interpreter that is not a venv's, and never fails the job."""
    env = base_env()
    try:
        enabled = run([RECIPE, "launcher", client_python], env=env)
        if launcher_built(client_python):
            assert "runs finderd-python" in enabled.stderr, enabled.stderr
            assert run([client_python, "-m", "finderd", "launcher", "status"],
                       check=False).stdout.count("launcher (was") >= 1
        else:
            assert "stays served by the .pth client" in enabled.stderr
    finally:
        disable_launcher(client_python)
    base = run([client_python, "-c", "import sys; print(sys._base_executable)"]).stdout.strip()
    outside = run([RECIPE, "launcher", base], env=env)
    assert "is not a venv's interpreter" in outside.stderr


def test_gitlab_template_validates():
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci",
                  os.path.join(CI, "gitlab-ci.yml")], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_gitlab_template_runs(finderd_bin, client_python, tmp_path):
    """A job that `extends: .finderd`, run as a shell executor would: the
    template's before_script and the job's script in one shell, after_script
    in another."""
    with open(os.path.join(CI, "gitlab-ci.yml")) as f:
        template = yaml.safe_load(f)[".finderd"]
    checkout = action_checkout(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    env = base_env(CI_PROJECT_DIR=str(project), PYTHONPATH=job_dir(tmp_path), PYTHONDONTWRITEBYTECODE="1",
                   PATH=os.path.dirname(client_python) + os.pathsep + os.environ["PATH"])
    for name, value in template["variables"].items():
        env[name] = os.path.expandvars(value.replace("$CI_PROJECT_DIR", str(project)))
    env["FINDERD_SOURCE"] = str(checkout)
    env["FINDERD_RUNNER_DIR"] = str(tmp_path / "finderd-ci")
    env["FINDERD_BIN"] = finderd_bin
    socket = os.path.join(env["FINDERD_RUNNER_DIR"], "finderd.sock")
    try:
        script = template["before_script"] + ['python3 -c %r' % JOB]
        job = bash("\n".join(script), env)
        assert "served by %s" % socket in job.stdout, job.stdout + job.stderr
        after_env = dict(env)
        del after_env["FINDERD_BIN"]  # after_script runs in a fresh shell
        after = bash("\n".join(template["after_script"]), after_env)
        assert re.search(r"snapshot requests\s+1\b", after.stdout), after.stdout + after.stderr
        if launcher_built(client_python):
            assert "(the finderd-python launcher)" in job.stdout, job.stdout
    finally:
        run([str(checkout / "deploy" / "ci" / "finderd-runner.sh"), "stop"], env=env, check=False)
        disable_launcher(client_python)

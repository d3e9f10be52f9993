"""deploy/container/Containerfile: hadolint passes (and fails a broken copy),
the build stage copies the whole workspace it builds, and, where a container
engine runs (--slow), the image builds and its daemon starts."""

import os
import re
import shutil
import subprocess
import tomllib

import pytest

from conftest import DEPLOY, ROOT, run, tool

CONTAINERFILE = os.path.join(DEPLOY, "container", "Containerfile")


def hadolint(path):
    return run([tool("hadolint"), "--no-color", path], check=False)


def test_hadolint_passes():
    result = hadolint(CONTAINERFILE)
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


@pytest.mark.parametrize("breakage", [("FROM gcr.io/distroless/cc-debian12:nonroot", "FROM debian"),
                                      ("COPY --from=build", "COPPY --from=build")],
                         ids=["untagged base image", "unknown instruction"])
def test_hadolint_rejects_a_broken_copy(breakage, tmp_path):
    with open(CONTAINERFILE) as f:
        text = f.read()
    assert breakage[0] in text
    broken = tmp_path / "Containerfile"
    broken.write_text(text.replace(breakage[0], breakage[1]))
    assert hadolint(str(broken)).returncode != 0


def test_build_stage_copies_the_workspace():
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        members = tomllib.load(f)["workspace"]["members"]
    with open(CONTAINERFILE) as f:
        text = f.read()
    copied = set()
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        copied.update(line.split()[:-1])
    assert {"Cargo.toml", "Cargo.lock"} | set(members) <= copied, (members, copied)
    assert "--locked" in text
    with open(CONTAINERFILE + ".dockerignore") as f:
        included = {line[1:].strip().rstrip("/") for line in f if line.startswith("!")}
    assert included == {"Cargo.toml", "Cargo.lock"} | set(members), included


def engine():
    """A container engine that answers, or the reason there is none."""
    for name in ("docker", "podman"):
        if shutil.which(name):
            result = subprocess.run([name, "info"], capture_output=True, text=True, timeout=60)
            if result.returncode == 0:
                return name, None
            reason = "%s info: %s" % (name, (result.stderr.strip().splitlines() or ["failed"])[-1])
            return None, reason
    return None, "neither docker nor podman is installed"


@pytest.mark.slow
def test_image_builds_and_runs():
    name, reason = engine()
    if name is None:
        pytest.skip("no container engine runs here, so the image is not built (%s)" % reason)
    tag = "finderd:deploy-test"
    run([name, "build", "-f", CONTAINERFILE, "-t", tag, ROOT], timeout=1800)
    try:
        result = run([name, "run", "--rm", tag, "--version"])
        assert result.stdout.startswith("finderd "), result.stdout
    finally:
        run([name, "rmi", "-f", tag], check=False)

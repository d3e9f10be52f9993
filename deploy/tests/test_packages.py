"""Packages: the .deb holds the daemon, units, user and config with correct
control data; its extracted daemon and units start for real under
systemd-socket-activate; with --slow, `cargo install --path daemon` works and
a real `dpkg -i` / purge leaves the machine as it was."""

import filecmp
import os
import pwd
import grp
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import DEPLOY, ROOT, exec_start, health, run, served_import
from test_systemd import verify

BUILD_DEB = os.path.join(DEPLOY, "deb", "build-deb")
PAYLOAD = {
    "usr/bin/finderd": None,
    "usr/lib/systemd/system/finderd.service": "systemd/finderd.service",
    "usr/lib/systemd/system/finderd.socket": "systemd/finderd.socket",
    "usr/lib/systemd/user/finderd.service": "systemd/user/finderd.service",
    "usr/lib/systemd/user/finderd.socket": "systemd/user/finderd.socket",
    "usr/lib/sysusers.d/finderd.conf": "systemd/finderd.sysusers.conf",
    "etc/finderd/finderd.toml": "systemd/finderd.toml",
    "usr/share/doc/finderd/operating.md": "../docs/operating.md",
}


@pytest.fixture(scope="module")
def deb(finderd_bin, tmp_path_factory):
    out = tmp_path_factory.mktemp("deb")
    result = run([BUILD_DEB, "--binary", finderd_bin, "--out", str(out)], timeout=600)
    path = result.stdout.strip().splitlines()[-1]
    assert os.path.isfile(path), result.stdout + result.stderr
    return path


def test_packaging_scripts_pass_shellcheck():
    scripts = [BUILD_DEB] + [os.path.join(DEPLOY, "deb", s) for s in ("postinst", "prerm", "postrm")]
    result = run(["shellcheck"] + scripts, check=False)
    assert result.returncode == 0, result.stdout


def test_deb_control_and_contents(deb, finderd_bin):
    def field(name):
        return run(["dpkg-deb", "--field", deb, name]).stdout.strip()

    version = run([finderd_bin, "--version"]).stdout.split()[1]
    assert field("Package") == "finderd" and field("Version") == version
    assert field("Architecture") == run(["dpkg", "--print-architecture"]).stdout.strip()
    assert field("Depends").startswith("libc6 (>= 2."), field("Depends")
    contents = run(["dpkg-deb", "--contents", deb]).stdout
    for path in PAYLOAD:
        assert " ./%s\n" % path in contents + "\n", path
    control = run(["dpkg-deb", "--info", deb, "conffiles"]).stdout.split()
    assert control == ["/etc/finderd/finderd.toml"]


def test_extracted_package_starts_under_socket_activation(deb, client_python, activated, tmp_path):
    """dpkg -x into a temporary root: the files are the repository's, the
    units verify, and the packaged ExecStart= (binary and flags from the
    installed unit) starts on the first connection and serves an interpreter."""
    root = tmp_path / "root"
    run(["dpkg", "-x", deb, str(root)])
    for path, source in PAYLOAD.items():
        if source:
            assert filecmp.cmp(root / path, os.path.join(DEPLOY, source), shallow=False), path
    binary = str(root / "usr/bin/finderd")
    assert run([binary, "--version"]).stdout.startswith("finderd ")

    units = {"service": str(root / "usr/lib/systemd/system/finderd.service"),
             "socket": str(root / "usr/lib/systemd/system/finderd.socket")}
    (tmp_path / "verify").mkdir()
    result = verify(units, binary, tmp_path / "verify")
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr

    sock = str(tmp_path / "finderd.sock")
    argv = [str(root) + a if a == "/usr/bin/finderd" else sock if a == "/run/finderd/finderd.sock" else a
            for a in exec_start(units["service"])]
    daemon = activated(argv, sock, str(tmp_path / "notify"))
    assert health(binary, sock).returncode == 0, daemon.log()
    daemon.notify.wait_for("READY=1")
    served_import(client_python, sock, str(tmp_path / "job"))
    assert daemon.stop() == 0, daemon.log()
    daemon.notify.wait_for("STOPPING=1")


@pytest.mark.slow
def test_cargo_install_into_a_temporary_root(tmp_path):
    """`cargo install --path daemon`, as docs/operating.md says, into a temporary root."""
    target = os.path.join(ROOT, "build", "deploy-cargo-install")
    run(["cargo", "install", "--locked", "--path", os.path.join(ROOT, "daemon"), "--root", str(tmp_path)],
        env=dict(os.environ, CARGO_TARGET_DIR=target), timeout=1800)
    binary = str(tmp_path / "bin" / "finderd")
    assert run([binary, "--version"]).stdout.startswith("finderd ")
    sock = str(tmp_path / "s.sock")
    proc = subprocess.Popen([binary, "serve", "--socket", sock], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while health(binary, sock).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "the installed finderd did not serve"
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(15)


def _user_exists(name):
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.slow
def test_dpkg_install_runs_as_its_user_and_purges_cleanly(deb, client_python, activated, tmp_path):
    """A real `dpkg -i`: the units verify at their installed paths with no
    drop-in, the postinst creates the user finderd and enables the socket,
    the installed daemon serves as that user; `dpkg --purge` then removes it
    all (and the test removes the user it caused to be created)."""
    if os.geteuid() != 0:
        pytest.skip("dpkg -i needs root")
    status = run(["dpkg-query", "-W", "-f=${Status}", "finderd"], check=False).stdout
    if "installed" in status or os.path.exists("/usr/bin/finderd"):
        pytest.skip("finderd is already installed on this machine; not touching it")
    created_user = not _user_exists("finderd")
    wants = "/etc/systemd/system/sockets.target.wants/finderd.socket"
    base = None
    try:
        run(["dpkg", "-i", deb], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        assert os.access("/usr/bin/finderd", os.X_OK)
        assert _user_exists("finderd"), "postinst did not create the finderd user"
        assert os.path.islink(wants), "postinst did not enable finderd.socket"
        result = run(["systemd-analyze", "verify", "finderd.socket", "finderd.service"], check=False,
                     env=dict(os.environ, SYSTEMD_LOG_COLOR="0"))
        assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), \
            result.stdout + result.stderr

        # As systemd runs it: systemd (root) binds the socket, the daemon runs
        # as finderd in a socket directory handed to it (RuntimeDirectory=).
        user = pwd.getpwnam("finderd")
        base = tempfile.mkdtemp(prefix="finderd-deb-test-", dir="/tmp")
        os.chmod(base, 0o755)
        rundir = os.path.join(base, "run")
        os.mkdir(rundir, 0o755)
        os.chown(rundir, user.pw_uid, user.pw_gid)
        sock = os.path.join(rundir, "finderd.sock")
        argv = [sock if a == "/run/finderd/finderd.sock" else a
                for a in exec_start("/usr/lib/systemd/system/finderd.service")]
        setpriv = ["setpriv", "--reuid=finderd", "--regid=finderd", "--clear-groups", "--no-new-privs"]
        daemon = activated(setpriv + argv, sock, os.path.join(base, "notify"))
        assert health("/usr/bin/finderd", sock).returncode == 0, daemon.log()
        daemon.notify.wait_for("READY=1")
        served_import(client_python, sock, str(tmp_path / "job"))
        assert os.stat(sock + ".gen").st_uid == user.pw_uid
        assert daemon.stop() == 0, daemon.log()
    finally:
        if base:
            shutil.rmtree(base, ignore_errors=True)
        run(["dpkg", "--purge", "finderd"], check=False)
        if created_user and _user_exists("finderd"):
            run(["userdel", "finderd"], check=False)
        try:
            grp.getgrnam("finderd")
            if created_user:
                run(["groupdel", "finderd"], check=False)
        except KeyError:
            pass
    assert not os.path.exists("/usr/bin/finderd") and not os.path.exists("/etc/finderd")
    assert not os.path.lexists(wants)
    assert not os.path.exists("/usr/lib/systemd/system/finderd.service")

"""deploy/systemd: the units are valid, hardened as documented, allow every
system call the daemon makes, and start the daemon for real through socket
activation with readiness reported on NOTIFY_SOCKET."""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from conftest import (DEPLOY, ROOT, exec_start, exposure, health, read_unit, run,
                      served_import, support, unit_values)

SYSTEMD = os.path.join(DEPLOY, "systemd")
SYSTEM = {"service": os.path.join(SYSTEMD, "finderd.service"),
          "socket": os.path.join(SYSTEMD, "finderd.socket")}
USER = {"service": os.path.join(SYSTEMD, "user", "finderd.service"),
        "socket": os.path.join(SYSTEMD, "user", "finderd.socket")}
SYSTEM_SOCKET = "/run/finderd/finderd.sock"
INSTALLED_BINARY = "/usr/bin/finderd"


def with_binary(unit_path, finderd_bin):
    """The raw ExecStart= value of a unit with the installed binary path
    replaced by the one under test (specifiers such as %t left alone)."""
    (value,) = [v for v in unit_values(unit_path, "Service", "ExecStart") if v]
    assert value.startswith(INSTALLED_BINARY + " "), value
    return finderd_bin + value[len(INSTALLED_BINARY):]


def verify(units, finderd_bin, tmp_path, user=False, extra_dropin=""):
    """systemd-analyze verify on copies of the units, with a drop-in that only
    points ExecStart= at the binary under test (the units name /usr/bin/finderd,
    which a test must not install)."""
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for path in units.values():
        shutil.copy(path, unit_dir)
    dropin = unit_dir / "finderd.service.d"
    dropin.mkdir()
    (dropin / "test-binary.conf").write_text(
        "[Service]\nExecStart=\nExecStart=%s\n%s" % (with_binary(units["service"], finderd_bin), extra_dropin))
    env = dict(os.environ, SYSTEMD_UNIT_PATH="%s:" % unit_dir, XDG_RUNTIME_DIR=str(tmp_path),
               SYSTEMD_LOG_COLOR="0")
    argv = ["systemd-analyze"] + (["--user"] if user else []) + ["verify", "finderd.socket", "finderd.service"]
    return run(argv, check=False, env=env)


@pytest.mark.parametrize("kind", ["system", "user"])
def test_units_verify_without_a_warning(kind, finderd_bin, tmp_path):
    units = SYSTEM if kind == "system" else USER
    result = verify(units, finderd_bin, tmp_path, user=(kind == "user"))
    assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), \
        "systemd-analyze verify:\n%s%s" % (result.stdout, result.stderr)


def test_verify_catches_a_broken_unit(finderd_bin, tmp_path):
    """The check above would see a mistake: a misspelt key and a bad value."""
    result = verify(SYSTEM, finderd_bin, tmp_path, extra_dropin="ProtectSytem=strict\nRestart=sometimes\n")
    output = result.stdout + result.stderr
    assert "ProtectSytem" in output and "sometimes" in output, output


def documented_scores():
    with open(os.path.join(ROOT, "docs", "operating.md")) as f:
        text = f.read()
    user = re.search(r"^\| `user/finderd\.service` \| ([0-9.]+) \w+ \|$", text, re.M)
    system = re.search(r"^\| `finderd\.service` \(system\) \| ([0-9.]+) \w+ \|$", text, re.M)
    assert system and user, "docs/operating.md lost its table of security scores"
    return {"system": float(system.group(1)), "user": float(user.group(1))}


@pytest.mark.parametrize("kind", ["system", "user"])
def test_security_score_is_as_documented(kind, tmp_path):
    """`systemd-analyze security --offline=yes`: not worse than docs/operating.md says."""
    units = SYSTEM if kind == "system" else USER
    argv = ["systemd-analyze"] + (["--user"] if kind == "user" else []) + [
        "security", "--offline=yes", "--no-pager", units["service"]]
    result = run(argv, check=False, env=dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path)))
    score, verdict = exposure(result.stdout + result.stderr)
    recorded = documented_scores()[kind]
    print("%s unit exposure: %.1f %s (documented %.1f)" % (kind, score, verdict, recorded))
    assert score <= recorded, "the %s unit now scores %.1f, worse than the %.1f in docs/operating.md" % (
        kind, score, recorded)


def test_units_make_the_documented_choices():
    socket = dict(read_unit(SYSTEM["socket"])["Socket"])
    service = read_unit(SYSTEM["service"])["Service"]
    settings = dict(service)
    assert socket["ListenStream"] == SYSTEM_SOCKET
    assert (socket["SocketMode"], socket["DirectoryMode"]) == ("0666", "0755")
    assert settings["Type"] == "notify" and settings["Restart"] == "on-failure"
    argv = exec_start(SYSTEM["service"])
    assert argv[argv.index("--socket") + 1] == SYSTEM_SOCKET, "ExecStart must name the socket unit's path"
    # A dedicated user, not DynamicUser= (it forces a private /tmp).
    assert settings["User"] == "finderd" and "DynamicUser" not in settings
    assert "PrivateTmp" not in settings, "venvs under /tmp must stay servable"
    # The generation file is written beside systemd's socket, as the daemon's user.
    assert settings["RuntimeDirectory"] == "finderd" and settings["RuntimeDirectoryPreserve"] == "yes"
    assert os.path.dirname(SYSTEM_SOCKET) == "/run/" + settings["RuntimeDirectory"]
    for key, value in [("ProtectSystem", "strict"), ("ProtectHome", "read-only"),
                       ("NoNewPrivileges", "yes"), ("RestrictAddressFamilies", "AF_UNIX")]:
        assert settings[key] == value, key
    for key in ("ProtectProc", "PrivateUsers"):
        assert key not in settings, "%s would break the per-peer permission check" % key
    assert "@system-service" in [v for k, v in service if k == "SystemCallFilter"]
    assert "MemoryMax" in settings and int(settings["LimitNOFILE"]) >= 4096
    with open(os.path.join(SYSTEMD, "finderd.sysusers.conf")) as f:
        users = [line.split()[1] for line in f if line.startswith("u ")]
    assert users == [settings["User"]]

    user_socket = dict(read_unit(USER["socket"])["Socket"])
    user_settings = dict(read_unit(USER["service"])["Service"])
    assert user_socket["ListenStream"] == "%t/finderd/finderd.sock"
    assert (user_socket["SocketMode"], user_socket["DirectoryMode"]) == ("0600", "0700")
    user_argv = exec_start(USER["service"])
    assert user_argv[user_argv.index("--socket") + 1] == "%t/finderd/finderd.sock"
    assert int(user_argv[user_argv.index("--idle-exit") + 1]) > 0
    assert user_settings["Type"] == "notify" and user_settings["Restart"] == "on-failure"


# ---------------------------------------------------------------- system calls


def syscall_groups():
    out = run(["systemd-analyze", "syscall-filter", "--no-pager"]).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), set())
        elif line.startswith("    ") and current is not None and not line.strip().startswith("#"):
            current.add(line.strip())
    return groups


def expand(groups, name):
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(groups, member) for member in groups[name]))


def allowed_syscalls():
    """What the system unit's SystemCallFilter= lines allow, in order."""
    groups = syscall_groups()
    allowed = None
    for value in unit_values(SYSTEM["service"], "Service", "SystemCallFilter"):
        deny = value.startswith("~")
        names = set().union(*(expand(groups, n) for n in value.lstrip("~").split()))
        if deny:
            allowed = (allowed if allowed is not None else expand(groups, "@known")) - names
        else:
            allowed = names if allowed is None else allowed | names
    return allowed


def test_syscall_filter_keeps_io_uring():
    allowed = allowed_syscalls()
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register",
                 "inotify_init1", "inotify_add_watch", "statx", "getdents64"):
        assert name in allowed, name


def test_every_syscall_the_daemon_makes_is_allowed(finderd_bin, client_python, activated, tmp_path):
    """Trace the daemon started as the system unit starts it (socket-activated,
    same flags) through a real workload, io_uring forced, and check every
    system call and socket family against the unit's filters."""
    if not shutil.which("strace"):
        pytest.fail("strace not found (deploy/tests/run installs it)")
    sock = str(tmp_path / "finderd.sock")
    argv = [finderd_bin if a == INSTALLED_BINARY else sock if a == SYSTEM_SOCKET else a
            for a in exec_start(SYSTEM["service"])] + ["--refresh-engine", "uring"]
    trace = str(tmp_path / "trace")
    daemon = activated(argv, sock, str(tmp_path / "notify"),
                       wrapper=["strace", "-f", "-qq", "-o", trace])
    assert health(finderd_bin, sock).returncode == 0, daemon.log()
    daemon.notify.wait_for("READY=1")
    served_import(client_python, sock, str(tmp_path / "job"))
    # The activator's pid is strace's here; the daemon says its own.
    pid = daemon.daemon_pid = json.loads(run([finderd_bin, "stats", "--json", "--socket", sock]).stdout)["pid"]
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while daemon.notify.fields().count("READY=1") < 2:
        assert time.monotonic() < deadline, "no READY=1 after SIGHUP: %s" % daemon.notify.fields()
        time.sleep(0.05)
    assert health(finderd_bin, sock).returncode == 0
    os.kill(pid, signal.SIGTERM)
    assert daemon.proc.wait(30) == 0, daemon.log()
    daemon.daemon_pid = None

    used, families, seen_exec = set(), set(), False
    call = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z_0-9]+)[( ]")
    with open(trace) as f:
        for line in f:
            if not seen_exec:
                seen_exec = 'execve("%s"' % finderd_bin in line
                continue
            match = call.match(line)
            if match and match.group(1) != "exit":
                used.add(match.group(1))
            family = re.search(r"\bsocket\((AF_[A-Z0-9]+)", line)
            if family:
                families.add(family.group(1))
    assert seen_exec and "accept4" in used, "the trace did not see the daemon serve"
    refused = sorted(used - allowed_syscalls() - {"exit"})
    assert not refused, "the daemon makes system calls finderd.service refuses: %s" % refused
    restricted = unit_values(SYSTEM["service"], "Service", "RestrictAddressFamilies")[0].split()
    assert families <= set(restricted), "socket families %s outside RestrictAddressFamilies=%s" % (
        sorted(families), restricted)
    print("daemon system calls (%d): %s" % (len(used), " ".join(sorted(used))))


# ---------------------------------------------------------------- socket activation


def system_argv(finderd_bin, sock):
    return [finderd_bin if a == INSTALLED_BINARY else sock if a == SYSTEM_SOCKET else a
            for a in exec_start(SYSTEM["service"])]


def test_system_unit_socket_activation(finderd_bin, client_python, activated, tmp_path):
    """ExecStart= of finderd.service under systemd-socket-activate: nothing runs
    until the first connection; then READY=1 and a STATUS= line arrive on
    NOTIFY_SOCKET, a real interpreter is served by the activated process,
    ExecReload= reloads (RELOADING=1, READY=1 again), SIGTERM drains
    (STOPPING=1, exit 0), and systemd's socket file is left in place."""
    sock = str(tmp_path / "finderd.sock")
    daemon = activated(system_argv(finderd_bin, sock), sock, str(tmp_path / "notify"))
    inode = os.stat(sock).st_ino
    time.sleep(0.3)
    assert not daemon.daemon_started(), "started before any connection:\n" + daemon.log()
    assert not daemon.notify.fields()

    assert health(finderd_bin, sock).returncode == 0, daemon.log()
    assert daemon.daemon_started()
    daemon.notify.wait_for("READY=1")
    assert any(f.startswith("STATUS=") for f in daemon.notify.fields()), daemon.notify.fields()
    stats = json.loads(run([finderd_bin, "stats", "--json", "--socket", sock]).stdout)
    assert stats["pid"] == daemon.proc.pid, "the activated process is not the one serving"
    assert os.path.exists(sock + ".gen"), "no generation file beside the activated socket"

    served_import(client_python, sock, str(tmp_path / "job"))

    (reload_line,) = unit_values(SYSTEM["service"], "Service", "ExecReload")
    run(shlex.split(reload_line.replace("$MAINPID", str(daemon.proc.pid))))
    daemon.notify.wait_for("RELOADING=1")
    deadline = time.monotonic() + 10
    while daemon.notify.fields().count("READY=1") < 2:
        assert time.monotonic() < deadline, "no READY=1 after the reload: %s" % daemon.notify.fields()
        time.sleep(0.05)
    assert health(finderd_bin, sock).returncode == 0

    assert daemon.stop(signal.SIGTERM) == 0, daemon.log()
    daemon.notify.wait_for("STOPPING=1")
    assert os.path.exists(sock) and os.stat(sock).st_ino == inode, \
        "the daemon removed the socket systemd owns; the next connection could not start it"


def test_user_unit_exits_when_idle(finderd_bin, activated, tmp_path):
    """ExecStart= of the user unit (%t replaced) with its --idle-exit shortened:
    started by a connection, it exits 0 on its own, leaving the socket to systemd."""
    runtime = str(tmp_path)
    sock = os.path.join(runtime, "finderd", "finderd.sock")
    os.makedirs(os.path.dirname(sock), mode=0o700)
    argv = exec_start(USER["service"], {"%t": runtime})
    argv[0] = finderd_bin
    argv[argv.index("--idle-exit") + 1] = "1"
    daemon = activated(argv, sock, str(tmp_path / "notify"))
    assert health(finderd_bin, sock).returncode == 0, daemon.log()
    daemon.notify.wait_for("READY=1")
    try:
        code = daemon.proc.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail("the user daemon did not exit after 1 s idle:\n" + daemon.log())
    assert code == 0, daemon.log()
    daemon.notify.wait_for("STOPPING=1")
    assert os.path.exists(sock), "the idle daemon removed systemd's socket"


def test_example_config_is_accepted(finderd_bin, tmp_path):
    """Every key of deploy/systemd/finderd.toml, uncommented, is accepted."""
    with open(os.path.join(SYSTEMD, "finderd.toml")) as f:
        text = f.read()
    uncommented = re.sub(r"^# ([a-z_]+ = )", r"\1", text, flags=re.M)
    keys = re.findall(r"^([a-z_]+) = ", uncommented, re.M)
    assert len(keys) >= 20, keys
    config = tmp_path / "finderd.toml"
    config.write_text(uncommented)
    served = support.Daemon(finderd_bin, str(tmp_path))
    try:
        served.start("--config", str(config))  # fails with the daemon's log if refused
        assert health(finderd_bin, served.socket).returncode == 0, served.log()
    finally:
        served.stop()

    config.write_text(uncommented + "\nmax_sys_path_entriez = 5\n")
    result = run([finderd_bin, "serve", "--config", str(config), "--socket", served.socket], check=False,
                 timeout=20)
    assert result.returncode != 0 and "max_sys_path_entriez" in result.stderr, result.stderr

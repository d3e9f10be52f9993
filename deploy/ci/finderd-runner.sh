#!/usr/bin/env bash
# One finderd per CI runner, for self-hosted runners and any CI system.
#
#   eval "$(deploy/ci/finderd-runner.sh start)"   # start (or reuse) it; exports FINDERD_SOCKET
#   deploy/ci/finderd-runner.sh launcher .venv/bin/python   # the job's venv: served from its first lookup
#   ... every Python job on this runner ...
#   deploy/ci/finderd-runner.sh stats             # what it served
#   deploy/ci/finderd-runner.sh stop              # stop it (SIGTERM: drains, removes its socket)
#
# What a job gains: the interpreters of its jobs stop re-walking the same
# sys.path directories; each gets the listings in one round trip from a
# daemon that already holds them. That matters most for many short
# interpreters, long search paths and slow filesystems; see bench/RESULTS.md
# (S3: the CI set of packages; S5: the same over FUSE) and docs/operating.md.
# The jobs' Python needs the finderd client (`pip install ./client-py`);
# without it, or with no daemon, everything runs as stock CPython.
# `launcher PYTHON` then puts finderd-python, the launcher built with that
# client, in place of the venv's python (CPython 3.11 and later): every
# interpreter of the venv is then served from its first lookup, not from
# the first import after site. An interpreter that is not a venv's, or one
# the launcher cannot serve, stays with the .pth client; the step says why
# and never fails the job.
#
# Environment:
#   FINDERD_BIN          the daemon binary (default: finderd on PATH)
#   FINDERD_RUNNER_DIR   where the socket, pid file and log live
#                        (default: $RUNNER_TEMP/finderd, else /tmp/finderd-runner-$UID)
#   FINDERD_RUNNER_ARGS  extra `finderd serve` flags (limits, --log-level)
#   FINDERD_START_TIMEOUT seconds to wait for the daemon to answer (default 10)
#
# `start` prints shell assignments on stdout (everything else goes to
# stderr), so `eval "$(finderd-runner.sh start)"` exports FINDERD_SOCKET in
# the calling shell; `start --github-env` appends it to $GITHUB_ENV instead.
# Starting twice reuses the running daemon: one per runner, shared by jobs.
set -euo pipefail

if [ -n "${FINDERD_RUNNER_DIR:-}" ]; then
    dir=$FINDERD_RUNNER_DIR
elif [ -n "${RUNNER_TEMP:-}" ]; then
    dir=$RUNNER_TEMP/finderd
else
    dir=/tmp/finderd-runner-$(id -u)
fi
socket=$dir/finderd.sock
pidfile=$dir/finderd.pid
log=$dir/finderd.log
# The binary `start` used, for `stats` and `stop` from another shell (a
# GitLab after_script, a later step).
binfile=$dir/finderd.bin
bin=${FINDERD_BIN:-$(cat "$binfile" 2>/dev/null || echo finderd)}

say() { echo "finderd-runner: $*" >&2; }
die() { say "$*"; exit 1; }

healthy() { "$bin" health --socket "$socket" >/dev/null 2>&1; }

running_pid() {
    local pid
    [ -r "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

export_line() {
    printf 'export FINDERD_SOCKET=%q\n' "$socket"
}

start() {
    local github_env=0
    [ "${1:-}" = "--github-env" ] && github_env=1
    bin=$(command -v "$bin") || die "no finderd binary: set FINDERD_BIN or put finderd on PATH"
    # The daemon makes the socket's directory itself, but the pid file and
    # log need it first; 0700, as finderd requires of a private directory.
    mkdir -p "$dir"
    if [ -L "$dir" ] || [ ! -O "$dir" ]; then die "$dir is not a directory of this user"; fi
    chmod 0700 "$dir"
    if running_pid >/dev/null && healthy; then
        say "reusing finderd $(running_pid) on $socket"
    else
        # shellcheck disable=SC2086  # FINDERD_RUNNER_ARGS is a list of flags
        setsid "$bin" serve --socket "$socket" ${FINDERD_RUNNER_ARGS:-} \
            </dev/null >>"$log" 2>&1 &
        echo $! >"$pidfile"
        echo "$bin" >"$binfile"
        local deadline=$((SECONDS + ${FINDERD_START_TIMEOUT:-10}))
        until healthy; do
            if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
                tail -n 20 "$log" >&2 || true
                die "finderd exited during start-up (log: $log)"
            fi
            [ "$SECONDS" -lt "$deadline" ] || die "finderd did not answer within ${FINDERD_START_TIMEOUT:-10} s (log: $log)"
            sleep 0.05
        done
        say "started finderd $(cat "$pidfile") on $socket (log: $log)"
    fi
    if [ "$github_env" -eq 1 ]; then
        [ -n "${GITHUB_ENV:-}" ] || die "--github-env: GITHUB_ENV is not set"
        echo "FINDERD_SOCKET=$socket" >>"$GITHUB_ENV"
    fi
    export_line
}

launcher() {
    local python=${1:-python3}
    command -v "$python" >/dev/null || die "launcher: no $python"
    if ! "$python" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
        say "launcher: $python is not a venv's interpreter; it stays served by the .pth client"
        return 0
    fi
    if "$python" -m finderd launcher enable >&2; then
        say "launcher: $("$python" -c 'import sys; print(sys.prefix)') runs finderd-python"
    else
        say "launcher: not enabled (above); $python stays served by the .pth client"
    fi
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        say "not running"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid"
    # The daemon drains in-flight requests for at most 5 s by default.
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "finderd $pid did not stop in 10 s; killing it"
        kill -KILL "$pid"
    fi
    rm -f "$pidfile"
    say "stopped finderd $pid"
}

case ${1:-} in
    start) shift; start "$@" ;;
    stop) stop ;;
    launcher) shift; launcher "$@" ;;
    env) export_line ;;
    stats) exec "$bin" stats --socket "$socket" ;;
    status) if running_pid >/dev/null && healthy; then say "running: $(running_pid) on $socket"; else say "not running"; exit 1; fi ;;
    *) sed -n '2,8p' "$0" >&2; exit 2 ;;
esac

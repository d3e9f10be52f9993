#!/bin/sh
# bench/client-c/run.sh - libfinderd round trips against a real daemon.
#
#   bench/client-c/run.sh [--iterations N] [--syscalls]
#
# Builds libfinderd (-O2) and bench.c, makes a 200-entry sys.path (one
# distribution per entry, rules_python/Nix style) in a temporary directory,
# starts FINDERD_BIN (default: target/release/finderd, built if missing) on a
# temporary socket, and prints the machine, then the latency table. With
# --syscalls, also the system calls per Lookup on a persistent connection and
# per connection, counted by strace, for the client and for the daemon, and
# (with perf) the daemon's CPU time and context switches per operation.
#
# A benchmark, not a test: nothing here fails on a number.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
iterations=5000
want_syscalls=0
while [ $# -gt 0 ]; do
	case $1 in
	--iterations) iterations=$2; shift 2 ;;
	--syscalls) want_syscalls=1; shift ;;
	*) echo "usage: $0 [--iterations N] [--syscalls]" >&2; exit 2 ;;
	esac
done

bin=${FINDERD_BIN:-$root/target/release/finderd}
if [ ! -x "$bin" ]; then
	(cd "$root" && cargo build --release -p finderd >&2)
fi
make -s -C "$root/client-c" >&2
work=$(mktemp -d /tmp/finderd-bench-XXXXXX)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM
cc -std=c99 -O2 -Wall -Wextra -Werror -I"$root/client-c/include" "$here/bench.c" \
	"$root/client-c/build/libfinderd.a" -o "$work/bench"

# 200 entries, each one distribution: a package, a module, its dist-info.
i=0
while [ $i -lt 200 ]; do
	n=$(printf '%03d' $i)
	d="$work/tree/e$n"
	mkdir -p "$d/pkg$n" "$d/pkg$n-1.0.dist-info"
	: > "$d/pkg$n/__init__.py"
	echo "x = $i" > "$d/pkg$n/core.py"
	echo "y = $i" > "$d/mod$n.py"
	printf 'Metadata-Version: 2.1\nName: pkg%s\n' "$n" > "$d/pkg$n-1.0.dist-info/METADATA"
	i=$((i + 1))
done

"$bin" serve --socket "$work/s.sock" --log-level warn &
pid=$!
tries=0
until [ -S "$work/s.sock" ]; do
	tries=$((tries + 1))
	[ $tries -lt 200 ] || { echo "daemon did not start" >&2; exit 1; }
	sleep 0.05
done

echo "machine: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'), daemon: $bin"
echo
"$work/bench" --socket "$work/s.sock" --tree "$work/tree" --iterations "$iterations"

if [ "$want_syscalls" -eq 1 ]; then
	n=1000
	strace -f -qq -o "$work/client.strace" "$work/bench" --socket "$work/s.sock" \
		--tree "$work/tree" --syscalls $n
	echo
	echo "client system calls per Lookup (persistent connection, $n calls):"
	awk '/getppid\(/ { m++; next } m == 1 { sub(/\(.*/, "", $2); c[$2]++ }
	     END { for (k in c) printf "  %-12s %.2f\n", k, c[k] / '$n' }' "$work/client.strace" |
		sort
	for mode in eager-connects connects; do
		strace -f -qq -o "$work/$mode.strace" "$work/bench" --socket "$work/s.sock" \
			--tree "$work/tree" --$mode $n
		echo "client system calls per connect + first Lookup + close (--$mode, $n times):"
		awk '/getppid\(/ { m++; next } m == 1 { sub(/\(.*/, "", $2); c[$2]++ }
		     END { for (k in c) printf "  %-12s %.2f\n", k, c[k] / '$n' }' "$work/$mode.strace" |
			sort
	done
	strace -f -qq -p "$pid" -o "$work/daemon.strace" &
	spid=$!
	sleep 0.5
	"$work/bench" --socket "$work/s.sock" --tree "$work/tree" --syscalls $n
	sleep 0.2
	kill -INT $spid; wait $spid 2>/dev/null || true
	echo "daemon system calls per Lookup (all threads, same $n calls, plus one connect and snapshot):"
	awk '$2 == "<..." { next } { sub(/\(.*/, "", $2); c[$2]++ }
	     END { for (k in c) if (c[k] >= '$n' / 10) printf "  %-16s %.2f\n", k, c[k] / '$n' }' \
		"$work/daemon.strace" | sort
	if command -v perf >/dev/null 2>&1; then
		n=5000
		echo
		echo "daemon CPU per operation (perf stat -p, all threads, $n operations each):"
		for mode in syscalls connects; do
			perf stat -x, -e task-clock,context-switches -p "$pid" -o "$work/perf.$mode" \
				2>/dev/null &
			ppid=$!
			sleep 0.3
			"$work/bench" --socket "$work/s.sock" --tree "$work/tree" --$mode $n
			kill -INT $ppid 2>/dev/null; wait $ppid 2>/dev/null || true
			label=$([ $mode = syscalls ] && echo "Lookup (persistent)" || echo "lazy connect + Lookup + close")
			awk -F, -v n=$n -v l="$label" '$3 == "task-clock" { cpu = $1 }
				$3 == "context-switches" { cs = $1 }
				END { printf "  %-30s %6.1f us CPU, %4.1f context switches\n", l, cpu * 1000 / n, cs / n }' \
				"$work/perf.$mode"
		done
	fi
fi

#!/bin/sh
# examples/lua/test.sh - Lua resolves its modules identically with and
# without finderd.
#
#   FINDERD_BIN=target/debug/finderd examples/lua/test.sh
#
# Installs libfinderd into a temporary prefix, builds finderd_lua.so and
# lua-finderd against it with `pkg-config --cflags --libs finderd`, starts
# the real daemon on a temporary socket, and compares, byte for byte, what
# require returns (value, file name or error message) under stock lua5.4,
# lua5.4 -l finderd_lua and lua-finderd: with the daemon, without it, for a
# module added after start (by another process, and by the process itself),
# and with the daemon killed in the middle of a run. Ends with "N passed,
# M failed".
set -u
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${FINDERD_BIN:-$root/target/debug/finderd}
lua=${LUA:-lua5.4}
pass=0
fail=0

ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "examples/lua: $1 not found ($2)"; exit 1; }; }
need "$lua" "apt-get install lua5.4 liblua5.4-dev"
need pkg-config "apt-get install pkg-config"
[ -x "$bin" ] || { echo "examples/lua: no daemon at $bin (cargo build -p finderd)"; exit 1; }

W=$(mktemp -d /tmp/finderd-lua-XXXXXX)
daemon=
cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT INT TERM

# -------------------------------------------------------------- build
make -s -C "$root/client-c" install PREFIX="$W/prefix" >/dev/null || { echo "install failed"; exit 1; }
export PKG_CONFIG_PATH="$W/prefix/lib/pkgconfig"
flags=$(pkg-config --cflags --libs finderd) || { echo "pkg-config finderd failed"; exit 1; }
echo "examples/lua: pkg-config finderd: $flags"
make -s -C "$here" BUILD="$W/build" >/dev/null || { echo "build failed"; exit 1; }
if ldd "$W/build/lua-finderd" | grep -q "$W/prefix/lib/libfinderd.so"; then ok; else
	bad "lua-finderd is not linked against the installed libfinderd"; fi

# -------------------------------------------------------------- the tree
mk() { mkdir -p "$(dirname "$1")" && printf '%s\n' "$2" > "$1"; }
mk "$W/lib1/a.lua" 'return "lib1.a"'
mk "$W/lib1/pkg/init.lua" 'return "lib1.pkg"'
mk "$W/lib1/pkg/sub.lua" 'return "lib1.pkg.sub"'
mk "$W/lib1/deep/x/y/z.lua" 'return "deep z"'
mk "$W/lib1/bad.lua" 'return ('
mkdir -p "$W/lib1/dir.lua"
mk "$W/lib2/a.lua" 'return "lib2.a (shadowed)"'
mk "$W/lib2/b.lua" 'return "lib2.b"'
mk "$W/lib2/c_c.lua" 'return "lib2.c_c"'
ln -s ../lib1/pkg/sub.lua "$W/lib2/linked.lua"
mk "$W/cwd/rel.lua" 'return "cwd rel"'
mk "$W/cwd/relpkg/init.lua" 'return "cwd relpkg"'
mk "$W/cwd/b.lua" 'return "cwd b (shadowed)"'
# Absolute and relative templates, a missing directory, a non-canonical
# one, a template with two marks.
LUA_PATH_5_4="$W/lib1/?.lua;$W/lib1/?/init.lua;$W/nolib/?.lua;$W/lib2/?.lua;$W/lib1/../lib2/?.lua;./?.lua;./?/init.lua;$W/lib2/?_?.lua"
export LUA_PATH_5_4
unset LUA_PATH
# Deadlines with room for a loaded CI machine: the checks are about answers.
export FINDERD_TIMEOUT_MS=2000 FINDERD_CONNECT_TIMEOUT_MS=2000
modules="a pkg pkg.sub deep.x.y.z b linked rel relpkg c bad dir nope pkg.nope deep.x.nope nolib.x"

# -------------------------------------------------------------- runners
module="$W/build/finderd_lua.so"
export LUA_CPATH_5_4="$W/build/?.so;;"
stock() { (cd "$W/cwd" && FINDERD=off "$lua" "$@" 2>&1); }
with_module() { (cd "$W/cwd" && "$lua" -l finderd_lua "$@" 2>&1); }
with_host() { (cd "$W/cwd" && "$W/build/lua-finderd" "$@" 2>&1); }
state() { (cd "$W/cwd" && "$lua" -l finderd_lua -e 'io.write(finderd_lua.state())'); }

same() { # what, expected output, actual output
	if [ "$2" = "$3" ]; then ok; else
		bad "$1"
		printf '%s\n' "$2" > "$W/want" && printf '%s\n' "$3" > "$W/got"
		diff "$W/want" "$W/got" | head -20
	fi
}

compare_all() { # label, then probe arguments
	label=$1
	shift
	want=$(stock "$here/probe.lua" "$@")
	same "$label: lua5.4 -l finderd_lua" "$want" "$(with_module "$here/probe.lua" "$@")"
	same "$label: lua-finderd" "$want" "$(with_host "$here/probe.lua" "$@")"
}

# -------------------------------------------------------------- no daemon
export FINDERD_SOCKET="$W/s.sock"
st=$(state)
case $st in "fell back: "*) ok ;; *) bad "daemon absent: state is '$st'" ;; esac
compare_all "daemon absent" $modules
st=$(FINDERD=off state)
[ "$st" = off ] && ok || bad "FINDERD=off: state is '$st'"

# -------------------------------------------------------------- daemon
"$bin" serve --socket "$W/s.sock" --log-level warn &
daemon=$!
i=0
while [ ! -S "$W/s.sock" ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
st=$(state)
[ "$st" = active ] && ok || bad "daemon running: state is '$st'"
compare_all "daemon" $modules
compare_all "daemon, again (warm index)" $modules

# The searcher asks the resolver, not the filesystem: no failed open() of a
# module file, where stock Lua makes one per template tried (but for the
# non-canonical template, which goes to fopen(); the search for finderd_lua
# itself, before it is installed, is not counted).
counters=$(cd "$W/cwd" && "$lua" -l finderd_lua -e '
	for _, m in ipairs({"a", "b", "rel", "relpkg", "c", "pkg.sub", "deep.x.y.z"}) do require(m) end
	local k = finderd_lua.counters()
	io.write(k.answered, " ", k.not_served, " ", k.lookups)')
set -- $counters
if [ "${1:-0}" -gt 10 ] && [ "${3:-99}" -le 4 ]; then ok; else
	bad "resolver counters (answered not_served lookups): $counters"; fi
if command -v strace >/dev/null 2>&1; then
	enoent() {
		strace -f -qq -e trace=openat -o "$W/trace" "$@" >/dev/null 2>&1
		grep "\.lua\".*ENOENT" "$W/trace" | grep -vc finderd_lua
	}
	s=$(cd "$W/cwd" && FINDERD=off enoent "$lua" "$here/probe.lua" a b rel relpkg c pkg.sub deep.x.y.z)
	f=$(cd "$W/cwd" && enoent "$lua" -l finderd_lua "$here/probe.lua" a b rel relpkg c pkg.sub deep.x.y.z)
	echo "examples/lua: failed opens of .lua files: stock $s, with finderd $f"
	[ "$f" -lt "$s" ] && ok || bad "failed opens: stock $s, with finderd $f"
fi

# A module added after the daemon indexed its directory, by another process.
mk "$W/lib1/late.lua" 'return "late"'
mk "$W/lib1/pkg/late2.lua" 'return "late2"'
compare_all "added after start" late pkg.late2 a
rm "$W/lib1/late.lua" "$W/lib1/pkg/late2.lua"
compare_all "removed after start" late pkg.late2 a

# ... and by the process itself, after a failed require of it.
for mode in io execute invalidate wait; do
	want=$(stock "$here/late.lua" "$W/lib1" "made_$mode" "$mode"); rm -f "$W/lib1/made_$mode.lua"
	got=$(with_module "$here/late.lua" "$W/lib1" "made_$mode" "$mode"); rm -f "$W/lib1/made_$mode.lua"
	same "made by the process ($mode): lua5.4 -l finderd_lua" "$want" "$got"
	got=$(with_host "$here/late.lua" "$W/lib1" "made_$mode" "$mode"); rm -f "$W/lib1/made_$mode.lua"
	same "made by the process ($mode): lua-finderd" "$want" "$got"
done

# The daemon killed between two requires: the rest resolve as stock.
cat > "$W/midrun.lua" <<'EOF'
print(pcall(require, "a"))
if finderd_lua and arg[1] then os.execute("kill -9 " .. arg[1]) end
for _, m in ipairs({"b", "pkg.sub", "deep.x.y.z", "rel", "nope"}) do print(pcall(require, m)) end
EOF
want=$(stock "$W/midrun.lua")
got=$(with_module "$W/midrun.lua" "$daemon")
wait "$daemon" 2>/dev/null
daemon=
same "daemon killed mid-run" "$want" "$got"
compare_all "daemon gone (socket left behind)" $modules

echo "examples/lua: $pass passed, $fail failed"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/bin/sh
# check_symbols.sh LIB HEADER - the shared library exports exactly the
# functions declared in the header: every export is finderd_*, and every
# declared finderd_* function is exported.
set -eu
lib=$1
header=$2
tmp=${TMPDIR:-/tmp}/finderd-symbols.$$
trap 'rm -f "$tmp".*' EXIT

nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ { sub(/@.*/, "", $3); print $3 }' |
	sort -u > "$tmp.exported"
# Declarations: a line with "finderd_name(" outside comments.
grep -v '^[[:space:]]*\*' "$header" | grep -v '^[[:space:]]*/\*' |
	grep -oE '\bfinderd_[a-z0-9_]+\(' | tr -d '(' | sort -u > "$tmp.declared"

bad=$(grep -v '^finderd_' "$tmp.exported" || true)
if [ -n "$bad" ]; then
	echo "check_symbols: exported but not finderd_*:" $bad >&2
	exit 1
fi
missing=$(comm -23 "$tmp.declared" "$tmp.exported")
if [ -n "$missing" ]; then
	echo "check_symbols: declared in $header but not exported:" $missing >&2
	exit 1
fi
extra=$(comm -13 "$tmp.declared" "$tmp.exported")
if [ -n "$extra" ]; then
	echo "check_symbols: exported but not declared in $header:" $extra >&2
	exit 1
fi
echo "check_symbols: $(wc -l < "$tmp.exported") symbols, all declared finderd_*"

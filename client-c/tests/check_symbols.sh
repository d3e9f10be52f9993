#!/bin/sh
# check_symbols.sh LIB HEADER - the shared library exports exactly the
# functions declared in the header: every export is finderd_*, every
# declared finderd_* function is exported, and each one carries the symbol
# version node of the release that added it. A function whose comment says
# "Since 0.N" must be in FINDERD_0.N; one without is in FINDERD_0.1. So a
# new function put in an old node (or left out of the map) fails here.
set -eu
lib=$1
header=$2
tmp=${TMPDIR:-/tmp}/finderd-symbols.$$
trap 'rm -f "$tmp".*' EXIT

nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ { print $3 }' | sort -u > "$tmp.versioned"
sed 's/@.*//' "$tmp.versioned" | sort -u > "$tmp.exported"
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

# The version each declaration's comment promises: "name@@FINDERD_0.N".
awk '
	/\/\*/ { if (!incomment) since = ""; incomment = 1 }
	incomment && match($0, /Since 0\.[0-9]+/) { since = substr($0, RSTART + 6, RLENGTH - 6) }
	/\*\// { incomment = 0; next }
	!incomment && match($0, /finderd_[a-z0-9_]+\(/) {
		name = substr($0, RSTART, RLENGTH - 1)
		print name "@@FINDERD_" (since == "" ? "0.1" : since)
		since = ""
	}
	!incomment && /^[[:space:]]*$/ { since = "" }
' "$header" | sort -u > "$tmp.promised"
wrong=$(comm -3 "$tmp.promised" "$tmp.versioned" | tr -d '\t' | tr '\n' ' ')
if [ -n "$wrong" ]; then
	echo "check_symbols: version nodes differ from the header's \"Since\" notes" \
		"(header, then library):" $wrong >&2
	comm -3 "$tmp.promised" "$tmp.versioned" >&2
	exit 1
fi
echo "check_symbols: $(wc -l < "$tmp.exported") symbols, all declared finderd_*," \
	"each in the version node its header comment names"

#!/bin/sh
# check_symbols.sh LIB HEADER - the shared library exports exactly the
# functions declared in the header: every export is finderd_*, every
# declared finderd_* function is exported, and each is in the symbol
# version node of the release that added it: the "Since 0.N" of its
# documentation in the header (FINDERD_0.1 when it names none), never a node
# newer than the header's own version.
set -eu
lib=$1
header=$2
tmp=${TMPDIR:-/tmp}/finderd-symbols.$$
trap 'rm -f "$tmp".*' EXIT

nm -D --defined-only "$lib" | awk '$2 ~ /^[TDBRVW]$/ { print $3 }' | grep -v '^FINDERD_' |
	sort -u > "$tmp.versioned"
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

# "name@@FINDERD_0.N" as the header documents it: the "Since 0.N" of the
# comment right before each declaration.
awk '
	/^[[:space:]]*\/\*/ { since = "0.1"; in_comment = 1 }
	in_comment && match($0, /Since [0-9]+\.[0-9]+/) { since = substr($0, RSTART + 6, RLENGTH - 6) }
	/\*\// { in_comment = 0; next }
	!in_comment && match($0, /finderd_[a-z0-9_]+\(/) {
		print substr($0, RSTART, RLENGTH - 1) "@@FINDERD_" since
		since = "0.1"
	}
' "$header" | sort -u > "$tmp.documented"
wrong=$(comm -3 "$tmp.documented" "$tmp.versioned")
if [ -n "$wrong" ]; then
	echo "check_symbols: symbol version nodes differ from the header's \"Since\" notes" \
	     "(documented, then exported):" >&2
	comm -3 "$tmp.documented" "$tmp.versioned" >&2
	exit 1
fi
version=$(awk '/#define FINDERD_VERSION_MAJOR/ { maj = $3 } /#define FINDERD_VERSION_MINOR/ { min = $3 }
	END { print maj "." min }' "$header")
newer=$(sed 's/.*@@FINDERD_//' "$tmp.versioned" | sort -uV | tail -n 1)
if [ "$(printf '%s\n%s\n' "$newer" "$version" | sort -V | tail -n 1)" != "$version" ]; then
	echo "check_symbols: node FINDERD_$newer is newer than the header's version $version" >&2
	exit 1
fi
echo "check_symbols: $(wc -l < "$tmp.exported") symbols, all declared finderd_*," \
     "each in the node its documentation names (newest FINDERD_$newer)"

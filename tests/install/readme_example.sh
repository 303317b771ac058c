#!/usr/bin/env bash
# readme_example.sh README INCLUDE_DIR LIB_DIR CC TMP_ROOT [CFLAGS [MARKER]]
#
# Extracts a C example of README.md -- the fenced block that follows the
# line `<!-- MARKER -->` (default `example`) -- compiles it against the library in LIB_DIR with
# warnings as errors, and runs it.  The README's example thus always builds
# and works.
set -euo pipefail

readme=$1
inc=$2
libdir=$3
cc=$4
root=$5
cflags=${6:-}
marker=${7:-example}

mkdir -p "$root"
tmp=$(mktemp -d "$root/readme.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

awk -v m="<!-- $marker -->" '
	index($0, m) == 1 { armed = 1; next }
	armed == 1 && /^```/ { armed = 2; next }
	armed == 2 && /^```/ { exit }
	armed == 2 { print }
' "$readme" >"$tmp/example.c"

if [ ! -s "$tmp/example.c" ]; then
	echo "FAIL: no fenced block after <!-- $marker --> in $readme" >&2
	exit 1
fi
echo "== $(wc -l <"$tmp/example.c") lines extracted from README.md"

# shellcheck disable=SC2086 # the flags are words
if ! "$cc" -std=c11 -Wall -Wextra -Werror $cflags -I"$inc" \
	"$tmp/example.c" -o "$tmp/example" -L"$libdir" -ltagwire -pthread \
	-Wl,-rpath,"$libdir" 2>"$tmp/cc.log"; then
	cat -n "$tmp/example.c" >&2
	cat "$tmp/cc.log" >&2
	echo "FAIL: the README example does not compile" >&2
	exit 1
fi

echo "== running it"
status=0
if command -v timeout >/dev/null 2>&1; then
	timeout 120 "$tmp/example" || status=$?
else
	"$tmp/example" || status=$?
fi
if [ "$status" -ne 0 ]; then
	echo "FAIL: the README example exited with $status" >&2
	exit 1
fi
echo "ok: the README example compiles and runs"

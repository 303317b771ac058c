#!/usr/bin/env bash
# check_symbols.sh LIB HEADER_DIR
#
# Asserts that the shared library LIB exports exactly the public API: every
# defined dynamic symbol is a tw_ name (never a tw__ internal) declared with
# TW_API in a header of HEADER_DIR, and every such declaration is exported.
# NM may name the nm to use.
set -euo pipefail

lib=$1
headers=$2
nm=${NM:-nm}

if [ ! -f "$lib" ]; then
	echo "FAIL: no library at $lib" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tw-syms.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Dynamic symbols defined by the library, without version suffixes.  The
# linker's own markers carry no meaning for users and are ignored.
"$nm" -D --defined-only "$lib" | awk 'NF >= 3 { sub(/@.*/, "", $3); print $3 }' |
	grep -v -x -E '_init|_fini|_edata|_end|__bss_start' | sort -u >"$tmp/exported"

# Functions the public headers declare with TW_API.
cat "$headers"/*.h | tr '\n' ' ' | grep -o -E 'TW_API[^;(]*\(' |
	grep -o -E 'tw_[A-Za-z0-9_]+[[:space:]]*\($' | tr -d ' (' | sort -u >"$tmp/declared"

status=0
if [ ! -s "$tmp/exported" ]; then
	echo "FAIL: $lib exports no symbols" >&2
	exit 1
fi
internal=$(grep -E '^tw__' "$tmp/exported" || true)
if [ -n "$internal" ]; then
	echo "FAIL: internal tw__ symbols are exported:" >&2
	printf '  %s\n' $internal >&2
	status=1
fi
foreign=$(grep -v -E '^tw_' "$tmp/exported" || true)
if [ -n "$foreign" ]; then
	echo "FAIL: symbols outside the tw_ namespace are exported:" >&2
	printf '  %s\n' $foreign >&2
	status=1
fi
undeclared=$(comm -23 "$tmp/exported" "$tmp/declared" | grep -v -E '^tw__' | grep -E '^tw_' || true)
if [ -n "$undeclared" ]; then
	echo "FAIL: exported but not declared TW_API in $headers:" >&2
	printf '  %s\n' $undeclared >&2
	status=1
fi
missing=$(comm -13 "$tmp/exported" "$tmp/declared")
if [ -n "$missing" ]; then
	echo "FAIL: declared TW_API but not exported (callers would not link):" >&2
	printf '  %s\n' $missing >&2
	status=1
fi
if [ "$status" -eq 0 ]; then
	echo "ok: $(wc -l <"$tmp/exported") public symbols exported, nothing else"
fi
exit "$status"

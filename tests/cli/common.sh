# Helpers shared by the CLI tests (sourced, POSIX sh).
#
# Each test script is run by ctest as `sh x.sh /path/to/tagwire [args]`.
# `run` executes the tool with its stdout and stderr captured; the expect_*
# helpers check the last run and report every mismatch, with the output,
# instead of stopping at the first one; `finish` sets the exit status.

set -u
TAGWIRE=${1:?usage: sh test.sh path/to/tagwire}
if [ ! -x "$TAGWIRE" ]; then
	echo "not an executable: $TAGWIRE"
	exit 1
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tagwire-cli.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
FAILS=0
RC=0
LAST=

# run ARGS...: runs the tool.
run() {
	LAST="$*"
	"$TAGWIRE" "$@" >"$TMP/out" 2>"$TMP/err"
	RC=$?
}

# run_env NAME=VALUE ARGS...: runs the tool with one more variable set.
run_env() {
	LAST="$*"
	_assign=$1
	shift
	env "$_assign" "$TAGWIRE" "$@" >"$TMP/out" 2>"$TMP/err"
	RC=$?
}

fail() {
	echo "FAIL: tagwire $LAST: $*"
	echo "--- stdout:"
	cat "$TMP/out"
	echo "--- stderr:"
	cat "$TMP/err"
	echo "---"
	FAILS=$((FAILS + 1))
}

expect_rc() {
	[ "$RC" -eq "$1" ] || fail "exit status $RC, expected $1"
}

# expect_out ERE / expect_err ERE: some line of stdout / stderr matches.
expect_out() {
	grep -E -q -e "$1" "$TMP/out" || fail "no line of stdout matches /$1/"
}

expect_err() {
	grep -E -q -e "$1" "$TMP/err" || fail "no line of stderr matches /$1/"
}

expect_no_out() {
	grep -E -q -e "$1" "$TMP/out" && fail "a line of stdout matches /$1/"
	return 0
}

expect_out_empty() {
	[ ! -s "$TMP/out" ] || fail "stdout is not empty"
}

expect_err_empty() {
	[ ! -s "$TMP/err" ] || fail "stderr is not empty"
}

# expect_usage_error ARGS...: exit 2, nothing on stdout, an error and a
# usage line on stderr.
expect_usage_error() {
	run "$@"
	expect_rc 2
	expect_out_empty
	expect_err '^tagwire: '
	expect_err '^usage: tagwire'
}

finish() {
	if [ "$FAILS" -ne 0 ]; then
		echo "$FAILS check(s) failed"
		exit 1
	fi
	echo "all checks passed"
	exit 0
}

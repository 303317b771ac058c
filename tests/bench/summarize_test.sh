#!/usr/bin/env bash
# bench/summarize.awk on a fixed run of three rounds (rounds.tsv): the
# medians and ratios it writes (rounds.expected.tsv, each figure worked out
# by hand), the table's cells, n/a for contenders and figures that are
# missing, and the same answers from a finished TSV read again.
#
#   bash summarize_test.sh BENCH_DIR
# shellcheck disable=SC2016 # the awk programs are meant for awk, not bash
set -uo pipefail

bench=${1:?usage: summarize_test.sh path/to/bench}
here=$(cd "$(dirname "$0")" && pwd)
awk=${AWK:-awk}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tw-summarize.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

summarize() { # mode, [-v NAME=VALUE]..., file
	local mode=$1
	shift
	"$awk" -v mode="$mode" -f "$bench/summarize.awk" "$@"
}

# --- medians and ratios, row for row --------------------------------------

summarize rows "$here/rounds.tsv" >"$tmp/rows" 2>"$tmp/err" ||
	fail "mode=rows: exit status $?"
[ -s "$tmp/err" ] && fail "mode=rows wrote to stderr: $(cat "$tmp/err")"
if ! diff -u "$here/rounds.expected.tsv" "$tmp/rows" >"$tmp/diff"; then
	fail "mode=rows differs from rounds.expected.tsv:"
	cat "$tmp/diff"
fi

# A few of them spelled out, so that a wrong expected file cannot hide a
# wrong rule: an odd count, an even count (the mean of the middle two), a
# ratio of each baseline.
expect_row() { # section, workload, contender, metric, round, value
	if ! "$awk" -F'\t' -v s="$1" -v w="$2" -v c="$3" -v m="$4" \
		-v r="$5" -v v="$6" '
		$1 == s && $2 == w && $3 == c && $4 == m && $6 == r && $7 == v {
			found = 1
		}
		END { exit !found }' "$tmp/rows"; then
		fail "no row: $1 | $2 | $3 | $4 | $5 | $6"
	fi
}
expect_row shm "lat 8 B" "bare ring" "one-way median" median 0.25
expect_row shm "lat 8 B" tw_ring "one-way median" ratio 2.0000
expect_row shm "bw 1 MiB" tw_ring bandwidth ratio 0.2000
expect_row shm "rate 8 B stream" tw_ring rate ratio 0.5000
expect_row tcp "lat 8 B" tagwire "one-way median" ratio 1.5000
expect_row tcp "bw 64 KiB" tagwire bandwidth ratio 0.5000
expect_row tcp "rate 8 B stream" tagwire rate median 3
expect_row tcp "rate 8 B stream" tagwire rate ratio 3.0000
# No baseline, no ratio: memcpy lacks bw 64 KiB; preemptions have none.
if grep -q $'^shm\tbw 64 KiB\ttw_ring\tbandwidth\t[^\t]*\tratio' "$tmp/rows"; then
	fail "a ratio to a baseline that was not measured"
fi
if grep -q $'\tpreemptions\t[^\t]*\tratio\t' "$tmp/rows"; then
	fail "a ratio of preemptions"
fi
grep -q $'\tucx\t' "$tmp/rows" && fail "rows for ucx, which has no figures"

# --- the table --------------------------------------------------------------

summarize table "$here/rounds.tsv" >"$tmp/table" || fail "mode=table: exit status $?"

# The cell of a table's row and column; the table of section $1.
cell() { # section, row label, column
	"$awk" -F'|' -v s="$1" -v row="$2" -v col="$3" '
		function trim(t) { gsub(/^ +| +$/, "", t); return t }
		/^## / { inside = ($2 == "" && index($0, "## " s " ") == 1) }
		!inside || !/^\|/ { next }
		trim($2) == "workload" {
			for (i = 2; i < NF; i++)
				if (trim($i) == col)
					c = i
			next
		}
		c && trim($2) == row { print trim($c); exit }' "$tmp/table"
}
expect_cell() { # section, row, column, text
	local got
	got=$(cell "$1" "$2" "$3")
	[ "$got" = "$4" ] || fail "table $1, $2, $3: '$got', expected '$4'"
}
expect_cell shm "lat 8 B" "bare ring" "0.250 (1.00x)"
expect_cell shm "lat 8 B" tw_ring "0.500 (2.00x)"
expect_cell shm "lat 8 B" "shm link" "1.25 (5.00x)"
expect_cell shm "lat 8 B" openmpi "0.500 (2.00x)"
expect_cell shm "p99 8 B" tw_ring "4.00 (2.00x)"
expect_cell shm "bw 1 MiB" memcpy "11.0 (1.00x)"
expect_cell shm "bw 1 MiB" tw_ring "2.20 (0.20x)"
expect_cell shm "bw 64 KiB" tw_ring "1.75"
expect_cell shm "rate 8 B" tw_ring "15.0 (0.50x)"
expect_cell tcp "lat 8 B" raw-blocking "10.0 (1.67x)"
expect_cell tcp "lat 8 B" tagwire "9.00 (1.50x)"
expect_cell tcp "lat 8 B" zmq "18.0 (3.00x)"
expect_cell tcp "bw 64 KiB" raw-busy-poll "3.30 (1.10x)"
expect_cell tcp "rate 8 B" tagwire "3.00 (3.00x)"
expect_cell tcp "rate 8 B" nng "0.030 (0.03x)"
# Missing: a contender of the run without any figure, a workload nobody
# measured, a contender that lacks one workload.
for s in shm tcp; do
	for row in "lat 8 B" "bw 1 MiB" "rate 8 B"; do
		expect_cell "$s" "$row" ucx "n/a"
	done
done
expect_cell tcp "lat 8 B" openmpi "n/a"
expect_cell shm "lat 4 KiB" "bare ring" "n/a"
expect_cell shm "lat 8 B" memcpy "n/a"
expect_cell tcp "bw 64 KiB" zmq "n/a"
grep -q 'medians of 3 round(s)' "$tmp/table" || fail "the table does not say 3 rounds"

# Contenders named with -v contenders: only those, plus any with figures.
summarize table -v contenders="shm=bare ring;tcp=raw-blocking,mystery" \
	"$here/rounds.tsv" >"$tmp/table"
expect_cell tcp "lat 8 B" mystery "n/a"
expect_cell shm "lat 8 B" tw_ring "0.500 (2.00x)"
[ -n "$(cell shm "lat 8 B" ucx)" ] && fail "a ucx column that nobody asked for"

# --- the picture's data -----------------------------------------------------

summarize plot "$here/rounds.tsv" >"$tmp/plot" || fail "mode=plot: exit status $?"
# Blocks are two blank lines apart, for gnuplot's index.
blocks=$("$awk" 'BEGIN { n = 1 }
	/^$/ { blank++; next }
	{ if (blank >= 2) n++; blank = 0 }
	END { print n }' "$tmp/plot")
[ "$blocks" = 3 ] || fail "mode=plot: $blocks blocks, expected 3"
grep -q $'^shm tw_ring\t0.5\tNaN\t2.0000\tNaN$' "$tmp/plot" ||
	fail "mode=plot: no latency line for tw_ring"
grep -q $'^tcp ucx (n/a)\t' "$tmp/plot" || fail "mode=plot: ucx not shown as n/a"
grep -q $'^shm memcpy\t' <(sed -n '1,/^$/p' "$tmp/plot") &&
	fail "mode=plot: memcpy in the latency panel"

# --- a finished TSV read again ----------------------------------------------

{
	echo "# a header line"
	printf 'section\tworkload\tcontender\tmetric\tunit\tround\tvalue\n'
	cat "$here/rounds.tsv" "$tmp/rows"
} >"$tmp/finished.tsv"
summarize rows "$tmp/finished.tsv" >"$tmp/again"
diff -u "$tmp/rows" "$tmp/again" >"$tmp/diff" ||
	fail "the finished TSV gives other rows: $(cat "$tmp/diff")"

summarize bogus "$here/rounds.tsv" >/dev/null 2>&1 && fail "mode=bogus accepted"

if [ "$fails" -gt 0 ]; then
	echo "$fails failure(s)"
	exit 1
fi
echo "ok"

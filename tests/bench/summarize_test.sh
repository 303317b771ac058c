#!/usr/bin/env bash
# bench/summarize.awk on a fixed run of three rounds (rounds.tsv): the
# medians and ratios it writes (rounds.expected.tsv, each figure worked out
# by hand), the table's cells, n/a for contenders and figures that are
# missing, and the same answers from a finished TSV read again.  Then the
# engine rows (engine_rounds.tsv, two rounds) of the same comparison: their
# ratios to raw-ack and memcpy, their tables and the picture's fourth block.
# Last, a run in both pinnings (pinned_rounds.tsv, the eighth column).
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

# --- the engine rows --------------------------------------------------------

eng="$here/engine_rounds.tsv"
summarize rows "$eng" >"$tmp/rows" 2>"$tmp/err" || fail "engine rows: exit status $?"
[ -s "$tmp/err" ] && fail "engine rows wrote to stderr: $(cat "$tmp/err")"
# Two rounds: the mean of the middle two.
expect_row eng-tcp "bw 1 MiB" raw-ack bandwidth median 3
expect_row eng-tcp "bw 1 MiB" "write s1" "post time" median 15
expect_row eng-tcp "bw 1 MiB" "write s1" bandwidth ratio 0.5000
expect_row eng-tcp "bw 1 MiB" "write s2" bandwidth ratio 0.6667
expect_row eng-tcp "bw 1 MiB" "ucx put" bandwidth ratio 2.0000
expect_row eng-tcp "bw 16 MiB" "send s1" bandwidth ratio 0.2000
expect_row eng-tcp "bw 4 KiB" "write s1" bandwidth ratio 0.5000
expect_row eng-mem "bw 16 MiB" read bandwidth ratio 0.2500
expect_row eng-mem "bw 16 MiB" "ucx put" bandwidth ratio 0.8000
grep -q $'^eng-tcp\tbw 1 MiB\twrite s1\tbandwidth\tratio to raw-ack\tratio\t' \
	"$tmp/rows" || fail "no unit 'ratio to raw-ack'"
# No baseline measures the batch; post time and completion have no ratio.
grep -q $'^eng-[a-z]*\tbw 1024x4 KiB\t[^\t]*\t[^\t]*\t[^\t]*\tratio' "$tmp/rows" &&
	fail "a ratio of the batch"
grep -Eq $'\t(post time|completion)\t[^\t]*\tratio\t' "$tmp/rows" &&
	fail "a ratio of post time or completion"

# The engine rows with the others, as in bench/run.sh's comparison.
cat "$here/rounds.tsv" "$eng" >"$tmp/both.tsv"
summarize table -v contenders="shm=bare ring;tcp=raw-blocking;eng-tcp=raw-ack,ucx get;eng-mem=memcpy" \
	"$tmp/both.tsv" >"$tmp/table" || fail "engine table: exit status $?"
expect_cell eng-tcp "bw 1 MiB" "write s1" "1.50 (0.50x)"
expect_cell eng-tcp "bw 1 MiB" "ucx put" "6.00 (2.00x)"
expect_cell eng-tcp "bw 16 MiB" "send s1" "1.00 (0.20x)"
expect_cell eng-tcp "bw 1024x4 KiB" "write s1" "0.800"
expect_cell eng-tcp "bw 1 MiB" "ucx get" "n/a"
expect_cell eng-tcp "post 1 MiB" "write s1" "15.0"
expect_cell eng-tcp "done 1 MiB" "raw-ack" "500"
expect_cell eng-mem "bw 16 MiB" read "2.50 (0.25x)"
expect_cell eng-mem "bw 1024x4 KiB" write "3.00"
# The shm and tcp tables stay as they were; the engine tables have no
# latency or rate rows.
expect_cell shm "lat 8 B" tw_ring "0.500 (2.00x)"
for s in shm tcp; do
	for row in "bw 4 KiB" "bw 1024x4 KiB" "post 1 MiB"; do
		[ -z "$(cell "$s" "$row" "bare ring")$(cell "$s" "$row" raw-blocking)" ] ||
			fail "table $s has a row '$row'"
	done
done
[ -z "$(cell eng-tcp "lat 8 B" raw-ack)$(cell eng-mem "rate 8 B" memcpy)" ] ||
	fail "an engine table with a latency or rate row"
grep -q 'medians of 3 round(s)' "$tmp/table" || fail "the table does not say 3 rounds"

# The picture: the engine's block comes fourth, with three fixed columns
# and only the contenders of eng_plot; the first three blocks stay shm's
# and tcp's alone.
summarize plot "$tmp/both.tsv" >"$tmp/plot" || fail "engine plot: exit status $?"
block() { # N -> the lines of block N (1..)
	"$awk" -v want="$1" 'BEGIN { n = 1 }
		/^$/ { blank++; next }
		{ if (blank >= 2) n++; blank = 0 }
		n == want' "$tmp/plot"
}
{ [ -n "$(block 4)" ] && [ -z "$(block 5)" ]; } ||
	fail "mode=plot: not 4 blocks with engine rows"
{ block 1 && block 2 && block 3; } | grep -q '^eng-' &&
	fail "mode=plot: engine lines in the first three blocks"
T=$'\t'
want="contender${T}bw 64 KiB${T}bw 1 MiB${T}bw 16 MiB${T}ratio bw 64 KiB"
want+="${T}ratio bw 1 MiB${T}ratio bw 16 MiB"
[ "$(block 2 | head -n 1)" = "$want" ] ||
	fail "mode=plot: the bandwidth block has other columns: $(block 2 | head -n 1)"
want="contender${T}bw 1 MiB${T}bw 16 MiB${T}bw 1024x4 KiB${T}ratio bw 1 MiB"
want+="${T}ratio bw 16 MiB${T}ratio bw 1024x4 KiB"
[ "$(block 4 | head -n 1)" = "$want" ] ||
	fail "mode=plot: the engine block has other columns: $(block 4 | head -n 1)"
block 4 | grep -q $'^eng-tcp write s1\t1.5\t2.5\t0.8\t0.5000\t0.5000\tNaN$' ||
	fail "mode=plot: no engine line for eng-tcp write s1"
block 4 | grep -q $'^eng-mem ucx put\tNaN\t8\tNaN\tNaN\t0.8000\tNaN$' ||
	fail "mode=plot: no engine line for eng-mem ucx put"
block 4 | grep -q '^eng-tcp write s2' && fail "mode=plot: write s2, not in eng_plot"
summarize plot -v eng_plot="eng-tcp=write s2" "$tmp/both.tsv" >"$tmp/plot"
[ "$(block 4 | sed 1d | cut -f1)" = "eng-tcp write s2" ] ||
	fail "mode=plot: eng_plot not obeyed: $(block 4 | sed 1d | cut -f1)"

# --- both pinnings ------------------------------------------------------------

# pinned_rounds.tsv: every row has the eighth column.  Each pinning has
# its own medians and ratios to its own baselines (pinned_rounds.expected.tsv,
# worked out by hand), its own tables, pinned then unpinned for each
# section, and its own blocks of the picture.
pin="$here/pinned_rounds.tsv"
pin_contenders="shm=bare ring,tw_ring;tcp=raw-blocking,raw-busy-poll,tagwire;eng-tcp=raw-ack,write s1"
summarize rows -v pinnings=pinned,unpinned -v contenders="$pin_contenders" \
	"$pin" >"$tmp/rows" 2>"$tmp/err" || fail "pinnings, mode=rows: exit status $?"
[ -s "$tmp/err" ] && fail "pinnings, mode=rows wrote to stderr: $(cat "$tmp/err")"
if ! diff -u "$here/pinned_rounds.expected.tsv" "$tmp/rows" >"$tmp/diff"; then
	fail "pinnings, mode=rows differs from pinned_rounds.expected.tsv:"
	cat "$tmp/diff"
fi
"$awk" -F'\t' 'NF != 8 || ($8 != "pinned" && $8 != "unpinned")' "$tmp/rows" |
	grep -q . && fail "pinnings: a row without its pinning"
# The rows of seven columns keep seven.
summarize rows "$here/rounds.tsv" | "$awk" -F'\t' 'NF != 7' | grep -q . &&
	fail "rows of no pinning got a pinning column"

summarize table -v pinnings=pinned,unpinned -v contenders="$pin_contenders" \
	"$pin" >"$tmp/table" || fail "pinnings, mode=table: exit status $?"
titles=$(sed -n 's/^## \(.*\): medians .*/\1/p' "$tmp/table" | tr '\n' '|')
want="shm (shared memory), pinned|shm (shared memory), unpinned|"
want+="tcp (TCP on loopback), pinned|tcp (TCP on loopback), unpinned|"
want+="eng-tcp (the transfer engine, tcp://127.0.0.1), pinned|"
want+="eng-tcp (the transfer engine, tcp://127.0.0.1), unpinned|"
[ "$titles" = "$want" ] || fail "pinnings: the tables are $titles"
grep -q '^## shm (shared memory), unpinned: .*, measured unpinned$' "$tmp/table" ||
	fail "pinnings: a table does not say which baseline"
P="shm (shared memory), pinned:" U="shm (shared memory), unpinned:"
expect_cell "$P" "lat 8 B" "bare ring" "0.300 (1.00x)"
expect_cell "$P" "lat 8 B" tw_ring "0.600 (2.00x)"
expect_cell "$U" "lat 8 B" "bare ring" "0.500 (1.00x)"
expect_cell "$U" "lat 8 B" tw_ring "1.50 (3.00x)"
P="tcp (TCP on loopback), pinned:" U="tcp (TCP on loopback), unpinned:"
expect_cell "$P" "bw 1 MiB" tagwire "2.00 (0.50x)"
expect_cell "$U" "bw 1 MiB" tagwire "3.00 (1.50x)"
expect_cell "$P" "lat 8 B" tagwire "n/a"
# No ratio to the other pinning's baseline.
expect_cell "$U" "lat 8 B" tagwire "10.0"
expect_cell "$U" "lat 8 B" raw-busy-poll "n/a"
expect_cell "eng-tcp (the transfer engine, tcp://127.0.0.1), unpinned:" \
	"bw 1 MiB" "write s1" "2.00 (0.50x)"

# Read again without pinnings=: the same tables, and none of no pinning
# for the contenders named.
summarize table -v contenders="$pin_contenders" "$pin" >"$tmp/table2" ||
	fail "pinnings from the rows: exit status $?"
diff -u "$tmp/table" "$tmp/table2" >"$tmp/diff" ||
	fail "pinnings from the rows give other tables: $(cat "$tmp/diff")"
{
	echo "# a finished TSV"
	cat "$pin" "$tmp/rows"
} >"$tmp/finished.tsv"
summarize rows -v pinnings=pinned,unpinned -v contenders="$pin_contenders" \
	"$tmp/finished.tsv" | diff -u "$tmp/rows" - >/dev/null ||
	fail "pinnings: the finished TSV gives other rows"

# One pinning alone: only its tables.
"$awk" -F'\t' '$8 != "unpinned"' "$pin" >"$tmp/pinned.tsv"
summarize table -v pinnings=pinned "$tmp/pinned.tsv" >"$tmp/table"
grep -q '^## [^:]*unpinned:' "$tmp/table" && fail "pinned alone: an unpinned table"
grep -q '^## shm (shared memory), pinned:' "$tmp/table" ||
	fail "pinned alone: no pinned table"

# The picture: each panel's block once per pinning, pinned first; the
# labels do not name the pinning.
summarize plot -v pinnings=pinned,unpinned -v contenders="$pin_contenders" \
	"$pin" >"$tmp/plot" || fail "pinnings, mode=plot: exit status $?"
{ [ -n "$(block 8)" ] && [ -z "$(block 9)" ]; } ||
	fail "pinnings, mode=plot: not 8 blocks (4 panels, 2 pinnings)"
block 1 | grep -q $'^shm tw_ring\t0.6\tNaN\t2.0000\tNaN$' ||
	fail "pinnings, mode=plot: block 1 is not latency pinned"
block 2 | grep -q $'^shm tw_ring\t1.5\tNaN\t3.0000\tNaN$' ||
	fail "pinnings, mode=plot: block 2 is not latency unpinned"
block 4 | grep -q $'^tcp tagwire\tNaN\t3\tNaN\tNaN\t1.5000\tNaN$' ||
	fail "pinnings, mode=plot: block 4 is not bandwidth unpinned"
block 7 | grep -q $'^eng-tcp write s1\t1\tNaN\tNaN\t0.5000\tNaN\tNaN$' ||
	fail "pinnings, mode=plot: block 7 is not the engine pinned"

# plot.gp draws both columns, where gnuplot is installed.
if command -v gnuplot >/dev/null; then
	if gnuplot -c "$bench/plot.gp" "$tmp/plot" "$tmp/perf.svg" "title" \
		"subtitle" 4 "pinned unpinned" >"$tmp/gp.log" 2>&1; then
		for t in "pinned: One-way latency" "unpinned: One-way latency" \
			"unpinned: Transfer engine"; do
			grep -q "$t" "$tmp/perf.svg" ||
				fail "plot.gp: no panel '$t'"
		done
	else
		fail "plot.gp failed: $(tail -n 5 "$tmp/gp.log")"
	fi
fi

if [ "$fails" -gt 0 ]; then
	echo "$fails failure(s)"
	exit 1
fi
echo "ok"

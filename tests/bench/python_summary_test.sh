#!/usr/bin/env bash
# bench/python_bench.py --summarize on a fixed run (python_rounds.tsv:
# three rounds, tagwire-c two, mpi4py over tcp skipped): the medians and
# ratios it writes (python_rounds.expected.tsv, each figure worked out by
# hand), the table's cells, n/a for what is missing, the skip line, the
# goals, and the same answers from its finished TSV read again.  No
# benchmark runs here; only /usr/bin/python3 (or $PYTHON) is needed.
#
#   bash python_summary_test.sh BENCH_DIR
set -uo pipefail

bench=${1:?usage: python_summary_test.sh path/to/bench}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-/usr/bin/python3}
[ -x "$python" ] || python=$(command -v python3 || true)
if [ -z "$python" ]; then
	echo "SKIP: no python3"
	exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tw-pysummary.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

# The medians and ratios of a TSV: its rows that are not per round.
derived() { awk -F'\t' '!/^#/ && $1 != "section" && $6 !~ /^[0-9]+$/' "$1"; }

summarize() { # in.tsv out.tsv table
	"$python" "$bench/python_bench.py" --summarize "$1" --tsv "$2" >"$3" \
		2>"$tmp/err" || fail "--summarize $1: exit status $?"
	[ -s "$tmp/err" ] && fail "--summarize $1 wrote to stderr: $(cat "$tmp/err")"
}

check_rows() { # out.tsv what
	derived "$1" >"$tmp/rows"
	if ! diff -u "$here/python_rounds.expected.tsv" "$tmp/rows" >"$tmp/diff"; then
		fail "$2: medians and ratios differ from python_rounds.expected.tsv:"
		cat "$tmp/diff"
	fi
}

# A line of the table whose cells, spaces squeezed, are exactly $2.
has_line() { # table expected what
	tr -s ' ' <"$1" | grep -qxF -- "$2" || fail "$3: no line \"$2\" in the table"
}

check_table() { # table what
	local t=$1 w=$2
	has_line "$t" "shm lat 8 B one-way median us 2.00 0.750 30.0 1.50 0.07x 1.33x 2.67x 0.03x 0.50x" "$w"
	has_line "$t" "shm lat 8 B one-way p99 us n/a n/a n/a n/a n/a n/a n/a n/a n/a" "$w"
	has_line "$t" "shm bw 1 MiB bandwidth GB/s 9.00 10.0 4.00 11.0 2.25x 0.82x 0.90x 2.50x 0.91x" "$w"
	has_line "$t" "tcp lat 8 B one-way median us 7.00 6.00 28.0 n/a 0.25x n/a 1.17x 0.21x n/a" "$w"
	has_line "$t" "tcp bw 1 MiB bandwidth GB/s 2.00 2.00 5.00 n/a 0.40x n/a 1.00x 0.40x n/a" "$w"
	has_line "$t" "mpi4py tcp: skipped: mpirun failed (exit 3): no MPI here" "$w"
	has_line "$t" " shm: tagwire-py ahead of pyzmq at 8 B: MET (2.00 us vs 30.0 us, 0.07x)" "$w"
	has_line "$t" " shm: tagwire-py ahead of mpi4py at 8 B: NOT MET (2.00 us vs 1.50 us, 1.33x)" "$w"
	has_line "$t" " shm: recv_into numpy at 1 MiB >= 0.9x C: MET (9.00 vs 10.0 GB/s, 0.90x)" "$w"
	has_line "$t" " tcp: tagwire-py ahead of mpi4py at 8 B: n/a" "$w"
	has_line "$t" " tcp: recv_into numpy at 1 MiB >= 0.9x C: MET (2.00 vs 2.00 GB/s, 1.00x)" "$w"
}

# --- the fixed run --------------------------------------------------------

summarize "$here/python_rounds.tsv" "$tmp/out1.tsv" "$tmp/table1"
check_rows "$tmp/out1.tsv" "first reading"
check_table "$tmp/table1" "first reading"

# --- its TSV read again: the medians and ratios rows are ignored ----------

summarize "$tmp/out1.tsv" "$tmp/out2.tsv" "$tmp/table2"
check_rows "$tmp/out2.tsv" "second reading"
check_table "$tmp/table2" "second reading"

if [ "$fails" -ne 0 ]; then
	echo "$fails check(s) failed"
	exit 1
fi
echo "python_bench.py --summarize: all checks passed"

#!/usr/bin/env bash
# bench/merge.awk on the four shapes of TSV that the benchmarks write
# (ring_bench; tcp_bench; the peers; engine_bench and ucx_rma_peer), as
# bench/run.sh's comparison merges them: one shape of row, the comparison's
# round number, the programs' names mapped to ring_bench's, their own
# medians, ratios, sanity checks and unmeasured figures left out; with
# -v pinning=P, P as an eighth column.
#
#   bash merge_test.sh BENCH_DIR
set -uo pipefail

bench=${1:?usage: merge_test.sh path/to/bench}
awk=${AWK:-awk}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/tw-merge.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
fails=0

fail() {
	echo "FAIL: $*"
	fails=$((fails + 1))
}

T=$'\t'
tsv() { tr '|' '\t'; } # the fixtures below separate columns with |

tsv >"$tmp/ring.tsv" <<'EOF'
# ring_bench: the header lines of its report
# rounds 1
section|workload|contender|metric|unit|round|value
lat|sanity 8 B|bare ring|one-way median|us|1|0.2000
lat|lat 8 B|bare ring|one-way median|us|1|0.2500
lat|lat 8 B|bare ring|one-way median|us|median|0.2500
lat|lat 8 B|tw_ring|one-way p99|us|1|1.5000
lat|lat 8 B|tw_ring / bare ring|one-way median|ratio|median|2.0000
lat|lat 8 B|shm link|one-way median|us|1|nan
bw|bw 16 MiB|memcpy|bandwidth|GB/s|1|11.2500
rate|rate 8 B stream|tw_ring|preemptions|count|1|3
EOF

tsv >"$tmp/tcp.tsv" <<'EOF'
contender|transport|test|size|round|value|unit
tagwire|tcp|lat-median|8|1|5.1000|us
tagwire|tcp|lat-p99|4096|1|9.0000|us
raw-blocking|tcp|bw|1048576|1|3.2000|GB/s
raw-busy-poll|tcp|rate|8|1|1.0500|M/s
EOF

tsv >"$tmp/peer.tsv" <<'EOF'
contender|transport|test|size|round|value|unit
zmq|tcp|lat|8|1|20.5|us
ucx|shm|lat_p99|4096|1|0.9|us
ucx|shm|bw|65536|1|6.25|GBps
nng|tcp|rate|8|1|0.031|Mps
nng|tcp|rate|8|1|nan|Mps
EOF

# engine_bench's --tsv and ucx_rma_peer's stdout: the rows of the
# comparison already, under the header "esection ...".
tsv >"$tmp/engine.tsv" <<'EOF'
# engine_bench --rounds 1 --quick --tsv FILE
esection|workload|contender|metric|unit|round|value
eng-tcp|bw 1 MiB|write s1|bandwidth|GB/s|1|1.25
eng-tcp|bw 1 MiB|write s1|post time|us|1|12.5
eng-tcp|bw 1 MiB|raw-ack|bandwidth|GB/s|median|2
eng-mem|bw 1024x4 KiB|ucx put|bandwidth|GB/s|1|4.5
eng-mem|bw 16 MiB|memcpy|bandwidth|GB/s|1|nan
EOF

tsv >"$tmp/expected" <<'EOF'
shm|lat 8 B|bare ring|one-way median|us|7|0.2500
shm|lat 8 B|tw_ring|one-way p99|us|7|1.5000
shm|bw 16 MiB|memcpy|bandwidth|GB/s|7|11.2500
shm|rate 8 B stream|tw_ring|preemptions|count|7|3
tcp|lat 8 B|tagwire|one-way median|us|7|5.1000
tcp|lat 4 KiB|tagwire|one-way p99|us|7|9.0000
tcp|bw 1 MiB|raw-blocking|bandwidth|GB/s|7|3.2000
tcp|rate 8 B stream|raw-busy-poll|rate|M/s|7|1.0500
tcp|lat 8 B|zmq|one-way median|us|7|20.5
shm|lat 4 KiB|ucx|one-way p99|us|7|0.9
shm|bw 64 KiB|ucx|bandwidth|GB/s|7|6.25
tcp|rate 8 B stream|nng|rate|M/s|7|0.031
eng-tcp|bw 1 MiB|write s1|bandwidth|GB/s|7|1.25
eng-tcp|bw 1 MiB|write s1|post time|us|7|12.5
eng-mem|bw 1024x4 KiB|ucx put|bandwidth|GB/s|7|4.5
EOF

"$awk" -v round=7 -f "$bench/merge.awk" "$tmp/ring.tsv" "$tmp/tcp.tsv" \
	"$tmp/peer.tsv" "$tmp/engine.tsv" >"$tmp/got" 2>"$tmp/err" ||
	fail "exit status $?"
[ -s "$tmp/err" ] && fail "stderr: $(cat "$tmp/err")"
if ! diff -u "$tmp/expected" "$tmp/got"; then
	fail "the merged rows differ"
fi

# With a pinning, every row gets it as an eighth column; without one,
# the rows keep the seven columns of the runs before.
"$awk" -v round=7 -v pinning=unpinned -f "$bench/merge.awk" "$tmp/ring.tsv" \
	"$tmp/tcp.tsv" "$tmp/peer.tsv" "$tmp/engine.tsv" >"$tmp/got-pin" ||
	fail "pinning: exit status $?"
sed "s/\$/${T}unpinned/" "$tmp/expected" | diff -u - "$tmp/got-pin" ||
	fail "the rows with a pinning differ"

# The files may come in any order: each is recognised by its header.
"$awk" -v round=7 -f "$bench/merge.awk" "$tmp/engine.tsv" "$tmp/peer.tsv" \
	"$tmp/ring.tsv" "$tmp/tcp.tsv" | sort >"$tmp/got2"
sort "$tmp/expected" | diff -u - "$tmp/got2" >/dev/null ||
	fail "another order of the files gives other rows"

# A row of no known shape is left out, a file without a header too.
printf 'a%sb%sc\n' "$T" "$T" >"$tmp/junk.tsv"
tail -n 2 "$tmp/tcp.tsv" >"$tmp/headless.tsv"
[ -z "$("$awk" -f "$bench/merge.awk" "$tmp/junk.tsv" "$tmp/headless.tsv")" ] ||
	fail "rows from a file of no known shape"

# Every merged row feeds summarize.awk as it is.
"$awk" -v mode=rows -f "$bench/summarize.awk" "$tmp/got" >"$tmp/sum" ||
	fail "summarize.awk on the merged rows: exit status $?"
grep -q "^tcp${T}lat 8 B${T}zmq${T}one-way median${T}us${T}median${T}20.5\$" \
	"$tmp/sum" || fail "summarize.awk lost a merged row"
grep -q "^eng-mem${T}bw 1024x4 KiB${T}ucx put${T}bandwidth${T}GB/s${T}median${T}4.5\$" \
	"$tmp/sum" || fail "summarize.awk lost a merged engine row"

if [ "$fails" -gt 0 ]; then
	echo "$fails failure(s)"
	exit 1
fi
echo "ok"

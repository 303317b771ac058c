#!/usr/bin/env bash
# Builds the benchmarks in build-bench/ (Release, a standalone CMake project
# that builds the library from this checkout) and runs them:
#
#   bench/run.sh [compare] [--quick] [--rounds N] [--tsv FILE] [--svg FILE]
#                [--peers LIST] [--bw-mib N] [--no-engine]
#                [--pin both|pinned|unpinned]
#   bench/run.sh ring|tcp|all|reconnect [ARGS...]
#   bench/run.sh engine [--quick] [--rounds N] [--tsv FILE] [--bw-mib N]
#
# engine runs bench/engine_compare.sh: engine_bench (the transfer engine
# over tcp:// and mem:// against raw TCP and memcpy) and UCX RMA
# (peers/ucx_rma_peer.c) alternately, one table of medians and ratios.
# compare measures them too, in its rounds with the others.
#
# compare (the default) measures tagwire and every peer alternately in one
# run: it installs the peers (bench/peers/) and gnuplot when they are
# missing and it is root, builds, then runs ring_bench, tcp_bench,
# engine_bench, each peer and UCX RMA (over tcp and over shm) for one round
# each, round after round in an order that rotates, and
# writes one TSV of every figure with the medians and each figure's ratio
# to its baseline of the same run (default bench/results/perf.tsv, the
# programs' own output next to it as perf.log), prints the table and draws
# docs/perf.svg.  Every program runs pinned (its two parties on two CPUs)
# and unpinned (left to the scheduler) in each round unless --pin picks
# one.  bench/compare.sh does that; see bench/README.md.
#
# ring runs ring_bench, tcp runs tcp_bench, all runs both, one after the
# other; reconnect runs reconnect_bench, which all leaves out (it kills
# connections with ss -K, as root).  The arguments go to the benchmark, e.g.
#
#   bench/run.sh all                  both, full runs
#   bench/run.sh all --quick          both, smoke runs, well under a minute each
#   bench/run.sh ring --tsv r.tsv     ring_bench only, also writing every figure
#   bench/run.sh tcp --cpus 2,3       tcp_bench only, ranks pinned to CPUs 2 and 3
#   bench/run.sh python --quick       the Python module against pyzmq and mpi4py
#
# With all, --quick, --rounds N and --bw-mib N go to both; --slots N and
# --slot-bytes N only to ring_bench; --cpus A,B and --tls only to tcp_bench;
# --no-pin to both; and
# --tsv FILE.tsv becomes FILE-ring.tsv and FILE-tcp.tsv, since the two write
# different columns.  The exit status is the first non-zero one.
#
# BUILD_DIR overrides the build folder (relative to the repository root).
set -euo pipefail

cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
jobs=$(nproc 2>/dev/null || echo 2)

what=compare
case "${1:-}" in
compare | ring | tcp | all | reconnect | engine | python)
	what=$1
	shift
	;;
esac
[ "$what" != compare ] || exec bench/compare.sh "$@"
# engine: the transfer engine, raw TCP, memcpy and UCX RMA, alternately.
[ "$what" != engine ] || exec bench/engine_compare.sh "$@"
# python: the Python module beside pyzmq, mpi4py and tagwire's C figure.
[ "$what" != python ] || exec bench/python_compare.sh "$@"

run() {
	printf '+ %s\n' "$*"
	"$@"
}

case $what in
ring) targets=(ring_bench) ;;
tcp) targets=(tcp_bench) ;;
all) targets=(ring_bench tcp_bench) ;;
reconnect) targets=(reconnect_bench) ;;
esac

run cmake -S bench -B "$build" -DCMAKE_BUILD_TYPE=Release --log-level=WARNING
run cmake --build "$build" --target "${targets[@]}" -j "$jobs"

if [ "$what" != all ]; then
	run "$build/${what}_bench" "$@"
	exit
fi

# all: split the arguments between the two benchmarks.  An option that
# lacks its value goes to both as it is, so that they report it.
ring_args=()
tcp_args=()
while [ $# -gt 0 ]; do
	opt=$1
	shift
	case $opt in
	--tls) tcp_args+=("$opt") ;;
	--slots | --slot-bytes | --cpus | --tsv | --rounds | --bw-mib)
		if [ $# -eq 0 ]; then
			ring_args+=("$opt")
			tcp_args+=("$opt")
			continue
		fi
		val=$1
		shift
		case $opt in
		--slots | --slot-bytes) ring_args+=("$opt" "$val") ;;
		--cpus) tcp_args+=("$opt" "$val") ;;
		--tsv)
			ring_args+=("$opt" "${val%.tsv}-ring.tsv")
			tcp_args+=("$opt" "${val%.tsv}-tcp.tsv")
			;;
		*)
			ring_args+=("$opt" "$val")
			tcp_args+=("$opt" "$val")
			;;
		esac
		;;
	*)
		ring_args+=("$opt")
		tcp_args+=("$opt")
		;;
	esac
done

status=0
run "$build/ring_bench" ${ring_args[@]+"${ring_args[@]}"} || status=$?
echo
run "$build/tcp_bench" ${tcp_args[@]+"${tcp_args[@]}"} || {
	rc=$?
	[ "$status" -ne 0 ] || status=$rc
}
exit "$status"

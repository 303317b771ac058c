#!/usr/bin/env bash
# Sweeps the collectives over party counts and sizes with `tagwire perf
# --test coll` and sets each figure beside the bandwidth bound: the bytes
# each party must receive (allgather: (n-1)·m, broadcast: m) over the
# one-pair bandwidth of `tagwire perf --test bw` at the same size, measured
# in the same run.  A ratio near 1 means the algorithm moves data as fast
# as one pair of parties can; on a host with fewer cores than parties it
# cannot get there, since the parties share the CPUs.
#
#   bench/coll_sweep.sh [--quick] [--transports LIST] [--parties LIST]
#                       [--sizes LIST] [--shm-max N] [--traffic-mib N]
#                       [--duration S] [--tagwire PATH] [--out FILE]
#                       [--plot FILE.svg]
#
# Defaults: tcp and shm, parties 2,4,8,16,32,64 (shm up to --shm-max, 64),
# sizes 8 B to 16 MiB in powers of 16 (and 16 MiB), about --duration 0.05 s
# per figure.  A point whose allgather would move more than --traffic-mib
# MiB in all (n·(n-1)·m; default 1024) is left out of both tests, so that
# the default run stays within a few minutes on two CPUs.  --quick: tcp
# with 2 and 4 parties, 8 B and 64 KiB, 0.01 s each.
#
# TAGWIRE_COLL_FORCE=small (Bruck and the binomial tree at every size) or
# large (ring and scatter + ring at every size) in the environment is
# passed on, to compare the algorithms; the algorithm column says which
# ran.
#
# Output (stdout, or --out): a TSV with a header,
#   transport parties test size algorithm op_us bw_gbps bound_us ratio
# op_us the mean time per call over the parties; bound_us the bound above
# (empty for 0 bytes); ratio op_us / bound_us.
#
# --plot FILE.svg: also draws the TSV with gnuplot (bench/coll_plot.gp):
# time per call against size and against parties, per transport and test,
# beside the bound; the title names the commit and the machine.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
tagwire="$here/build/tools/tagwire/tagwire"
transports=tcp,shm
parties=2,4,8,16,32,64
sizes=8,128,2K,32K,512K,8M,16M
shm_max=64
traffic_mib=1024
duration=0.05
out=
plot=

usage() {
	sed -n '2,/^set -e/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--quick)
		transports=tcp parties=2,4 sizes=8,64K duration=0.01
		;;
	--transports) transports=$2; shift ;;
	--parties) parties=$2; shift ;;
	--sizes) sizes=$2; shift ;;
	--shm-max) shm_max=$2; shift ;;
	--traffic-mib) traffic_mib=$2; shift ;;
	--duration) duration=$2; shift ;;
	--tagwire) tagwire=$2; shift ;;
	--out) out=$2; shift ;;
	--plot) plot=$2; shift ;;
	-h | --help) usage ;;
	*) echo "coll_sweep.sh: unknown argument $1" >&2; usage ;;
	esac
	shift
done
[ -x "$tagwire" ] || {
	echo "coll_sweep.sh: no $tagwire (make build, or --tagwire PATH)" >&2
	exit 2
}
if [ -n "$plot" ] && ! command -v gnuplot >/dev/null; then
	echo "coll_sweep.sh: --plot needs gnuplot (apt-get install gnuplot-nox)" >&2
	exit 2
fi

# Bytes of a size as perf reads it: K, M, G multiply by 1024.
bytes() {
	local s=$1
	case $s in
	*K) echo $((${s%K} * 1024)) ;;
	*M) echo $((${s%M} * 1024 * 1024)) ;;
	*G) echo $((${s%G} * 1024 * 1024 * 1024)) ;;
	*) echo "$s" ;;
	esac
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

sweep() {
	printf 'transport\tparties\ttest\tsize\talgorithm\top_us\tbw_gbps\tbound_us\tratio\n'
	IFS=, read -r -a tlist <<<"$transports"
	IFS=, read -r -a plist <<<"$parties"
	IFS=, read -r -a slist <<<"$sizes"
	for t in "${tlist[@]}"; do
		# The one-pair bandwidth at each size, in this run.
		"$tagwire" perf --transport "$t" --test bw --sizes "$sizes" \
			--duration "$duration" --csv >"$tmp/bw.csv"
		for n in "${plist[@]}"; do
			if [ "$t" = shm ] && [ "$n" -gt "$shm_max" ]; then
				continue
			fi
			keep=
			for s in "${slist[@]}"; do
				b=$(bytes "$s")
				if [ $((n * (n - 1) * b)) -le $((traffic_mib * 1048576)) ]; then
					keep=${keep:+$keep,}$s
				fi
			done
			[ -n "$keep" ] || continue
			"$tagwire" perf --transport "$t" --test coll --parties "$n" \
				--sizes "$keep" --duration "$duration" --timeout 600 \
				--csv >"$tmp/coll.csv"
			awk -F, -v OFS='\t' '
				FNR == 1 { next }
				FILENAME == ARGV[1] { bw[$3] = $9; next }
				$2 == "barrier" { next }
				{
					n = $5; m = $3; g = bw[m]
					need = $2 == "allgather" ? (n - 1) * m : m
					bound = need > 0 && g > 0 ? need / (g * 1e3) : ""
					ratio = bound != "" ? sprintf("%.2f", $11 / bound) : ""
					if (bound != "")
						bound = sprintf("%.1f", bound)
					print $1, n, $2, m, $12, sprintf("%.1f", $11), g,
					    bound, ratio
				}' "$tmp/bw.csv" "$tmp/coll.csv"
		done
	done
}

if [ -n "$out" ]; then
	sweep >"$out"
	tsv=$out
elif [ -n "$plot" ]; then
	sweep | tee "$tmp/coll.tsv"
	tsv=$tmp/coll.tsv
else
	sweep
fi
[ -n "$plot" ] || exit 0

# The picture's title: the commit measured (-dirty when tracked files
# differ from it), the day and the machine in a few words, as
# bench/compare.sh names them.
commit=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] && [ -n "$(git -C "$here" status --porcelain \
	--untracked-files=no 2>/dev/null)" ]; then
	commit+=-dirty
fi
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null |
	head -n 1)
cpu=${cpu:-unknown}
ncores=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null) || ncores='?'
cpu_short=$(printf '%s\n' "$cpu" |
	sed -e 's/([RrTtMm]*)//g' -e 's/ CPU / /' -e 's/  */ /g')
title="tagwire $commit, collectives, $(date -u +%Y-%m-%d): $ncores x $cpu_short"
sub="$transports; parties $parties (shm up to $shm_max); sizes $sizes;"
sub+=" up to $traffic_mib MiB per allgather; about $duration s per figure;"
sub+=" mean time per call over the parties; dashed: the bandwidth bound"
if ! gnuplot -c "$here/bench/coll_plot.gp" "$tsv" "$plot" "$title" "$sub" \
	2>"$tmp/gnuplot.log"; then
	echo "coll_sweep.sh: gnuplot failed, no picture:" >&2
	sed 's/^/    /' "$tmp/gnuplot.log" >&2
	exit 1
fi
echo "coll_sweep.sh: picture: $plot" >&2

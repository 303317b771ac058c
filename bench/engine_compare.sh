#!/usr/bin/env bash
# The engine mode of bench/run.sh: the transfer engine (engine_bench) and
# UCX's one-sided RMA (peers/ucx_rma_peer.c, put/get + flush over UCX_TLS=tcp
# and UCX_TLS=sm) measured alternately in one run, every bandwidth as a
# ratio to a baseline of that run (eng-tcp: raw-ack, one raw TCP stream
# acknowledging each block; eng-mem: memcpy).  See bench/README.md.
#
#   bench/run.sh engine [--quick] [--rounds N] [--tsv FILE] [--bw-mib N]
#                       [--no-ucx]
#
# Each round runs engine_bench --rounds 1, ucx_rma_peer over tcp and over
# shm, in an order that rotates from round to round.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
jobs=$(nproc 2>/dev/null || echo 2)

usage() {
	cat <<'USAGE'
usage: bench/run.sh engine [--quick] [--rounds N] [--tsv FILE] [--bw-mib N]
                           [--no-ucx]
  --quick      2 rounds, 32 MiB and at most 2000 transfers per figure
  --rounds N   rounds (default 5, quick 2)
  --tsv FILE   the TSV (default bench/results/engine.tsv); the programs'
               output goes next to it, FILE without .tsv plus .log
  --bw-mib N   MiB moved per figure (default 256, quick 32)
  --no-ucx     leave out UCX RMA
USAGE
}

quick=0 rounds= tsv=bench/results/engine.tsv bw_mib= ucx=1
orig_args=("$@")
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--no-ucx) ucx=0 ;;
	--rounds | --tsv | --bw-mib)
		[ $# -ge 2 ] || { usage >&2; exit 2; }
		case $1 in
		--rounds) rounds=$2 ;;
		--tsv) tsv=$2 ;;
		--bw-mib) bw_mib=$2 ;;
		esac
		shift
		;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done
if [ "$quick" = 1 ]; then
	rounds=${rounds:-2} bw_mib=${bw_mib:-32} max_xfers=2000 limit=300
else
	rounds=${rounds:-5} bw_mib=${bw_mib:-256} max_xfers=20000 limit=1500
fi
[[ $rounds =~ ^[1-9][0-9]?$ ]] || { echo "--rounds: 1 to 99" >&2; exit 2; }
[[ $bw_mib =~ ^[1-9][0-9]{0,5}$ ]] || { echo "--bw-mib: MiB" >&2; exit 2; }
[ "$bw_mib" -ge 16 ] || bw_mib=16 # ucx_rma_peer takes 16 or more

run() {
	printf '+ %s\n' "$*"
	"$@"
}
say() { printf '%s\n' "$*"; }
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown; }

log=${tsv%.tsv}.log
mkdir -p "$(dirname "$tsv")" "$build"
work=$(mktemp -d "${TMPDIR:-/tmp}/tw-engine.XXXXXX")
trap 'rm -rf "$work"' EXIT
: >"$log"
status=0

run cmake -S bench -B "$build" -DCMAKE_BUILD_TYPE=Release --log-level=WARNING
run cmake --build "$build" --target engine_bench -j "$jobs"

progs=(engine_bench)
why_ucx=
if [ "$ucx" = 1 ]; then
	say "+ bench/peers/run.sh --build-only --only ucx-rma"
	rc=0
	BUILD_DIR=$PWD/$build/peers timeout -k 10 1800 bench/peers/run.sh \
		--build-only --only ucx-rma --tsv "$work/peers.tsv" || rc=$?
	if grep -q $'^ucx-rma\tready' "$work/peers.tsv" 2>/dev/null; then
		progs+=(ucx-tcp ucx-shm)
	else
		why_ucx=$(cut -f3 "$work/peers.tsv" 2>/dev/null || true)
		why_ucx="UCX RMA not measured: ${why_ucx:-build failed (exit status $rc)}"
		say "$why_ucx"
	fi
fi

cmd_of() { # program, round, TSV file -> the command, one word per line
	local t=(timeout -k 10 "$limit")
	case $1 in
	engine_bench)
		local q=()
		[ "$quick" = 1 ] && q=(--quick)
		printf '%s\n' "${t[@]}" "$build/engine_bench" --rounds 1 \
			"${q[@]}" --bw-mib "$bw_mib" --tsv "$3"
		;;
	ucx-*)
		printf '%s\n' "${t[@]}" "$build/peers/ucx_rma_peer" \
			--transport "${1#ucx-}" --round "$2" --bw-mib "$bw_mib" \
			--lat-iters "$max_xfers" --watchdog "$((limit - 15))"
		;;
	esac
}

rows=$work/rows.tsv
: >"$rows"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -n 1)
load_start=$(load)
date_utc=$(date -u '+%Y-%m-%d %H:%M:%S')
started=$SECONDS
say ""
say "# engine: $rounds round(s), $bw_mib MiB per figure; nproc $(nproc), CPU \"${cpu:-unknown}\"; load $load_start"
say "# every program's own output goes to $log"
n=${#progs[@]}
for ((r = 1; r <= rounds; r++)); do
	for ((k = 0; k < n; k++)); do
		prog=${progs[$(((k + r - 1) % n))]}
		out=$work/$r-$prog.tsv
		mapfile -t cmd < <(cmd_of "$prog" "$r" "$out")
		say "+ ${cmd[*]}"
		printf '\n### round %d/%d: %s\n\n' "$r" "$rounds" "${cmd[*]}" >>"$log"
		start=$SECONDS
		rc=0
		case $prog in
		ucx-*) "${cmd[@]}" >"$out" 2>>"$log" </dev/null || rc=$? ;;
		*) "${cmd[@]}" >>"$log" 2>&1 </dev/null || rc=$? ;;
		esac
		got=0
		if [ -s "$out" ]; then
			awk -v round="$r" -f bench/merge.awk "$out" >"$work/new.tsv"
			got=$(wc -l <"$work/new.tsv")
			cat "$work/new.tsv" >>"$rows"
		fi
		if [ "$rc" -eq 0 ] && [ "$got" -gt 0 ]; then
			say "round $r/$rounds $prog: $got figures ($((SECONDS - start)) s)"
		else
			status=1
			say "round $r/$rounds $prog: FAILED (exit status $rc), $got figures kept; the end of its output:"
			tail -n 8 "$log" | sed 's/^/    /'
		fi
	done
done

tcp_c="write s1,read s1,send s1,write s2,read s2,send s2,write s4,read s4,send s4,raw-ack,raw-stream"
mem_c="write,read,send,memcpy"
[ "$ucx" = 1 ] && tcp_c+=",ucx put,ucx get" && mem_c+=",ucx put,ucx get"
contenders="eng-tcp=$tcp_c;eng-mem=$mem_c"
summarize() { awk -v mode="$1" -v contenders="$contenders" -f bench/summarize.awk "$rows"; }
{
	say "# the transfer engine, raw TCP, memcpy and UCX RMA, measured alternately in one run"
	say "# command: bench/run.sh engine${orig_args[*]:+ ${orig_args[*]}}"
	say "# date (UTC): $date_utc; tagwire $(git describe --always --dirty 2>/dev/null || echo unknown); UCX $(dpkg-query -W -f '${Version}' libucx-dev 2>/dev/null || echo none)"
	say "# machine: nproc $(nproc), CPU \"${cpu:-unknown}\", kernel $(uname -r)"
	say "# load average at the start: $load_start; at the end: $(load)"
	say "# rounds $rounds; $bw_mib MiB per figure; order rotates: ${progs[*]}"
	say "# baselines (bandwidth): eng-tcp raw-ack, eng-mem memcpy"
	printf 'section\tworkload\tcontender\tmetric\tunit\tround\tvalue\n'
	cat "$rows"
	summarize rows
} >"$tsv"
table=$(summarize table)
say "$table"
printf '\n%s\n' "$table" >>"$log"
[ -z "$why_ucx" ] || say "$why_ucx"
say ""
say "Load average at the end: $(load); $((SECONDS - started)) s of measuring."
say "TSV: $tsv"
exit "$status"

#!/usr/bin/env bash
# The compare mode of bench/run.sh, which runs this script with the
# arguments that follow the mode: tagwire and its peers measured
# alternately in one run, every figure as a ratio to a baseline of that
# run.  See bench/README.md.
#
# Each program runs one round at a time (--rounds 1), and the order of the
# programs rotates from round to round, so that every contender meets the
# same conditions (other load, the hypervisor's placement of the vCPUs) as
# its baseline.  The programs: ring_bench, tcp_bench, engine_bench (the
# transfer engine against raw TCP and memcpy, sections eng-tcp and eng-mem),
# the peers through bench/peers/run.sh, and UCX RMA (peers/ucx_rma_peer.c,
# the engine's peer) over tcp and over shm as two programs of its own.
#
# Every program runs pinned (its two parties on two CPUs of their own) and
# unpinned (both left to the scheduler) in every round, the two runs of a
# program next to each other in the rotating order, so that each pinning
# has its own baselines measured under the same conditions.  --pin picks
# one of the two.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
jobs=$(nproc 2>/dev/null || echo 2)

run() {
	printf '+ %s\n' "$*"
	"$@"
}

usage() {
	cat <<'EOF'
usage: bench/run.sh [compare] [--quick] [--rounds N] [--tsv FILE] [--svg FILE]
                    [--peers LIST] [--bw-mib N] [--no-engine]
                    [--pin both|pinned|unpinned]
  --quick        a smoke run: 2 rounds, and each program's --quick
  --rounds N     rounds (default 5, quick 2)
  --tsv FILE     the TSV (default bench/results/perf.tsv); the programs'
                 output goes next to it, FILE without .tsv plus .log
  --svg FILE     the picture (default docs/perf.svg)
  --peers LIST   comma-separated peers out of zmq,nng,openmpi,ucx,ucx-rma
                 (default all), or none; ucx-rma is UCX put/get, the
                 engine's peer
  --bw-mib N     MiB streamed per bandwidth figure (default 1024, quick 64;
                 the engine rows: default 256, quick 32)
  --no-engine    leave out engine_bench (and with it the engine's
                 baselines raw-ack and memcpy of eng-tcp and eng-mem)
  --pin WHICH    pinned: each program's two parties on two CPUs of their
                 own; unpinned: both left to the scheduler; both (the
                 default): each program both ways in every round
EOF
}

quick=0
rounds=
tsv=bench/results/perf.tsv
svg=docs/perf.svg
peers_opt=zmq,nng,openmpi,ucx,ucx-rma
bw_mib=
engine=1
pin_opt=both
orig_args=("$@")
while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--no-engine) engine=0 ;;
	--rounds | --tsv | --svg | --peers | --bw-mib | --pin)
		[ $# -ge 2 ] || {
			usage >&2
			exit 2
		}
		case $1 in
		--rounds) rounds=$2 ;;
		--tsv) tsv=$2 ;;
		--svg) svg=$2 ;;
		--peers) peers_opt=$2 ;;
		--bw-mib) bw_mib=$2 ;;
		--pin) pin_opt=$2 ;;
		esac
		shift
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		echo "bench/run.sh: compare takes no '$1' (ring, tcp or all" \
			"first passes options to the programs)" >&2
		usage >&2
		exit 2
		;;
	esac
	shift
done
if [ -n "$rounds" ] && ! [[ $rounds =~ ^[1-9][0-9]?$ ]]; then
	echo "bench/run.sh: --rounds needs a number from 1 to 99" >&2
	exit 2
fi
if [ -n "$bw_mib" ] && ! [[ $bw_mib =~ ^[1-9][0-9]{0,5}$ ]]; then
	echo "bench/run.sh: --bw-mib needs a number of MiB" >&2
	exit 2
fi
case $pin_opt in
both) pins=(pinned unpinned) ;;
pinned | unpinned) pins=("$pin_opt") ;;
*)
	echo "bench/run.sh: --pin needs both, pinned or unpinned" >&2
	exit 2
	;;
esac
peers=()
if [ "$peers_opt" != none ]; then
	IFS=, read -r -a peers <<<"$peers_opt"
	for p in "${peers[@]}"; do
		case $p in
		zmq | nng | openmpi | ucx | ucx-rma) ;;
		*)
			echo "bench/run.sh: unknown peer '$p' (zmq, nng, openmpi," \
				"ucx, ucx-rma, none)" >&2
			exit 2
			;;
		esac
	done
fi

if [ "$quick" = 1 ]; then
	rounds=${rounds:-2}
	limit=300 # seconds per program run of one round
	# UCX RMA moves what engine_bench --quick does: 32 MiB and at most
	# 2,000 transfers per figure.
	rma_mib=32 rma_xfers=2000
else
	rounds=${rounds:-5}
	limit=1500
	rma_mib=256 rma_xfers=20000
fi
prog_args=(--rounds 1)
smoke=
if [ "$quick" = 1 ]; then
	prog_args+=(--quick)
	smoke=" (--quick: a smoke run, figures are rough)"
fi
[ -n "$bw_mib" ] && prog_args+=(--bw-mib "$bw_mib")
# engine_bench and UCX RMA keep their own default bytes per figure (256 MiB,
# quick 32) unless --bw-mib says otherwise; ucx_rma_peer takes 16 or more.
if [ -n "$bw_mib" ]; then
	rma_mib=$bw_mib
	[ "$rma_mib" -ge 16 ] || rma_mib=16
fi

# The commit measured, before anything is built or written: the TSV's
# header and the picture's title name it, -dirty when tracked files
# differ from it.
rev=$(git describe --always --dirty 2>/dev/null || echo unknown)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ "$commit" != unknown ] &&
	[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	commit+=-dirty
fi

log=${tsv%.tsv}.log
mkdir -p "$(dirname "$tsv")" "$(dirname "$svg")" "$build"
work=$(mktemp -d "${TMPDIR:-/tmp}/tw-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT
: >"$log"
status=0

say() { printf '%s\n' "$*"; }
show() { printf '+ %s\n' "$*"; }
load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown; }

# ---------------------------------------------------------------------------
# Packages and builds
# ---------------------------------------------------------------------------

# shellcheck disable=SC2034 # pkgs.sh writes to it
apt_log=$build/apt.log
# shellcheck source=bench/pkgs.sh disable=SC1091
. bench/pkgs.sh

plot=1
if ! command -v gnuplot >/dev/null; then
	why=
	if ! ensure_pkgs gnuplot-nox || ! command -v gnuplot >/dev/null; then
		say "no gnuplot, so no picture: ${why:-gnuplot is not on PATH}"
		plot=0
	fi
fi

run cmake -S bench -B "$build" -DCMAKE_BUILD_TYPE=Release --log-level=WARNING
targets=(ring_bench tcp_bench probe)
[ "$engine" = 0 ] || targets+=(engine_bench)
run cmake --build "$build" --target "${targets[@]}" -j "$jobs"
# Where bench/peers/run.sh builds the peer programs (its BUILD_DIR).
peers_build=${BUILD_DIR:-bench/peers/build}

# The peers that built; those that did not are reported (why_not), and
# their cells in the table read n/a.
declare -A why_not=()
ready=()
if [ ${#peers[@]} -gt 0 ]; then
	peers_list=$(
		IFS=,
		echo "${peers[*]}"
	)
	show "bench/peers/run.sh --build-only --only $peers_list"
	rc=0
	timeout -k 10 3600 bench/peers/run.sh --build-only \
		--only "$peers_list" --tsv "$work/peers.tsv" || rc=$?
	for p in "${peers[@]}"; do
		line=$(awk -F'\t' -v p="$p" '$1 == p' "$work/peers.tsv" 2>/dev/null)
		case $line in
		*$'\tready\t'*) ready+=("$p") ;;
		*)
			why=${line#*$'\tskipped\t'}
			[ -n "$line" ] || why="bench/peers/run.sh --build-only failed (exit status $rc)"
			why_not[$p]="not measured: $why"
			;;
		esac
	done
fi

# ---------------------------------------------------------------------------
# Rounds
# ---------------------------------------------------------------------------

progs=(ring_bench tcp_bench)
[ "$engine" = 0 ] || progs+=(engine_bench)
for p in ${ready[@]+"${ready[@]}"}; do
	case $p in
	# UCX RMA is run directly, one program per transport, like
	# bench/run.sh engine does.
	ucx-rma) progs+=(ucx-rma-tcp ucx-rma-shm) ;;
	*) progs+=("peer:$p") ;;
	esac
done

# Each program once per pinning, the two next to each other:
# ring_bench@pinned ring_bench@unpinned tcp_bench@pinned ...
runs=()
for p in "${progs[@]}"; do
	for pin in "${pins[@]}"; do
		runs+=("$p@$pin")
	done
done

# The peer a program belongs to ("" for tagwire's own programs).
peer_of() {
	case $1 in
	peer:*) echo "${1#peer:}" ;;
	ucx-rma-*) echo ucx-rma ;;
	esac
}

# The option that gives a program the pinning $2.  Each keeps the default
# of its own command line: engine_bench runs unpinned unless told, the
# others pinned.
pin_args() { # program, pinning -> the options, one word per line
	case $1:$2 in
	engine_bench:pinned) echo --pin ;;
	engine_bench:unpinned | *:pinned) ;;
	*:unpinned) echo --no-pin ;;
	esac
}

cmd_of() { # program, pinning, TSV file, round -> the command, one word per line
	local t=(timeout -k 10 "$limit") pa
	mapfile -t pa < <(pin_args "$1" "$2")
	case $1 in
	peer:*)
		printf '%s\n' "${t[@]}" bench/peers/run.sh --prebuilt \
			--only "${1#peer:}" "${prog_args[@]}" ${pa[@]+"${pa[@]}"} \
			--tsv "$3"
		;;
	engine_bench)
		# Its own bytes per figure unless --bw-mib was given.
		local a=(--rounds 1)
		[ "$quick" = 1 ] && a+=(--quick)
		[ -n "$bw_mib" ] && a+=(--bw-mib "$bw_mib")
		printf '%s\n' "${t[@]}" "$build/engine_bench" "${a[@]}" \
			${pa[@]+"${pa[@]}"} --tsv "$3"
		;;
	ucx-rma-*)
		# The TSV goes to stdout (see the rounds below).
		printf '%s\n' "${t[@]}" "$peers_build/ucx_rma_peer" \
			--transport "${1#ucx-rma-}" --round "$4" \
			--bw-mib "$rma_mib" --lat-iters "$rma_xfers" \
			--watchdog "$((limit - 15))" ${pa[@]+"${pa[@]}"}
		;;
	*)
		printf '%s\n' "${t[@]}" "$build/$1" "${prog_args[@]}" \
			${pa[@]+"${pa[@]}"} --tsv "$3"
		;;
	esac
}

rows=$work/rows.tsv
: >"$rows"
# round, program@pinning, the probe's figure (ns, or n/a): see probe.c.
probes=$work/probes.tsv
: >"$probes"
declare -A dropped=()
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null |
	head -n 1)
cpu=${cpu:-unknown}
ncpu=$(nproc 2>/dev/null || echo '?')
# The picture's title: the machine in a few words.
ncores=$(grep -c '^processor' /proc/cpuinfo 2>/dev/null) || ncores='?'
cpu_short=$(printf '%s\n' "$cpu" |
	sed -e 's/([RrTtMm]*)//g' -e 's/ CPU / /' -e 's/  */ /g')
date_utc=$(date -u '+%Y-%m-%d %H:%M:%S')
load_start=$(load)
started=$SECONDS

say ""
say "# $rounds round(s)$smoke; nproc $ncpu, CPU \"$cpu\";" \
	"load average $load_start"
say "# every program's own output goes to $log"
n=${#runs[@]}
for ((r = 1; r <= rounds; r++)); do
	for ((k = 0; k < n; k++)); do
		run_id=${runs[$(((k + r - 1) % n))]}
		prog=${run_id%@*} pin=${run_id##*@}
		[ -z "${dropped[$run_id]:-}" ] || continue
		out=$work/$r-${prog#peer:}-$pin.tsv
		mapfile -t cmd < <(cmd_of "$prog" "$pin" "$out" "$r")
		# Where the hypervisor has the two CPUs now (probe.c).
		probe_ns=$(timeout -k 5 30 "$build/probe" 2>>"$log") || probe_ns=
		[[ $probe_ns =~ ^[0-9]+$ ]] || probe_ns=n/a
		printf '%s\t%s\t%s\n' "$r" "${prog#peer:}@$pin" "$probe_ns" >>"$probes"
		show "${cmd[*]}"
		printf '\n### round %d/%d: %s (placement probe %s ns)\n\n' \
			"$r" "$rounds" "${cmd[*]}" "$probe_ns" >>"$log"
		start=$SECONDS
		rc=0
		case $prog in
		ucx-rma-*) "${cmd[@]}" >"$out" 2>>"$log" </dev/null || rc=$? ;;
		*) "${cmd[@]}" >>"$log" 2>&1 </dev/null || rc=$? ;;
		esac
		got=0
		if [ -s "$out" ]; then
			awk -v round="$r" -v pinning="$pin" -v probe="$probe_ns" \
				-f bench/merge.awk "$out" >"$work/new.tsv"
			got=$(wc -l <"$work/new.tsv")
			cat "$work/new.tsv" >>"$rows"
		fi
		took=$((SECONDS - start))
		if [ "$rc" -eq 0 ] && [ "$got" -gt 0 ]; then
			say "round $r/$rounds ${prog#peer:} ($pin): $got figures" \
				"($took s; placement probe $probe_ns ns)"
			continue
		fi
		case $rc in
		0) what="no figures" ;;
		124 | 137) what="timed out after $limit s" ;;
		*) what="exit status $rc" ;;
		esac
		status=1
		say "round $r/$rounds ${prog#peer:} ($pin): FAILED, $what," \
			"$got figures kept ($took s); the end of its output:"
		tail -n 8 "$log" | sed 's/^/    /'
		case $prog in
		peer:* | ucx-rma-*)
			# The baselines run every round; a peer that failed is
			# left out of the rounds to come, in that pinning.
			dropped[$run_id]=1
			p=$(peer_of "$prog")
			what="FAILED in round $r ($what), left out from then on"
			[ "$prog" = "peer:$p" ] || what="over ${prog#ucx-rma-}: $what"
			what="$pin: $what"
			why_not[$p]="${why_not[$p]:+${why_not[$p]}; }$what"
			;;
		*) why_not[$prog]="${why_not[$prog]:+${why_not[$prog]}; }$pin: FAILED in round $r ($what)" ;;
		esac
	done
done

# ---------------------------------------------------------------------------
# The TSV, the table, the picture
# ---------------------------------------------------------------------------

# The contenders meant to be measured: one without figures reads n/a.
shm_c="memcpy,bare ring,tw_ring,shm link"
tcp_c="raw-blocking,raw-busy-poll,tagwire"
eng_tcp_c='' eng_mem_c=''
if [ "$engine" = 1 ]; then
	eng_tcp_c="raw-ack,raw-stream"
	for st in 1 2 4; do
		eng_tcp_c+=",write s$st,read s$st,send s$st"
	done
	eng_mem_c="memcpy,write,read,send"
fi
for p in ${peers[@]+"${peers[@]}"}; do
	case $p in
	ucx-rma)
		eng_tcp_c+="${eng_tcp_c:+,}ucx put,ucx get"
		eng_mem_c+="${eng_mem_c:+,}ucx put,ucx get"
		continue
		;;
	openmpi | ucx) shm_c+=",$p" ;;
	esac
	tcp_c+=",$p"
done
contenders="shm=$shm_c;tcp=$tcp_c"
[ -z "$eng_tcp_c" ] || contenders+=";eng-tcp=$eng_tcp_c;eng-mem=$eng_mem_c"
pinnings=$(
	IFS=,
	echo "${pins[*]}"
)
# The probes of each round on one line, and whether the placement of the
# two CPUs changed during the run: the probe's figure differs by more than
# twice between programs, whose cross-program ratios then compare figures
# of differently placed CPUs.
placements() {
	awk -F'\t' -v rounds="$rounds" '
		{ line[$1] = line[$1] " " $2 " " $3 }
		$3 ~ /^[0-9]+$/ {
			if (lo == "" || $3 + 0 < lo + 0) lo = $3
			if (hi == "" || $3 + 0 > hi + 0) hi = $3
		}
		END {
			print "# placement probe (bench/probe.c: one-way ns of a" \
			    " cache line between the two CPUs, just before each" \
			    " program):"
			for (r = 1; r <= rounds; r++)
				if (r in line)
					print "#   round " r ":" line[r]
			if (lo == "")
				print "#   no figures"
			else if (hi + 0 > 2 * lo)
				print "#   the placement changed during the run (" \
				    lo " to " hi " ns): ratios across programs" \
				    " compare figures of differently placed CPUs" \
				    " where their probes differ"
			else
				print "#   one placement throughout (" lo " to " \
				    hi " ns)"
		}' "$probes"
}

# summarize MODE [PLACEMENT]: see bench/summarize.awk.
summarize() {
	awk -v mode="$1" -v placement="${2:-}" -v near_ns="$near_ns" \
		-v contenders="$contenders" -v pinnings="$pinnings" \
		-f bench/summarize.awk "$rows"
}

# A probe under near_ns: the two CPUs share a cache (probe.c).
near_ns=150
# How many of each program's rounds ran in placement $1 (near or far),
# on one line; nothing when none did.
placed_rounds() {
	awk -F'\t' -v want="$1" -v near_ns="$near_ns" '
		!($2 in all) { name[++n] = $2 }
		{ all[$2]++ }
		$3 ~ /^[0-9]+$/ && (want == "near") == ($3 + 0 < near_ns) {
			hit[$2]++; any = 1
		}
		END {
			if (!any)
				exit
			for (i = 1; i <= n; i++)
				line = line (i > 1 ? ", " : "") name[i] " " \
				    hit[name[i]] + 0 "/" all[name[i]]
			print line
		}' "$probes"
}

placed=$(placements)

version_of() {
	case $1 in
	zmq) echo "ZeroMQ $(version libzmq3-dev)" ;;
	nng) echo "nng $(version libnng-dev)" ;;
	openmpi) echo "Open MPI $(version openmpi-bin)" ;;
	ucx) echo "UCX $(version libucx-dev)" ;;
	esac
}
versions=
for p in ${peers[@]+"${peers[@]}"}; do
	# ucx-rma is UCX too: named once.
	[ "$p" != ucx-rma ] || [[ ",$peers_opt," != *,ucx,* ]] || continue
	[ "$p" != ucx-rma ] || p=ucx
	versions+="${versions:+, }$(version_of "$p")"
done
{
	say "# tagwire and its peers, measured alternately in one run;" \
		"every ratio is to a baseline of the same run"
	say "# command: bench/run.sh compare${orig_args[*]:+ ${orig_args[*]}}"
	say "# date (UTC): $date_utc; tagwire $rev; peers: ${versions:-none}"
	say "# machine: nproc $ncpu, CPU \"$cpu\", kernel $(uname -r)"
	say "# load average (1, 5, 15 min) at the start: $load_start; at the end: $(load)"
	say "# rounds $rounds$smoke; the order of the programs rotates" \
		"from round to round: ${runs[*]#peer:}"
	say "# pinning: pinned, each program's two parties on two CPUs of" \
		"their own (the first two allowed); unpinned, both left to the" \
		"scheduler; every ratio is to the baseline measured with the" \
		"same pinning"
	say "# baselines: shm: bare ring (latency, rate), memcpy (bandwidth);" \
		"tcp: raw-busy-poll (latency), raw-blocking (bandwidth, rate);" \
		"eng-tcp: raw-ack (bandwidth); eng-mem: memcpy (bandwidth)"
	[ -z "$eng_tcp_c" ] || say "# engine_bench and UCX RMA:" \
		"${bw_mib:-$rma_mib} MiB and at most $rma_xfers transfers per" \
		"figure; the batch 1024x4 KiB has no baseline, so no ratio"
	say "# round: 1..N one round's figure, median: the median over the" \
		"rounds, ratio: the median over the baseline's median"
	printf '%s\n' "$placed"
	say "# probe_ns: the placement probe of the program's round (bench/probe.c);" \
		"awk -v mode=table -v placement=near -f bench/summarize.awk" \
		"on this file gives the medians of the rounds run with the two" \
		"CPUs near each other (probe under $near_ns ns) alone"
	printf 'section\tworkload\tcontender\tmetric\tunit\tround\tvalue\tpinning\tprobe_ns\n'
	cat "$rows"
	summarize rows
} >"$tsv"

table=$(summarize table)
say "$table"
printf '\n%s\n' "$table" >>"$log"
say ""
printf '%s\n' "$placed" | sed 's/^# //'
# The same medians from the rounds of one placement each: where the
# placement changed during the run, these compare like with like.
for where in near far; do
	counted=$(placed_rounds "$where")
	[ -n "$counted" ] || continue
	if [ "$where" = near ]; then
		what="near each other (probe under $near_ns ns)"
	else
		what="apart (probe $near_ns ns or more)"
	fi
	heading="Only the rounds run with the two CPUs $what; rounds"
	heading+=" counted: $counted."
	by_place=$(summarize table "$where")
	say ""
	say "$heading"
	say "$by_place"
	printf '\n%s\n%s\n' "$heading" "$by_place" >>"$log"
done
for p in ring_bench tcp_bench engine_bench ${peers[@]+"${peers[@]}"}; do
	[ -z "${why_not[$p]:-}" ] || say "$p: ${why_not[$p]}"
done
say ""
say "Load average at the end (1, 5, 15 min): $(load); $((SECONDS - started)) s of measuring."
say "TSV: $tsv"

if [ "$plot" = 1 ]; then
	summarize plot >"$work/plot.dat"
	title="tagwire $commit and its peers, $(date -u +%Y-%m-%d):"
	title+=" $ncores x $cpu_short"
	sub="medians of $rounds round(s)${smoke:+ (--quick, rough)}; over each"
	sub+=" bar its ratio to the baseline measured in the same run"
	[ "${#pins[@]}" -lt 2 ] || sub+=" with the same pinning"
	# A fourth panel for the engine rows, when there are any.
	panels=3
	grep -q '^eng-' "$rows" && panels=4
	show "gnuplot -c bench/plot.gp ... $svg"
	if gnuplot -c bench/plot.gp "$work/plot.dat" "$svg" "$title" "$sub" \
		"$panels" "${pins[*]}" >"$work/gnuplot.log" 2>&1; then
		say "picture: $svg"
	else
		say "gnuplot failed, no picture:"
		sed 's/^/    /' "$work/gnuplot.log"
		status=1
	fi
fi
exit "$status"

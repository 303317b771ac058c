#!/usr/bin/env bash
# Measures the peer libraries (ZeroMQ, nng, Open MPI, UCX) with the
# workloads of the peer table: installs the Debian packages each one needs
# when they are missing (as root), builds the programs of this folder into
# bench/peers/build (or $BUILD_DIR), runs every peer and transport for
# --rounds rounds and writes one TSV row per figure, then prints a table of
# the medians.
#
#   bench/peers/run.sh                   the full run (5 rounds)
#   bench/peers/run.sh --quick           a smoke run, about a minute
#   bench/peers/run.sh --tsv peers.tsv   the TSV into a file
#   bench/peers/run.sh --only zmq,ucx    some of the peers
#   bench/peers/run.sh --build-only      install and build, measure nothing
#   bench/peers/run.sh --no-pin          both sides left to the scheduler
#
# The TSV goes to stdout, and everything else to stderr, unless --tsv
# names a file; then the rest goes to stdout.  Every command runs under
# `timeout`, so the script cannot hang.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=${BUILD_DIR:-$here/build}

orig_args=("$@")
rounds=
quick=0
tsv=
only=zmq,nng,openmpi,ucx
bw_mib_opt=
stage=all # build-only: no runs; prebuilt: no install, no build
pin=1

usage() {
	cat <<'EOF'
usage: bench/peers/run.sh [--quick] [--rounds N] [--tsv FILE] [--only LIST]
                          [--bw-mib N] [--no-pin] [--build-only | --prebuilt]
  --quick       a smoke run: 2 rounds, 2,000 round trips per latency
                figure, 64 MiB per bandwidth figure, 200,000 messages per
                rate figure
  --rounds N    rounds (default 5, quick 2)
  --tsv FILE    write the TSV to FILE instead of stdout
  --only LIST   comma-separated peers out of zmq,nng,openmpi,ucx
  --bw-mib N    MiB streamed per bandwidth figure (default 1024, quick 64)
  --no-pin      leave both sides to the scheduler (default: side A on the
                first allowed CPU, side B on the second)
  --build-only  install the packages and build the programs, then stop;
                the TSV gets one line per peer: peer, ready or skipped,
                the reason
  --prebuilt    run the programs built before, installing and building
                nothing (a peer not built is skipped)
BUILD_DIR sets the build folder (default bench/peers/build).
EOF
}

while [ $# -gt 0 ]; do
	case $1 in
	--quick) quick=1 ;;
	--rounds)
		[ $# -ge 2 ] || { usage >&2; exit 2; }
		rounds=$2
		shift
		;;
	--tsv)
		[ $# -ge 2 ] || { usage >&2; exit 2; }
		tsv=$2
		shift
		;;
	--only)
		[ $# -ge 2 ] || { usage >&2; exit 2; }
		only=$2
		shift
		;;
	--bw-mib)
		[ $# -ge 2 ] || { usage >&2; exit 2; }
		bw_mib_opt=$2
		shift
		;;
	--no-pin) pin=0 ;;
	--build-only) stage='build-only' ;;
	--prebuilt) stage=prebuilt ;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
	shift
done
if [ -n "$rounds" ] && ! [[ $rounds =~ ^[1-9][0-9]{0,2}$ ]]; then
	echo "run.sh: --rounds needs a number from 1 to 999" >&2
	exit 2
fi
if [ -n "$bw_mib_opt" ] && ! [[ $bw_mib_opt =~ ^[1-9][0-9]{0,5}$ ]]; then
	echo "run.sh: --bw-mib needs a number of MiB (16 or more)" >&2
	exit 2
fi

if [ "$quick" = 1 ]; then
	rounds=${rounds:-2}
	lat_iters=2000 lat_warm=200 bw_mib=64 rate_msgs=200000
	limit=120 # seconds per program run (one round of one transport)
else
	rounds=${rounds:-5}
	lat_iters=20000 lat_warm=2000 bw_mib=1024 rate_msgs=2000000
	limit=600
fi
bw_mib=${bw_mib_opt:-$bw_mib}
watchdog=$((limit - 15)) # each process's own alarm, before `timeout`

# fd 3: the TSV; fd 4: everything meant for a reader.
if [ -n "$tsv" ]; then
	exec 3>"$tsv" 4>&1 || exit 1
else
	exec 3>&1 4>&2
fi
say() { printf '%s\n' "$*" >&4; }
show() { printf '+ %s\n' "$*" >&4; }

mkdir -p "$build" || exit 1
work=$(mktemp -d "${TMPDIR:-/tmp}/peers.XXXXXX") || exit 1
trap 'rm -rf "$work"' EXIT
# shellcheck disable=SC2034 # pkgs.sh writes to it
apt_log=$build/apt.log
status=0

# ---------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------

# installed, ensure_pkgs and version, shared with ../compare.sh.
# shellcheck source=bench/pkgs.sh disable=SC1091
. "$(dirname "$here")/pkgs.sh"

# ---------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------

cflags=${CFLAGS:-"-std=c11 -O2 -Wall -Wextra"}
read -r -a cf <<<"$cflags"

# Every program also links ../bench_util.c, the helpers it shares with
# ring_bench and tcp_bench.
util=$(dirname "$here")/bench_util.c

build_cmd() { # peer -> the compile command, one word per line
	case $1 in
	zmq) printf '%s\n' cc "${cf[@]}" -o "$build/zmq_peer" \
		"$here/zmq_peer.c" "$util" -lzmq ;;
	nng) printf '%s\n' cc "${cf[@]}" -o "$build/nng_peer" \
		"$here/nng_peer.c" "$util" -lnng ;;
	openmpi) printf '%s\n' mpicc "${cf[@]}" -o "$build/mpi_peer" \
		"$here/mpi_peer.c" "$util" ;;
	ucx) printf '%s\n' cc "${cf[@]}" -o "$build/ucx_peer" \
		"$here/ucx_peer.c" "$util" -lucp -lucs ;;
	ucx-rma) printf '%s\n' cc "${cf[@]}" -o "$build/ucx_rma_peer" \
		"$here/ucx_rma_peer.c" "$util" -lucp -lucs ;;
	esac
}

prog_of() {
	case $1 in
	openmpi) echo "$build/mpi_peer" ;;
	ucx-rma) echo "$build/ucx_rma_peer" ;;
	*) echo "$build/${1}_peer" ;;
	esac
}

pkgs_of() {
	case $1 in
	zmq) echo libzmq3-dev ;;
	nng) echo libnng-dev ;;
	openmpi) echo libopenmpi-dev openmpi-bin ;;
	ucx | ucx-rma) echo libucx-dev ;;
	esac
}

declare -A ready=() skipped=()
peers=()
IFS=, read -r -a wanted <<<"$only"
for p in "${wanted[@]}"; do
	case $p in
	# ucx-rma (UCX put/get, the peer of engine_bench) is built here
	# but measured by bench/run.sh (compare and engine), in engine_bench's
	# format.
	zmq | nng | openmpi | ucx | ucx-rma) peers+=("$p") ;;
	*)
		echo "run.sh: unknown peer '$p' (zmq, nng, openmpi, ucx, ucx-rma)" >&2
		exit 2
		;;
	esac
done

if [ "$stage" != prebuilt ] && ! command -v cc >/dev/null; then
	why=
	ensure_pkgs gcc libc6-dev || {
		say "no C compiler: $why"
		exit 1
	}
fi

for p in "${peers[@]}"; do
	if [ "$stage" = prebuilt ]; then
		if [ -x "$(prog_of "$p")" ]; then
			ready[$p]=1
		else
			skipped[$p]="not built (bench/peers/run.sh --build-only builds it)"
			say "skipping $p: ${skipped[$p]}"
		fi
		continue
	fi
	why=
	# shellcheck disable=SC2046 # the package names are single words
	if ! ensure_pkgs $(pkgs_of "$p"); then
		skipped[$p]=$why
		say "skipping $p: $why"
		continue
	fi
	# A program that failed to build must not be run by --prebuilt.
	rm -f "$(prog_of "$p")"
	mapfile -t cmd < <(build_cmd "$p")
	show "${cmd[*]}"
	if ! timeout -k 10 300 "${cmd[@]}" >&4 2>&4; then
		skipped[$p]="the build failed"
		say "skipping $p: the build failed"
		status=1
		continue
	fi
	ready[$p]=1
done

if [ "$stage" = build-only ]; then
	for p in "${peers[@]}"; do
		if [ -n "${ready[$p]:-}" ]; then
			printf '%s\tready\t\n' "$p" >&3
		else
			printf '%s\tskipped\t%s\n' "$p" "${skipped[$p]}" >&3
		fi
	done
	exit "$status"
fi

# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------

mpi_root=()
[ "$(id -u)" -eq 0 ] && mpi_root=(--allow-run-as-root)

# The command that runs one round of peer $1 on transport $2 (round $3),
# one word per line.
run_cmd() {
	local args=(--transport "$2" --round "$3" --lat-iters "$lat_iters"
		--lat-warm "$lat_warm" --bw-mib "$bw_mib"
		--rate-msgs "$rate_msgs" --watchdog "$watchdog")
	[ "$pin" = 1 ] || args+=(--no-pin)
	local t=(timeout -k 10 "$limit")
	case $1 in
	zmq) printf '%s\n' "${t[@]}" "$build/zmq_peer" "${args[@]}" ;;
	nng) printf '%s\n' "${t[@]}" "$build/nng_peer" "${args[@]}" ;;
	ucx) printf '%s\n' "${t[@]}" "$build/ucx_peer" "${args[@]}" ;;
	openmpi)
		local btl=(--mca btl "self,vader")
		[ "$2" = tcp ] &&
			btl=(--mca btl "self,tcp" --mca btl_tcp_if_include lo)
		# --bind-to none in both modes: mpi_peer pins each rank
		# itself, as the other programs do, or leaves it unpinned.
		printf '%s\n' "${t[@]}" mpirun -np 2 --oversubscribe \
			"${mpi_root[@]}" --bind-to none --mca pml ob1 \
			"${btl[@]}" "$build/mpi_peer" "${args[@]}"
		;;
	esac
}

combos=()
for p in "${peers[@]}"; do
	[ -n "${ready[$p]:-}" ] || continue
	case $p in
	zmq | nng) combos+=("$p tcp") ;;
	openmpi | ucx) combos+=("$p shm" "$p tcp") ;;
	esac
done

declare -A failed=()
all=$work/all.tsv
: >"$all"

load() { cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown; }
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null |
	head -n 1)

say "# peers: ZeroMQ, nng, Open MPI and UCX with the workloads of the peer table"
say "# command: bench/peers/run.sh${orig_args[*]:+ ${orig_args[*]}}"
say "# date (UTC): $(date -u '+%Y-%m-%d %H:%M:%S')"
say "# machine: nproc $(nproc 2>/dev/null), CPU \"${cpu:-unknown}\", kernel $(uname -r)"
say "# load average at the start (1, 5, 15 min): $(load)"
for p in "${peers[@]}"; do
	[ -n "${ready[$p]:-}" ] || continue
	case $p in
	zmq) say "# ZeroMQ: libzmq3-dev $(version libzmq3-dev)" ;;
	nng) say "# nng: libnng-dev $(version libnng-dev)" ;;
	openmpi) say "# Open MPI: openmpi-bin $(version openmpi-bin), libopenmpi-dev $(version libopenmpi-dev)" ;;
	ucx) say "# UCX: libucx-dev $(version libucx-dev)" ;;
	esac
done
say "# rounds $rounds$([ "$quick" = 1 ] && echo ' (--quick: a smoke run, figures are rough)'); lat $lat_iters round trips after $lat_warm warm-up; bw $bw_mib MiB per figure; rate $rate_msgs messages"
if [ "$pin" = 1 ]; then
	say "# each program pins side A (sender, timer) to the first allowed CPU and side B to the second; $limit s limit per run"
else
	say "# --no-pin: the scheduler places both sides; $limit s limit per run"
fi
say ""

printf 'contender\ttransport\ttest\tsize\tround\tvalue\tunit\n' >&3

# One line per run: the figures in the order of the program.
brief() {
	awk -F'\t' '
		$3 == "lat" { lat = lat sprintf(" %.3g", $6) }
		$3 == "bw" { bw = bw sprintf(" %.3g", $6) }
		$3 == "rate" { rate = sprintf("%.3g", $6) }
		END { printf "lat%s us; bw%s GB/s; rate %s M/s", lat, bw, rate }' "$1"
}

for ((r = 1; r <= rounds; r++)); do
	n=${#combos[@]}
	for ((k = 0; k < n; k++)); do
		# The order rotates from round to round.
		combo=${combos[$(((k + r - 1) % n))]}
		read -r p tr <<<"$combo"
		[ -z "${failed[$combo]:-}" ] || continue
		mapfile -t cmd < <(run_cmd "$p" "$tr" "$r")
		show "${cmd[*]}"
		out=$work/out err=$work/err
		start=$SECONDS
		"${cmd[@]}" >"$out" 2>"$err" </dev/null
		rc=$?
		awk -F'\t' -v c="$p" -v t="$tr" \
			'NF == 7 && $1 == c && $2 == t' "$out" >"$work/rows"
		cat "$work/rows" >&3
		cat "$work/rows" >>"$all"
		rows=$(wc -l <"$work/rows")
		if [ "$rc" -ne 0 ] || [ "$rows" -ne 8 ]; then
			case $rc in
			124 | 137) what="timed out after $limit s" ;;
			*) what="exit status $rc" ;;
			esac
			failed[$combo]="FAILED in round $r: $what, $rows of 8 figures"
			say "round $r/$rounds $p/$tr: ${failed[$combo]}; dropping it"
			tail -n 15 "$err" | sed 's/^/    /' >&4
			status=1
			continue
		fi
		say "round $r/$rounds $p/$tr: $(brief "$work/rows") ($((SECONDS - start)) s)"
	done
done

# ---------------------------------------------------------------------------
# The table of medians
# ---------------------------------------------------------------------------

say ""
say "Medians over $rounds round(s); one-way latency in µs (round trip / 2), bandwidth in GB/s (1e9 B/s), rate in M msgs/s:"
say ""
awk -F'\t' '
function fmt(v) {
	if (v == "") return "-"
	if (v >= 100) return sprintf("%.0f", v)
	if (v >= 10) return sprintf("%.1f", v)
	if (v >= 1) return sprintf("%.2f", v)
	return sprintf("%.3g", v)
}
function median(key,    n, i, j, t, a) {
	n = cnt[key]
	if (n == 0) return ""
	for (i = 1; i <= n; i++) a[i] = val[key, i] + 0
	for (i = 2; i <= n; i++) {
		t = a[i]
		for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]
		a[j + 1] = t
	}
	if (n % 2) return a[(n + 1) / 2]
	return (a[n / 2] + a[n / 2 + 1]) / 2
}
{
	combo = $1 "\t" $2
	if (!(combo in seen)) { seen[combo] = 1; order[++nc] = combo }
	key = combo SUBSEP $3 SUBSEP $4
	val[key, ++cnt[key]] = $6
}
END {
	ncol = split("lat:8 lat:4096 lat_p99:8 lat_p99:4096 bw:65536 bw:1048576 bw:16777216 rate:8", col, " ")
	split("lat 8 B|lat 4 KiB|p99 8 B|p99 4 KiB|bw 64 KiB|bw 1 MiB|bw 16 MiB|rate 8 B", head, "|")
	printf "| %-8s | %-9s |", "peer", "transport"
	for (c = 1; c <= ncol; c++) printf " %9s |", head[c]
	printf "\n|----------|-----------|"
	for (c = 1; c <= ncol; c++) printf "----------:|"
	printf "\n"
	for (i = 1; i <= nc; i++) {
		split(order[i], pt, "\t")
		printf "| %-8s | %-9s |", pt[1], pt[2]
		for (c = 1; c <= ncol; c++) {
			split(col[c], ts, ":")
			printf " %9s |", fmt(median(order[i] SUBSEP ts[1] SUBSEP ts[2]))
		}
		printf "\n"
	}
	if (nc == 0) print "(no figures)"
}' "$all" >&4

for p in "${peers[@]}"; do
	[ -n "${skipped[$p]:-}" ] && say "" && say "$p: not measured: ${skipped[$p]}"
done
for combo in "${combos[@]}"; do
	[ -n "${failed[$combo]:-}" ] && say "" && say "${combo/ //}: ${failed[$combo]}"
done
say ""
say "Load average at the end (1, 5, 15 min): $(load).  The runs keep up to 2 CPUs busy; well above that, other processes competed for the CPUs."
[ -n "$tsv" ] && say "TSV: $tsv"
exit "$status"

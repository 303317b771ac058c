#!/usr/bin/env bash
# How tagwire scales with the parties of one host: `tagwire demo` (every
# phase, every byte checked) for each party count and transport, with the
# wall time, the time of each phase and the peak memory of the process
# that hosts all the parties.
#
#   bench/scale.sh [--parties LIST] [--transports LIST] [--size BYTES]
#                  [--tagwire PATH] [--tsv FILE]
#
#   --parties LIST     comma separated party counts (default 8,16,32,64)
#   --transports LIST  comma separated, out of mem, shm, tcp and tcp-shm-local
#                      (tcp with TW_OPT_SHM_LOCAL) (default tcp,shm)
#   --size BYTES       the demo's bulk message size (default 64K: with 64
#                      parties the bulk phase moves 64 x 63 of them)
#   --tagwire PATH     the tool (default build/tools/tagwire/tagwire, as
#                      `make build` makes it)
#   --tsv FILE         also write the rows as TSV to FILE
#
# One run per row, in turn: figures of one machine at one time, to compare
# with each other, not with another machine's.  A demo that fails stops
# the script with its status.
set -euo pipefail

cd "$(dirname "$0")/.."
parties=8,16,32,64
transports=tcp,shm
size=64K
tagwire=build/tools/tagwire/tagwire
tsv=

usage() {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--parties) parties=${2:?}; shift 2 ;;
	--transports) transports=${2:?}; shift 2 ;;
	--size) size=${2:?}; shift 2 ;;
	--tagwire) tagwire=${2:?}; shift 2 ;;
	--tsv) tsv=${2:?}; shift 2 ;;
	*) usage ;;
	esac
done
[ -x "$tagwire" ] || {
	echo "scale.sh: no tagwire tool at $tagwire (run 'make build' first)" >&2
	exit 1
}
command -v /usr/bin/time >/dev/null 2>&1 || [ -x /usr/bin/time ] || {
	echo "scale.sh: needs /usr/bin/time (Debian package 'time') for the peak memory" >&2
	exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tagwire-scale.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

header="transport	parties	wall_s	peak_rss_mib	mesh_ms	barrier_ms	allgather_ms	bulk_ms	bulk_gbps	close_ms"
rows=()
# phase NAME: the milliseconds of that phase in the demo's report.
phase() {
	sed -n "s/^  $1 .* ok *\([0-9.]*\) ms.*/\1/p" "$tmp/out" | head -n 1
}
for t in ${transports//,/ }; do
	for n in ${parties//,/ }; do
		args=(--transport "$t")
		[ "$t" != tcp-shm-local ] || args=(--transport tcp --shm-local)
		echo "+ $tagwire demo --parties $n ${args[*]} --size $size" >&2
		rc=0
		/usr/bin/time -f '%e %M' -o "$tmp/time" \
			"$tagwire" demo --parties "$n" "${args[@]}" \
			--size "$size" >"$tmp/out" 2>"$tmp/err" || rc=$?
		if [ "$rc" -ne 0 ]; then
			echo "scale.sh: the demo of $n parties over $t failed ($rc):" >&2
			tail -n 20 "$tmp/out" "$tmp/err" >&2
			exit "$rc"
		fi
		read -r wall rss <"$tmp/time"
		gbps=$(sed -n 's/^  bulk exchange .*(\([0-9.]*\) GB\/s).*/\1/p' "$tmp/out")
		rows+=("$t	$n	$wall	$((rss / 1024))	$(phase 'mesh formed')	$(phase barrier)	$(phase allgather)	$(phase 'bulk exchange')	${gbps:--}	$(phase close)")
	done
done

{
	echo "$header"
	printf '%s\n' "${rows[@]}"
} >"$tmp/tsv"
[ -z "$tsv" ] || cp "$tmp/tsv" "$tsv"
if command -v column >/dev/null 2>&1; then column -t -s "$(printf "\t")" "$tmp/tsv"; else cat "$tmp/tsv"; fi

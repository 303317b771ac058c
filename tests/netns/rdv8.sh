#!/usr/bin/env bash
# Eight hosts launched through a root, without an address list: eight
# network namespaces joined by veth pairs to a bridge in a ninth (the hub),
# each running rdv_party with only TAGWIRE_RANK, TAGWIRE_SIZE,
# TAGWIRE_SECRET and TAGWIRE_ROOT=tcp://10.78.0.1:7000 (rank 0's address)
# set.  Ranks 1 to 7 listen on the address whose route reaches the root
# (10.78.0.2 ... 10.78.0.8: each namespace has only its own), on a port
# the system picks, and learn every other address from rank 0.  Every
# party must exchange checked bytes with every other, print "rank R: ok"
# and exit 0.
#
# usage: rdv8.sh path/to/rdv_party [shm-local]
#
# With shm-local, the parties also set TW_OPT_SHM_LOCAL and pairs of
# namespaces are told they share a host (TAGWIRE_HOST_ID=host-0 for ranks
# 0 and 1, host-1 for 2 and 3, ...; namespaces share the kernel and
# /dev/shm, so the probe finds its segment): each party must log that one
# of its seven peers moved to shm://, while the others stay on tcp://.
#
# Needs root and `ip netns`; without them, or when namespaces, bridges or
# veths cannot be created, it prints "SKIP: reason" and exits with 77.
# The parties, the namespaces and the temporary folder are removed on exit
# whatever happens; every wait has a deadline.
set -euo pipefail

[ $# -eq 1 ] || [ $# -eq 2 ] && [ "${2:-shm-local}" = shm-local ] || {
	echo "usage: $0 path/to/rdv_party [shm-local]" >&2
	exit 2
}
PARTY=$1
SHM_LOCAL=${2:+1}
[ -x "$PARTY" ] || {
	echo "FAIL: not an executable: $PARTY"
	exit 1
}

. "$(dirname "$0")/lib.sh"
need_netns

N=8
ID="twr$$"
HUB="$ID-hub"
MADE=()
PIDS=()
TMP=

trap netns_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tagwire-rdv8.XXXXXX")

mk_ns "$HUB"
err=$(ip -n "$HUB" link add br0 type bridge 2>&1) || skip "cannot create a bridge: $err"
ip -n "$HUB" link set br0 up
for i in $(seq 0 $((N - 1))); do
	mk_ns "$ID-p$i"
	err=$(ip -n "$HUB" link add "veth$i" type veth peer name eth0 \
		netns "$ID-p$i" 2>&1) || skip "cannot create a veth pair: $err"
	ip -n "$HUB" link set "veth$i" master br0 up
	ip -n "$ID-p$i" addr add "10.78.0.$((i + 1))/24" dev eth0
	ip -n "$ID-p$i" link set eth0 up
done

SECRET=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
for i in $(seq 0 $((N - 1))); do
	extra=()
	if [ -n "$SHM_LOCAL" ]; then
		extra=(RDV_SHM_LOCAL=1 TAGWIRE_HOST_ID=host-$((i / 2))
			TAGWIRE_LOG=info)
	fi
	ip netns exec "$ID-p$i" env -u TAGWIRE_PARTIES TAGWIRE_RANK=$i \
		TAGWIRE_SIZE=$N TAGWIRE_SECRET="$SECRET" \
		TAGWIRE_ROOT=tcp://10.78.0.1:7000 "${extra[@]}" \
		"$PARTY" >"$TMP/p$i.out" 2>"$TMP/p$i.err" &
	PIDS+=($!)
done

fail() {
	echo "FAIL: $*"
	for i in $(seq 0 $((N - 1))); do
		echo "--- party $i (10.78.0.$((i + 1))): stdout"
		tail -n 20 "$TMP/p$i.out"
		echo "--- stderr"
		tail -n 20 "$TMP/p$i.err"
	done
	exit 1
}

# Each party within the deadline; the first failure ends the test.
deadline=$((SECONDS + 120))
for i in $(seq 0 $((N - 1))); do
	while kill -0 "${PIDS[$i]}" 2>/dev/null; do
		[ $SECONDS -lt $deadline ] || fail "party $i still running after 120 s"
		sleep 0.1 # polling a process, not synchronising
	done
	rc=0
	wait "${PIDS[$i]}" || rc=$?
	PIDS[$i]=0
	[ "$rc" -eq 0 ] || fail "party $i exited with $rc"
	grep -qx "rank $i: ok" "$TMP/p$i.out" ||
		fail "party $i did not print 'rank $i: ok'"
	if [ -n "$SHM_LOCAL" ]; then
		grep -q "1 of 7 peers share this host and its shared memory; 1 moved to shm://" \
			"$TMP/p$i.err" || fail "party $i did not move its host's peer to shm://"
	fi
done
PIDS=()

echo "ok: $N hosts met through tcp://10.78.0.1:7000 and exchanged checked bytes${SHM_LOCAL:+ (pairs of them over shm://)}"

#!/usr/bin/env bash
# Multi-host test of tcp://: three parties, each in its own network
# namespace, joined by veth pairs to a bridge in a fourth one (the hub):
#
#   twnPID-p0  eth0 10.77.0.1/24 --- veth0 -+
#   twnPID-p1  eth0 10.77.0.2/24 --- veth1 -+- br0   (twnPID-hub)
#   twnPID-p2  eth0 10.77.0.3/24 --- veth2 -+
#
# usage: netns.sh path/to/netns_party basic|half_open|blip
#
# basic      the parties exchange messages all-to-all, run a barrier and an
#            allgather, and pass 4 MiB around the ring (netns_party.c says
#            what each checks).
# half_open  once every party is idle, parties 0 and 1 block receiving from
#            party 2 and party 2's interface goes down inside its
#            namespace: no FIN and no RST reaches the others, whose
#            heartbeats (300 ms) must report TW_EPEER within 3 s.
# blip       while every party streams numbered messages to every other,
#            party 1's bridge port goes down for half a heartbeat period
#            (500 ms of 1000 ms) and comes back: every message arrives
#            exactly once and in order, and no call fails.
#
# Needs root and `ip netns`; without them, or when namespaces, bridges or
# veths cannot be created, it prints "SKIP: reason" and exits with 77.
# Every device lives inside the namespaces, so deleting them removes it;
# the parties, the namespaces and the temporary folder are removed on exit
# whatever happens.  The parties and this script meet through files in the
# temporary folder, waited for in polling loops with deadlines.
set -euo pipefail

usage() {
	echo "usage: $0 path/to/netns_party basic|half_open|blip" >&2
	exit 2
}
[ $# -eq 2 ] || usage
PARTY=$1
SCENARIO=$2
case $SCENARIO in
basic | half_open | blip) ;;
*) usage ;;
esac
if [ ! -x "$PARTY" ]; then
	echo "FAIL: not an executable: $PARTY"
	exit 1
fi

. "$(dirname "$0")/lib.sh"
need_netns

ID="twn$$"
HUB="$ID-hub"
NS=("$ID-p0" "$ID-p1" "$ID-p2")
ADDRS=(tcp://10.77.0.1:7000 tcp://10.77.0.2:7000 tcp://10.77.0.3:7000)
MADE=() # namespaces created so far
PIDS=() # parties not yet waited for, by rank
RC=()   # exit status of each party, by rank
TMP=

trap netns_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

TMP=$(mktemp -d "${TMPDIR:-/tmp}/tagwire-netns.XXXXXX")
CTL=$TMP/ctl
mkdir "$CTL"

mk_ns "$HUB"
for ns in "${NS[@]}"; do
	mk_ns "$ns"
done
if ! err=$(ip -n "$HUB" link add br0 type bridge 2>&1); then
	skip "cannot create a bridge: $err"
fi
ip -n "$HUB" link set br0 up
for i in 0 1 2; do
	if ! err=$(ip -n "$HUB" link add "veth$i" type veth \
		peer name eth0 netns "${NS[$i]}" 2>&1); then
		skip "cannot create a veth pair: $err"
	fi
	ip -n "$HUB" link set "veth$i" master br0 up
	ip -n "${NS[$i]}" addr add "10.77.0.$((i + 1))/24" dev eth0
	ip -n "${NS[$i]}" link set eth0 up
done

show_logs() {
	local i
	for i in 0 1 2; do
		echo "--- party $i (${NS[$i]}, ${ADDRS[$i]}):"
		cat "$TMP/party$i.log"
	done
	echo "---"
}

fail() {
	echo "FAIL: $*"
	show_logs
	exit 1
}

# running RANK: whether that party is still running.
running() {
	[ -n "${PIDS[$1]:-}" ] && kill -0 "${PIDS[$1]}" 2>/dev/null
}

# reap RANK: waits for that (finished) party and records its exit status.
reap() {
	local rc=0
	wait "${PIDS[$1]}" || rc=$?
	RC[$1]=$rc
	unset "PIDS[$1]"
}

# wait_exit SECONDS RANK...: waits until those parties have exited; fails
# the test when one still runs after SECONDS.
wait_exit() {
	local limit=$1 deadline=$((SECONDS + $1)) i busy
	shift
	while :; do
		busy=
		for i in "$@"; do
			if running "$i"; then
				busy="$busy $i"
			fi
		done
		[ -n "$busy" ] || break
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail "party$busy still running after $limit s"
		fi
		sleep 0.05
	done
	for i in "$@"; do
		reap "$i"
	done
}

# wait_ready SECONDS: waits until every party has written its ready file;
# fails the test when one exits first or SECONDS pass.
wait_ready() {
	local limit=$1 deadline=$((SECONDS + $1)) i missing
	while :; do
		missing=
		for i in 0 1 2; do
			if [ ! -e "$CTL/ready.$i" ]; then
				missing="$missing $i"
			fi
		done
		[ -n "$missing" ] || return 0
		for i in $missing; do
			if ! running "$i"; then
				reap "$i"
				fail "party $i exited (status ${RC[$i]}) before" \
					"it was ready"
			fi
		done
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail "party$missing not ready after $limit s"
		fi
		sleep 0.02
	done
}

for i in 0 1 2; do
	ip netns exec "${NS[$i]}" "$PARTY" "$i" "$SCENARIO" "$CTL" \
		"${ADDRS[@]}" >"$TMP/party$i.log" 2>&1 &
	PIDS[i]=$!
done

case $SCENARIO in
basic)
	wait_exit 45 0 1 2
	;;
half_open)
	wait_ready 20
	# The parties time the detection from the moment they see `down`.
	touch "$CTL/down"
	ip -n "${NS[2]}" link set eth0 down
	echo "party 2's link is down"
	wait_exit 15 0 1
	touch "$CTL/release"
	wait_exit 10 2
	;;
blip)
	wait_ready 20
	ip -n "$HUB" link set veth1 down
	echo "party 1's bridge port is down"
	sleep 0.5 # half of netns_party.c's HEARTBEAT_BLIP_MS
	ip -n "$HUB" link set veth1 up
	echo "party 1's bridge port is up again"
	touch "$CTL/up"
	wait_exit 40 0 1 2
	;;
esac

show_logs
failed=
for i in 0 1 2; do
	if [ "${RC[$i]}" -ne 0 ]; then
		failed="$failed $i (status ${RC[$i]})"
	fi
done
if [ -n "$failed" ]; then
	echo "FAIL: party$failed"
	exit 1
fi
echo "PASS: $SCENARIO"

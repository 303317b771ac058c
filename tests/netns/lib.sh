# Shared by the network-namespace tests (sourced): skipping with a reason,
# making namespaces (recorded in MADE) and removing, on exit, the processes
# in PIDS (0: already waited for), those namespaces and the folder TMP.

skip() {
	echo "SKIP: $*"
	exit 77
}

# Skips unless this process may create network namespaces.
need_netns() {
	[ "$EUID" -eq 0 ] || skip "needs root to create network namespaces"
	command -v ip >/dev/null 2>&1 || skip "no 'ip' command (iproute2)"
	ip netns list >/dev/null 2>&1 || skip "'ip netns' is not available"
}

# mk_ns NAME: creates a namespace with its loopback up, recorded in MADE.
mk_ns() {
	local err
	if ! err=$(ip netns add "$1" 2>&1); then
		skip "cannot create network namespace $1: $err"
	fi
	MADE+=("$1")
	ip -n "$1" link set lo up
}

# The EXIT trap: kills and reaps what still runs, deletes the namespaces
# (a failure to delete one fails the test) and the temporary folder.
netns_cleanup() {
	local rc=$? pid ns
	set +e
	for pid in "${PIDS[@]}"; do
		[ "$pid" = 0 ] || kill -KILL "$pid" 2>/dev/null
	done
	for pid in "${PIDS[@]}"; do
		[ "$pid" = 0 ] || wait "$pid" 2>/dev/null
	done
	for ns in "${MADE[@]}"; do
		if ! ip netns delete "$ns"; then
			echo "FAIL: cannot delete network namespace $ns"
			rc=1
		fi
	done
	[ -z "$TMP" ] || rm -rf "$TMP"
	exit "$rc"
}

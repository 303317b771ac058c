# Shared by the network-namespace tests (sourced): skipping with a reason,
# and making namespaces that the caller's cleanup removes (MADE).

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

#!/usr/bin/env bash
# deps.sh [--ci]
#
# Installs the Debian packages that building and testing tagwire needs, and
# only those that are missing: running it again costs a dpkg query.  Works
# as root (no sudo needed) or through sudo.  --ci adds what the CI script
# uses besides: clang with its sanitizer and libFuzzer runtimes, and
# clang-format.  Prints one line, or the apt log when something fails.
set -euo pipefail

# iproute2: `ip netns` for the multi-host test (tests/netns); openssl: the
# command that makes the TLS tests' certificates (tests/tls/mkcerts.sh).
# python3-*: the Python module (python/), built and tested with Debian's
# /usr/bin/python3.
pkgs=(build-essential cmake pkg-config libcmocka-dev uthash-dev libssl-dev
	iproute2 openssl python3-dev python3-pytest python3-pytest-timeout
	python3-numpy python3-pip python3-setuptools python3-wheel)
for arg in "$@"; do
	case "$arg" in
	--ci) pkgs+=(clang libclang-rt-14-dev clang-format) ;;
	-h | --help)
		sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "deps.sh: unknown argument '$arg' (try --help)" >&2
		exit 2
		;;
	esac
done

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: not a Debian system; make sure these (or their equivalents) are installed:" >&2
	echo "      ${pkgs[*]}" >&2
	exit 0
fi

missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
	if [ "${status#ii}" = "$status" ]; then
		missing+=("$p")
	fi
done
if [ "${#missing[@]}" -eq 0 ]; then
	echo "deps: all ${#pkgs[@]} packages are installed"
	exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		as_root=(sudo)
	else
		echo "deps: missing ${missing[*]}; run this as root to install them" >&2
		exit 1
	fi
fi

echo "deps: installing ${missing[*]}"
log=$(mktemp "${TMPDIR:-/tmp}/tagwire-deps.XXXXXX")
trap 'rm -f "$log"' EXIT
apt() {
	"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y \
		-o Dpkg::Use-Pty=0 "$@" </dev/null >>"$log" 2>&1
}
# A fresh system has empty package lists; an old one may have stale ones.
if ! apt update || ! apt install --no-install-recommends "${missing[@]}"; then
	tail -n 40 "$log" >&2
	echo "deps: apt-get failed (the end of its log is above)" >&2
	exit 1
fi
echo "deps: done"

# shellcheck shell=bash
# Installs Debian packages that are missing, for bench/run.sh and
# bench/peers/run.sh (sourced by both, so that the two install alike).
#
# The caller sets apt_log, the file that takes apt-get's output, and
# defines show, which prints a command before it runs.  Only root installs:
# anyone else gets the reason in $why.

# apt_log comes from the caller, and $why goes back to it.
# shellcheck disable=SC2154,SC2034

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }

apt_updated=0
# Installs the packages given that are missing.  0 when all are there;
# otherwise sets $why.
ensure_pkgs() {
	local missing=() p
	for p in "$@"; do
		installed "$p" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		why="packages missing: ${missing[*]} (run as root to install them)"
		return 1
	fi
	if ! command -v apt-get >/dev/null; then
		why="packages missing: ${missing[*]} (no apt-get here)"
		return 1
	fi
	local cmd=(apt-get install -y --no-install-recommends "${missing[@]}")
	show "${cmd[*]}"
	if DEBIAN_FRONTEND=noninteractive timeout -k 10 900 "${cmd[@]}" \
		>>"$apt_log" 2>&1; then
		return 0
	fi
	if [ "$apt_updated" = 0 ]; then # the package lists may be missing
		apt_updated=1
		show "apt-get update"
		timeout -k 10 300 apt-get update >>"$apt_log" 2>&1
		show "${cmd[*]}"
		if DEBIAN_FRONTEND=noninteractive timeout -k 10 900 \
			"${cmd[@]}" >>"$apt_log" 2>&1; then
			return 0
		fi
	fi
	why="apt-get install ${missing[*]} failed (see $apt_log)"
	return 1
}

version() { dpkg-query -W -f '${Version}' "$1" 2>/dev/null || echo unknown; }

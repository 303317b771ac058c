#!/usr/bin/env bash
# install_consumer.sh BUILD_DIR SOURCE_DIR CC CMAKE CONFIG [CFLAGS]
#
# Installs the build tree into a fresh prefix, checks what was installed,
# then builds tests/install/consumer/consumer.c the two ways a user would,
#   (a) cc consumer.c $(pkg-config --cflags --libs tagwire)
#   (b) find_package(tagwire) with tagwire::tagwire and tagwire::tagwire_static
# and runs every program.  CFLAGS (the sanitizer flags of the build) are
# added to every compile and link.  Exit 77 = skipped.
set -euo pipefail

build=$1
src=$2
cc=$3
cmake=$4
config=${5:-}
cflags=${6:-}

mkdir -p "$build/tests/install"
tmp=$(mktemp -d "$build/tests/install/consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

step() { echo "== $*"; }
fail() {
	echo "FAIL: $*" >&2
	exit 1
}
# Runs a consumer program; it must succeed and say so.
run_consumer() {
	local out
	out=$("$1" 2>&1) || fail "$(basename "$1") failed: $out"
	case "$out" in
	*"consumer ok"*) echo "$(basename "$1"): $out" ;;
	*) fail "$(basename "$1") printed: $out" ;;
	esac
}
# Runs a command quietly; shows its output only when it fails.
quiet() {
	local log=$tmp/step.log
	if ! "$@" >"$log" 2>&1; then
		cat "$log" >&2
		fail "$*"
	fi
}

step "install into a temporary prefix"
quiet "$cmake" --install "$build" --prefix "$prefix" ${config:+--config "$config"}

# Exactly the public headers, nothing from src/.
want=$(cd "$src/include/tagwire" && ls -- *.h | sort)
have=$(cd "$prefix/include/tagwire" 2>/dev/null && find . -type f | sed "s|^\./||" | sort || true)
[ "$want" = "$have" ] || fail "installed headers differ from include/tagwire/: $(echo $have)"
so=$(find "$prefix" -name 'libtagwire.so' | head -n 1)
[ -n "$so" ] || fail "libtagwire.so not installed"
libdir=$(dirname "$so")
[ -f "$libdir/libtagwire.a" ] || fail "libtagwire.a not installed next to libtagwire.so"
pc=$(find "$prefix" -name tagwire.pc | head -n 1)
[ -n "$pc" ] || fail "tagwire.pc not installed"
for f in tagwireConfig.cmake tagwireConfigVersion.cmake tagwireTargets.cmake; do
	[ -n "$(find "$prefix" -name "$f")" ] || fail "$f not installed"
done

if [ "${TW_PYTHON_BUILT:-0}" = 1 ]; then
	step "the Python package, where Debian's python3 looks"
	init=$(find "$prefix" -path '*/tagwire/__init__.py' | head -n 1)
	[ -n "$init" ] || fail "the Python package was not installed"
	site=$(dirname "$(dirname "$init")")
	ls "$site/tagwire/"_tagwire*.so >/dev/null || fail "_tagwire not installed"
	py=/usr/bin/python3
	[ -x "$py" ] || py=python3
	# With the default prefix the same folder is on the interpreter's path.
	rel=${site#"$prefix"/}
	"$py" -c "import sys; sys.exit('/usr/local/$rel' not in sys.path)" ||
		fail "/usr/local/$rel is not on $py's sys.path"
	(cd "$tmp" && PYTHONPATH=$site "$py" -c \
		"import tagwire, sys; assert tagwire.__file__.startswith(sys.argv[1]); print('import tagwire:', tagwire.__file__)" "$site") ||
		fail "the installed package does not import"
fi

step "exported symbols of the installed library"
NM=${NM:-nm} bash "$src/tests/install/check_symbols.sh" "$so" "$prefix/include/tagwire"

export LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

step "(a) pkg-config"
if ! command -v pkg-config >/dev/null 2>&1; then
	echo "skipped: pkg-config is not installed" >&2
	exit 77
fi
export PKG_CONFIG_PATH=$(dirname "$pc")
pcflags=$(pkg-config --cflags --libs tagwire)
echo "pkg-config --cflags --libs tagwire: $pcflags"
case "$pcflags" in
*"$prefix"*) ;;
*) fail "pkg-config does not point into $prefix" ;;
esac
# shellcheck disable=SC2086 # the flags are words
quiet "$cc" -std=c11 -Wall -Wextra -Werror $cflags \
	"$src/tests/install/consumer/consumer.c" -o "$tmp/consumer_pc" $pcflags
run_consumer "$tmp/consumer_pc"
# It must run against the installed library, not some other one.
if command -v ldd >/dev/null 2>&1; then
	# Read ldd's whole output first: with pipefail, `ldd | grep -q` fails
	# whenever grep exits early and ldd dies of SIGPIPE.
	deps=$(ldd "$tmp/consumer_pc")
	case "$deps" in
	*"$libdir/libtagwire.so"*) ;;
	*) fail "consumer_pc does not load $libdir/libtagwire.so" ;;
	esac
fi

step "(b) find_package(tagwire)"
quiet "$cmake" -S "$src/tests/install/consumer" -B "$tmp/consumer-build" \
	-DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER="$cc" \
	-DCMAKE_C_FLAGS="$cflags" -DCMAKE_EXE_LINKER_FLAGS="$cflags" \
	-DCMAKE_PREFIX_PATH="$prefix" -DTW_EXPECT_PREFIX="$prefix" \
	-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
quiet "$cmake" --build "$tmp/consumer-build"
run_consumer "$tmp/consumer-build/consumer_shared"
run_consumer "$tmp/consumer-build/consumer_static"
# The static one must not need the shared library at run time.
if command -v ldd >/dev/null 2>&1; then
	deps=$(ldd "$tmp/consumer-build/consumer_static" || true)
	case "$deps" in
	*libtagwire*) fail "consumer_static loads libtagwire.so" ;;
	esac
fi

echo "ok: install, pkg-config and find_package consumers work"

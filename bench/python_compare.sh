#!/usr/bin/env bash
# Builds tagwire's Python module and the tagwire CLI, then runs
# bench/python_bench.py: tagwire's Python module against pyzmq and mpi4py,
# and against tagwire's own C figure (tagwire perf), in one run.
#
#   bench/python_compare.sh [--quick] [--rounds N] [--lat-iters N]
#                           [--bw-mib N] [--tsv PATH] [--only LIST] [--pin]
#
# --quick is a smoke run (3 rounds, 2,000 round trips, 64 MiB per bw
# figure; about 10 s of measuring); the default (9 rounds, 20,000
# round trips, 512 MiB) takes about a minute or two on 2 cores.  The
# arguments go to python_bench.py as they are (see its --help and the top
# of the file).  The measuring needs python3-numpy, python3-zmq,
# python3-mpi4py and openmpi-bin; a peer that is missing gets a "skipped"
# row, not a failure.
#
# BUILD_DIR (default build-pybench) and BUILD_TYPE (default RelWithDebInfo,
# used only when BUILD_DIR is not configured yet) pick the build; the
# module and the CLI come from the same build, so the Python/C ratios
# compare like with like.  PYTHON overrides /usr/bin/python3, the
# interpreter the module is built against.
set -euo pipefail

cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-pybench}
python=${PYTHON:-/usr/bin/python3}
jobs=$(nproc 2>/dev/null || echo 2)

run() {
	printf '+ %s\n' "$*" >&2
	"$@"
}

if [ ! -f "$build/CMakeCache.txt" ]; then
	run cmake -S . -B "$build" -DTW_TESTS=OFF \
		-DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" \
		-DPython3_EXECUTABLE="$python" --log-level=WARNING >/dev/null
fi
run cmake --build "$build" -j "$jobs" --target _tagwire tagwire_cli >/dev/null

type=$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' "$build/CMakeCache.txt")
export TW_PYBENCH_BUILD="$build (CMAKE_BUILD_TYPE ${type:-unset}), $(git describe --always --dirty 2>/dev/null || echo 'no git')"
export PYTHONPATH="$PWD/$build/python${PYTHONPATH:+:$PYTHONPATH}"
run "$python" bench/python_bench.py --tagwire-cli "$build/tools/tagwire/tagwire" "$@"

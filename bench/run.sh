#!/usr/bin/env bash
# Builds the benchmarks in build-bench/ (Release, a standalone CMake project
# that builds the library from this checkout) and runs ring_bench.  Every
# argument goes to ring_bench, e.g.
#
#   bench/run.sh                      the full run (5 rounds, 1 GiB per bw)
#   bench/run.sh --quick              a smoke run, well under a minute
#   bench/run.sh --tsv results.tsv    also write every figure as TSV
#
# BUILD_DIR overrides the build folder (relative to the repository root).
set -euo pipefail

cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build-bench}
jobs=$(nproc 2>/dev/null || echo 2)

run() {
	printf '+ %s\n' "$*"
	"$@"
}

run cmake -S bench -B "$build" -DCMAKE_BUILD_TYPE=Release --log-level=WARNING
run cmake --build "$build" --target ring_bench -j "$jobs"
run "$build/ring_bench" "$@"

# A thin wrapper around CMake and CTest for the common tasks; CMake stays
# the build system.  `make help` lists the targets.
#
#   make demo                         build everything, run `tagwire demo`
#   make test                         build with -Werror, run every test
#   make test BUILD=build-asan SANITIZE='address;undefined'
#   make test CC=clang BUILD=build-clang
#   make bench                        tagwire against its peers: TSV, table, docs/perf.svg

BUILD ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
SANITIZE ?=
CMAKE_ARGS ?=
CTEST_ARGS ?=
PREFIX ?=
CMAKE ?= cmake
CTEST ?= ctest
BENCH_ARGS ?=

# Hand a CC given on the command line or in the environment to CMake (make's
# built-in default `cc` is left to CMake to find).
ifneq ($(filter command line environment,$(origin CC)),)
CONFIG_CC := -DCMAKE_C_COMPILER=$(CC)
endif

CONFIGURE = $(CMAKE) -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) \
	-DTW_WERROR=ON $(CONFIG_CC) \
	$(if $(SANITIZE),"-DTW_SANITIZE=$(SANITIZE)") $(CMAKE_ARGS)

.PHONY: help deps configure build demo test install format check-format ci \
	bench clean

help:
	@echo "make deps          install the Debian packages needed (as root)"
	@echo "make build         configure and build into $(BUILD)/"
	@echo "make demo          build, then run 'tagwire demo'"
	@echo "make test          build with -Werror, then run every test (ctest)"
	@echo "make install       install (PREFIX=/usr/local by default)"
	@echo "make format        reformat the C sources with clang-format"
	@echo "make check-format  fail if a C source is not formatted"
	@echo "make ci            run .ci/run: format, gcc, sanitizers, clang, fuzzing"
	@echo "make bench         bench/run.sh: tagwire and its peers measured in turn,"
	@echo "                   medians and ratios to baselines, docs/perf.svg"
	@echo "                   (BENCH_ARGS=--quick for a smoke run)"
	@echo "make clean         remove $(BUILD)/"
	@echo "variables: BUILD SANITIZE='address;undefined'|thread CC BUILD_TYPE"
	@echo "           JOBS CMAKE_ARGS CTEST_ARGS PREFIX BENCH_ARGS"

deps:
	@./scripts/deps.sh

configure:
	$(CONFIGURE)

build: configure
	$(CMAKE) --build $(BUILD) -j $(JOBS)

demo: deps build
	$(BUILD)/tools/tagwire/tagwire demo

test: deps build
	cd $(BUILD) && $(CTEST) -j $(JOBS) --output-on-failure --timeout 300 $(CTEST_ARGS)

install: build
	$(CMAKE) --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX))
	@if [ "$$(id -u)" = 0 ] && command -v ldconfig >/dev/null; then ldconfig; fi

# The C sources tracked by git, or every one outside build trees when this
# is not a git checkout.
SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null | grep . || \
	find . -path ./.git -prune -o -path './build*' -prune -o \
	\( -name '*.c' -o -name '*.h' \) -type f -print)

format:
	clang-format -i $(SOURCES)

check-format:
	clang-format --dry-run --Werror $(SOURCES)

ci:
	bash .ci/run

# Builds in build-bench/ and installs the peers' packages as root; see
# bench/README.md.
bench:
	bench/run.sh $(BENCH_ARGS)

clean:
	rm -rf $(BUILD)

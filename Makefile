# iobench — see README.md. Every target installs what it needs first (liburing-dev, valgrind) when missing.
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONFIG ?= release

.PHONY: deps build test bench baseline check check-against clean

deps:
	@if ! pkg-config --exists liburing 2>/dev/null && [ ! -f /usr/include/liburing.h ]; then \
		echo "installing liburing-dev (needed by the io_uring backend)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq liburing-dev pkg-config; \
	fi
	@command -v pkg-config >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq pkg-config; }
	@# Counted measurements (iobench run --method counted, iobench check): callgrind and strip.
	@if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null || ! command -v strip >/dev/null; then \
		echo "installing valgrind and binutils (counted measurements)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq valgrind binutils; \
	fi

build: deps
	$(SWIFT) build -c $(CONFIG)

# Serial: several tests measure server CPU and memory, and one loads every core on purpose.
test: deps
	$(SWIFT) test --no-parallel

# The default matrix: 3 backends x 1,16,128,512 connections x 64 B,4 KiB x 3 repetitions, plus
# 10,000 idle connections per backend. Writes results/runs/<run id>.csv. ARGS adds options.
bench: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench run $(ARGS)

# The counted regression check against the committed baseline (exit 2 on a regression): counts
# do not depend on the machine's speed. ARGS adds options (--metrics all adds the timed cells,
# judged only when the baseline was recorded on this machine).
check: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench check --baseline results/baseline.csv --metrics counted $(ARGS)

# Paired timing against a git ref (default HEAD~1): builds it in .build/against/ and measures
# both servers interleaved; exit 2 when a 95% interval lies beyond the threshold.
REF ?= HEAD~1
check-against: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench check --against $(REF) $(ARGS)

# Re-record the committed baseline (the --quick matrix) on this machine.
baseline: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench baseline update --out results/baseline.csv

clean:
	rm -rf .build

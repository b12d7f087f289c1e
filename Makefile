# iobench — see README.md. Every target installs what it needs first (liburing-dev, valgrind) when missing.
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONFIG ?= release

.PHONY: deps build test bench baseline check check-against fuzz charts clean

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

	@# The report page's browser check (Tests/BenchTests/ChartTests.swift, scripts/browser-check.py).
	@if ! command -v chromium >/dev/null || ! command -v python3 >/dev/null; then \
		echo "installing chromium (the HTML report's check in a real browser)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium fonts-dejavu-core fonts-liberation python3; \
	fi

build: deps
	$(SWIFT) build -c $(CONFIG)

# Serial: several tests measure server CPU and memory, and one loads every core on purpose.
test: deps
	$(SWIFT) test --no-parallel

# The default matrix: every backend of the registry (blocking, epoll, io_uring, ppoll) and the NIO peer x 1,16,128,512 connections x 64 B,4 KiB x 3 repetitions, plus
# 10,000 idle connections per backend. Writes results/runs/<run id>.csv. ARGS adds options.
bench: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench run $(ARGS)

# The counted regression check against the committed baseline (exit 2 on a regression): counts
# do not depend on the machine's speed. ARGS adds options (--metrics all adds the timed cells,
# judged only when the baseline was recorded on this machine).
check: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench check --baseline results/baseline.csv --metrics counted $(ARGS)

# Paired check against a git ref (default HEAD~1): builds it in .build/against/, counts both
# servers under callgrind (exit 2 on a counted regression), then times them interleaved (exit 2
# when a 95% interval lies beyond the threshold, unless ARGS has --gate counted).
REF ?= HEAD~1
check-against: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench check --against $(REF) $(ARGS)

# Re-record the committed baseline (the --quick matrix) on this machine.
baseline: deps build
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench baseline update --out results/baseline.csv

# The README's charts, the one-page report and the results' tables, from the committed runs
# named here: results/charts/*.svg, results/report.html and docs/RESULTS.md (tests hold all three
# to what this draws).
CHART_RUNS ?= results/runs/2026-11-30T190406Z-vm.csv results/notify/2026-11-30T170717Z-vm.csv
charts: build
	rm -rf results/charts
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench report $(CHART_RUNS) --reference c-floor --svg results/charts --html results/report.html --markdown > /dev/null
	$$($(SWIFT) build -c $(CONFIG) --show-bin-path)/iobench report $(CHART_RUNS) --reference c-floor --markdown > docs/RESULTS.md

clean:
	rm -rf .build

# The fuzz targets (libFuzzer + AddressSanitizer): rpc (the frame decoder and the rpc session)
# and notify (the push and poll sessions, three connections sharing one hub), built with swiftc
# directly: SwiftPM renames an executable's `main`, which libFuzzer provides. Each runs
# FUZZ_SECONDS over a copy of its committed corpus (Fuzz/corpus/rpc, Fuzz/corpus/notify); any
# crash fails.
FUZZ_SECONDS ?= 60
FUZZ_DIR := .build/fuzz
fuzz: deps
	@mkdir -p $(FUZZ_DIR)/module $(FUZZ_DIR)/corpus
	@printf 'module CSystemShims {\n  header "%s/Sources/CSystemShims/include/CSystemShims.h"\n  export *\n}\n' "$(CURDIR)" > $(FUZZ_DIR)/module/module.modulemap
	clang -c -O1 -fsanitize=fuzzer-no-link,address -I Sources/CSystemShims/include Sources/CSystemShims/shims.c -o $(FUZZ_DIR)/shims.o
	for module in ServerKit Protocols ProtocolTesting; do \
		swiftc -O -g -sanitize=fuzzer,address -parse-as-library -swift-version 6 -package-name iobench -module-name $$module -emit-module -emit-module-path $(FUZZ_DIR)/$$module.swiftmodule \
			-I $(FUZZ_DIR) -Xcc -fmodule-map-file=$(FUZZ_DIR)/module/module.modulemap -c Sources/$$module/*.swift -wmo -o $(FUZZ_DIR)/$$module.o || exit 1; \
	done
	for target in rpc notify; do \
		swiftc -O -g -sanitize=fuzzer,address -parse-as-library -swift-version 6 -package-name iobench -I $(FUZZ_DIR) -Xcc -fmodule-map-file=$(FUZZ_DIR)/module/module.modulemap \
			Fuzz/Fuzz$$( [ $$target = rpc ] && echo Rpc || echo Notify ).swift $(FUZZ_DIR)/ServerKit.o $(FUZZ_DIR)/Protocols.o $(FUZZ_DIR)/ProtocolTesting.o $(FUZZ_DIR)/shims.o -o $(FUZZ_DIR)/fuzz-$$target || exit 1; \
	done
	for target in rpc notify; do \
		rm -rf $(FUZZ_DIR)/corpus/$$target && cp -r Fuzz/corpus/$$target $(FUZZ_DIR)/corpus/$$target; \
		$(FUZZ_DIR)/fuzz-$$target -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=$(FUZZ_DIR)/$$target- $(FUZZ_DIR)/corpus/$$target || exit 1; \
	done

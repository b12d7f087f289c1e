#!/usr/bin/env bash
# Heap allocations per message of a backend in steady state, counted from outside the process
# with a uprobe on glibc's malloc (needs linux-perf and root). Starts the server pinned to CPU 0,
# warms it up, then counts malloc calls during a load run and divides by the messages echoed.
# Usage: scripts/count-allocations.sh BACKEND [CONNECTIONS] [SIZE]
# Extra serve options go in SERVE_ARGS, for example SERVE_ARGS="--batch-wait 50us".
set -euo pipefail
backend=${1:?usage: count-allocations.sh BACKEND [CONNECTIONS] [SIZE]}
connections=${2:-128}
size=${3:-64}
bin=$(swift build -c release --show-bin-path)/iobench
libc=$(ldd "$bin" | awk '/libc.so.6/ {print $3}')
perf probe -q -x "$libc" -a malloc 2>/dev/null || true
# shellcheck disable=SC2086 # SERVE_ARGS is a list of words
coproc server { "$bin" serve --backend "$backend" --port 0 --cpus 0 --quit-on-eof ${SERVE_ARGS:-}; }
read -r -t 10 line <&"${server[0]}"
pid=${line##*pid=}; pid=${pid%% *}
addr=${line#listening on }; addr=${addr%% *}
"$bin" load --target "$addr" --connections "$connections" --size "$size" --duration 1s --warmup 0s --cpus 1 --quiet >/dev/null
out=$(mktemp)
perf stat -x, -e probe_libc:malloc -p "$pid" -o "$out" -- sleep 3 &
perf_pid=$!
sleep 0.2
messages=$("$bin" load --target "$addr" --connections "$connections" --size "$size" --duration 2500ms --warmup 0s --cpus 1 --format csv --quiet | tail -1 | cut -d, -f9)
wait "$perf_pid"
mallocs=$(awk -F, '/probe_libc:malloc/ {print $1}' "$out")
rm -f "$out"
echo quit >&"${server[1]}"
wait "$server_PID" || true
echo "$backend: $mallocs malloc calls in the server while it echoed $messages messages ($connections connections, $size B): $(python3 -c "print(f'{$mallocs/$messages:.6f}')") per message"

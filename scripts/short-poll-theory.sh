#!/usr/bin/env bash
# Short polling against its theory: CLIENTS clients, each on a topic of its own, each topic an
# independent Poisson stream of 1/T events per second (serve --event-arrivals poisson), each
# client polling every T on a fixed grid. Theory: empty fraction e^(−λT) = e^(−1) = 0.368;
# mean notice latency T/2 + the mean poll round trip. Server on CPU 0 (epoll), load on CPU 1.
#
# Usage: scripts/short-poll-theory.sh [OUT.csv]   (environment: CLIENTS=100 BACKEND=epoll)
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-100}
BACKEND=${BACKEND:-epoll}
swift build -c release >/dev/null
BIN=$(swift build -c release --show-bin-path)/iobench
OUT=${1:-results/notify/$(date -u +%Y-%m-%dT%H%M%SZ)-$(hostname -s)-short-poll-theory.csv}
mkdir -p "$(dirname "$OUT")"
COMMIT=$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- Sources Package.swift Package.resolved || echo "-dirty")
first=1
for spec in "10ms 100 5" "100ms 10 20" "1s 1 60"; do
    read -r interval rate duration <<<"$spec"
    coproc SERVER { exec "$BIN" serve --backend "$BACKEND" --pattern poll --port 0 --cpus 0 --event-rate "$rate" --event-arrivals poisson --quit-on-eof; }
    read -r line <&"${SERVER[0]}"
    port=$(sed 's/.*127.0.0.1:\([0-9]*\).*/\1/' <<<"$line")
    pid=$(sed 's/.*pid=\([0-9]*\).*/\1/' <<<"$line")
    command="iobench serve --backend $BACKEND --pattern poll --cpus 0 --event-rate $rate --event-arrivals poisson & iobench load --pattern short-poll --subscribers $CLIENTS --topics $CLIENTS --poll-interval $interval --event-rate $rate --poisson-events --duration $duration --warmup 1 --cpus 1 --server-pid PID --format csv"
    csv=$("$BIN" load --target "127.0.0.1:$port" --pattern short-poll --subscribers "$CLIENTS" --topics "$CLIENTS" --poll-interval "$interval" \
          --event-rate "$rate" --poisson-events --duration "$duration" --warmup 1 --cpus 1 --server-pid "$pid" --format csv)
    exec {SERVER[1]}>&-
    wait "$SERVER_PID" 2>/dev/null || true
    if [ $first = 1 ]; then echo "git_commit,backend,command,$(head -1 <<<"$csv")" > "$OUT"; first=0; fi
    echo "$COMMIT,$BACKEND,\"$command\",$(tail -1 <<<"$csv")" >> "$OUT"
done
python3 - "$OUT" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| interval | events/s per topic | polls | empty fraction (theory) | off by | mean notice ms (theory) | off by | B per empty poll |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    e, et = float(r["empty_fraction"]), float(r["empty_fraction_theory"])
    m, mt = float(r["latency_mean_us"]) / 1000, float(r["notice_mean_theory_us"]) / 1000
    print("| %s ms | %s | %s | %.3f (%.3f) | %+.1f%% | %.2f (%.2f) | %+.1f%% | %s |" % (r["poll_interval_ms"], r["event_rate"], r["polls"], e, et, (e / et - 1) * 100, m, mt, (m / mt - 1) * 100, r["empty_poll_bytes"]))
print("\nCSV:", sys.argv[1])
PY

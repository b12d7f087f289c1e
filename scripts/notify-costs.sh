#!/usr/bin/env bash
# What a push delivery and a held connection cost each backend, measured by iobench itself:
#
#   1. server CPU per delivered push event: 1,000 subscribers, the server publishing RATE events
#      per second (64 B) to their topic; server pinned to CPU 0, the subscribers (one
#      `iobench load --pattern push` thread) to CPU 1; the server's CPU over the measured window
#      (its CPU-time clock) divided by the events the subscribers received and checked;
#   2. server memory per idle subscriber: RSS with 10,000 subscribers minus RSS before, / 10,000;
#   3. server memory per held long poll: the same with 10,000 WAITs held (`--pattern long-poll`).
#
# Usage: scripts/notify-costs.sh [OUT.csv]   (environment: RATE=50 SUBSCRIBERS=1000 IDLE=10000
#        DURATION=10 REPEAT=3 BACKENDS="blocking epoll io_uring nio"). The CPU measurement runs
#        REPEAT times per backend (a fresh server each time); the table gives the median and the
#        range. Prints a table; writes one CSV row per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-50}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
IDLE=${IDLE:-10000}
DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
BACKENDS=${BACKENDS:-blocking epoll io_uring nio}
BIN=$(swift build -c release --show-bin-path)/iobench
swift build -c release >/dev/null
OUT=${1:-results/notify/$(date -u +%Y-%m-%dT%H%M%SZ)-$(hostname -s).csv}
mkdir -p "$(dirname "$OUT")"
ulimit -n 20000 2>/dev/null || true

measure() {  # backend serve-pattern load-pattern connections event-rate duration warmup
    local backend=$1 pattern=$2 load=$3 connections=$4 rate=$5 duration=$6 warmup=$7
    coproc SERVER { exec "$BIN" serve --backend "$backend" --pattern "$pattern" --port 0 --cpus 0 --event-rate "$rate" --quit-on-eof; }
    local line port pid
    read -r line <&"${SERVER[0]}"
    port=$(sed 's/.*127.0.0.1:\([0-9]*\).*/\1/' <<<"$line")
    pid=$(sed 's/.*pid=\([0-9]*\).*/\1/' <<<"$line")
    "$BIN" load --target "127.0.0.1:$port" --pattern "$load" --connections "$connections" --cpus 1 \
        --duration "$duration" --warmup "$warmup" --server-pid "$pid" --format json
    exec {SERVER[1]}>&-
    wait "$SERVER_PID" 2>/dev/null || true
}

COMMIT=$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- Sources Package.swift Package.resolved || echo "-dirty")
KERNEL=$(uname -r)
CPU=$(grep -m1 "model name" /proc/cpuinfo | sed 's/.*: //; s/,//g')
echo "git_commit,kernel,cpu_model,backend,measure,connections,event_rate,deliveries,gaps,duplicates,latency_p50_us,latency_p99_us,server_cpu_us_per_delivery,server_rss_before,server_rss_held,server_bytes_per_connection,command" > "$OUT"
for backend in $BACKENDS; do
    kinds=()
    for _ in $(seq "$REPEAT"); do kinds+=(push-cpu); done
    for kind in "${kinds[@]}" push-idle long-poll-held; do
        case $kind in
            push-cpu) args=(push push "$SUBSCRIBERS" "$RATE" "$DURATION" 2) ;;
            push-idle) args=(push push "$IDLE" 0 1 0) ;;
            long-poll-held) args=(poll long-poll "$IDLE" 0 1 0) ;;
        esac
        json=$(measure "$backend" "${args[@]}")
        command="iobench serve --backend $backend --pattern ${args[0]} --cpus 0 --event-rate ${args[3]} & iobench load --pattern ${args[1]} --connections ${args[2]} --cpus 1 --duration ${args[4]} --warmup ${args[5]} --server-pid PID"
        python3 - "$COMMIT" "$KERNEL" "$CPU" "$backend" "$kind" "${args[2]}" "${args[3]}" "$command" "$json" >> "$OUT" <<'PY'
import json, sys
commit, kernel, cpu, backend, kind, connections, rate, command, text = sys.argv[1:]
d = {k: (None if v == "" else v) for k, v in json.loads(text).items()}
f = lambda v, n=2: "" if v is None else ("%.*f" % (n, v))
print(",".join([commit, kernel, cpu, backend, kind, connections, rate, str(d["deliveries"]), str(d["gaps"]), str(d["duplicates"]),
                f(d["latency_p50_us"], 1), f(d["latency_p99_us"], 1), f(d["server_cpu_us_per_event"]),
                str(int(d["server_rss_before"] or 0)), str(int(d["server_rss_held"] or 0)),
                f(d["server_bytes_per_client"], 0), '"' + command + '"']))
PY
    done
done
python3 - "$OUT" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
import statistics
by = {}
for r in rows: by.setdefault(r["backend"], {}).setdefault(r["measure"], []).append(r)
print("| backend | server CPU µs per delivered push event, %s subscribers × %s events/s: median [min, max] of %d | events received (missing) | delivery p50 / p99 µs (median run) | RSS per idle subscriber (%s) | RSS per held long poll (%s) |"
      % (rows[0]["connections"], rows[0]["event_rate"], len(by[rows[0]["backend"]]["push-cpu"]), by[rows[0]["backend"]]["push-idle"][0]["connections"], by[rows[0]["backend"]]["long-poll-held"][0]["connections"]))
print("| --- | --- | --- | --- | --- | --- |")
for b, m in by.items():
    runs = sorted(m["push-cpu"], key=lambda r: float(r["server_cpu_us_per_delivery"]))
    mid = runs[len(runs) // 2]
    costs = [float(r["server_cpu_us_per_delivery"]) for r in runs]
    i, w = m["push-idle"][0], m["long-poll-held"][0]
    print("| %s | %.2f [%.2f, %.2f] | %s (%d) | %s / %s | %s B | %s B |" % (b, statistics.median(costs), costs[0], costs[-1],
          "+".join(r["deliveries"] for r in m["push-cpu"]), sum(int(r["gaps"]) for r in runs), mid["latency_p50_us"], mid["latency_p99_us"],
          i["server_bytes_per_connection"], w["server_bytes_per_connection"]))
print("\nCSV:", sys.argv[1])
PY

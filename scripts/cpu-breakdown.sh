#!/usr/bin/env bash
# Where a server's CPU goes, by category, from a perf profile of the running process.
# Usage: scripts/cpu-breakdown.sh PID [SECONDS]   (needs linux-perf; run the load meanwhile)
set -euo pipefail
pid=${1:?usage: cpu-breakdown.sh PID [SECONDS]}
seconds=${2:-3}
data=$(mktemp)
trap 'rm -f "$data"' EXIT
perf record -q -F 4999 -g -p "$pid" -o "$data" -- sleep "$seconds" >/dev/null 2>&1
perf report -i "$data" --no-children --sort dso,sym --stdio 2>/dev/null | python3 -c '
import re, sys
cats = [
    ("user space (server code, Swift runtime, libc)", lambda d, s: not d.startswith("[kernel")),
    ("syscall entry/exit", lambda d, s: re.search(r"entry_SYSCALL|do_syscall|syscall_exit|__x64_sys|syscall_return|exit_to_user|__sys_|fdget|fput", s)),
    ("io_uring machinery", lambda d, s: re.search(r"io_|__io_|tctx_|io_uring", s)),
    ("epoll machinery", lambda d, s: re.search(r"ep_|epoll|__ep", s)),
    ("scheduler and wake-ups", lambda d, s: re.search(r"schedule|wake|_raw_spin|enqueue|dequeue|pick_next|update_curr|finish_task|switch|psi_|ttwu|native_|hrtimer|tick", s)),
    ("TCP/IP stack and socket layer", lambda d, s: True),
]
totals = {name: 0.0 for name, _ in cats}
for line in sys.stdin:
    m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(\S+)", line)
    if not m: continue
    pct, dso, sym = float(m.group(1)), m.group(2), m.group(3)
    for name, test in cats:
        if test(dso, sym):
            totals[name] += pct
            break
for name, _ in cats:
    print(f"{totals[name]:6.1f}%  {name}")
'

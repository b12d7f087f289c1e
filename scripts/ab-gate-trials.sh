#!/usr/bin/env bash
# How often the counted half of `iobench check --against HEAD~1` catches a change nobody
# announced, and how often it raises a false alarm on an unchanged tree.
#
# In a scratch clone of HEAD ($SCRATCH, default /tmp/iobench-ab-trials) it commits a busy spin
# of ~900 ns in every send of the syscall seam (blocking and epoll call it; io_uring submits its
# sends to the ring and NIO makes its own calls), builds it (release) and runs
#   iobench check --against HEAD~1 --metrics counted $CHECK_ARGS
# RUNS times (default 10); then it replaces the spin by an empty commit (HEAD~1 is then the same
# code) and runs the same check CONTROL_RUNS times (default 20). One line per run: the exit code
# and the backends the counted comparison flagged. The first run builds HEAD~1 in the clone's
# .build/against/src; later runs reuse it. With OLD_EXECUTABLE (an iobench built from HEAD, the
# clone's HEAD~1, such as this tree's .build/release/iobench) that build is skipped: the check is
# given it with --against-executable.
#
# SPIN_ARGS are added to the spin's runs only (for example "--counted-repeat 1 --retries 0": a
# change this large needs no second look), so the control runs keep CI's settings.
#
# Usage: scripts/ab-gate-trials.sh [RUNS] [CONTROL_RUNS]   (CHECK_ARGS, SPIN_ARGS, SCRATCH, OLD_EXECUTABLE from the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
controls=${2:-20}
scratch=${SCRATCH:-/tmp/iobench-ab-trials}
check_args=${CHECK_ARGS:---backends blocking,epoll,io_uring}
if [ -n "${OLD_EXECUTABLE:-}" ]; then check_args="$check_args --against-executable $(realpath "$OLD_EXECUTABLE")"; fi

rm -rf "$scratch"
git clone --quiet --no-hardlinks "$PWD" "$scratch"
git -C "$scratch" checkout --quiet -B trials "$(git rev-parse HEAD)"
commit() { git -C "$scratch" -c user.name=trials -c user.email=trials@localhost commit --quiet "$@"; }

python3 - "$scratch/Sources/ServerKit/SystemCalls.swift" <<'EOF'
import sys
path = sys.argv[1]
source = open(path).read()
send = "    public func send(_ fd: Int32, from buffer: UnsafeRawPointer, count length: Int) throws(SystemError) -> IOResult {\n"
assert source.count(send) == 1, "the syscall seam's send was not found"
spin = "        let spinUntil = ProcessResources.monotonicNanoseconds() + 900\n        while ProcessResources.monotonicNanoseconds() < spinUntil {}\n"
open(path, "w").write(source.replace(send, send + spin))
EOF
commit -am "spin ~900 ns in every send of the syscall seam"

trial() {  # label, index, extra arguments
  local out status flagged
  set +e
  out=$("$scratch/.build/release/iobench" check --against HEAD~1 --metrics counted --quiet $check_args $3 2>&1)
  status=$?
  set -e
  flagged=$(printf '%s\n' "$out" | sed -n 's/^  - counted: \([0-9]*\) conns .* depth 1, \([a-z_]*\): \(counted\.[a-z_]*\) \([-+0-9.%]*\).*/\2 \3 \4 (\1 conns)/p' | sort -u | paste -sd ';' -)
  echo "$1 $2: exit $status; flagged: ${flagged:-none}"
  if [ "$status" -ne 0 ] && [ "$status" -ne 2 ]; then printf '%s\n' "$out" | tail -5; fi
}

swift build -c release --package-path "$scratch" --product iobench >/dev/null
echo "spin: $(git -C "$scratch" log -1 --format=%h) against HEAD~1 $(git -C "$scratch" rev-parse --short HEAD~1); check args: $check_args ${SPIN_ARGS:-}"
for i in $(seq 1 "$runs"); do trial spin "$i" "${SPIN_ARGS:-}"; done

git -C "$scratch" reset --quiet --hard HEAD~1
commit --allow-empty -m "no change"
swift build -c release --package-path "$scratch" --product iobench >/dev/null
echo "control: $(git -C "$scratch" log -1 --format=%h) (empty) against HEAD~1 $(git -C "$scratch" rev-parse --short HEAD~1)"
for i in $(seq 1 "$controls"); do trial control "$i" ""; done

#!/usr/bin/env bash
# Instructions per PING_INLINE request for one server of the suite, counted by
# valgrind's callgrind (exact and repeatable, unlike time on a shared machine;
# hardware counters are not available here). The load is redis-benchmark
# -t ping_inline -P 16 -c 50; the figure is the difference between a
# 200,000- and a 100,000-request run divided by 100,000, so start-up and
# shutdown cancel out. User space only: the kernel's share (about 90 % of the
# server's CPU time, see BENCHMARKS.md) is not in it.
#
#   cargo bench --bench suite --no-run      # prints the suite binary's path
#   benches/callgrind.sh target/release/deps/suite-HASH netpool
#   benches/callgrind.sh target/release/deps/suite-HASH mio-floor
#   benches/callgrind.sh target/release/deps/suite-HASH tokio-ct
#
# Needs valgrind and redis-benchmark (Debian: valgrind, redis-tools).
set -euo pipefail
bin=$1
kind=$2
log=$(mktemp)
out=$(mktemp)
trap 'rm -f "$log" "$out"' EXIT

run() {
    local n=$1 port vpid
    port=$((20000 + RANDOM % 20000))
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        "$bin" --serve "$kind" --addr "127.0.0.1:$port" --proto ping >"$log" 2>&1 &
    vpid=$!
    for _ in $(seq 1 300); do
        grep -q "listening on" "$log" && break
        sleep 0.1
    done
    redis-benchmark -h 127.0.0.1 -p "$port" -t ping_inline -P 16 -c 50 -n "$n" -q >"$out" 2>&1
    kill -INT "$vpid" 2>/dev/null || true
    sleep 0.5
    kill "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    grep -q "requests per second" "$out" || { echo "redis-benchmark failed: $(cat "$out")" >&2; exit 1; }
    grep "Collected" "$log" | awk '{print $4}'
}

small=$(run 100000)
large=$(run 200000)
echo "$kind: $(( (large - small) / 100000 )) instructions per request ($small for 100,000, $large for 200,000)"

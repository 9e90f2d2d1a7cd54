#!/usr/bin/env bash
# User-space instructions per TLS line or per TLS handshake of one TLS server of
# the suite (netpool-tls or tokio-tls), counted by valgrind's callgrind. The load
# is the suite's own load generator: `stream` (50 connections x 16 lines of 64
# bytes in flight, as tls-pipelined) or `accept` (8 at a time: connect, full
# TLS 1.3 handshake, one line, close, as tls-handshakes). The figure is the
# difference between a long and a short run divided by the difference in
# operations, so start-up (and, for lines, the 50 handshakes) cancels out.
#
#   cargo bench --bench suite --no-run      # prints the suite binary's path
#   benches/callgrind-tls.sh target/release/deps/suite-HASH netpool-tls stream
#   benches/callgrind-tls.sh target/release/deps/suite-HASH netpool-tls accept
#
# Needs valgrind and openssl (for a throwaway ECDSA P-256 certificate).
set -euo pipefail
bin=$1
kind=$2
mode=${3:-stream}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -addext basicConstraints=critical,CA:FALSE \
    -addext subjectAltName=DNS:localhost \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
case $mode in
    stream) load=(--conns 50 --depth 16); short=2000; long=4000 ;;
    accept) load=(--conns 8 --depth 1); short=3000; long=6000 ;;
    *) echo "mode: stream or accept" >&2; exit 2 ;;
esac

# Prints "instructions operations" for one run of $1 ms.
run() {
    local ms=$1 port vpid
    port=$((20000 + RANDOM % 20000))
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --serve "$kind" \
        --addr "127.0.0.1:$port" --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" \
        >"$dir/server.log" 2>&1 &
    vpid=$!
    for _ in $(seq 1 300); do
        grep -q "listening on" "$dir/server.log" && break
        sleep 0.1
    done
    "$bin" --load "$mode" --target "127.0.0.1:$port" "${load[@]}" --line-len 64 \
        --duration-ms "$ms" --warmup-ms 0 --tls-ca "$dir/cert.pem" >"$dir/load.log" 2>&1
    kill -INT "$vpid" 2>/dev/null || true
    sleep 0.5
    kill "$vpid" 2>/dev/null || true
    wait "$vpid" 2>/dev/null || true
    echo "$(grep Collected "$dir/server.log" | awk '{print $4}') \
$(grep -o 'ops=[0-9]*' "$dir/load.log" | head -1 | cut -d= -f2)"
}

read -r i1 n1 < <(run $short)
read -r i2 n2 < <(run $long)
per=$(( (i2 - i1) / (n2 - n1) ))
what=$([ "$mode" = stream ] && echo line || echo handshake)
echo "$kind: $per instructions per $what ($i1 for $n1, $i2 for $n2)"

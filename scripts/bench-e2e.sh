#!/bin/sh
# End-to-end replay throughput against a floor measured in the same run.
#
# Generates (once) a ~1 GB mixed capture with outflow-gen, warms the page cache, then runs,
# ROUNDS times each and interleaved: the floor (`outflow read-only`: libpcap reads every
# record, nothing else) and `outflow replay` with 1 and 2 workers. Reports the best time of
# each and the ratio replay/floor in packets per second. Ratios, not absolute numbers, are
# what to compare across machines: these machines are shared and noisy.
set -eu
cd "$(dirname "$0")/.."
FILE=${BENCH_FILE:-target/bench/mixed-1g.pcap}
SIZE=${BENCH_SIZE:-1G}
ROUNDS=${ROUNDS:-3}
BIN=./target/release

cargo build --release --bins >/dev/null
mkdir -p "$(dirname "$FILE")"
[ -f "$FILE" ] || $BIN/outflow-gen mixed --bytes "$SIZE" "$FILE"
cat "$FILE" >/dev/null # page cache: measure CPU, not the disk

now() { date +%s.%N; }
best() { # best wall time of "$@" over the rounds, in seconds
    b=""
    for _ in $(seq "$ROUNDS"); do
        t0=$(now); "$@" >/dev/null 2>&1; t1=$(now)
        b=$(awk -v a="$t0" -v z="$t1" -v b="$b" 'BEGIN { t = z - a; if (b == "" || t < b) b = t; printf "%.4f", b }')
    done
    echo "$b"
}

PKTS=$($BIN/outflow read-only "$FILE" | awk '{print $2}')
floor=$(best $BIN/outflow read-only "$FILE")
w1=$(best $BIN/outflow replay -q --workers 1 "$FILE")
w2=$(best $BIN/outflow replay -q --workers 2 "$FILE")
awk -v p="$PKTS" -v f="$floor" -v a="$w1" -v b="$w2" -v file="$FILE" 'BEGIN {
    printf "capture: %s, %d packets\n", file, p
    printf "%-34s %8.3f s %12.0f packets/s\n", "libpcap read-only (floor)", f, p / f
    printf "%-34s %8.3f s %12.0f packets/s  ratio %.2f\n", "outflow replay --workers 1", a, p / a, f / a
    printf "%-34s %8.3f s %12.0f packets/s  ratio %.2f\n", "outflow replay --workers 2", b, p / b, f / b
}'

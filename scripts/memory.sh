#!/usr/bin/env bash
# Peak RSS of `outflow replay --workers 1` with N flows open at once, against the README's
# formula. Usage: scripts/memory.sh [N...] (default 1000000 4000000 10000000).
# Captures go to target/memory/ (reused when present; 10 M flows = 665 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- 1000000 4000000 10000000
cargo build --release --quiet --bin outflow --bin outflow-gen
bin=target/release
dir=target/memory
mkdir -p "$dir"

# Formula constants (bytes), measured by this script's first runs; see README "Bounded memory".
idle=36000000           # threads, batches, output queue, buffers: a 1000-packet replay
base=100000000          # the same at millions of flows: fitted (+-2% at 1, 4, 10 M), ~60 MB
                        # more than idle (allocator slack, growth copies of the big tables)
ring=67108864           # slice.ring_bytes (default 64 MiB), filled by the first 64 MiB of packets
per_flow=124            # packed table entry, touched when a slot is first used
end_sort=16             # per flow open at the end: the (id, slot) list that ends them in id order
pair=225                # detect.host_window entry (hash map + window), default capacity 262144
host=110                # detect.baseline entry (linked hash map + history), default capacity 65536

measure() { # capture, config, label, open flows
    local out
    out=$( { /usr/bin/time -f 'maxrss %M' "$bin/outflow" replay --workers 1 --config "$2" "$1" >/dev/null; } 2>&1)
    local open rss
    open=$(sed -n 's/.*created, at most \([0-9]*\) open at once.*/\1/p' <<<"$out")
    rss=$(( $(sed -n 's/^maxrss \([0-9]*\)/\1/p' <<<"$out") * 1024 ))
    echo "$3 $open $rss"
}

printf '%-28s %10s %10s %12s %12s\n' run capacity open "peak RSS MB" "formula MB"
row() { # label capacity open rss formula
    printf '%-28s %10s %10s %12d %12d\n' "$1" "$2" "$3" $(( $4 / 1000000 )) $(( $5 / 1000000 ))
}

# A short replay with the largest table: untouched pages cost nothing.
"$bin/outflow-gen" concurrent --flows 1000 "$dir/c1000.pcap" >/dev/null
cap=16777215
printf '[flow]\ncapacity_per_worker = %d\n' $cap >"$dir/cap-max.toml"
read -r _ open rss < <(measure "$dir/c1000.pcap" "$dir/cap-max.toml" short)
heads=$(( 4 * (1 << 23) ))  # bucket heads: touched at random, so all of them (2 MiB pages)
row "1000 flows, table 2 GB" $cap "$open" "$rss" $(( idle + 1000 * (per_flow + end_sort) + heads ))

for n in "$@"; do
    f="$dir/c$n.pcap"
    [ -s "$f" ] || "$bin/outflow-gen" concurrent --flows "$n" "$f" >/dev/null
    cap=$(( n + n / 16 ))
    [ $cap -le 16777215 ] || cap=16777215
    printf '[flow]\ncapacity_per_worker = %d\n' $cap >"$dir/cap-$n.toml"
    read -r _ open rss < <(measure "$f" "$dir/cap-$n.toml" "$n")
    [ "$open" = "$n" ] || { echo "only $open of $n flows open at once" >&2; exit 1; }
    b=1; while [ $(( b * 2 )) -le $(( cap / 2 )) ]; do b=$(( b * 2 )); done
    formula=$(( base + ring + n * (per_flow + end_sort) + 4 * b + pair * 262144 + host * 65536 ))
    row "$n flows" $cap "$open" "$rss" $formula
done

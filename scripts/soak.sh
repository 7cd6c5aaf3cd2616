#!/usr/bin/env bash
# Soak test: `outflow run` (release build) on a veth in a network namespace for DURATION
# under a mix of ordinary traffic, periodic floods of new sources, a large upload that must
# alert each time, and periodic SIGHUPs; then SIGTERM. Reports resident memory over time,
# every drop counter, alerts, and how the stop went. Needs root, iproute2 and tcpreplay.
#
# Usage: scripts/soak.sh [DURATION_SECONDS]   (default 1800 = 30 minutes)
# Tunables (environment): WORKERS (2), NORMAL_PPS (20000), FLOOD_EVERY (300 s),
# FLOOD_PACKETS (1000000), FLOOD_PPS (150000), UPLOAD_EVERY (600 s), HUP_EVERY (60 s),
# SAMPLE_EVERY (10 s), OUT (target/soak).
#
# Two namespaces joined by a veth pair keep every replayed frame off the host's network;
# both are removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-1800}
WORKERS=${WORKERS:-2}
NORMAL_PPS=${NORMAL_PPS:-20000}
FLOOD_EVERY=${FLOOD_EVERY:-300}
FLOOD_PACKETS=${FLOOD_PACKETS:-1000000}
FLOOD_PPS=${FLOOD_PPS:-150000}
UPLOAD_EVERY=${UPLOAD_EVERY:-600}
HUP_EVERY=${HUP_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
OUT=${OUT:-target/soak}
CAP=ofsoak-cap SND=ofsoak-snd
BIN=$(pwd)/target/release

[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (network namespaces)" >&2; exit 2; }
for t in ip tcpreplay curl; do
    command -v $t >/dev/null || { echo "soak.sh: $t is not installed" >&2; exit 2; }
done
cargo build --release --quiet --bin outflow --bin outflow-gen
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -rf "$OUT/run" && mkdir -p "$OUT/run/state" "$OUT/run/slices"

# The traffic: ordinary short TCP sessions and DNS (the benchmark's flow-heavy mix, small),
# a flood of one-packet flows from new sources, and a 150 MB upload (whole frames: the
# committed demo capture is cut to a short snaplen, and tcpreplay sends only what a file
# holds).
[ -s "$OUT/normal.pcap" ] || "$BIN/outflow-gen" flows --flows 20000 "$OUT/normal.pcap" >/dev/null
[ -s "$OUT/flood.pcap" ] || "$BIN/outflow-gen" flood --packets "$FLOOD_PACKETS" "$OUT/flood.pcap" >/dev/null
UPLOAD=$OUT/upload.pcap
[ -s "$UPLOAD" ] || "$BIN/outflow-gen" upload --bytes 150M "$UPLOAD" >/dev/null

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del $CAP 2>/dev/null || true
    ip netns del $SND 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add $CAP && ip netns add $SND
ip link add ofsk0 type veth peer name ofsk1
ip link set ofsk0 netns $CAP && ip link set ofsk1 netns $SND
for ns in $CAP $SND; do ip -n $ns link set lo up; done
ip netns exec $CAP sysctl -qw net.ipv6.conf.ofsk0.disable_ipv6=1
ip netns exec $SND sysctl -qw net.ipv6.conf.ofsk1.disable_ipv6=1
ip -n $CAP link set ofsk0 mtu 9000 up && ip -n $SND link set ofsk1 mtu 9000 up

cfg=$OUT/run/outflow.toml
write_cfg() { # large-transfer threshold
    cat >"$cfg" <<EOF
[capture]
interface = "ofsk0"
workers = $WORKERS
[run]
stats_interval = "60s"
[log]
format = "json"
[http]
listen = "127.0.0.1:9760"
[slice]
dir = "$OUT/run/slices"
[state]
dir = "$OUT/run/state"
snapshot_interval = "5m"
[detect.large_transfer]
threshold_bytes = $1
EOF
}
write_cfg 100000000
ip netns exec $CAP "$BIN/outflow" run --config "$cfg" --alerts-out "$OUT/run/alerts.json" \
    --flows-out "$OUT/run/flows.json" 2>"$OUT/run/log.json" &
sensor=$!
pids+=($sensor)
for _ in $(seq 50); do grep -q "listening on http" "$OUT/run/log.json" 2>/dev/null && break; sleep 0.1; done

metrics() { ip netns exec $CAP curl -sf --max-time 5 http://127.0.0.1:9760/metrics || true; }
sum() { # metric name prefix in a scrape on stdin
    awk -v n="$1" 'index($1, n) == 1 && (substr($1, length(n) + 1, 1) == "{" || length($1) == length(n)) { s += $2 } END { printf "%d", s }'
}

ip netns exec $SND tcpreplay -q -i ofsk1 --loop=0 --pps="$NORMAL_PPS" "$OUT/normal.pcap" >/dev/null 2>&1 &
pids+=($!)

csv=$OUT/samples.csv
echo "t_s,rss_mb,hwm_mb,packets,flows_active,kernel_drops,internal_drops,alerts,table_evictions,sighups,floods,uploads" >"$csv"
start=$(date +%s)
next_flood=$((start + 30)) next_upload=$((start + 60)) next_hup=$((start + HUP_EVERY))
hups=0 floods=0 uploads=0 threshold=100000000
while :; do
    now=$(date +%s)
    t=$((now - start))
    [ $t -lt "$DURATION" ] || break
    kill -0 $sensor 2>/dev/null || { echo "soak.sh: the sensor died at ${t}s" >&2; tail -5 "$OUT/run/log.json" >&2; exit 1; }
    if [ "$now" -ge $next_flood ]; then
        ip netns exec $SND tcpreplay -q -i ofsk1 --pps="$FLOOD_PPS" "$OUT/flood.pcap" >/dev/null 2>&1 &
        pids+=($!)
        floods=$((floods + 1)) next_flood=$((now + FLOOD_EVERY))
    fi
    if [ "$now" -ge $next_upload ]; then
        ip netns exec $SND tcpreplay -q -i ofsk1 --pps=50000 "$UPLOAD" >/dev/null 2>&1 &
        pids+=($!)
        uploads=$((uploads + 1)) next_upload=$((now + UPLOAD_EVERY))
    fi
    if [ "$now" -ge $next_hup ]; then
        # Alternate the threshold so every reload changes something real.
        threshold=$((threshold == 100000000 ? 90000000 : 100000000))
        write_cfg $threshold
        kill -HUP $sensor
        hups=$((hups + 1)) next_hup=$((now + HUP_EVERY))
    fi
    m=$(metrics)
    rss=$(awk '/^VmRSS/ { printf "%d", $2 / 1024 }' /proc/$sensor/status)
    hwm=$(awk '/^VmHWM/ { printf "%d", $2 / 1024 }' /proc/$sensor/status)
    echo "$t,$rss,$hwm,$(sum outflow_packets_total <<<"$m"),$(sum outflow_flows_active <<<"$m"),$(sum outflow_kernel_drops_total <<<"$m"),$(sum outflow_internal_drops_total <<<"$m"),$(sum outflow_alerts_total <<<"$m"),$(sum outflow_table_evictions_total <<<"$m"),$hups,$floods,$uploads" >>"$csv"
    sleep "$SAMPLE_EVERY"
done

for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
sleep 1
metrics >"$OUT/last-metrics.txt"
last=$(tail -1 "$csv")
t0=$(date +%s.%N)
kill -TERM $sensor
rc=0
wait $sensor || rc=$?
stop_s=$(echo "$(date +%s.%N) - $t0" | bc)

echo
echo "soak: ${DURATION}s, $WORKERS workers, normal ${NORMAL_PPS} pps, $floods floods of $FLOOD_PACKETS packets at $FLOOD_PPS pps, $uploads uploads of 150 MB, $hups SIGHUPs"
awk -F, 'NR > 1 { if (min == "" || $2 < min) min = $2; if ($2 > max) max = $2; n++; r[n] = $2 }
    END { printf "RSS MB: min %d, max %d, at the end %d (peak VmHWM %s)\n", min, max, r[n], hwm }' hwm="$(tail -1 "$csv" | cut -d, -f3)" "$csv"
echo "RSS MB every 5 minutes: $(awk -F, 'NR > 1 && ($1 % 300) < '"$SAMPLE_EVERY"' { printf "%s ", $2 }' "$csv")"
IFS=, read -r _ _ _ pk fa kd idr al ev _ _ _ <<<"$last"
echo "packets $pk, kernel drops $kd, internal drops $idr, table evictions $ev, alerts $al (alert lines in file: $(wc -l <"$OUT/run/alerts.json"))"
echo "non-zero drop and eviction counters at the end:"
grep -E '^outflow_(kernel_drops|internal_drops|table_evictions|sink_dropped|flows_evicted)_total' "$OUT/last-metrics.txt" |
    awk '$2 != 0 { print "  " $0 }'
echo "SIGTERM: exit status $rc after ${stop_s}s; final stats: $(grep '"total stats"' "$OUT/run/log.json" | grep '"final"' | sed 's/.*"kernel_dropped"/"kernel_dropped"/' | cut -c1-200)"
echo "errors logged: $(grep -c '"level":"ERROR"' "$OUT/run/log.json" || true); samples: $csv"

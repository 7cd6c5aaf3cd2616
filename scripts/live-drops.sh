#!/bin/sh
# Live capture drop test: the highest tcpreplay rate (packets/s into a veth) at which
# `outflow run` reports zero drops, with 1 and 2 workers, next to `tcpdump -w /dev/null` on
# the same veth, all measured in the same session. Needs root, iproute2, tcpreplay, tcpdump.
#
# Two namespaces joined by a veth pair keep every replayed frame off the host's network.
# Usage: scripts/live-drops.sh [RATE ...]   (default rates below; "max" = --topspeed)
#        scripts/live-drops.sh flood        (issue 11, flood survival: see flood_run below)
set -eu
cd "$(dirname "$0")/.."
MODE=rates
if [ "${1:-}" = flood ]; then MODE=flood; shift; fi
RATES=${*:-"50000 100000 150000 200000 250000 max"}
LOOPS=${LOOPS:-5}
BUF_KIB=${BUF_KIB:-65536}   # kernel buffer per handle, for outflow and tcpdump alike
BIN=$(pwd)/target/release
PCAP=${PCAP:-target/bench/mixed-100m.pcap}
CAP=ofd-cap SND=ofd-snd
cargo build --release --bins >/dev/null 2>&1
mkdir -p target/bench
if [ $MODE = flood ]; then
    # The flood (5 M packets, 1.2 M one-packet flows from >= 1 M new sources) with a 150 MB
    # upload interleaved; the generator's summary (kept next to the file) says where the
    # upload crosses the default 100 MB threshold.
    PCAP=${FLOOD_PCAP:-target/bench/flood-upload.pcap}
    [ -f $PCAP ] && [ -f $PCAP.txt ] ||
        $BIN/outflow-gen flood --upload ${UPLOAD:-150M} $PCAP > $PCAP.txt
else
    [ -f $PCAP ] || $BIN/outflow-gen mixed --bytes 100M ${MSS:+--mss $MSS} $PCAP >/dev/null
    PKTS=$(( $($BIN/outflow read-only $PCAP | awk '{print $2}') * LOOPS ))
fi

cleanup() { ip netns del $CAP 2>/dev/null || true; ip netns del $SND 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add $CAP; ip netns add $SND
ip link add ofd0 type veth peer name ofd1
ip link set ofd0 netns $CAP; ip link set ofd1 netns $SND
for ns in $CAP $SND; do ip -n $ns link set lo up; done
ip netns exec $CAP sysctl -qw net.ipv6.conf.ofd0.disable_ipv6=1
ip netns exec $SND sysctl -qw net.ipv6.conf.ofd1.disable_ipv6=1
ip -n $CAP link set ofd0 up; ip -n $SND link set ofd1 up
TMP=$(mktemp -d)

replay() { # rate
    if [ "$1" = max ]; then r="--topspeed"; else r="--pps=$1"; fi
    ip netns exec $SND tcpreplay -q -i ofd1 --preload-pcap --loop=$LOOPS $r $PCAP 2>&1 |
        awk '/Rated:/ { printf "%d", $(NF-1) }'
}

outflow_run() { # workers rate -> "sent_pps dropped"
    printf '[capture]\ninterface = "ofd0"\nworkers = %s\nbuffer_bytes = %s\n[log]\nformat = "json"\n[run]\nstats_interval = "1h"\n' "$1" $((BUF_KIB * 1024)) > $TMP/cfg.toml
    ip netns exec $CAP $BIN/outflow run --config $TMP/cfg.toml --alerts-out /dev/null 2> $TMP/log &
    pid=$!
    sleep 1
    sent=$(replay "$2")
    sleep 1
    kill -TERM $pid; wait $pid || true
    drops=$(grep '"total stats"' $TMP/log | grep '"final"' | sed 's/.*"kernel_dropped":\([0-9]*\).*"queue_dropped":\([0-9]*\).*"events_dropped":\([0-9]*\).*/k=\1,q=\2,e=\3/')
    seen=$(grep '"total stats"' $TMP/log | grep '"final"' | sed 's/.*"frames":\([0-9]*\).*/\1/')
    echo "$sent ${drops:-?} ${seen:-?}"
}

tcpdump_run() { # rate -> "sent_pps dropped"
    ip netns exec $CAP tcpdump -i ofd0 -w /dev/null -s 65535 -B $BUF_KIB 2> $TMP/td &
    pid=$!
    sleep 1
    sent=$(replay "$1")
    sleep 1
    kill -INT $pid; wait $pid || true
    drops=k=$(awk '/dropped by kernel/ {print $1}' $TMP/td)
    seen=$(awk '/packets captured/ {print $1}' $TMP/td)
    echo "$sent ${drops:-?} ${seen:-?}"
}

# Issue 11, flood survival: the flood + upload capture once at tcpreplay's top speed into
# `outflow run` with N workers and a flow table of CAPACITY per worker (the default; the
# flood's 1.2 M flows fill it), then, from /metrics (scraped inside the namespace before
# stopping) and the final stats line: packets sent vs seen, every drop counter, the flow
# tables' entries vs capacity and evictions, and whether the alert file holds the upload's
# large_outbound_transfer alert with exactly the crossing packet's out_pkts/out_ip_bytes.
# Live timestamps are the kernel's, not the file's: the crossing is checked by counts.
CAPACITY=${CAPACITY:-262144}
kv() { # key file -> value of the first key=value or "key":value
    sed -n "s/.*[ \"]$1[\"]*[=:]\([0-9.]*\).*/\1/p" "$2" | head -n 1
}
metric() { # name label file
    awk -v n="$1" -v l="$2" 'index($1, n "{") == 1 && index($1, l) { print $2; exit }' "$3"
}
flood_run() { # workers
    port=$((9470 + $1))
    printf '[capture]\ninterface = "ofd0"\nworkers = %s\nbuffer_bytes = %s\n[flow]\ncapacity_per_worker = %s\n[http]\nlisten = "127.0.0.1:%s"\n[log]\nformat = "json"\n[run]\nstats_interval = "1h"\n' \
        "$1" $((BUF_KIB * 1024)) $CAPACITY $port > $TMP/cfg.toml
    rm -f $TMP/alerts.json
    ip netns exec $CAP $BIN/outflow run --config $TMP/cfg.toml --alerts-out $TMP/alerts.json 2> $TMP/log &
    pid=$!
    sleep 1
    ip netns exec $SND tcpreplay -i ofd1 --preload-pcap --loop=1 --topspeed $PCAP > $TMP/replay 2>&1
    sleep 3 # let the workers drain the kernel buffers
    ip netns exec $CAP curl -s http://127.0.0.1:$port/metrics > $TMP/metrics
    kill -TERM $pid; wait $pid || true
    grep '"total stats"' $TMP/log | grep '"final"' > $TMP/final || true
    grep '"output stats"' $TMP/log | grep '"final"' > $TMP/outfinal || true
    echo "== outflow run, $1 worker(s), flow.capacity_per_worker = $CAPACITY"
    echo "tcpreplay: $(awk '/Actual:/ {print $2 " packets in " $(NF-1) " s"} /Rated:/ {print "at " $(NF-1) " pps, " $(NF-3) " Mbps"}' $TMP/replay | tr '\n' ' ')" \
        "(failed: $(awk '/Failed packets:/ {print $3}' $TMP/replay))"
    echo "seen: frames=$(kv frames $TMP/final) packets=$(kv packets $TMP/final)" \
        "(sent $(awk '/Actual:/ {print $2}' $TMP/replay))"
    echo "drops: kernel=$(kv kernel_dropped $TMP/final) interface=$(kv interface_dropped $TMP/final)" \
        "queue=$(kv queue_dropped $TMP/final) events=$(kv events_dropped $TMP/final)" \
        "alerts_dropped=$(kv alerts_dropped $TMP/final)"
    echo "flows: created=$(kv flows_created $TMP/final) evicted=$(kv flows_evicted $TMP/final);" \
        "before stopping: table entries=$(metric outflow_table_entries 'table="flows"' $TMP/metrics)" \
        "capacity=$(metric outflow_table_capacity 'table="flows"' $TMP/metrics)" \
        "evictions=$(metric outflow_table_evictions_total 'table="flows"' $TMP/metrics)"
    echo "alerts: raised=$(kv alerts $TMP/final) written=$(kv alerts $TMP/outfinal)"
    a=$(grep '"large_outbound_transfer"' $TMP/alerts.json 2>/dev/null |
        grep '"src_ip":"10.0.0.5"' | grep '"dst_ip":"203.0.113.50"' | head -n 1 || true)
    if [ -z "$a" ]; then
        echo "upload: NO large_outbound_transfer alert for 10.0.0.5 -> 203.0.113.50"
    else
        echo "$a" > $TMP/alert
        got="out_pkts=$(kv out_pkts $TMP/alert) out_ip_bytes=$(kv out_ip_bytes $TMP/alert)"
        want="out_pkts=$(kv cross_orig_pkts $PCAP.txt) out_ip_bytes=$(kv cross_orig_ip_bytes $PCAP.txt)"
        if [ "$got" = "$want" ]; then verdict="alerted at its crossing packet"
        else verdict="NOT at its crossing packet (expected $want: upload packets lost before it)"; fi
        echo "upload: alert $got; $verdict"
    fi
}

if [ $MODE = flood ]; then
    echo "capture: $PCAP"; cat $PCAP.txt
    echo "kernel buffer ${BUF_KIB} KiB per handle"
    for w in ${WORKERS:-1 2}; do flood_run $w; done
    rm -rf $TMP
    exit 0
fi

echo "capture: $PCAP x$LOOPS = $PKTS packets, kernel buffer ${BUF_KIB} KiB per handle"
printf '%-10s %-28s %-28s %-28s\n' rate "outflow 1 worker" "outflow 2 workers" "tcpdump -w /dev/null"
printf '%-10s %-28s %-28s %-28s\n' "" "sent_pps dropped seen" "sent_pps dropped seen" "sent_pps dropped seen"
for rate in $RATES; do
    a=$(outflow_run 1 $rate); b=$(outflow_run 2 $rate); c=$(tcpdump_run $rate)
    printf '%-10s %-28s %-28s %-28s\n' "$rate" "$a" "$b" "$c"
done
rm -rf $TMP

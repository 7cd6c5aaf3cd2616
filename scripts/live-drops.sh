#!/bin/sh
# Live capture drop test: the highest tcpreplay rate (packets/s into a veth) at which
# `outflow run` reports zero drops, with 1 and 2 workers, next to `tcpdump -w /dev/null` on
# the same veth, all measured in the same session. Needs root, iproute2, tcpreplay, tcpdump.
#
# Two namespaces joined by a veth pair keep every replayed frame off the host's network.
# Usage: scripts/live-drops.sh [RATE ...]   (default rates below; "max" = --topspeed)
set -eu
cd "$(dirname "$0")/.."
RATES=${*:-"50000 100000 150000 200000 250000 max"}
LOOPS=${LOOPS:-5}
BUF_KIB=${BUF_KIB:-65536}   # kernel buffer per handle, for outflow and tcpdump alike
BIN=$(pwd)/target/release
PCAP=${PCAP:-target/bench/mixed-100m.pcap}
CAP=ofd-cap SND=ofd-snd
cargo build --release --bins >/dev/null 2>&1
mkdir -p target/bench
[ -f $PCAP ] || $BIN/outflow-gen mixed --bytes 100M ${MSS:+--mss $MSS} $PCAP >/dev/null
PKTS=$(( $($BIN/outflow read-only $PCAP | awk '{print $2}') * LOOPS ))

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

echo "capture: $PCAP x$LOOPS = $PKTS packets, kernel buffer ${BUF_KIB} KiB per handle"
printf '%-10s %-28s %-28s %-28s\n' rate "outflow 1 worker" "outflow 2 workers" "tcpdump -w /dev/null"
printf '%-10s %-28s %-28s %-28s\n' "" "sent_pps dropped seen" "sent_pps dropped seen" "sent_pps dropped seen"
for rate in $RATES; do
    a=$(outflow_run 1 $rate); b=$(outflow_run 2 $rate); c=$(tcpdump_run $rate)
    printf '%-10s %-28s %-28s %-28s\n' "$rate" "$a" "$b" "$c"
done
rm -rf $TMP

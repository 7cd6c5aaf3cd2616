#!/bin/sh
# End-to-end cost in CPU-seconds, against a floor and softflowd measured in the same run.
#
# Captures (written once into target/bench/ by outflow-gen, rewritten when outflow-gen is
# newer; see pcaps/README.md):
#   flows.pcap  flow-heavy mix: 250 000 short TCP sessions and DNS transactions, ~38 000 open
#               at once (headline: flow creation/expiry and the DNS path)
#   flood.pcap  5 M small packets, 1.2 M one-packet flows from new sources, most of them home
#               hosts (headline: per-host cross-flow state)
#   mixed-1g.pcap  ~1 GB of 2000 concurrent mixed flows (secondary: the per-byte path)
#   mixed-1g-vxlan.pcap  the same frames inside VXLAN (`outflow-gen wrap vxlan:42`), as an
#               AWS/Azure mirror delivers them: the cost of decapsulation (and of the
#               mirror session's outer flows) against mixed
# For each capture, ROUNDS times and interleaved: the libpcap read floor (`outflow
# read-only`), softflowd reading the file, and `outflow replay` with 1 and 2 workers. Each
# command's CPU time (user + sys, threads summed) and peak RSS come from /usr/bin/time; the
# tables give the median over the rounds. CPU-seconds, not wall time: the bench machines are
# shared, and the question is what the sensor costs per packet, not how many cores it grabs.
# Then, on flows.pcap, the cost of writing flow records (`--flows-out FILE` against
# `--flows-out /dev/null`).
#
# Environment: ROUNDS (3), TIMEOUT (seconds per command, 600; a command that runs longer is
# reported as a timeout and not run again), CAPTURES ("flows flood mixed vxlan"), FLOWS_OUT (1; 0
# skips the flow-record section), BENCH_FILE / BENCH_SIZE (the mixed capture, 1G),
# SOFTFLOWD (path of softflowd; default: found on PATH or in /usr/sbin).
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
TIMEOUT=${TIMEOUT:-600}
CAPTURES=${CAPTURES:-flows flood mixed vxlan}
FLOWS_OUT=${FLOWS_OUT:-1}
DIR=target/bench
MIXED=${BENCH_FILE:-$DIR/mixed-1g.pcap}
VXLAN=${MIXED%.pcap}-vxlan.pcap
SIZE=${BENCH_SIZE:-1G}
BIN=./target/release
TIME=/usr/bin/time

if [ ! -x "$TIME" ]; then
    echo "bench-e2e: $TIME (GNU time) is needed: apt-get install time" >&2
    exit 1
fi
SOFTFLOWD=${SOFTFLOWD:-$(command -v softflowd || true)}
[ -n "$SOFTFLOWD" ] || [ ! -x /usr/sbin/softflowd ] || SOFTFLOWD=/usr/sbin/softflowd
if [ -z "$SOFTFLOWD" ] || [ ! -x "$SOFTFLOWD" ]; then
    echo "bench-e2e: softflowd is not installed (Debian package softflowd; 'make bench-e2e'" \
        "installs it when root): its rows are skipped"
    SOFTFLOWD=""
fi

cargo build --release --bins >/dev/null
mkdir -p "$DIR" "$(dirname "$MIXED")"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-e2e.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM

# Writes a capture unless it exists and is newer than the generator.
gen() { # FILE outflow-gen-args...
    f=$1
    shift
    if [ ! -f "$f" ] || [ "$BIN/outflow-gen" -nt "$f" ]; then
        $BIN/outflow-gen "$@" "$f"
    fi
}
path_of() {
    case $1 in
    flows) echo "$DIR/flows.pcap" ;;
    flood) echo "$DIR/flood.pcap" ;;
    mixed) echo "$MIXED" ;;
    vxlan) echo "$VXLAN" ;;
    *)
        echo "bench-e2e: unknown capture $1 (flows, flood, mixed, vxlan)" >&2
        exit 1
        ;;
    esac
}
for c in $CAPTURES; do
    case $c in
    flows) gen "$DIR/flows.pcap" flows ;;
    flood) gen "$DIR/flood.pcap" flood ;;
    mixed) gen "$MIXED" mixed --bytes "$SIZE" ;;
    vxlan)
        gen "$MIXED" mixed --bytes "$SIZE"
        if [ ! -f "$VXLAN" ] || [ "$MIXED" -nt "$VXLAN" ] || [ "$BIN/outflow-gen" -nt "$VXLAN" ]; then
            $BIN/outflow-gen wrap vxlan:42 "$MIXED" "$VXLAN"
        fi
        ;;
    *) path_of "$c" >/dev/null ;;
    esac
done

# The tools, by id; each runs "$@" with the capture as its last argument.
TOOLS="floor softflowd w1 w2"
label() {
    case $1 in
    floor) echo "libpcap read-only (floor)" ;;
    softflowd) echo "softflowd -r" ;;
    w1) echo "outflow replay --workers 1" ;;
    w2) echo "outflow replay --workers 2" ;;
    json) echo "outflow --workers 1 --flows-out FILE" ;;
    null) echo "outflow --workers 1 --flows-out /dev/null" ;;
    esac
}
cmd() { # TOOL FILE
    case $1 in
    floor) echo "$BIN/outflow read-only $2" ;;
    # -6: track IPv6 too (v5 export would otherwise skip it: less work than outflow does).
    # -p/-c: its pid file and control socket in our scratch directory, not /var/run, given
    # as short names from there: softflowd 1.1.0 hangs in accept() on its control socket
    # when these are longer paths (seen with /tmp/bench-e2e.XXXXXX/sf.ctl).
    softflowd)
        case $2 in /*) f=$2 ;; *) f=$PWD/$2 ;; esac
        echo "env -C $WORK $SOFTFLOWD -r $f -n 127.0.0.1:9 -d -6 -m 4000000 -p sf.pid -c sf.ctl"
        ;;
    w1) echo "$BIN/outflow replay -q --workers 1 $2" ;;
    w2) echo "$BIN/outflow replay -q --workers 2 $2" ;;
    json) echo "$BIN/outflow replay -q --workers 1 --flows-out $DIR/flows.json $2" ;;
    null) echo "$BIN/outflow replay -q --workers 1 --flows-out /dev/null $2" ;;
    esac
}

# Runs TOOL on FILE once; appends "user+sys maxrss_kib" to $WORK/CAP.TOOL, or marks the tool
# timed out (or failed) for that capture.
measure() { # CAP TOOL FILE
    out=$WORK/$1.$2
    [ ! -f "$out.timeout" ] && [ ! -f "$out.failed" ] || return 0
    [ "$2" != softflowd ] || [ -n "$SOFTFLOWD" ] || return 0
    [ "$2" != json ] || rm -f "$DIR/flows.json"
    # shellcheck disable=SC2046 # the command is split into words on purpose
    if $TIME -f '%U %S %M' -o "$WORK/time" timeout "$TIMEOUT" $(cmd "$2" "$3") \
        >"$WORK/stdout" 2>"$WORK/stderr"; then
        awk '{ printf "%.2f %d\n", $1 + $2, $3 }' "$WORK/time" >>"$out"
        [ -f "$out.out" ] || cat "$WORK/stdout" "$WORK/stderr" >"$out.out"
    else
        rc=$?
        if [ "$rc" = 124 ]; then
            awk '{ printf "%.2f\n", $1 + $2 }' "$WORK/time" | tail -n 1 >"$out.timeout"
        else
            echo "bench-e2e: $(label "$2") failed on $3 (exit $rc):" >&2
            tail -n 5 "$WORK/stderr" >&2
            echo "$rc" >"$out.failed"
        fi
    fi
}

# Median of column COL of a file of numbers (mean of the two middle values for an even count).
median() { # FILE COL
    awk -v c="$2" '{ print $c }' "$1" | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR == 0) exit; m = int((NR + 1) / 2); if (NR % 2) print v[m]; else print (v[m] + v[m + 1]) / 2 }'
}
cpu_of() { # CAP TOOL -> median CPU-s, or "" if never measured
    f=$WORK/$1.$2
    [ -s "$f" ] && median "$f" 1 || echo ""
}

# Page cache: measure CPU, not the disk.
for c in $CAPTURES; do cat "$(path_of "$c")" >/dev/null; done

VERDICTS=""
for c in $CAPTURES; do
    f=$(path_of "$c")
    pkts=$($BIN/outflow read-only "$f" | awk '{ print $2 }')
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        for t in $TOOLS; do measure "$c" "$t" "$f"; done
        r=$((r + 1))
    done
    if [ -f "$WORK/$c.softflowd.out" ]; then
        # softflowd must really have read the whole file (with -r and -d it exits at EOF).
        sf_pkts=$(awk '/^Packets processed:/ { print $3 }' "$WORK/$c.softflowd.out")
        echo "softflowd on $f: processed ${sf_pkts:-?} of $pkts packets;" \
            "$(grep '^Ignored packets:' "$WORK/$c.softflowd.out" || true)"
    fi

    floor=$(cpu_of "$c" floor)
    sf=$(cpu_of "$c" softflowd)
    echo
    echo "capture: $f, $pkts packets, $(($(wc -c <"$f") / 1000000)) MB; median of $ROUNDS round(s)"
    printf '%-34s %9s %14s %9s %12s %13s\n' tool CPU-s packets/CPU-s "vs floor" "vs softflowd" "peak RSS MiB"
    for t in $TOOLS; do
        base=$WORK/$c.$t
        if [ -f "$base.timeout" ]; then
            printf '%-34s %9s   timeout after %s s wall (%s CPU-s)\n' "$(label "$t")" "-" \
                "$TIMEOUT" "$(cat "$base.timeout")"
            continue
        fi
        if [ -f "$base.failed" ]; then
            printf '%-34s   failed (exit %s)\n' "$(label "$t")" "$(cat "$base.failed")"
            continue
        fi
        [ -s "$base" ] || continue
        cpu=$(median "$base" 1)
        rss=$(median "$base" 2)
        awk -v l="$(label "$t")" -v cpu="$cpu" -v p="$pkts" -v f="$floor" -v s="$sf" -v rss="$rss" 'BEGIN {
            c = (cpu > 0) ? cpu : 0.005 # time reports 10 ms ticks
            vf = (f > 0) ? sprintf("%.2f", c / f) : "-"
            vs = (s > 0) ? sprintf("%.2f", c / s) : "-"
            printf "%-34s %9.2f %14.0f %9s %12s %13.1f\n", l, cpu, p / c, vf, vs, rss / 1024
        }'
    done
    w1=$(cpu_of "$c" w1)
    if [ -z "$sf" ]; then
        v="$c: outflow --workers 1 <= 0.5 x softflowd: not measured (softflowd skipped)"
    elif [ -f "$WORK/$c.w1.timeout" ]; then
        v="$c: outflow --workers 1 <= 0.5 x softflowd ($sf CPU-s): NO (timed out)"
    elif [ -z "$w1" ]; then
        v="$c: outflow --workers 1 <= 0.5 x softflowd: not measured (replay failed)"
    else
        v=$(awk -v a="$w1" -v s="$sf" -v c="$c" 'BEGIN {
            printf "%s: outflow --workers 1 CPU-s %.2f <= 0.5 x softflowd CPU-s %.2f (= %.2f): %s",
                c, a, s, s / 2, (a <= s / 2) ? "yes" : "NO"
        }')
    fi
    echo "$v"
    VERDICTS="$VERDICTS$v
"
done

if [ "$FLOWS_OUT" = 1 ]; then
    case " $CAPTURES " in *" flows "*) ;; *) gen "$DIR/flows.pcap" flows ;; esac
    f=$DIR/flows.pcap
    r=1
    while [ "$r" -le "$ROUNDS" ]; do
        measure fo null "$f"
        measure fo json "$f"
        r=$((r + 1))
    done
    echo
    echo "flow records: $f, median of $ROUNDS round(s)"
    null=$(cpu_of fo null)
    json=$(cpu_of fo json)
    if [ -n "$null" ] && [ -n "$json" ]; then
        recs=$(wc -l <"$DIR/flows.json")
        awk -v n="$null" -v j="$json" -v r="$recs" -v ln="$(label null)" -v lj="$(label json)" 'BEGIN {
            printf "%-42s %8.2f CPU-s\n", ln, n
            printf "%-42s %8.2f CPU-s  (%d records)\n", lj, j, r
            o = (n > 0) ? 100 * (j - n) / n : 0
            printf "flow-record overhead: %+.1f%% (target: within 25%%): %s\n", o, (o <= 25) ? "yes" : "NO"
        }'
    else
        echo "flow records: not measured (timeout or failure above)"
    fi
fi

echo
printf '%s' "$VERDICTS"

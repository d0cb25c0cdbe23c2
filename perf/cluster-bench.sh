#!/usr/bin/env bash
# Cross-node pub/sub against one node (perf/RESULTS.md, "Cluster"):
# MQTT QoS 0 publishers on node a, WAMP (JSON) subscribers on node b of a
# two-node cluster on nats-server -js, against the same load with both ends
# on node a alone. Each node has one worker (--cores 1, not pinned: on a
# 2-core machine the two nodes, nats-server and the load tool share both
# cores, so the figures are what one machine does, not what a cluster of
# machines would).
#
#   perf/cluster-bench.sh OUT_DIR
#
# Environment: FENNEC, LOAD (binaries; default target/release), NATS
# (default /usr/sbin/nats-server), DURATION=10 WARMUP=2,
# SHAPES ("1x1 1x100": publishers x subscribers), WINDOWS ("100 1000").
set -eu
OUT=$1
mkdir -p "$OUT"
FENNEC=${FENNEC:-target/release/fennec}
LOAD=${LOAD:-target/release/fennec-load}
NATS=${NATS:-/usr/sbin/nats-server}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
SHAPES=${SHAPES:-"1x1 1x100"}
WINDOWS=${WINDOWS:-"100 1000"}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

"$NATS" -js -a 127.0.0.1 -p 14222 -sd "$TMP/nats" >/dev/null 2>&1 &
PIDS+=($!)
sleep 1
node() { # name wamp-port mqtt-port
    "$FENNEC" --cores 1 --no-pin --durability none --data "$TMP/$1" --sys-interval 0 \
        --listen 127.0.0.1:"$2" --mqtt 127.0.0.1:"$3" \
        --cluster nats://127.0.0.1:14222 --node-name "$1" >/dev/null 2>"$TMP/$1.log" &
    PIDS+=($!)
}
node a 18080 11883
node b 18081 11884
sleep 2

run() { # label sub-url shape window
    local pubs=${3%x*} subs=${3#*x}
    timeout $((DURATION + WARMUP + 30)) "$LOAD" --protocol mqtt --url mqtt://127.0.0.1:11883 \
        --subscriber-protocol wamp --subscriber-url "$2" --publishers "$pubs" --subscribers "$subs" \
        --topics "$pubs" --window "$4" --duration "$DURATION" --warmup "$WARMUP" \
        --label "$1 $3 w$4" --json-out "$OUT/cluster.jsonl" | tail -4
}
for shape in $SHAPES; do
    for w in $WINDOWS; do
        echo "== one node, $shape, window $w"
        run one-node ws://127.0.0.1:18080/ws "$shape" "$w"
        echo "== across nodes (a -> NATS -> b), $shape, window $w"
        run cross-node ws://127.0.0.1:18081/ws "$shape" "$w"
    done
done

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
# Then (PARTS, default "pubsub wamp rpc aggregate"): WAMP to WAMP pub/sub
# (JSON, publisher on a, subscriber on b), RPC (callers on a, one callee
# on b), each against both ends on a; and the aggregate: three loads at
# once, 1 -> 1 WAMP each, on three nodes (one each) against the same
# three loads on one node.
#
# Environment: FENNEC, LOAD (binaries; default target/release), NATS
# (default /usr/sbin/nats-server), DURATION=10 WARMUP=2,
# SHAPES ("1x1 1x100": publishers x subscribers), WINDOWS ("100 1000"),
# PARTS.
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
PARTS=${PARTS:-"pubsub wamp rpc aggregate"}
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
node c 18082 11885
sleep 2

run() { # label sub-url shape window
    local pubs=${3%x*} subs=${3#*x}
    timeout $((DURATION + WARMUP + 30)) "$LOAD" --protocol mqtt --url mqtt://127.0.0.1:11883 \
        --subscriber-protocol wamp --subscriber-url "$2" --publishers "$pubs" --subscribers "$subs" \
        --topics "$pubs" --window "$4" --duration "$DURATION" --warmup "$WARMUP" \
        --label "$1 $3 w$4" --json-out "$OUT/cluster.jsonl" | tail -4
}
has() { case " $PARTS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

if has pubsub; then
    for shape in $SHAPES; do
        for w in $WINDOWS; do
            echo "== one node, $shape, window $w"
            run one-node ws://127.0.0.1:18080/ws "$shape" "$w"
            echo "== across nodes (a -> NATS -> b), $shape, window $w"
            run cross-node ws://127.0.0.1:18081/ws "$shape" "$w"
        done
    done
fi

wamp() { # label far-url extra...
    local label=$1 far=$2
    shift 2
    timeout $((DURATION + WARMUP + 30)) "$LOAD" --protocol wamp --url ws://127.0.0.1:18080/ws \
        --subscriber-url "$far" --duration "$DURATION" --warmup "$WARMUP" \
        --label "$label" --json-out "$OUT/cluster.jsonl" "$@" | tail -4
}
if has wamp; then
    for w in $WINDOWS; do
        for where in one-node:ws://127.0.0.1:18080/ws cross-node:ws://127.0.0.1:18081/ws; do
            echo "== WAMP pub/sub 1x1, ${where%%:*}, window $w"
            wamp "wamp ${where%%:*} 1x1 w$w" "${where#*:}" --publishers 1 --subscribers 1 --window "$w"
        done
    done
fi
if has rpc; then
    for w in 10 100; do
        for where in one-node:ws://127.0.0.1:18080/ws cross-node:ws://127.0.0.1:18081/ws; do
            echo "== RPC 10 callers -> 1 callee, ${where%%:*}, window $w"
            wamp "rpc ${where%%:*} 10x1 w$w" "${where#*:}" --scenario rpc --callers 10 --callees 1 --window "$w"
        done
    done
fi
if has aggregate; then
    # Three independent 1 -> 1 WAMP loads at once (each on topics of its
    # own, so nothing crosses nodes): on three nodes, then all on node a.
    # The sum of the three delivery rates is the aggregate.
    for layout in "three-nodes 18080 18081 18082" "one-node 18080 18080 18080"; do
        set -- $layout
        name=$1
        shift
        echo "== aggregate, $name"
        i=0
        loads=()
        for port in "$@"; do
            i=$((i + 1))
            rm -f "$OUT/aggregate-$name-$i.json"
            timeout $((DURATION + WARMUP + 30)) "$LOAD" --protocol wamp --url ws://127.0.0.1:"$port"/ws \
                --topic-prefix "load$i" --publishers 1 --subscribers 1 --topics 1 --window 100 --duration "$DURATION" \
                --warmup "$WARMUP" --label "aggregate $name load $i" \
                --json-out "$OUT/aggregate-$name-$i.json" >/dev/null &
            loads+=($!)
        done
        wait "${loads[@]}"
        python3 - "$OUT" "$name" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
rates = []
for i in (1, 2, 3):
    with open(f"{out}/aggregate-{name}-{i}.json") as f:
        rates.append(json.loads(f.read().strip().splitlines()[-1])["delivered_per_s"])
print(f"{name}: {sum(rates):.0f} deliveries/s in all ({', '.join(f'{r:.0f}' for r in rates)})")
PY
    done
fi

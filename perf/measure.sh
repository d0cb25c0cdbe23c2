#!/usr/bin/env bash
# Reproduces the measurements in perf/RESULTS.md on a 2-core machine:
# router on core 0, load tool on core 1. Every run is bounded (timeout).
#
#   perf/measure.sh windows|max|max10|half|stalled|idle OUT_DIR
#
# Environment: FENNEC (router binary), LOAD (fennec-load binary),
#   NODE_PATH (fox-wamp's node_modules), DURATION=10 WARMUP=2,
#   HALF_JSON / HALF_MP (publish rates for `half`), STALLED_RATE (for `stalled`).
set -u
WHAT=$1
OUT=$2
mkdir -p "$OUT"
FENNEC=${FENNEC:-target/release/fennec}
LOAD=${LOAD:-target/release/fennec-load}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
PORT=18080
URL=ws://127.0.0.1:$PORT/ws
RPID=

start_fennec() { # args: fennec flags
  taskset -c 0 "$FENNEC" --listen 127.0.0.1:$PORT "$@" >"$OUT/router.log" 2>&1 &
  RPID=$!
  for _ in $(seq 50); do grep -q "listening" "$OUT/router.log" && return 0; sleep 0.1; done
  echo "router did not start" >&2; return 1
}
start_fox() {
  taskset -c 0 node "$HERE/fox-wamp-router.js" $PORT >"$OUT/router.log" 2>&1 &
  RPID=$!
  for _ in $(seq 100); do grep -q "listening" "$OUT/router.log" && return 0; sleep 0.1; done
  echo "fox-wamp did not start" >&2; return 1
}
stop_router() {
  kill -TERM "$RPID" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$RPID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$RPID" 2>/dev/null
  wait "$RPID" 2>/dev/null
  sleep 0.5
}
load() { # label, then fennec-load args
  local label=$1; shift
  echo "=== $label" >&2
  timeout -k 5 $((DURATION + WARMUP + 60)) taskset -c 1 "$LOAD" --url $URL \
    --duration "$DURATION" --warmup "$WARMUP" --label "$label" --json-out "$OUT/results.jsonl" "$@" \
    >>"$OUT/load.log" 2>&1 || echo "!!! $label failed (rc $?)" | tee -a "$OUT/load.log" >&2
}
scenarios() { # router label, serializer
  local r=$1 ser=$2
  load "$r|$ser|pub1-sub1" --serializer "$ser" --publishers 1 --subscribers 1 --topics 1 --size 64 --window 1024
  load "$r|$ser|pub1-sub100" --serializer "$ser" --publishers 1 --subscribers 100 --topics 1 --size 64 --window 1024
  load "$r|$ser|pub10-sub10" --serializer "$ser" --publishers 10 --subscribers 10 --topics 10 --size 64 --window 64
  load "$r|$ser|call10-callee1" --serializer "$ser" --scenario rpc --callers 10 --callees 1 --size 64 --window 64
}

case $WHAT in
windows)
  # window search, Fennec --cores 1, JSON, 1 s warm-up + 4 s
  start_fennec --cores 1
  for w in 64 256 1024; do
    DURATION=4 WARMUP=1 load "fennec-c1|json|pub1-sub1-w$w" --publishers 1 --subscribers 1 --window $w
    DURATION=4 WARMUP=1 load "fennec-c1|json|pub1-sub100-w$w" --publishers 1 --subscribers 100 --window $w
    DURATION=4 WARMUP=1 load "fennec-c1|json|pub10-sub10-w$w" --publishers 10 --subscribers 10 --topics 10 --window $w
    DURATION=4 WARMUP=1 load "fennec-c1|json|call10-callee1-w$w" --scenario rpc --callers 10 --callees 1 --window $w
  done
  stop_router
  ;;
max)
  for c in 1 2; do
    for ser in json msgpack; do
      start_fennec --cores $c && scenarios "fennec-c$c" $ser; stop_router
    done
  done
  start_fox && scenarios fox-wamp json; stop_router
  ;;
half)
  start_fennec --cores 1
  load "fennec-c1|json|pub1-sub100-half" --serializer json --subscribers 100 --rate "${HALF_JSON:?}" --router-pid $RPID
  load "fennec-c1|msgpack|pub1-sub100-half" --serializer msgpack --subscribers 100 --rate "${HALF_MP:?}" --router-pid $RPID
  stop_router
  ;;
max10)
  # 1 pub -> 10 subs at max rate, to choose STALLED_RATE
  start_fennec --cores 1 --outbound-queue-bytes 1048576 --slow-grace-ms 2000
  load "fennec-c1|json|pub1-sub10-max" --serializer json --subscribers 10 --window 1024 --router-pid $RPID
  stop_router
  ;;
stalled)
  for n in 0 1; do
    start_fennec --cores 1 --outbound-queue-bytes 1048576 --slow-grace-ms 2000
    load "fennec-c1|json|pub1-sub10-stalled$n" --serializer json --subscribers 10 --rate "${STALLED_RATE:?}" \
      --stalled $n --router-pid $RPID
    grep -v listening "$OUT/router.log" | tail -5 >&2
    stop_router
  done
  ;;
idle)
  # 65536 if allowed; otherwise the hard limit (20000 in the measurement container),
  # enough for 10,000 sessions on each side.
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  echo "ulimit -n: $(ulimit -n)" >&2
  start_fennec --cores 1
  timeout -k 5 400 taskset -c 1 "$LOAD" --url $URL --idle 10000 --hold 10 --router-pid $RPID \
    --label "fennec-c1|json|idle10k" --json-out "$OUT/results.jsonl" >>"$OUT/load.log" 2>&1 || echo "!!! idle failed" >&2
  stop_router
  start_fox
  timeout -k 5 400 taskset -c 1 "$LOAD" --url $URL --idle 10000 --hold 10 --router-pid $RPID \
    --label "fox-wamp|json|idle10k" --json-out "$OUT/results.jsonl" >>"$OUT/load.log" 2>&1 || echo "!!! fox idle failed" >&2
  stop_router
  ;;
*) echo "usage: $0 windows|max|max10|half|stalled|idle OUT_DIR" >&2; exit 64 ;;
esac

#!/usr/bin/env bash
# Reproduces the measurements in perf/RESULTS.md on a 2-core machine:
# router on core 0, load tool on core 1. Every run is bounded (timeout).
#
#   perf/measure.sh windows|max|max10|half|stalled|idle OUT_DIR        (WAMP)
#   perf/measure.sh mqtt-mosquitto|mqtt-rumqttd|mqtt-fennec|mqtt-fennec-lifted|mqtt-idle|mqtt-cross OUT_DIR
#
# Environment: FENNEC (router binary), LOAD (fennec-load binary),
#   NODE_PATH (fox-wamp's node_modules), DURATION=10 WARMUP=2,
#   HALF_JSON / HALF_MP (publish rates for `half`), STALLED_RATE (for `stalled`).
# MQTT blocks: MOSQUITTO (default: mosquitto on PATH or /usr/sbin/mosquitto),
#   RUMQTTD (default: rumqttd on PATH), FENNEC; MQTT_WINDOWS ("100 1000"),
#   MQTT_QUICKACK ("off on"), MQTT_QOS ("0 1"), MQTT_SHAPES ("1x1 1x100 10x10",
#   publishers x subscribers; topics = publishers), MQTT_VERSION (4),
#   IDLE_MQTT (2000 connections), IDLE_BROKERS ("mosquitto rumqttd"),
#   RUMQTTD_OUT_COUNT (10000) / RUMQTTD_CONN_BUF (1000): rumqttd's
#   router.max_outgoing_packet_count / connections.max_inflight_count
#   (shipped defaults: 200 / 100), FENNEC_ARGS (extra Fennec flags). Every
#   MQTT run starts a fresh broker on core 0 (so VmHWM is per run), waits
#   until no rustc is running (WAIT_QUIET=0: don't) and is repeated if one
#   ran meanwhile (see mload).
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
MQTT_PORT=21883
MQTT5_PORT=21884 # rumqttd only: its MQTT 5 listener is a separate port
MOSQUITTO=${MOSQUITTO:-$(command -v mosquitto || echo /usr/sbin/mosquitto)}
RUMQTTD=${RUMQTTD:-$(command -v rumqttd || echo rumqttd)}
MQTT_WINDOWS=${MQTT_WINDOWS:-100 1000}
MQTT_QUICKACK=${MQTT_QUICKACK:-off on}
MQTT_QOS=${MQTT_QOS:-0 1}
MQTT_SHAPES=${MQTT_SHAPES:-1x1 1x100 10x10}
MQTT_VERSION=${MQTT_VERSION:-4}
IDLE_MQTT=${IDLE_MQTT:-2000}
IDLE_BROKERS=${IDLE_BROKERS:-mosquitto rumqttd}

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

# ---- MQTT
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_free() { # port: refuse to start a broker where something else listens
  if listening "$1"; then echo "port $1 is already in use" >&2; return 1; fi
}
wait_port() { # port: wait until the broker we started ($RPID) listens there
  for _ in $(seq 100); do
    kill -0 "$RPID" 2>/dev/null || { echo "broker exited: $(tail -3 "$OUT/router.log")" >&2; return 1; }
    listening "$1" && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2; return 1
}
wait_quiet() { # the machine is shared: do not measure while rustc runs (WAIT_QUIET=0: don't wait)
  local n=0
  [ "${WAIT_QUIET:-1}" = 0 ] && return 0
  while pgrep -x rustc >/dev/null && [ $n -lt 900 ]; do
    [ $n -eq 0 ] && echo "waiting for rustc to finish ..." >&2
    sleep 5; n=$((n + 5))
  done
}
start_mosquitto() {
  port_free $MQTT_PORT || return 1
  taskset -c 0 "$MOSQUITTO" -c "$HERE/mosquitto-bench.conf" -p $MQTT_PORT >"$OUT/router.log" 2>&1 &
  RPID=$!
  wait_port $MQTT_PORT
}
start_rumqttd() {
  port_free $MQTT_PORT || return 1
  sed -e "s/@OUT_COUNT@/${RUMQTTD_OUT_COUNT:-10000}/; s/@CONN_BUF@/${RUMQTTD_CONN_BUF:-1000}/g" \
    -e "s/@PORT4@/$MQTT_PORT/; s/@PORT5@/$MQTT5_PORT/" "$HERE/rumqttd-bench.toml" >"$OUT/rumqttd.toml"
  taskset -c 0 "$RUMQTTD" -q -c "$OUT/rumqttd.toml" >"$OUT/router.log" 2>&1 &
  RPID=$!
  wait_port $MQTT_PORT
}
start_fennec_mqtt() { # Fennec with its WAMP and MQTT listeners, --cores 1 (FENNEC_ARGS appended)
  port_free $MQTT_PORT && port_free $PORT || return 1
  # shellcheck disable=SC2086
  taskset -c 0 "$FENNEC" --cores 1 --listen 127.0.0.1:$PORT --mqtt 127.0.0.1:$MQTT_PORT ${FENNEC_ARGS:-} \
    >"$OUT/router.log" 2>&1 &
  RPID=$!
  wait_port $MQTT_PORT && wait_port $PORT
}
mload() { # broker, label, then fennec-load args: one MQTT run on a fresh broker
  # A run during which a rustc ran (sampled every 0.5 s) goes to
  # disturbed.jsonl instead of results.jsonl and is repeated (3 tries).
  local broker=$1 label=$2; shift 2
  local port=$MQTT_PORT try sampler
  [ "$broker" = rumqttd ] && [ "$MQTT_VERSION" = 5 ] && port=$MQTT5_PORT
  for try in 1 2 3; do
    wait_quiet
    "start_$broker" || { echo "!!! $label: $broker did not start" | tee -a "$OUT/load.log" >&2; stop_router; return; }
    echo "=== $label" >&2
    rm -f "$OUT/run.jsonl" "$OUT/busy"
    (while sleep 0.5; do pgrep -x rustc >/dev/null && touch "$OUT/busy"; done) &
    sampler=$!
    timeout -k 5 $((DURATION + WARMUP + 60)) taskset -c 1 "$LOAD" --protocol mqtt --url mqtt://127.0.0.1:$port \
      --mqtt-version "$MQTT_VERSION" --duration "$DURATION" --warmup "$WARMUP" --drain 10 --router-pid "$RPID" \
      --label "$label" --json-out "$OUT/run.jsonl" "$@" \
      >>"$OUT/load.log" 2>&1 || echo "!!! $label failed (rc $?)" | tee -a "$OUT/load.log" >&2
    kill "$sampler"; wait "$sampler" 2>/dev/null
    stop_router
    if [ ! -e "$OUT/busy" ]; then
      cat "$OUT/run.jsonl" >>"$OUT/results.jsonl" 2>/dev/null
      return
    fi
    cat "$OUT/run.jsonl" >>"$OUT/disturbed.jsonl" 2>/dev/null
    echo "!!! $label: rustc ran during try $try (result in disturbed.jsonl)" | tee -a "$OUT/load.log" >&2
  done
}
mqtt_matrix() { # broker (mosquitto|rumqttd|fennec_mqtt), label prefix
  local broker=$1 name=$2 shape p s q w qa
  for shape in $MQTT_SHAPES; do
    p=${shape%x*}; s=${shape#*x}
    for q in $MQTT_QOS; do
      for w in $MQTT_WINDOWS; do
        for qa in $MQTT_QUICKACK; do
          local extra=()
          [ "$qa" = on ] && extra=(--quickack)
          mload "$broker" "$name|mqtt$MQTT_VERSION|qos$q|pub$p-sub$s|w$w|qa-$qa" --qos "$q" \
            --publishers "$p" --subscribers "$s" --topics "$p" --size 64 --window "$w" "${extra[@]}"
        done
      done
    done
  done
}
mqtt_idle() { # broker, label
  wait_quiet
  "start_$1" || { echo "!!! $2 idle: broker did not start" >&2; stop_router; return; }
  timeout -k 5 400 taskset -c 1 "$LOAD" --protocol mqtt --url mqtt://127.0.0.1:$MQTT_PORT --idle "$IDLE_MQTT" \
    --hold 10 --router-pid "$RPID" --label "$2|mqtt4|idle$IDLE_MQTT" --json-out "$OUT/results.jsonl" \
    >>"$OUT/load.log" 2>&1 || echo "!!! $2 idle failed" >&2
  stop_router
}

case $WHAT in
mqtt-mosquitto)
  "$MOSQUITTO" -h 2>&1 | head -1 >"$OUT/version-mosquitto.txt"
  mqtt_matrix mosquitto mosquitto
  ;;
mqtt-rumqttd)
  "$RUMQTTD" -V >"$OUT/version-rumqttd.txt" 2>&1
  mqtt_matrix rumqttd "rumqttd-b${RUMQTTD_CONN_BUF:-1000}-o${RUMQTTD_OUT_COUNT:-10000}"
  ;;
mqtt-fennec)
  # Fennec --cores 1: the same runs as for Mosquitto and rumqttd.
  mqtt_matrix fennec_mqtt fennec-c1
  ;;
mqtt-fennec-lifted)
  # Fennec --cores 1 with perf/fennec-mqtt-bench.toml (per-session QoS 1
  # queue bound lifted, as max_queued_messages is for Mosquitto); QoS 1 only.
  MQTT_QOS=${MQTT_QOS_LIFTED:-1} FENNEC_ARGS="--config $HERE/fennec-mqtt-bench.toml" \
    mqtt_matrix fennec_mqtt fennec-c1-lifted
  ;;
mqtt-cross)
  # Fennec --cores 1: MQTT publishers -> WAMP subscribers (JSON and
  # MessagePack), topic bench/topic/N -> bench.topic.N, payload ["<ts>..."].
  for ser in json msgpack; do
    for shape in $MQTT_SHAPES; do
      p=${shape%x*}; s=${shape#*x}
      for q in $MQTT_QOS; do
        for w in $MQTT_WINDOWS; do
          mload fennec_mqtt "fennec-c1|mqtt$MQTT_VERSION-to-wamp-$ser|qos$q|pub$p-sub$s|w$w" \
            --subscriber-protocol wamp --subscriber-url "$URL" --serializer $ser --qos "$q" \
            --publishers "$p" --subscribers "$s" --topics "$p" --size 64 --window "$w"
        done
      done
    done
  done
  ;;
mqtt-idle)
  ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
  for b in $IDLE_BROKERS; do
    case $b in
    mosquitto) mqtt_idle mosquitto mosquitto ;;
    rumqttd) mqtt_idle rumqttd rumqttd ;;
    fennec) mqtt_idle fennec_mqtt fennec-c1 ;;
    esac
  done
  ;;
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
*)
  echo "usage: $0 windows|max|max10|half|stalled|idle|mqtt-mosquitto|mqtt-rumqttd|mqtt-fennec|mqtt-fennec-lifted|mqtt-idle|mqtt-cross OUT_DIR" >&2
  exit 64
  ;;
esac

#!/usr/bin/env bash
# Runs the standard fennec-load scenario list against one router.
#
#   perf/run-scenarios.sh URL SERIALIZER RESULTS_FILE
#   e.g. perf/run-scenarios.sh ws://127.0.0.1:8080/ws json results.jsonl
#
# The load tool is pinned with `taskset -c $LOAD_CPU` (default 1); pin the
# router to another core yourself (e.g. `taskset -c 0 ...`).
# One JSON object per scenario is appended to RESULTS_FILE.
#
# Environment knobs (defaults): DURATION=10 WARMUP=2 WINDOW=64 THREADS=1
#   LOAD_CPU=1 LOAD_BIN=target/release/fennec-load (built if missing)
#   EXTRA_ARGS="" (appended to every fennec-load invocation)
set -u

if [ $# -lt 3 ]; then
  echo "usage: $0 URL json|msgpack RESULTS_FILE" >&2
  exit 64
fi
URL=$1
SER=$2
OUT=$3
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
WINDOW=${WINDOW:-64}
THREADS=${THREADS:-1}
LOAD_CPU=${LOAD_CPU:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOAD_BIN=${LOAD_BIN:-$ROOT/target/release/fennec-load}
EXTRA_ARGS=${EXTRA_ARGS:-}

if [ ! -x "$LOAD_BIN" ]; then
  (cd "$ROOT" && cargo build --release -p fennec-load) || exit 1
fi

# Hard wall-clock bound per run: setup + warm-up + duration + drain + slack.
LIMIT=$(awk -v d="$DURATION" -v w="$WARMUP" 'BEGIN { printf "%d", d + w + 60 }')

failures=0
run() {
  local label=$1
  shift
  echo "=== $label ($SER, $URL)" >&2
  # shellcheck disable=SC2086
  if ! timeout -k 5 "$LIMIT" taskset -c "$LOAD_CPU" "$LOAD_BIN" \
      --url "$URL" --serializer "$SER" \
      --duration "$DURATION" --warmup "$WARMUP" \
      --window "$WINDOW" --threads "$THREADS" \
      --label "$label" --json-out "$OUT" "$@" $EXTRA_ARGS; then
    echo "!!! scenario $label failed" >&2
    failures=$((failures + 1))
  fi
}

run pub1-sub1-64B   --scenario pubsub --publishers 1  --subscribers 1   --topics 1  --size 64
run pub1-sub100-64B --scenario pubsub --publishers 1  --subscribers 100 --topics 1  --size 64
run pub10-sub10-64B --scenario pubsub --publishers 10 --subscribers 10  --topics 10 --size 64
run call10-callee1-64B --scenario rpc --callers 10    --callees 1                   --size 64

echo "results appended to $OUT ($failures failure(s))" >&2
[ "$failures" -eq 0 ]

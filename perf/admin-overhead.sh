#!/bin/bash
# Scraping /metrics once a second and an open console (/api/events) against
# nothing watching: 1 -> 1 pub/sub rate with 10k idle sessions (perf/RESULTS.md, issue 12).
# Needs release builds of fennec and fennec-load; the 1 -> 1 load (window
# 1000) runs from core 1.
. "$(dirname "$0")/admin-common.sh"
run() {
  rm -f /tmp/ov.jsonl
  taskset -c 1 $B/fennec-load --url ws://127.0.0.1:28080/ws --scenario pubsub --publishers 1 --subscribers 1 --size 64 --window 1000 --duration ${DUR:-8} --warmup 2 --router-pid $pid --json-out /tmp/ov.jsonl >/dev/null 2>&1
  tail -1 /tmp/ov.jsonl | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(int(d["delivered_per_s"]), d["cpu_pct"], d["lost"])'
}
for r in $(seq ${ROUNDS:-5}); do
  echo "A $(run)"
  watch_start /tmp/ov-events.txt
  sleep 1
  echo "B $(run)"
  unwatch
done
echo "events bytes: $(wc -c < /tmp/ov-events.txt)"
kill $idle $pid; wait 2>/dev/null

#!/bin/bash
# Scraping /metrics once a second and an open console (/api/events) against
# nothing watching: 1 -> 1 pub/sub rate with 10k idle sessions (perf/RESULTS.md, issue 12).
# Needs release builds of fennec and fennec-load.
# Overhead of scraping + an open console: router on core 0 (all its threads),
# 10k idle WAMP sessions, 1->1 pub/sub at max rate (window 1000) from core 1.
B=${B:-$(dirname "$0")/../target/release}
taskset -c 0 $B/fennec --cores 1 --listen 127.0.0.1:28080 --no-mqtt --admin 127.0.0.1:29180 --durability none >/dev/null 2>&1 &
pid=$!
sleep 0.5
taskset -c 1 $B/fennec-load --url ws://127.0.0.1:28080/ws --idle 10000 --hold 900 >/tmp/ov-idle.log 2>&1 &
idle=$!
until grep -q "holding" /tmp/ov-idle.log; do sleep 1; done
run() {
  rm -f /tmp/ov.jsonl
  taskset -c 1 $B/fennec-load --url ws://127.0.0.1:28080/ws --scenario pubsub --publishers 1 --subscribers 1 --size 64 --window 1000 --duration ${DUR:-8} --warmup 2 --router-pid $pid --json-out /tmp/ov.jsonl >/dev/null 2>&1
  tail -1 /tmp/ov.jsonl | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); print(int(d["delivered_per_s"]), d["cpu_pct"], d["lost"])'
}
for r in $(seq ${ROUNDS:-5}); do
  echo "A $(run)"
  (while true; do curl -s http://127.0.0.1:29180/metrics >/dev/null; sleep 1; done) & scr=$!
  curl -s -N http://127.0.0.1:29180/api/events >/tmp/ov-events.txt & con=$!
  sleep 1
  echo "B $(run)"
  kill $scr $con; wait $scr $con 2>/dev/null
done
echo "events bytes: $(wc -c < /tmp/ov-events.txt)"
kill $idle $pid; wait 2>/dev/null

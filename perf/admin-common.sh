# Sourced by perf/admin-cpu.sh and perf/admin-overhead.sh: the router on
# core 0 (--cores 1, admin listener on 127.0.0.1:29180) with 10k idle WAMP
# sessions held from core 1, and the two watchers whose cost they measure.
# Sets $B (release binaries), $pid (the router), $idle (the idle sessions).
B=${B:-$(dirname "$0")/../target/release}
taskset -c 0 $B/fennec --cores 1 --listen 127.0.0.1:28080 --no-mqtt --admin 127.0.0.1:29180 --durability none >/dev/null 2>&1 &
pid=$!
sleep 0.5
taskset -c 1 $B/fennec-load --url ws://127.0.0.1:28080/ws --idle 10000 --hold 900 >/tmp/ov-idle.log 2>&1 &
idle=$!
until grep -q "holding" /tmp/ov-idle.log; do sleep 1; done

# A scrape of /metrics a second and an open console (/api/events, into
# $1); `unwatch` stops both.
watch_start() {
  (while true; do curl -s http://127.0.0.1:29180/metrics >/dev/null; sleep 1; done) & scr=$!
  curl -s -N http://127.0.0.1:29180/api/events >"${1:-/dev/null}" & con=$!
}
unwatch() {
  kill $scr $con; wait $scr $con 2>/dev/null
}

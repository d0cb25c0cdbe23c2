#!/bin/bash
# Per-thread router CPU with 10k idle WAMP sessions: 20 s with nothing watching, then
# 20 s with a scrape of /metrics a second and an open console (perf/RESULTS.md, issue 12).
B=${B:-$(dirname "$0")/../target/release}
taskset -c 0 $B/fennec --cores 1 --listen 127.0.0.1:28080 --no-mqtt --admin 127.0.0.1:29180 --durability none >/dev/null 2>&1 &
pid=$!
sleep 0.5
taskset -c 1 $B/fennec-load --url ws://127.0.0.1:28080/ws --idle 10000 --hold 900 >/tmp/ov-idle.log 2>&1 &
idle=$!
until grep -q "holding" /tmp/ov-idle.log; do sleep 1; done
sleep 3
snap() { for t in /proc/$pid/task/*; do echo "$(basename $t):$(cat $t/comm) $(awk "{print \$14+\$15}" $t/stat)"; done | sort; }
snap > /tmp/t0
sleep 20
snap > /tmp/t1
(while true; do curl -s http://127.0.0.1:29180/metrics >/dev/null; sleep 1; done) & scr=$!
curl -s -N http://127.0.0.1:29180/api/events >/dev/null & con=$!
sleep 20
snap > /tmp/t2
kill $scr $con; wait $scr $con 2>/dev/null
kill $idle $pid; wait 2>/dev/null
join -a2 -e0 -o 0,1.2,2.2 /tmp/t0 /tmp/t1 > /tmp/j1; join -a2 -e0 -o 0,1.2,1.3,2.2 /tmp/j1 /tmp/t2 | awk "{printf \"%-24s idle %4d  with console %4d (ticks/20s)\\n\", \$1, \$3-\$2, \$4-\$3}"

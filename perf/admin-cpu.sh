#!/bin/bash
# Per-thread router CPU with 10k idle WAMP sessions: 20 s with nothing watching, then
# 20 s with a scrape of /metrics a second and an open console (perf/RESULTS.md, issue 12).
. "$(dirname "$0")/admin-common.sh"
sleep 3
snap() { for t in /proc/$pid/task/*; do echo "$(basename $t):$(cat $t/comm) $(awk "{print \$14+\$15}" $t/stat)"; done | sort; }
snap > /tmp/t0
sleep 20
snap > /tmp/t1
watch_start
sleep 20
snap > /tmp/t2
unwatch
kill $idle $pid; wait 2>/dev/null
join -a2 -e0 -o 0,1.2,2.2 /tmp/t0 /tmp/t1 > /tmp/j1; join -a2 -e0 -o 0,1.2,1.3,2.2 /tmp/j1 /tmp/t2 | awk "{printf \"%-24s idle %4d  with console %4d (ticks/20s)\\n\", \$1, \$3-\$2, \$4-\$3}"

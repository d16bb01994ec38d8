#!/bin/bash
# KV at pipeline 1 only, 8 alternating rounds on one node each (old: 69f48e4
# at /tmp/oldbin/squall; new: target/release/squall), node on core 0,
# the same loadgen on core 1.
LG=target/release/loadgen
for v in old new; do
  if [ $v = old ]; then SQ=/tmp/oldbin/squall; port=7901; else SQ=target/release/squall; port=7902; fi
  rm -rf /tmp/abk-$v
  taskset -c 0 $SQ node --shards 1 --fsync batch --data-dir /tmp/abk-$v --listen 127.0.0.1:$port > /tmp/abk-$v.out 2>/tmp/abk-$v.err &
  for i in $(seq 50); do grep -q "squall ready" /tmp/abk-$v.out && break; sleep 0.1; done
done
for round in $(seq 8); do
  for v in old new; do
    if [ $v = old ]; then port=7901; else port=7902; fi
    taskset -c 1 $LG kv --target squall --addr 127.0.0.1:$port --clients 1 --pipeline 1 --duration-s 3 --keys 10000 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v kv p1 ops/s %.0f p50 %.1f p99 %.1f' % (d.get('ops_per_sec',0), d.get('p50_us',0), d.get('p99_us',0)))"
  done
done
pkill -f "data-dir /tmp/abk-" ; wait 2>/dev/null

#!/bin/bash
# KV on 2-shard nodes, bench.sh's workload (50 clients, pipeline 16 and 1,
# 90% reads, 100k keys, zipf 0.99), old (69f48e4 at /tmp/oldbin/squall) and
# new node both up on cores 0-1, alternating rounds; loadgen shares the cores.
LG=target/release/loadgen
for v in old new; do
  if [ $v = old ]; then SQ=/tmp/oldbin/squall; port=7911; else SQ=target/release/squall; port=7921; fi
  rm -rf /tmp/ab2-$v
  taskset -c 0-1 $SQ node --shards 2 --fsync batch --data-dir /tmp/ab2-$v --listen 127.0.0.1:$port > /tmp/ab2-$v.out 2>/tmp/ab2-$v.err &
  for i in $(seq 50); do grep -q "squall ready" /tmp/ab2-$v.out && break; sleep 0.1; done
done
for round in $(seq ${ROUNDS:-5}); do
  for p in 16 1; do
    for v in old new; do
      if [ $v = old ]; then port=7911; else port=7921; fi
      preload=""; [ "$round" -gt 1 ] && preload="--no-preload"
      taskset -c 0-1 $LG kv --target squall --addr 127.0.0.1:$port --clients 50 --pipeline $p --duration-s 5 --warmup-s 1 \
        --keys 100000 --value-bytes 100 --read-ratio 0.9 --zipf 0.99 $preload --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v 2shards p$p ops/s %.0f p50 %.1f p99 %.1f' % (d.get('ops_per_sec',0), d.get('p50_us',0), d.get('p99_us',0)))"
    done
  done
done
pkill -f "data-dir /tmp/ab2-"; wait 2>/dev/null

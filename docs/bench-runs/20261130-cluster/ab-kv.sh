#!/bin/bash
# Single-node KV before and after this session's cluster work, alternating:
# old = 3f70d09 (at /tmp/oldbin-session/squall), new = target/release/squall.
# One shard each on core 0, the same (old, protocol 3) loadgen on core 1.
# Rounds: 1 client x pipeline 1, and 16 clients x pipeline 16; 3 s each.
LG=/tmp/oldbin-session/loadgen
for v in old new; do
  if [ $v = old ]; then SQ=/tmp/oldbin-session/squall; port=7911; else SQ=target/release/squall; port=7912; fi
  rm -rf /tmp/abc-$v
  taskset -c 0 $SQ node --shards 1 --fsync batch --data-dir /tmp/abc-$v --listen 127.0.0.1:$port > /tmp/abc-$v.out 2>/tmp/abc-$v.err &
  for i in $(seq 50); do grep -q "squall ready" /tmp/abc-$v.out && break; sleep 0.1; done
done
for round in $(seq ${ROUNDS:-6}); do
  for mode in "1 1" "16 16"; do
    set -- $mode
    for v in old new; do
      if [ $v = old ]; then port=7911; else port=7912; fi
      taskset -c 1 $LG kv --target squall --addr 127.0.0.1:$port --clients $1 --pipeline $2 --duration-s 3 --keys 10000 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v c$1 p$2 ops/s %.0f p50 %.1f p99 %.1f' % (d.get('ops_per_sec',0), d.get('p50_us',0), d.get('p99_us',0)))"
    done
  done
done
pkill -f "data-dir /tmp/abc-" ; wait 2>/dev/null

#!/bin/bash
# Single-node KV before and after per-key copies (selective replication):
# every shard now has a replication pusher, asked about each write (one
# atomic load of the placement version; no ring lookup while every key has
# one copy). old = 3e1beab (node and loadgen from its test build, copied to
# /tmp/oldbin-3e1b/; its fail points sit on hand-off paths only), new =
# target/release. Same protocol, each version driven by its own load
# generator anyway. One shard each on core 0, the load generator on core 1.
# Rounds: 1 client x pipeline 1, and 16 clients x pipeline 16; 3 s each.
for v in old new; do
  if [ $v = old ]; then SQ=/tmp/oldbin-3e1b/squall; port=7931; else SQ=target/release/squall; port=7932; fi
  rm -rf /tmp/abr-$v
  taskset -c 0 $SQ node --shards 1 --fsync batch --data-dir /tmp/abr-$v --listen 127.0.0.1:$port > /tmp/abr-$v.out 2>/tmp/abr-$v.err &
  for i in $(seq 50); do grep -q "squall ready" /tmp/abr-$v.out && break; sleep 0.1; done
done
for round in $(seq ${ROUNDS:-6}); do
  for mode in "1 1" "16 16"; do
    set -- $mode
    for v in old new; do
      if [ $v = old ]; then LG=/tmp/oldbin-3e1b/loadgen; port=7931; else LG=target/release/loadgen; port=7932; fi
      taskset -c 1 $LG kv --target squall --addr 127.0.0.1:$port --clients $1 --pipeline $2 --duration-s 3 --keys 10000 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v c$1 p$2 ops/s %.0f p50 %.1f p99 %.1f loadgen_cpu %.0f' % (d.get('ops_per_sec',0), d.get('p50_us',0), d.get('p99_us',0), d.get('loadgen_cpu_pct',0)))"
    done
  done
done
pkill -f "data-dir /tmp/abr-" ; wait 2>/dev/null

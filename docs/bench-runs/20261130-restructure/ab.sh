#!/bin/bash
# A/B: the node before issue #11's restructuring (69f48e4, built to
# /tmp/oldbin/squall) vs after, alternating, node on core 0, loadgen (the same
# binary for both) on core 1. The new node needs --test-fixtures for `whoami`.
LG=target/release/loadgen
for round in 1 2 3; do
  for v in old new; do
    if [ $v = old ]; then SQ=/tmp/oldbin/squall; FX=; off=0; else SQ=target/release/squall; FX=--test-fixtures; off=1; fi
    rm -rf /tmp/ab-$v; port=$((7800 + round * 10 + off))
    taskset -c 0 $SQ node --shards 1 --fsync batch --data-dir /tmp/ab-$v --listen 127.0.0.1:$port $FX > /tmp/ab-$v.out 2>/tmp/ab-$v.err &
    pid=$!; for i in $(seq 50); do grep -q "squall ready" /tmp/ab-$v.out && break; sleep 0.1; done
    for f in whoami increment; do
      taskset -c 1 $LG call --addr 127.0.0.1:$port --function $f --calls 10000 --warmup 1000 --echo-cpu 0 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v call $f p50 %.1f p99 %.1f floor %.1f ratio %.2f' % (d['p50_us'], d['p99_us'], d['floor_p50_us'], d['ratio_p50_to_floor']))"
    done
    taskset -c 1 $LG compose --addr 127.0.0.1:$port --calls 10000 --warmup 1000 --echo-cpu 0 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v compose p50 %.1f p99 %.1f floor %.1f ratio %.2f' % (d['p50_us'], d['p99_us'], d['floor_p50_us'], d['ratio_p50_to_floor']))"
    taskset -c 1 $LG kv --target squall --addr 127.0.0.1:$port --clients 16 --pipeline 16 --duration-s 4 --keys 10000 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v kv p16 ops/s %.0f p50 %.1f p99 %.1f' % (d.get('ops_per_sec',0), d.get('p50_us',0), d.get('p99_us',0)))"
    taskset -c 1 $LG kv --target squall --addr 127.0.0.1:$port --clients 1 --pipeline 1 --duration-s 4 --keys 10000 --json 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); print('round $round $v kv p1 ops/s %.0f p50 %.1f p99 %.1f' % (d.get('ops_per_sec',0), d.get('p50_us',0), d.get('p99_us',0)))"
    kill $pid; wait $pid 2>/dev/null
  done
done

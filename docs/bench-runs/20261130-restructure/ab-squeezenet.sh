#!/bin/bash
# The SqueezeNet pipeline, old (69f48e4 at /tmp/oldbin/squall) vs new node,
# alternating rounds, each on a fresh node set up like bench.sh's (1 shard,
# 3 floating executors, both cores).
LG=target/release/loadgen
for round in 1 2 3; do
  for v in old new; do
    if [ $v = old ]; then SQ=/tmp/oldbin/squall; port=7961; else SQ=target/release/squall; port=7962; fi
    rm -rf /tmp/abs-$v
    taskset -c 0-1 $SQ node --shards 1 --fsync batch --data-dir /tmp/abs-$v --listen 127.0.0.1:$port \
      --executors-per-shard 3 --executors-float > /tmp/abs-$v.out 2>/tmp/abs-$v.err &
    pid=$!; for i in $(seq 50); do grep -q "squall ready" /tmp/abs-$v.out && break; sleep 0.1; done
    $LG squeezenet --addr 127.0.0.1:$port --calls ${CALLS:-100} --json 2>/dev/null | tail -1 | python3 -c "
import json,sys; d=json.load(sys.stdin)
print('round $round $v', ' '.join(f'{k}={v}' for k,v in d.items() if not isinstance(v,(list,dict))))"
    kill $pid; wait $pid 2>/dev/null
  done
done

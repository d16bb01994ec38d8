#!/bin/bash
# Instructions the node executes per KV operation (perf stat on the node
# process), old (69f48e4 at /tmp/oldbin/squall) vs new, same load: a count
# that this machine's timing noise does not move.
# (This VM exposes no PMU: the instruction counts read 0, so the node's CPU
# time per operation, from task-clock, is the measure.)
LG=target/release/loadgen
for shards in 2 1; do
for round in 1 2; do
  for v in old new; do
    if [ $v = old ]; then SQ=/tmp/oldbin/squall; else SQ=target/release/squall; fi
    port=$((7930 + round * 4 + shards)); [ $v = new ] && port=$((port + 20))
    rm -rf /tmp/abi-$v
    taskset -c 0-1 $SQ node --shards $shards --fsync batch --data-dir /tmp/abi-$v --listen 127.0.0.1:$port > /tmp/abi-$v.out 2>/tmp/abi-$v.err &
    pid=$!; for i in $(seq 50); do grep -q "squall ready" /tmp/abi-$v.out && break; sleep 0.1; done
    # preload, then measure
    $LG kv --target squall --addr 127.0.0.1:$port --clients 50 --pipeline 16 --duration-s 1 --keys 100000 --value-bytes 100 --read-ratio 0.9 --zipf 0.99 --json >/dev/null 2>&1
    for p in 16 1; do
      perf stat -x, -e instructions:u,instructions:k,task-clock -p $pid -o /tmp/abi-perf.txt -- sleep 5 &
      sp=$!
      out=$($LG kv --target squall --addr 127.0.0.1:$port --clients 50 --pipeline $p --duration-s 4 --warmup-s 0 --keys 100000 --value-bytes 100 --read-ratio 0.9 --zipf 0.99 --no-preload --json 2>/dev/null | tail -1)
      wait $sp
      python3 - "$out" "$v" "$shards" "$p" "$round" <<'PY'
import json,sys
d=json.loads(sys.argv[1]); v,shards,p,rnd=sys.argv[2:]
ops=d.get('ops',0) or d.get('ops_per_sec',0)*d.get('duration_s',4)
perf={}
for line in open('/tmp/abi-perf.txt'):
    f=line.strip().split(',')
    if len(f)>3 and f[0].replace('.','').isdigit(): perf[f[2]]=float(f[0])
iu=perf.get('instructions:u',0); ik=perf.get('instructions:k',0); tc=perf.get('task-clock',0)
print(f"round {rnd} {v} shards {shards} p{p}: {d.get('ops_per_sec',0):.0f} ops/s; node user instr/op {iu/ops:.0f}, kernel instr/op {ik/ops:.0f}, cpu ms/kop {tc/ops*1000:.3f} (ops {ops:.0f})")
PY
    done
    kill $pid; wait $pid 2>/dev/null
  done
done
done

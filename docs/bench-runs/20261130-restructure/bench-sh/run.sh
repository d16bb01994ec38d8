#!/bin/bash
cd /work/main
for r in 1 2; do
  for v in old new; do
    if [ $v = old ]; then export SQUALL_BIN=/tmp/oldbin/squall; else unset SQUALL_BIN; fi
    echo "=== bench.sh run $r $v $(date +%T)"
    ROUNDS=1 ./scripts/bench.sh 2>/dev/null
  done
done
echo BENCHDONE

#!/usr/bin/env bash
# The core: criterion benches (benches/limiter.rs: uncontended, reject,
# contended, each next to tokio's Semaphore and tower) and the scale bench
# (benches/scale.rs: 10k / 100k / 1M parked waiters: time out, drain, cancel),
# the memory bench (benches/memory.rs: bytes per parked waiter), then the ratios.
#
#   bench/core.sh                 # ~2 min of benches + the build
#   SCALE_MAX=100000 bench/core.sh
source "$(dirname "$0")/lib.sh"
SCALE_MAX="${SCALE_MAX:-1000000}"
SCALE_ROUNDS="${SCALE_ROUNDS:-3}"
machine
cd "$ROOT"
"${NICE[@]}" cargo bench --bench limiter -- --noplot 2>&1 | tee "$OUT/criterion.txt"
"${NICE[@]}" cargo bench --bench scale -- "$SCALE_MAX" "$SCALE_ROUNDS" 2>&1 | tee "$OUT/scale.txt"
"${NICE[@]}" cargo bench --bench memory -- "$SCALE_MAX" 2>&1 | tee "$OUT/memory.txt"
python3 "$ROOT/bench/summary.py" core "$ROOT/target/criterion"

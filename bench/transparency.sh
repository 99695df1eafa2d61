#!/usr/bin/env bash
# Transparency: what the wrapper costs when there is no overload. The no-op
# tool `echo` through examples/simple_server (wrapped, limit 64 / queue 64,
# never reached) against examples/bare_server (the same server without the
# wrapper), closed loop, on stdio and Streamable HTTP; runs interleaved
# A/B/B/A..., reported as wrapped / bare ratios.
#
#   bench/transparency.sh                    # 10 rounds x 3 s x 2 servers x 2 transports (~3 min + build)
#   ROUNDS=3 DURATION=3 CONCURRENCY=16 bench/transparency.sh
source "$(dirname "$0")/lib.sh"
ROUNDS="${ROUNDS:-10}"
DURATION="${DURATION:-3}"
CONCURRENCY="${CONCURRENCY:-16}"
DIR="$OUT/transparency"
rm -rf "$DIR"; mkdir -p "$DIR"

build
machine
WRAP_ARGS=(--max-concurrent 64 --queue-size 64)
for transport in stdio http; do
    rounds "$DIR" "$ROUNDS" "$transport" "rust-bare rust-wrapped" \
        --tool echo --args '{"message":"hi"}' --concurrency "$CONCURRENCY" --duration "$DURATION"
done
python3 "$ROOT/bench/summary.py" transparency "$DIR" rust-wrapped/rust-bare

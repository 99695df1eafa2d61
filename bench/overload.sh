#!/usr/bin/env bash
# 10x overload: the tool `sleep` takes 50 ms, max_concurrent 5 (capacity
# 100 calls/s), queue 50, queue_timeout 1 s; 1000 calls/s offered for 10 s,
# open loop. Goodput against the theoretical 100/s, p99 of admitted calls,
# p99 time-to-reject, the server's memory over the run; and the same server
# without the wrapper for contrast, and the floor of any immediate answer
# (echo at the same rate). Runs interleaved.
#
#   bench/overload.sh                          # 3 rounds x 10 s x 2 servers x 2 transports (~3 min + build)
#   ROUNDS=1 TRANSPORTS=stdio bench/overload.sh
source "$(dirname "$0")/lib.sh"
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-1000}"
DURATION="${DURATION:-10}"
TRANSPORTS="${TRANSPORTS:-stdio http}"
DIR="$OUT/overload"
rm -rf "$DIR"; mkdir -p "$DIR"

build
machine
WRAP_ARGS=(--max-concurrent 5 --queue-size 50 --queue-timeout 1)
for transport in $TRANSPORTS; do
    rounds "$DIR" "$ROUNDS" "$transport" "rust-wrapped rust-bare" \
        --tool sleep --args '{"ms":50}' --rate "$RATE" --duration "$DURATION"
done
# The floor of an immediate answer at the same rate: the no-op `echo` on the
# bare server, 1000 calls/s, open loop. A rejection cannot come back faster
# than this over the same transport on the same machine.
mkdir -p "$DIR/floor"
for transport in $TRANSPORTS; do
    rounds "$DIR/floor" "$ROUNDS" "$transport" "rust-bare" \
        --tool echo --args '{"message":"hi"}' --rate "$RATE" --duration "$DURATION"
done
python3 "$ROOT/bench/summary.py" overload "$DIR" --capacity 100 --service-ms 50 --queue-timeout-ms 1000
echo
echo "floor: an immediate answer (echo on the bare server) at $RATE calls/s; its ok p50/p99 is the transport's"
python3 "$ROOT/bench/summary.py" overload "$DIR/floor" --capacity "$RATE"

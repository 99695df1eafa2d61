#!/usr/bin/env bash
# What each overload dialect costs a refused call: the 10x overload of
# bench/overload.sh (the tool `sleep` 50 ms, max_concurrent 5, queue 50,
# queue_timeout 1 s: capacity 100 calls/s; 1000 calls/s offered for 10 s,
# open loop) through `mcp-backpressure proxy` in front of the bare server
# (no limiter of its own), with the refusal answered three ways side by side:
#
#   error        the JSON-RPC overload error (the default)
#   tool-result  --overload-response tool-result: an isError tool result with
#                the text, structuredContent and the SEP-3313 _meta
#   503          --http-overload-status 503: HTTP status 503 + Retry-After
#                around the same JSON-RPC error (HTTP only)
#
# over Streamable HTTP (all three) and stdio (the first two). Rounds are
# interleaved, their order rotated each round; the table gives medians, and
# the ratios are taken round by round (the two ran next to each other).
#
#   bench/dialects.sh                        3 rounds x 10 s x 5 configurations (~3 min + build)
#   ROUNDS=1 DURATION=5 bench/dialects.sh    a smoke run
source "$(dirname "$0")/lib.sh"
ROUNDS="${ROUNDS:-3}"
RATE="${RATE:-1000}"
DURATION="${DURATION:-10}"
DIR="$OUT/dialects"
rm -rf "$DIR"; mkdir -p "$DIR"

build
machine
LIMITS=(--max-concurrent 5 --queue-size 50 --queue-timeout 1)
LOAD_ARGS=(--tool sleep --args '{"ms":50}' --rate "$RATE" --duration "$DURATION")

dialect_flags() {
    case "$1" in
        error) DIALECT=() ;;
        tool-result) DIALECT=(--overload-response tool-result) ;;
        503) DIALECT=(--http-overload-status 503) ;;
    esac
}

UPSTREAM_PID=""
stop_all() {
    stop_http
    if [ -n "$UPSTREAM_PID" ]; then
        kill "$UPSTREAM_PID" 2>/dev/null || true
        wait "$UPSTREAM_PID" 2>/dev/null || true
        UPSTREAM_PID=""
    fi
}
trap stop_all EXIT

# one <transport> <dialect> <out.json>
one() {
    local transport="$1" dialect="$2" out="$3"
    dialect_flags "$dialect"
    if [ "$transport" = stdio ]; then
        load "$out" "${LOAD_ARGS[@]}" --server-log "$out.server.log" -- \
            "$LOAD" proxy "${LIMITS[@]}" "${DIALECT[@]}" -- "$BARE"
        return
    fi
    PORT="$(free_port)"
    start_http "$out.upstream.log" "$BARE" --transport http --bind "127.0.0.1:$PORT"
    UPSTREAM_PID="$SERVER_PID"; SERVER_PID=""
    local upstream="http://127.0.0.1:$PORT/mcp"
    PORT="$(free_port)"
    start_http "$out.server.log" "$LOAD" proxy "${LIMITS[@]}" "${DIALECT[@]}" \
        --listen "127.0.0.1:$PORT" --upstream "$upstream"
    load "$out" --url "http://127.0.0.1:$PORT/mcp" --server-pid "$SERVER_PID" "${LOAD_ARGS[@]}"
    stop_all
}

for transport in http stdio; do
    if [ "$transport" = http ]; then kinds=(error tool-result 503); else kinds=(error tool-result); fi
    k=${#kinds[@]}
    for r in $(seq 1 "$ROUNDS"); do
        for i in $(seq 0 $((k - 1))); do
            kind="${kinds[$(((i + r - 1) % k))]}"
            echo "   round $r/$ROUNDS: $transport $kind" >&2
            one "$transport" "$kind" "$DIR/$transport-$kind-$r.json"
        done
    done
done
python3 "$ROOT/bench/summary.py" overload "$DIR" --capacity 100 --service-ms 50 --queue-timeout-ms 1000 \
    tool-result/error 503/error

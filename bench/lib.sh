# Shared by the bench/ scripts: building, starting servers, running the load
# generator. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REL="$ROOT/target/release"
LOAD="$REL/mcp-backpressure"
SIMPLE="$REL/examples/simple_server"
BARE="$REL/examples/bare_server"
OUT="${BENCH_OUT:-$ROOT/target/bench}"
mkdir -p "$OUT"

# The machine is shared and noisy: as root, the load generator and the
# servers run at a higher priority (nice -10) so that other processes disturb
# the measurement less; every server and run gets the same. BENCH_NICE=0
# turns it off.
NICE=()
if [ "$(id -u)" = 0 ] && [ "${BENCH_NICE:--10}" != 0 ]; then
    NICE=(nice -n "${BENCH_NICE:--10}")
fi

# Servers log at error level only: the demo server logs every rejection at
# warn, which is the example's choice, not the limiter's cost.
export RUST_LOG="${RUST_LOG:-error}"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "bench: $1 is required ($2)" >&2; exit 1; }
}
need jq "apt-get install jq"
need python3 "for the summaries"

build() {
    echo "== building (release): the examples and the mcp-backpressure CLI" >&2
    (cd "$ROOT" && cargo build --release --quiet -p mcp-backpressure --examples \
        && cargo build --release --quiet -p mcp-backpressure-cli)
}

machine() {
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r)"
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

SERVER_PID=""
# start_http <log> <command...>: starts an HTTP server in the background and
# waits until its port accepts connections. Sets SERVER_PID. The command must
# listen on $PORT.
start_http() {
    local log="$1"; shift
    "${NICE[@]}" "$@" >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$PORT),0.2)" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "bench: the server exited before listening; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "bench: the server did not listen on $PORT in 20 s" >&2
    exit 1
}

stop_http() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap stop_http EXIT

# load <out.json> <load args...>: one run of the load generator, JSON kept.
load() {
    local out="$1"; shift
    "${NICE[@]}" "$LOAD" load --json --no-progress "$@" >"$out"
}

PY="$ROOT/bench/.venv/bin/python"
WRAP_ARGS=()

# server_argv <kind> <transport>: sets SERVER_ARGV (and PORT for http).
#   rust-bare     examples/bare_server (no wrapper)
#   rust-wrapped  examples/simple_server "${WRAP_ARGS[@]}"
#   py-bare       bench/python/server.py --bare (FastMCP, no middleware)
#   py-wrapped    bench/python/server.py "${WRAP_ARGS[@]}" (the Python package)
server_argv() {
    case "$1" in
        rust-bare) SERVER_ARGV=("$BARE") ;;
        rust-wrapped) SERVER_ARGV=("$SIMPLE" "${WRAP_ARGS[@]}") ;;
        py-bare) SERVER_ARGV=("$PY" "$ROOT/bench/python/server.py" --bare) ;;
        py-wrapped) SERVER_ARGV=("$PY" "$ROOT/bench/python/server.py" "${WRAP_ARGS[@]}") ;;
        *) echo "bench: unknown server kind $1" >&2; exit 1 ;;
    esac
    if [ "$2" = http ]; then
        PORT="$(free_port)"
        SERVER_ARGV+=(--transport http --bind "127.0.0.1:$PORT")
    fi
}

# run_case <kind> <transport> <out.json> <load args...>
run_case() {
    local kind="$1" transport="$2" out="$3"; shift 3
    server_argv "$kind" "$transport"
    if [ "$transport" = stdio ]; then
        load "$out" "$@" --server-log "$out.server.log" -- "${SERVER_ARGV[@]}"
    else
        start_http "$out.server.log" "${SERVER_ARGV[@]}"
        load "$out" --url "http://127.0.0.1:$PORT/mcp" --server-pid "$SERVER_PID" "$@"
        stop_http
    fi
}

# rounds <dir> <rounds> <transport> "<kinds>" <load args...>: every kind once
# per round, the order rotated each round (A B C, B C A, ...), so slow drifts
# of a noisy machine hit every kind alike.
rounds() {
    local dir="$1" n="$2" transport="$3"; shift 3
    local -a kinds; read -r -a kinds <<<"$1"; shift
    local k=${#kinds[@]}
    for r in $(seq 1 "$n"); do
        for i in $(seq 0 $((k - 1))); do
            local kind="${kinds[$(((i + r - 1) % k))]}"
            echo "   round $r/$n: $transport $kind" >&2
            run_case "$kind" "$transport" "$dir/$transport-$kind-$r.json" "$@"
        done
    done
}

#!/usr/bin/env bash
# HTTP per-call latency, sequential `echo` calls one at a time, against an
# rmcp upstream (examples/bare_server) and a Python SDK upstream
# (tests/fixtures/python_server.py), each reached three ways: directly,
# through `mcp-backpressure proxy` (limit 64, never reached) and through
# HAProxy 2.6 (mode http, one backend) for comparison. Two clients
# (bench/http_client.py): the official MCP Python client (PyPI `mcp`,
# Streamable HTTP), and Python's http.client on one kept-alive connection,
# reading every response to its end (where a server that writes a response
# in parts without TCP_NODELAY costs 40 ms of delayed ACK per call). Every
# configuration runs once per round, the order rotated each round; the
# latencies of all rounds are pooled into p50/p99. "added" is the p50 over
# the direct p50 of the same client and upstream.
#
#   bench/http.sh                         # 5 rounds x 2000 calls x 12 configurations (~8 min + build)
#   ROUNDS=2 CALLS=500 bench/http.sh
#   NO_BUILD=1 PROXY_BIN=/path/to/mcp-backpressure BARE_BIN=/path/to/bare_server bench/http.sh
#                                         # other binaries (e.g. an older build), no build
#
# Needs the Python SDK venv (scripts/setup-test-deps.sh, run when missing)
# and haproxy (installed with apt-get when missing, as root).
source "$(dirname "$0")/lib.sh"
ROUNDS="${ROUNDS:-5}"
CALLS="${CALLS:-2000}"
WARMUP="${WARMUP:-200}"
DIR="$OUT/http"
rm -rf "$DIR"; mkdir -p "$DIR"
VPY="$ROOT/.tools/venv/bin/python"
PY_SERVER="$ROOT/crates/mcp-backpressure-cli/tests/fixtures/python_server.py"

[ -x "$VPY" ] || bash "$ROOT/scripts/setup-test-deps.sh"
if ! command -v haproxy >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "bench: haproxy is required (apt-get install haproxy)" >&2; exit 1; }
    echo "== installing haproxy (apt-get)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
fi

# Every process started here is killed on exit.
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# serve <name> <command...>: starts a server listening on $PORT, records it.
serve() {
    local name="$1"; shift
    start_http "$DIR/$name.log" "$@"
    PIDS+=("$SERVER_PID")
    SERVER_PID=""
}

[ "${NO_BUILD:-0}" = 1 ] || build
PROXY_BIN="${PROXY_BIN:-$LOAD}"
BARE_BIN="${BARE_BIN:-$BARE}"
machine
echo "python: $("$VPY" --version), mcp $("$VPY" -c 'import importlib.metadata as m; print(m.version("mcp"))'); $(haproxy -v | head -1 | cut -d' ' -f1-3)"

PORT="$(free_port)"; RMCP_PORT="$PORT"
serve rmcp-upstream "$BARE_BIN" --transport http --bind "127.0.0.1:$PORT"
PORT="$(free_port)"; PY_PORT="$PORT"
serve python-upstream "$VPY" "$PY_SERVER" http "$PORT"
declare -A URL
URL[rmcp-direct]="http://127.0.0.1:$RMCP_PORT/mcp"
URL[python-direct]="http://127.0.0.1:$PY_PORT/mcp"
for upstream in rmcp python; do
    PORT="$(free_port)"
    serve "$upstream-proxy" "$PROXY_BIN" proxy --max-concurrent 64 --listen "127.0.0.1:$PORT" \
        --upstream "${URL[$upstream-direct]}"
    URL[$upstream-proxy]="http://127.0.0.1:$PORT/mcp"
done
HA_RMCP="$(free_port)"; HA_PY="$(free_port)"
cat >"$DIR/haproxy.cfg" <<EOF
global
    maxconn 1024
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend rmcp
    bind 127.0.0.1:$HA_RMCP
    default_backend rmcp
backend rmcp
    server upstream 127.0.0.1:$RMCP_PORT
frontend python
    bind 127.0.0.1:$HA_PY
    default_backend python
backend python
    server upstream 127.0.0.1:$PY_PORT
EOF
PORT="$HA_RMCP"
serve haproxy haproxy -db -f "$DIR/haproxy.cfg"
URL[rmcp-haproxy]="http://127.0.0.1:$HA_RMCP/mcp"
URL[python-haproxy]="http://127.0.0.1:$HA_PY/mcp"

CONFIGS=()
for client in sdk raw; do
    for config in rmcp-direct rmcp-proxy rmcp-haproxy python-direct python-proxy python-haproxy; do
        CONFIGS+=("$client:$config")
    done
done
k=${#CONFIGS[@]}
echo "== $ROUNDS rounds x $k configurations x $CALLS sequential echo calls ($WARMUP warm-up calls each)" >&2
for r in $(seq 1 "$ROUNDS"); do
    for i in $(seq 0 $((k - 1))); do
        entry="${CONFIGS[$(((i + r - 1) % k))]}"
        client="${entry%%:*}" config="${entry#*:}"
        echo "   round $r/$ROUNDS: $client $config" >&2
        "${NICE[@]}" "$VPY" "$ROOT/bench/http_client.py" "$client" "${URL[$config]}" "$CALLS" \
            "$WARMUP" "$DIR/$client-$config-$r.json"
    done
done

python3 - "$DIR" "$ROUNDS" "$CALLS" <<'EOF'
import glob, json, os, statistics, sys

directory, rounds, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


clients = {"sdk": "MCP Python SDK", "raw": "http.client, kept alive"}
upstreams = {"rmcp": "rmcp (bare_server)", "python": "Python SDK (python_server.py)"}
paths = {"direct": "direct", "proxy": "mcp-backpressure proxy", "haproxy": "HAProxy 2.6"}
print()
print(f"{rounds} rounds x {calls} sequential `echo` calls per configuration, one at a time; "
      "ms per call, all rounds pooled; added = p50 over the direct p50 of the same client "
      "and upstream; round p50s = the median of each round.")
print()
print("| client | upstream | path | p50 ms | p99 ms | added p50 ms | round p50s ms |")
print("|---|---|---|---:|---:|---:|---|")
for client in clients:
    for upstream in upstreams:
        stats = {}
        for path in paths:
            per_round = []
            pattern = os.path.join(directory, f"{client}-{upstream}-{path}-*.json")
            for file in sorted(glob.glob(pattern)):
                with open(file) as f:
                    per_round.append(json.load(f))
            pooled = [v for r in per_round for v in r]
            stats[path] = (pct(pooled, 50), pct(pooled, 99), [statistics.median(r) for r in per_round])
        direct = stats["direct"][0]
        for path, (p50, p99, medians) in stats.items():
            added = "-" if path == "direct" else f"{p50 - direct:+.2f}"
            spread = " ".join(f"{v:.2f}" for v in medians)
            print(f"| {clients[client]} | {upstreams[upstream]} | {paths[path]} | "
                  f"{p50:.2f} | {p99:.2f} | {added} | {spread} |")
EOF

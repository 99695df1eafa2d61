#!/usr/bin/env bash
# The shared limit (`proxy --shared-limit`) against the local limiter, side by
# side in one run: 1 and 3 proxy replicas in front of one upstream
# (examples/bare_server over HTTP), the load spread round-robin over the
# replicas (`load --url A --url B --url C`). One redis-server on a free
# loopback port (no persistence), started and killed here.
#
# Configurations (the same total limit L everywhere):
#   local-1   one proxy, --max-concurrent L
#   shared-1  one proxy, --max-concurrent L --shared-limit (Redis)
#   local-3   three proxies, --max-concurrent L/3 each (a static split)
#   shared-3  three proxies sharing --max-concurrent L through Redis
#
# Scenarios:
#   uncontended  closed loop, `echo`, 8 callers, L=48 (never reached): the
#                admission cost per call (latency p50/p99, throughput)
#   saturated    closed loop, `sleep 10ms`, 48 callers, L=12, queue 1000:
#                throughput at the limit (capacity L / 10 ms = 1200 calls/s)
#   overload     open loop at 10x capacity, `sleep 50ms`, L=12 (capacity
#                240 calls/s, offered 2400/s), queue 12, queue timeout 0.2 s:
#                goodput vs capacity, reject latency p99 (3 replicas only)
# For the shared configurations: Redis commands per admitted call, from the
# proxies' own counters (mcp_backpressure_redis_commands_total /
# mcp_backpressure_admitted_total, summed over the replicas, over the run;
# renewals and sweeps included).
#
#   bench/shared.sh                      # ~2 min + build
#   DURATION=5 bench/shared.sh
#   NO_BUILD=1 PROXY_BIN=... BARE_BIN=... bench/shared.sh   # other binaries, no build
#
# Needs redis-server (scripts/setup-test-deps.sh installs it).
source "$(dirname "$0")/lib.sh"
DURATION="${DURATION:-10}"
DIR="$OUT/shared"
rm -rf "$DIR"; mkdir -p "$DIR"
REDIS_BIN="${REDIS_SERVER:-redis-server}"
need "$REDIS_BIN" "scripts/setup-test-deps.sh installs it"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "${NO_BUILD:-0}" = 1 ] || build
PROXY_BIN="${PROXY_BIN:-$LOAD}"
BARE_BIN="${BARE_BIN:-$BARE}"
LOAD="$PROXY_BIN"
machine
echo "$("$REDIS_BIN" --version | cut -d' ' -f1-3)"

# Redis.
PORT="$(free_port)"
REDIS_URL="redis://127.0.0.1:$PORT/0"
start_http "$DIR/redis.log" "$REDIS_BIN" --bind 127.0.0.1 --port "$PORT" \
    --save "" --appendonly no --dir "$DIR"
PIDS+=("$SERVER_PID"); SERVER_PID=""

# The upstream.
PORT="$(free_port)"
UPSTREAM="http://127.0.0.1:$PORT/mcp"
start_http "$DIR/upstream.log" "$BARE_BIN" --transport http --bind "127.0.0.1:$PORT"
PIDS+=("$SERVER_PID"); SERVER_PID=""

PROXIES=(); URL_ARGS=(); METRICS=()
# start_proxies <name> <replicas> <proxy args...>
start_proxies() {
    local name="$1" n="$2"; shift 2
    PROXIES=(); URL_ARGS=(); METRICS=()
    for i in $(seq 1 "$n"); do
        local mport; mport="$(free_port)"
        PORT="$(free_port)"
        start_http "$DIR/$name-proxy$i.log" "$PROXY_BIN" proxy --listen "127.0.0.1:$PORT" \
            --upstream "$UPSTREAM" --metrics "127.0.0.1:$mport" "$@"
        PROXIES+=("$SERVER_PID"); SERVER_PID=""
        URL_ARGS+=(--url "http://127.0.0.1:$PORT/mcp")
        METRICS+=("http://127.0.0.1:$mport/metrics")
    done
}
stop_proxies() {
    for pid in "${PROXIES[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    PROXIES=()
}
# metric_sum <name>: the sample summed over the running proxies (0 if absent).
metric_sum() {
    python3 - "$1" "${METRICS[@]}" <<'EOF'
import sys, urllib.request
name, total = sys.argv[1], 0.0
for url in sys.argv[2:]:
    for line in urllib.request.urlopen(url, timeout=5).read().decode().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == name:
            total += float(parts[1])
print(total)
EOF
}

# case <scenario> <config> <limit> "<extra proxy args>" <load args...>
case_run() {
    local scenario="$1" config="$2" limit="$3" extra="$4"; shift 4
    local replicas="${config#*-}" args=()
    read -r -a args <<<"$extra"
    if [ "${config%-*}" = local ]; then
        args+=(--max-concurrent "$((limit / replicas))")
    else
        args+=(--max-concurrent "$limit" --shared-limit "$REDIS_URL"
            --shared-key "bench-$scenario-$config" --lease 10)
    fi
    echo "   $scenario: $config" >&2
    start_proxies "$scenario-$config" "$replicas" "${args[@]}"
    local c0 a0 c1 a1
    c0="$(metric_sum mcp_backpressure_redis_commands_total)"
    a0="$(metric_sum mcp_backpressure_admitted_total)"
    load "$DIR/$scenario-$config.json" "${URL_ARGS[@]}" --duration "$DURATION" "$@"
    c1="$(metric_sum mcp_backpressure_redis_commands_total)"
    a1="$(metric_sum mcp_backpressure_admitted_total)"
    python3 -c "import sys; c=float(sys.argv[2])-float(sys.argv[1]); a=float(sys.argv[4])-float(sys.argv[3]); print(f'{c/a:.2f}' if a else '-')" \
        "$c0" "$c1" "$a0" "$a1" >"$DIR/$scenario-$config.redis_per_call"
    [ "${config%-*}" = local ] && echo "-" >"$DIR/$scenario-$config.redis_per_call"
    stop_proxies
}

echo "== uncontended: closed loop, echo, 8 callers, limit 48" >&2
for config in local-1 shared-1 local-3 shared-3; do
    case_run uncontended "$config" 48 "--queue-size 0" \
        --tool echo --args '{"message": "x"}' --concurrency 8
done
echo "== saturated: closed loop, sleep 10 ms, 48 callers, limit 12, queue 1000" >&2
for config in local-1 shared-1 local-3 shared-3; do
    case_run saturated "$config" 12 "--queue-size 1000 --queue-timeout 30" \
        --tool sleep --args '{"ms": 10}' --concurrency 48
done
echo "== overload: open loop 2400 calls/s (10x), sleep 50 ms, limit 12, queue 12, timeout 0.2 s" >&2
for config in local-3 shared-3; do
    case_run overload "$config" 12 "--queue-size 12 --queue-timeout 0.2" \
        --tool sleep --args '{"ms": 50}' --rate 2400 --call-timeout 10
done

python3 - "$DIR" <<'EOF'
import json, os, sys
d = sys.argv[1]
capacity = {"uncontended": None, "saturated": 12 / 0.010, "overload": 12 / 0.050}
print(f"\n{'scenario':<12} {'config':<9} {'calls/s':>9} {'of cap.':>8} {'ok p50 ms':>10} {'ok p99 ms':>10}"
      f" {'rej p99 ms':>11} {'ok':>7} {'rejected':>9} {'err':>5} {'redis cmd/call':>15}")
for scenario in ["uncontended", "saturated", "overload"]:
    for config in ["local-1", "shared-1", "local-3", "shared-3"]:
        path = os.path.join(d, f"{scenario}-{config}.json")
        if not os.path.exists(path):
            continue
        r = json.load(open(path))
        lat = r["latency_ms"]
        def p(outcome, q):
            v = (lat.get(outcome) or {}).get(q)
            return "-" if v is None else f"{v:.2f}"
        cap = capacity[scenario]
        of = "-" if cap is None else f"{100 * r['goodput'] / cap:.1f}%"
        per = open(os.path.join(d, f"{scenario}-{config}.redis_per_call")).read().strip()
        print(f"{scenario:<12} {config:<9} {r['goodput']:>9.1f} {of:>8} {p('ok', 'p50'):>10} {p('ok', 'p99'):>10}"
              f" {p('rejected', 'p99'):>11} {r['ok']:>7} {r['rejected_total']:>9} {r['errors_total']:>5} {per:>15}")
EOF

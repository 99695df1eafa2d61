#!/usr/bin/env bash
# Keyed, weighted and adaptive admission, measured: three scenarios, each run
# as several proxy configurations side by side in one run (same machine
# state; with --rounds N the configurations are interleaved, their order
# rotated each round, and the tables show medians over the rounds).
#
# Every configuration gets a fresh upstream, `simple_server --transport http
# --max-concurrent 10000` (its own limiter out of the way, so the proxy in
# front is the only limiter), a fresh `mcp-backpressure proxy --listen ...
# --upstream ...` with the flags under test, both on free 127.0.0.1 ports,
# and one `mcp-backpressure load` run with one --stream per client (each its
# own MCP session, its identity in the x-client-id header).
#
#   a. fairness: a greedy client (500 calls/s) and a polite one (5 calls/s)
#      of `sleep` 100 ms, proxy --max-concurrent 10 --queue-size 50 (capacity
#      100 calls/s): the polite client's success rate and p99 with fair
#      queueing across clients (--client-key header:x-client-id, and with
#      --client-limit 8 on top) against one global FIFO queue.
#   b. per-tool limits: a slow tool (`sleep` 2000 ms, 10 calls/s, enough to
#      hold every slot) and a fast one (`db` 5 ms with room for 10000 at once,
#      100 calls/s), proxy --max-concurrent 10 --queue-size 50: the fast
#      tool's goodput with --tool-limit sleep=2 against without.
#   c. adaptive limits: `db` 50 ms at 250 calls/s against an upstream whose
#      capacity halves mid-run (--db-capacity 16 --db-capacity-after 10=8:
#      320 calls/s at full speed, then 160) and whose throughput collapses
#      past its capacity (--db-contention 2: a call takes 50 ms * (n/C)^2
#      with n running; --db-timeout 1000: past 1 s it fails with -32001):
#      goodput and p99 with --limit aimd and --limit gradient2 (--min-limit 1
#      --max-limit 64, starting at 16) against the best fixed limits before
#      (16) and after (8) the drop and a too-high one (32).
#
# Takes ~5 minutes after the build (10 configurations x 25 s + start-up and
# draining); --quick runs 4 s per configuration (~1 minute), a smoke run.
#
#   bench/scenarios.sh                 all three, 25 s per configuration, 1 round
#   bench/scenarios.sh --quick a       scenario a only, 4 s per configuration
#   bench/scenarios.sh --rounds 3 c    scenario c, 3 interleaved rounds
#   DURATION=30 bench/scenarios.sh     another length per configuration
#
# The reports (JSON, one per configuration and round, and the servers' logs)
# go to $BENCH_OUT/scenarios (default target/bench/scenarios); the tables are
# printed and kept in summary.md there. Binaries come from
# ${CARGO_TARGET_DIR:-target}/release. The script stops with the proxy's own
# error if the proxy refuses a flag under test.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QUICK=0
ROUNDS=1
SCENARIOS=()
while [ "$#" -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) ROUNDS="${2:?--rounds needs a number}"; shift ;;
        a | b | c) SCENARIOS+=("$1") ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "scenarios.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "${#SCENARIOS[@]}" -gt 0 ] || SCENARIOS=(a b c)
case "$ROUNDS" in '' | *[!0-9]* | 0) echo "scenarios.sh: --rounds must be >= 1" >&2; exit 2 ;; esac
if [ "$QUICK" = 1 ]; then DURATION="${DURATION:-4}"; else DURATION="${DURATION:-25}"; fi
# Scenario c: the upstream's capacity halves this many seconds after it
# starts (2/5 of the run: 10 s of 25).
CHANGE_AT=$(((DURATION * 2 + 4) / 5))

command -v python3 >/dev/null || { echo "scenarios.sh: python3 is required" >&2; exit 1; }
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
OUT="${BENCH_OUT:-$ROOT/target/bench}/scenarios"
rm -rf "$OUT"
mkdir -p "$OUT/bin"
export RUST_LOG="${RUST_LOG:-error}"

echo "== building (release): simple_server and the mcp-backpressure CLI" >&2
(cd "$ROOT" && cargo build --release --quiet -p mcp-backpressure --example simple_server \
    && cargo build --release --quiet -p mcp-backpressure-cli)
# Copies: a build elsewhere in the same target directory cannot swap the
# binaries in the middle of the run.
cp "$TARGET_DIR/release/examples/simple_server" "$TARGET_DIR/release/mcp-backpressure" "$OUT/bin/"
SERVER="$OUT/bin/simple_server"
CLI="$OUT/bin/mcp-backpressure"

# Every process this script started, killed on exit.
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shell_word <text>: the text as one shell word, single-quoted when needed.
shell_word() {
    case "$1" in
        '' | *[!A-Za-z0-9_./:=@%+-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
        *) printf '%s' "$1" ;;
    esac
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_listening <pid> <port> <what> <log>: until the port accepts connections;
# fails with the process's log if it exits first.
wait_listening() {
    local pid="$1" port="$2" what="$3" log="$4"
    for _ in $(seq 1 200); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo >&2
            echo "scenarios.sh: the $what exited before listening; its output:" >&2
            sed 's/^/    /' "$log" >&2
            if [ "$what" = proxy ]; then
                echo "scenarios.sh: the proxy refused this configuration's flags: $PROXY_FLAGS_SHOWN" >&2
                echo "scenarios.sh: (this scenario needs a proxy with these flags)" >&2
            fi
            exit 1
        fi
        sleep 0.1
    done
    echo "scenarios.sh: the $what did not listen on $port in 20 s" >&2
    exit 1
}

# run_config <dir> <name> <round> "<server flags>" "<proxy flags>" <load args...>:
# one configuration: a fresh upstream and proxy, one load run, both stopped.
run_config() {
    local dir="$1" name="$2" round="$3"
    local -a server_flags proxy_flags
    read -r -a server_flags <<<"$4"
    read -r -a proxy_flags <<<"$5"
    shift 5
    local sport pport base="$dir/$name.r$round"
    sport="$(free_port)"
    "$SERVER" --transport http --bind "127.0.0.1:$sport" --max-concurrent 10000 \
        "${server_flags[@]}" >"$base.server.log" 2>&1 &
    local server_pid=$!
    PIDS+=("$server_pid")
    wait_listening "$server_pid" "$sport" "upstream simple_server" "$base.server.log"
    pport="$(free_port)"
    PROXY_FLAGS_SHOWN="${proxy_flags[*]}"
    "$CLI" proxy --listen "127.0.0.1:$pport" --upstream "http://127.0.0.1:$sport/mcp" \
        "${proxy_flags[@]}" >"$base.proxy.log" 2>&1 &
    local proxy_pid=$!
    PIDS+=("$proxy_pid")
    wait_listening "$proxy_pid" "$pport" proxy "$base.proxy.log"
    echo "   round $round/$ROUNDS: $name" >&2
    if ! "$CLI" load --json --no-progress --url "http://127.0.0.1:$pport/mcp" \
        --duration "$DURATION" --call-timeout 30 --drain-timeout 30 "$@" \
        >"$base.json" 2>"$base.load.log"; then
        echo "scenarios.sh: the load run of $name failed:" >&2
        sed 's/^/    /' "$base.load.log" >&2
        exit 1
    fi
    cleanup
}

# scenario <id> <title> "<server flags>" <load args...>, then lines of
# "<configuration>|<proxy flags>" on stdin (the configuration's name is also
# its files' name: no spaces): runs every configuration ROUNDS times (order
# rotated each round), then prints the markdown section.
scenario() {
    local id="$1" title="$2" server="$3"
    shift 3
    local -a load_args=("$@")
    local dir="$OUT/$id"
    mkdir -p "$dir"
    local -a names flags
    local line
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        names+=("${line%%|*}")
        flags+=("${line#*|}")
    done
    : >"$dir/configs"
    local i
    for i in "${!names[@]}"; do
        printf '%s\t%s\n' "${names[$i]}" "${flags[$i]}" >>"$dir/configs"
    done
    echo "== scenario $id: $title (${#names[@]} configurations x $ROUNDS rounds x $DURATION s)" >&2
    local k=${#names[@]} r j
    for r in $(seq 1 "$ROUNDS"); do
        for j in $(seq 0 $((k - 1))); do
            i=$(((j + r - 1) % k))
            run_config "$dir" "${names[$i]}" "$r" "$server" "${flags[$i]}" "${load_args[@]}"
        done
    done
    {
        echo "## Scenario $id: $title"
        echo
        echo '```sh'
        echo "simple_server --transport http --bind 127.0.0.1:\$UPSTREAM --max-concurrent 10000 $server"
        for i in "${!names[@]}"; do
            echo "mcp-backpressure proxy --listen 127.0.0.1:\$PORT --upstream http://127.0.0.1:\$UPSTREAM/mcp ${flags[$i]}   # ${names[$i]}"
        done
        printf 'mcp-backpressure load --url http://127.0.0.1:$PORT/mcp --duration %s --call-timeout 30 --drain-timeout 30' "$DURATION"
        for i in "${load_args[@]}"; do printf " %s" "$(shell_word "$i")"; done
        echo
        echo '```'
        echo
        python3 "$ROOT/bench/scenarios_summary.py" "$dir" "$ROUNDS"
        echo
    } | tee -a "$OUT/summary.md"
}

{
    echo "# mcp-backpressure: keyed, weighted and adaptive admission"
    echo
    echo "$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), Linux $(uname -r);" \
        "$DURATION s per configuration, $ROUNDS round(s); medians over the rounds."
    echo
} | tee "$OUT/summary.md"

SLEEP100='{"ms":100}'
for s in "${SCENARIOS[@]}"; do
    case "$s" in
        a)
            scenario a "a greedy and a polite client, fair queueing vs one FIFO" "" \
                --stream "greedy:rate=500,tool=sleep,args=$SLEEP100" \
                --stream "polite:rate=5,tool=sleep,args=$SLEEP100" <<'EOF'
global-fifo|--max-concurrent 10 --queue-size 50
fair-by-client|--max-concurrent 10 --queue-size 50 --client-key header:x-client-id
fair-capped|--max-concurrent 10 --queue-size 50 --client-key header:x-client-id --client-limit 8
EOF
            ;;
        b)
            scenario b "a slow tool and a fast one, a per-tool limit vs none" "--db-capacity 10000" \
                --stream 'slow:rate=10,tool=sleep,args={"ms":2000}' \
                --stream 'fast:rate=100,tool=db,args={"ms":5}' <<'EOF'
global-limit-only|--max-concurrent 10 --queue-size 50
tool-limit-sleep-2|--max-concurrent 10 --queue-size 50 --tool-limit sleep=2
EOF
            ;;
        c)
            scenario c "upstream capacity halves after $CHANGE_AT s, adaptive vs fixed limits" \
                "--db-capacity 16 --db-capacity-after $CHANGE_AT=8 --db-contention 2 --db-timeout 1000" \
                --stream 'db:rate=250,tool=db,args={"ms":50}' <<'EOF'
fixed-8|--max-concurrent 8 --queue-size 50
fixed-16|--max-concurrent 16 --queue-size 50
fixed-32|--max-concurrent 32 --queue-size 50
aimd|--max-concurrent 16 --queue-size 50 --limit aimd --min-limit 1 --max-limit 64
gradient2|--max-concurrent 16 --queue-size 50 --limit gradient2 --min-limit 1 --max-limit 64
EOF
            ;;
    esac
done
echo "the reports: $OUT (summary.md, one JSON per configuration and round)" >&2

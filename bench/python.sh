#!/usr/bin/env bash
# The Python package side by side: the transparency and 10x-overload
# scenarios against a FastMCP server (bench/python/server.py, same tools)
# guarded by `mcp-backpressure` 0.1.2 from PyPI, interleaved with the Rust
# wrapper in the same run, so every figure has a ratio against it.
# Installs a venv in bench/.venv (PyPI): mcp-backpressure 0.1.2 and
# fastmcp $FASTMCP (the newest that installs and works with it here; see
# BENCHMARKS.md).
#
#   bench/python.sh             # ~6 min + build + install
#   ROUNDS=1 bench/python.sh
source "$(dirname "$0")/lib.sh"
FASTMCP="${FASTMCP:-4.1.2}"
ROUNDS="${ROUNDS:-3}"
T_DURATION="${T_DURATION:-5}"
CONCURRENCY="${CONCURRENCY:-16}"
RATE="${RATE:-1000}"
O_DURATION="${O_DURATION:-10}"
DIR="$OUT/python"
rm -rf "$DIR"; mkdir -p "$DIR/transparency" "$DIR/overload"

if ! "$PY" -c "import fastmcp, mcp_backpressure, sys; sys.exit(fastmcp.__version__ != '$FASTMCP')" 2>/dev/null; then
    echo "== installing mcp-backpressure==0.1.2 and fastmcp==$FASTMCP into bench/.venv" >&2
    python3 -m venv "$ROOT/bench/.venv"
    "$ROOT/bench/.venv/bin/pip" install --quiet --disable-pip-version-check \
        "mcp-backpressure==0.1.2" "fastmcp==$FASTMCP"
fi
echo "python: $("$PY" --version), fastmcp $("$PY" -c 'import fastmcp; print(fastmcp.__version__)'), mcp-backpressure $("$PY" -c 'import importlib.metadata as m; print(m.version("mcp-backpressure"))')"
build
machine

echo "== transparency: echo, closed loop, $CONCURRENCY callers, ${T_DURATION}s per run" >&2
WRAP_ARGS=(--max-concurrent 64 --queue-size 64)
for transport in stdio http; do
    rounds "$DIR/transparency" "$ROUNDS" "$transport" "py-bare py-wrapped rust-bare rust-wrapped" \
        --tool echo --args '{"message":"hi"}' --concurrency "$CONCURRENCY" --duration "$T_DURATION"
done
echo "== 10x overload: sleep 50 ms, max 5, queue 50, timeout 1 s, $RATE calls/s for ${O_DURATION}s" >&2
WRAP_ARGS=(--max-concurrent 5 --queue-size 50 --queue-timeout 1)
for transport in stdio http; do
    rounds "$DIR/overload" "$ROUNDS" "$transport" "py-wrapped rust-wrapped" \
        --tool sleep --args '{"ms":50}' --rate "$RATE" --duration "$O_DURATION"
done
python3 "$ROOT/bench/summary.py" transparency "$DIR/transparency" \
    rust-wrapped/rust-bare py-wrapped/py-bare rust-wrapped/py-wrapped
python3 "$ROOT/bench/summary.py" overload "$DIR/overload" --capacity 100 --service-ms 50 \
    --queue-timeout-ms 1000 rust-wrapped/py-wrapped

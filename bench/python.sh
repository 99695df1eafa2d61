#!/usr/bin/env bash
# The Python package side by side: the transparency and 10x-overload
# scenarios against a FastMCP server (bench/python/server.py, same tools)
# guarded by `mcp-backpressure` 0.1.2 from PyPI, interleaved with the Rust
# wrapper in the same run, so every figure has a ratio against it.
# Installs a venv in bench/.venv (PyPI): mcp-backpressure 0.1.2 and
# fastmcp $FASTMCP (the newest that installs and works with it here; see
# BENCHMARKS.md).
#
# The same runs include `py-dropin`: the same server.py with this
# repository's Python package (python/, the drop-in on the Rust core) in
# place of 0.1.2 (same import name, so its own venv: .tools/bench-dropin, the
# same fastmcp $FASTMCP, the wheel built from python/).
#
#   bench/python.sh             # ~9 min + build + install
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
DROPIN_VENV="$ROOT/.tools/bench-dropin"
DROPIN_PY="$DROPIN_VENV/bin/python"
if ! "$DROPIN_PY" -c "import fastmcp, sys; sys.exit(fastmcp.__version__ != '$FASTMCP')" 2>/dev/null; then
    echo "== installing fastmcp==$FASTMCP into $DROPIN_VENV" >&2
    rm -rf "$DROPIN_VENV"
    python3 -m venv "$DROPIN_VENV"
    "$DROPIN_PY" -m pip install --quiet --disable-pip-version-check "fastmcp==$FASTMCP"
fi
echo "== building and installing the drop-in (pip install ./python, release)" >&2
"$DROPIN_PY" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$ROOT/python"
# The drop-in's server: the same server.py, the drop-in's venv.
eval "lib_$(declare -f server_argv)"
server_argv() {
    if [ "$1" = py-dropin ]; then
        SERVER_ARGV=("$DROPIN_PY" "$ROOT/bench/python/server.py" "${WRAP_ARGS[@]}")
        if [ "$2" = http ]; then
            PORT="$(free_port)"
            SERVER_ARGV+=(--transport http --bind "127.0.0.1:$PORT")
        fi
    else
        lib_server_argv "$@"
    fi
}
echo "drop-in: $("$DROPIN_PY" -c 'import importlib.metadata as m; print(m.version("mcp-backpressure"))') on the Rust core, fastmcp $("$DROPIN_PY" -c 'import fastmcp; print(fastmcp.__version__)')"
echo "python: $("$PY" --version), fastmcp $("$PY" -c 'import fastmcp; print(fastmcp.__version__)'), mcp-backpressure $("$PY" -c 'import importlib.metadata as m; print(m.version("mcp-backpressure"))')"
build
machine

echo "== transparency: echo, closed loop, $CONCURRENCY callers, ${T_DURATION}s per run" >&2
WRAP_ARGS=(--max-concurrent 64 --queue-size 64)
for transport in stdio http; do
    rounds "$DIR/transparency" "$ROUNDS" "$transport" "py-bare py-wrapped py-dropin rust-bare rust-wrapped" \
        --tool echo --args '{"message":"hi"}' --concurrency "$CONCURRENCY" --duration "$T_DURATION"
done
echo "== 10x overload: sleep 50 ms, max 5, queue 50, timeout 1 s, $RATE calls/s for ${O_DURATION}s" >&2
WRAP_ARGS=(--max-concurrent 5 --queue-size 50 --queue-timeout 1)
for transport in stdio http; do
    rounds "$DIR/overload" "$ROUNDS" "$transport" "py-wrapped py-dropin rust-wrapped" \
        --tool sleep --args '{"ms":50}' --rate "$RATE" --duration "$O_DURATION"
done
python3 "$ROOT/bench/summary.py" transparency "$DIR/transparency" \
    rust-wrapped/rust-bare py-wrapped/py-bare py-dropin/py-bare py-dropin/py-wrapped rust-wrapped/py-wrapped
python3 "$ROOT/bench/summary.py" overload "$DIR/overload" --capacity 100 --service-ms 50 \
    --queue-timeout-ms 1000 rust-wrapped/py-wrapped py-dropin/py-wrapped

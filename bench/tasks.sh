#!/usr/bin/env bash
# The cost of tracking background tasks through the stdio proxy: task tools
# with tracking, the same without (tools/call not guarded), and the tool run
# plainly, interleaved (see bench/tasks.py).
#
#   bench/tasks.sh                        # 3 rounds of 2000 calls (~1 min + build)
#   ROUNDS=5 CALLS=5000 bench/tasks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mcp-backpressure-cli --bin mcp-backpressure
python3 bench/tasks.py --rounds "${ROUNDS:-3}" --calls "${CALLS:-2000}" --window "${WINDOW:-16}"

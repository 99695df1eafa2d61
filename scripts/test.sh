#!/usr/bin/env bash
# The whole test suite, from a fresh clone: every crate with every feature
# (unit, behaviour, property, end-to-end and doc tests; `cargo test` also builds
# the examples the end-to-end tests run), then the loom models of the
# limiter's synchronization.
#
#   scripts/test.sh                 everything
#   scripts/test.sh --test e2e      one test target (extra arguments go to cargo test; loom and Python are skipped)
#   scripts/test-python.sh          the Python package alone
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-test-deps.sh # Python `mcp` and Node 22 + the conformance suite, under .tools/

if [ "$#" -gt 0 ]; then
    cargo build --workspace --examples --all-features
    exec cargo test --workspace --all-features "$@"
fi

echo "== cargo test (workspace, all features)"
cargo test --workspace --all-features

echo "== loom models (the limiter's lock, queue and hand-over under every interleaving)"
# A separate target dir: --cfg loom rebuilds everything, and must not evict the normal build.
RUSTFLAGS="--cfg loom" cargo test --lib --release --no-default-features \
    --target-dir target/loom -- loom

echo "== the Python package (python/): its wheel, our suite and 0.1.2's own, two FastMCP lines"
bash scripts/test-python.sh

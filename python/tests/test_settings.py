"""Constructor arguments: 0.1.2's names, defaults and errors; the additions
checked by the Rust core, each error naming its setting."""

from __future__ import annotations

import math

import pytest

from mcp_backpressure import (
    DEFAULT_OVERLOAD_CODE,
    PYTHON_PACKAGE_OVERLOAD_CODE,
    BackpressureMiddleware,
)


def test_the_defaults_of_0_1_2_except_the_code() -> None:
    mw = BackpressureMiddleware(5)
    assert (mw.max_concurrent, mw.queue_size, mw.queue_timeout, mw.on_overload) == (5, 0, 30.0, None)
    assert mw.overload_error_code == DEFAULT_OVERLOAD_CODE == -31429
    assert PYTHON_PACKAGE_OVERLOAD_CODE == -32001
    metrics = mw.get_metrics()
    assert (metrics.max_concurrent, metrics.queue_size) == (5, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_concurrent": 0}, "max_concurrent must be >= 1, got 0"),
        ({"max_concurrent": -1}, "max_concurrent must be >= 1, got -1"),
        ({"max_concurrent": 1, "queue_size": -1}, "queue_size must be >= 0, got -1"),
        ({"max_concurrent": 1, "queue_timeout": 0}, "queue_timeout must be > 0, got 0"),
        ({"max_concurrent": 1, "queue_timeout": -1.0}, "queue_timeout must be > 0, got -1.0"),
        ({"max_concurrent": 1, "queue_timeout": math.nan}, "queue_timeout must be > 0, got nan"),
    ],
)
def test_0_1_2_validation_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}"):
        BackpressureMiddleware(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_concurrent": 2.5}, TypeError),
        ({"max_concurrent": "2"}, TypeError),
        ({"max_concurrent": True}, TypeError),
        ({"max_concurrent": 1, "queue_size": 1.0}, TypeError),
        ({"max_concurrent": 1, "queue_timeout": "1"}, TypeError),
        ({"max_concurrent": 1, "on_overload": 3}, TypeError),
        ({"max_concurrent": 1, "client_key": 3}, TypeError),
    ],
)
def test_wrong_types(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        BackpressureMiddleware(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"retry_after_min": 2.0, "retry_after_max": 1.0}, "retry_after"),
        ({"retry_after_min": -1.0}, "retry_after_min"),
        ({"initial_service_time": 0.0}, "initial_service_time"),
        ({"limit": "bogus"}, "limit"),
        ({"limit": "aimd", "min_limit": 5}, "min_limit"),
        ({"limit": "aimd", "max_limit": 1}, "max_limit"),
        ({"tools": {"report": {"weight": 0}}}, "weight"),
        ({"tools": {"report": {"colour": 1}}}, "colour"),
        ({"tools": {"report": 3}}, "report"),
        ({"tools": {"report": {"max_concurrent": -1}}}, "max_concurrent"),
        ({"default_tool_limit": 0}, "default_tool_limit"),
        ({"client_limit": 0}, "client_limit"),
        ({"max_tracked_keys": 0}, "max_tracked_keys"),
        ({"queue_discipline": "lifo"}, "queue_discipline"),
        ({"codel_target": 0.1}, "codel_target"),
        ({"queue_discipline": "codel", "codel_interval": 0.0}, "interval"),
        ({"queue_discipline": "codel", "lifo_interval": 0.1}, "lifo_interval"),
        ({"guarded_methods": ["tools/call", "ping"]}, "guarded_methods"),
        ({"overload_response": "text"}, "overload_response"),
    ],
)
def test_additions_are_checked_and_named(kwargs: dict, setting: str) -> None:
    with pytest.raises(ValueError, match=setting):
        BackpressureMiddleware(4, **kwargs)


def test_additions_accepted() -> None:
    mw = BackpressureMiddleware(
        8,
        20,
        5.0,
        retry_after_min=0.05,
        retry_after_max=10.0,
        initial_service_time=0.2,
        limit="gradient2",
        min_limit=2,
        max_limit=16,
        tools={"report": {"max_concurrent": 2, "weight": 4, "limit": "aimd", "min_limit": 1, "max_limit": 4}},
        default_tool_limit=6,
        client_limit=4,
        client_key="session",
        max_tracked_keys=100,
        queue_discipline="codel",
        codel_target=0.05,
        codel_interval=0.5,
        guarded_methods=["tools/call", "resources/read", "prompts/get", "completion/complete"],
        overload_response="tool_result",
    )
    rows = {row["tool"]: row for row in mw.get_tool_metrics()}
    assert rows["report"]["limit"] == 2
    assert "*" in rows
    BackpressureMiddleware(2, queue_size=4, queue_discipline="adaptive-lifo", lifo_interval=0.2)

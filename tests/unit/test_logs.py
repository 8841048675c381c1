from __future__ import annotations

import json
import logging

import pytest

from shared.logs import JsonFormatter, PlainFormatter, configure_logging


def record(**fields: object) -> logging.LogRecord:
    entry = logging.LogRecord("api.requests", logging.INFO, __file__, 1, "POST %s %d", ("/v1/x", 200), None)
    for name, value in fields.items():
        setattr(entry, name, value)
    return entry


def test_json_lines_carry_the_request_fields() -> None:
    line = JsonFormatter().format(record(session_id="s1", status_code=200, ttft_ms=12.5, prompt_tokens=None))
    entry = json.loads(line)
    assert entry["message"] == "POST /v1/x 200" and entry["level"] == "INFO"
    assert entry["session_id"] == "s1" and entry["status_code"] == 200 and entry["ttft_ms"] == 12.5
    assert "prompt_tokens" not in entry  # fields that are not known are left out
    assert entry["time"].endswith("Z")


def test_plain_lines_append_the_fields() -> None:
    line = PlainFormatter().format(record(job_id="j1", worker="w"))
    assert line.endswith("POST /v1/x 200 job_id=j1 worker=w")


@pytest.mark.parametrize("log_format", ["json", "plain"])
def test_libraries_are_held_at_warning(log_format: str) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(log_format)
        assert logging.getLogger("httpx").level == logging.WARNING
        assert logging.getLogger("rq.worker").level == logging.WARNING
        expected = JsonFormatter if log_format == "json" else PlainFormatter
        assert isinstance(root.handlers[0].formatter, expected)
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)

"""Logging for the gateway and the worker: one readable line per event, JSON on request.

``LOG_FORMAT=json`` writes each record as one JSON object (time, level, logger, message,
and the structured fields a record carries: ``session_id``, ``job_id``, ``worker``,
``status``, token counts, ``ttft_ms``, ``duration_ms``...), for log pipelines; otherwise a
plain line with those fields appended as ``key=value``. Libraries that narrate every
request or job (httpx, RQ, uvicorn's access log, transformers) are held at WARNING: the
service writes its own line per request and per job.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

# The structured fields a record may carry (passed as ``extra=``), in the order shown.
FIELDS = (
    "method",
    "path",
    "status_code",
    "session_id",
    "job_id",
    "worker",
    "status",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "ttft_ms",
    "duration_ms",
)
NOISY_LIBRARIES = (
    "httpx",
    "httpcore",
    "rq",
    "rq.worker",
    "rq.queue",
    "uvicorn.access",
    "transformers",
    "urllib3",
    "filelock",
    "sse_starlette",
)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in FIELDS if getattr(record, name, None) is not None}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if not fields:
            return line
        return line + " " + " ".join(f"{key}={value}" for key, value in fields.items())


def configure_logging(log_format: str) -> None:
    """Install the formatter on the root logger (replacing any handler) and quiet libraries."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's own loggers through the same formatter; its access log at WARNING."""
    formatter = "shared.logs.JsonFormatter" if log_format == "json" else "shared.logs.PlainFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default"}},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False},
        },
    }

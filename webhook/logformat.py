"""How log lines look: gunicorn's text lines, or one JSON object a line for a log pipeline
(``[server] log_format = "json"``), the same for every wxpush logger and gunicorn's own."""

from __future__ import annotations

import json
import logging
import time

__all__ = ["JsonFormatter", "FORMATS"]

FORMATS = ("text", "json")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "pid", "message"}`` (and ``"traceback"``), one line each:
    a newline in a message or a traceback stays inside its JSON string."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
                + f".{int(record.msecs):03d}" + time.strftime("%z", time.localtime(record.created)),
                "level": record.levelname, "logger": record.name, "pid": record.process,
                "message": record.getMessage()}
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)

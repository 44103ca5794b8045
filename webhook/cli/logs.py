"""Log lines of the processes ``wxpush serve`` runs beside gunicorn, formatted like gunicorn's
own (or as JSON, ``WXPUSH_LOG_FORMAT``), at ``WXPUSH_LOG_LEVEL`` (the level
gunicorn_conf.py gives the workers' loggers)."""

from __future__ import annotations

import logging
import os

from gunicorn.glogging import CONFIG_DEFAULTS

from webhook.errors import ConfigError
from webhook.logformat import FORMATS, JsonFormatter

__all__ = ["configure_logging", "log_level"]

LEVELS = ("debug", "info", "warning", "error", "critical")


def log_level() -> str:
    """``WXPUSH_LOG_LEVEL``, checked."""
    level = os.environ.get("WXPUSH_LOG_LEVEL", "info").lower()
    if level not in LEVELS:
        raise ConfigError(f"must be one of {', '.join(LEVELS)}, not {level!r}",
                          file="environment", key="WXPUSH_LOG_LEVEL")
    return level


def configure_logging(log_format: str | None = None) -> None:
    """``log_format``: "text" or "json" (default: ``WXPUSH_LOG_FORMAT``, else text)."""
    level = log_level()
    log_format = log_format or os.environ.get("WXPUSH_LOG_FORMAT", "text")
    if log_format not in FORMATS:
        raise ConfigError(f"must be one of {', '.join(FORMATS)}, not {log_format!r}",
                          file="environment", key="WXPUSH_LOG_FORMAT")
    generic = CONFIG_DEFAULTS["formatters"]["generic"]
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json"
                         else logging.Formatter(generic["format"], generic["datefmt"]))
    for name in ("webhook", "handlers"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False

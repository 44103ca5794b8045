"""Log lines of the processes ``wxpush serve`` runs beside gunicorn, formatted like gunicorn's
own, at ``WXPUSH_LOG_LEVEL`` (the level gunicorn_conf.py gives the workers' loggers)."""

from __future__ import annotations

import logging
import os

from gunicorn.glogging import CONFIG_DEFAULTS

from webhook.errors import ConfigError

__all__ = ["configure_logging", "log_level"]

LEVELS = ("debug", "info", "warning", "error", "critical")


def log_level() -> str:
    """``WXPUSH_LOG_LEVEL``, checked."""
    level = os.environ.get("WXPUSH_LOG_LEVEL", "info").lower()
    if level not in LEVELS:
        raise ConfigError(f"must be one of {', '.join(LEVELS)}, not {level!r}",
                          file="environment", key="WXPUSH_LOG_LEVEL")
    return level


def configure_logging() -> None:
    level = log_level()
    generic = CONFIG_DEFAULTS["formatters"]["generic"]
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(generic["format"], generic["datefmt"]))
    for name in ("webhook", "handlers"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False

"""How the operator and the gateway log: the format and the level, from ``LONGSHOT_LOG_FORMAT`` and
``LONGSHOT_LOG_LEVEL`` (the chart's ``logging.format`` and ``logging.level``).

* ``LONGSHOT_LOG_FORMAT``: ``text`` (the default: ``<time> <LEVEL> <logger> <message>``, a traceback on the lines
  after) or ``json`` (one JSON object a line: ``time`` in RFC 3339 UTC, ``level``, ``logger``, ``message``, and
  ``exception`` with the traceback when there is one).
* ``LONGSHOT_LOG_LEVEL``: ``debug``, ``info`` (the default), ``warning`` or ``error``. ``debug`` is for Longshot's
  own loggers (``longshot.*``); the libraries' stay at ``info``, because some write whole objects and requests at debug
  (kopf every object it handles, ``... is in progress: {body}``; urllib3 and httpcore every connection): a flood,
  and more than Longshot means to put in a log.

A JSON line carries those five keys and nothing else of the log record: no ``extra`` fields, no arguments apart
from the formatted message, so what reaches the log is what a message says and nothing a caller attached to it.

A value outside these is a :class:`~longshot.envsettings.SettingsError` naming the variable, raised by
:func:`configure_from_env` before the process does anything else.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Literal, TextIO

from pydantic import BeforeValidator
from pydantic_settings import SettingsConfigDict

from longshot.envsettings import EnvSettings

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
"""The text format (the operator's and the gateway's since the start)."""
OWN_LOGGER = "longshot"
"""The logger whose hierarchy ``debug`` applies to; every other logger is at ``info`` or above."""
LEVELS: Mapping[str, int] = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                             "error": logging.ERROR}


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


class LogSettings(EnvSettings):
    """``LONGSHOT_LOG_FORMAT`` and ``LONGSHOT_LOG_LEVEL`` (any case, surrounding spaces allowed)."""

    model_config = SettingsConfigDict(env_prefix="LONGSHOT_LOG_")

    format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    """``text`` or ``json`` (one object a line)."""
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    """The least severe level written; ``debug`` for Longshot's own loggers only."""


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message`` and, with a traceback, ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, str] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        # ensure_ascii: no character a log shipper could take for a line break (U+2028) stays unescaped
        return json.dumps(line, ensure_ascii=True)


def formatter(settings: LogSettings) -> logging.Formatter:
    """The formatter of ``settings.format``."""
    return JsonFormatter() if settings.format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(settings: LogSettings, stream: TextIO | None = None) -> logging.Handler:
    """Log to ``stream`` (default stderr) in ``settings.format``, at ``settings.level``: replaces the root logger's
    handlers with one, sets the root logger's level (at least ``info``) and the ``longshot`` logger's. Returns the
    handler."""
    level = LEVELS[settings.level]
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(settings))
    logging.basicConfig(level=max(level, logging.INFO), handlers=[handler], force=True)
    logging.getLogger(OWN_LOGGER).setLevel(level)
    return handler


def configure_from_env(env: Mapping[str, str] | None = None) -> LogSettings:
    """:func:`configure` with the settings of ``env`` (default: the process environment); a SettingsError names a
    variable whose value is not one of its choices."""
    settings = LogSettings.from_env(env)
    configure(settings)
    return settings

"""Structured logging: JSON lines when not on a terminal, readable text on one.

Secrets never reach a log line: a processor redacts values of keys that name
tokens or credentials, and bearer tokens or JWTs found inside any string.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

SECRET_KEYS = re.compile(r"token|secret|password|credential|authorization|bearer", re.I)
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
# Token values rsubd has read (opaque tokens included), redacted wherever they appear.
_SECRETS: set[str] = set()
MIN_SECRET = 16  # shorter strings are not tokens, and redacting them would garble ordinary words


def add_secret(value: str) -> None:
    """Remember a secret so that no log line or reply ever shows it."""
    value = value.strip()
    if len(value) >= MIN_SECRET:
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """`text` with every known secret and anything shaped like a JWT replaced."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return JWT.sub("[redacted]", text) if "eyJ" in text else text


def redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in list(event.items()):
        if key != "event" and SECRET_KEYS.search(key) and not key.endswith(("_state", "_file", "_kind")):
            event[key] = "[redacted]"
        elif isinstance(value, str):
            event[key] = scrub(value)
    return event


def configure(level: str = "info", stream: Any = None) -> None:
    stream = stream or sys.stderr
    renderer: Any
    if stream.isatty():
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,  # after format_exc_info, so that tracebacks are scrubbed too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )

"""ping, daemon_status and daemon_stop: the daemon about itself."""

from __future__ import annotations

import os
from typing import Any

from rsubd import __version__
from rsubd.handlers.context import Services
from rsubd.platform import logs


def ping(services: Services) -> dict[str, Any]:
    return {"pong": True, "pid": os.getpid(), "version": __version__}


def daemon_status(services: Services) -> dict[str, Any]:
    return {**services.control.status(), "log": logs.status()}


def daemon_stop(services: Services) -> dict[str, Any]:
    services.control.request_stop()
    return {"stopping": True}

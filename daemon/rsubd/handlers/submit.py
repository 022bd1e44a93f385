"""submit: the whole workflow is services.submission's; this only reads the request."""

from __future__ import annotations

from typing import Any

from rsubd.handlers.context import Services
from rsubd.services.submission import SubmitOrder


async def submit(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    return await services.submissions.submit(SubmitOrder.from_fields(f))

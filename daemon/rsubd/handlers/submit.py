"""submit: the whole workflow is services.submission's; this only reads the request."""

from __future__ import annotations

from typing import Any

from rsubd.handlers.context import Services, check_schedd
from rsubd.services.submission import SubmitOrder


async def submit(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    return await services.submissions.submit(SubmitOrder.from_fields(f))


async def dry_run(services: Services, f: dict[str, Any]) -> dict[str, Any]:
    """`rsub submit --dry-run`: what a submit would send, after every check a submit makes; nothing is sent."""
    check_schedd(services, f.get("schedd"))
    name = f.get("schedd") or next(iter(services.schedds))
    prepared = await services.submissions.prepare(f["description"], f["cwd"])  # a refusal: exit 5, as a submit
    services.submissions.check_limits(name, prepared.num_procs)
    return {"schedd": name, "description": prepared.request.text, "num_procs": prepared.num_procs,
            "initialdirs": sorted(set(prepared.iwds)), "replaced": list(prepared.replaced)}

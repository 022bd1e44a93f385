"""poke: ask for an early poll, within each schedd's early-poll budget."""

from __future__ import annotations

from typing import Any

from rsubd.handlers.context import Services, check_schedd


def poke(services: Services, schedd: str | None) -> dict[str, Any]:
    """Ask for an early poll; each schedd says whether it was granted, and if not, why not."""
    check_schedd(services, schedd)
    decisions = services.polls.poke(schedd)
    return {"poked": [n for n, d in decisions.items() if d.granted], "schedds": {
        n: {"poked": d.granted, "decision": d.value, **services.polls.poll_state(n)} for n, d in decisions.items()}}

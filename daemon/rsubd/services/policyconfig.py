"""The `[policy]` table: the hold policy's settings, checked once at start (services/automation.py acts on them)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# HTCondor's hold codes that usually heal, each for its reason (README "The hold policy"): 6 the starter could not
# start the job on that machine, 11 and 18 a file-transfer protocol error, 12 and 13 an output or input transfer
# failed, 22 the shadow could not write the job's event log, 45 the machine's container runtime failed its test.
DEFAULT_RELEASE_CODES = (6, 11, 12, 13, 18, 22, 45)
NEVER = (1, 16)  # a user's own hold (UserRequest); spooling (SpoolingInput), which rsub's recovery owns
POLICY_KEYS = {"enabled", "release_codes", "max_releases", "backoff", "resubmit_overuse", "raise_factor",
               "max_request_memory", "max_request_disk"}


@dataclass(frozen=True)
class PolicyConfig:
    enabled: bool = False
    release_codes: tuple[int, ...] = DEFAULT_RELEASE_CODES
    max_releases: int = 3
    backoff: float = 60.0  # seconds before the first release; doubled for each next one
    resubmit_overuse: bool = False
    raise_factor: float = 2.0
    max_request_memory: int = 65536  # MB, the cap of a raised request_memory
    max_request_disk: int = 100 * 1024 * 1024  # KB, the cap of a raised request_disk


def parse_policy(table: Any) -> PolicyConfig:
    """The `[policy]` table, checked; ValueError says what is wrong."""
    if not isinstance(table, dict):
        raise ValueError("policy must be a table: [policy]")
    unknown = sorted(set(table) - POLICY_KEYS)
    if unknown:
        raise ValueError(f"unknown key [policy] {unknown[0]!r}; allowed keys: {', '.join(sorted(POLICY_KEYS))}")
    d = PolicyConfig()
    for key in ("enabled", "resubmit_overuse"):
        if not isinstance(table.get(key, False), bool):
            raise ValueError(f"[policy] {key} must be true or false, not {table[key]!r}")
    codes = table.get("release_codes", list(d.release_codes))
    if not isinstance(codes, list) or not all(type(c) is int and c > 0 for c in codes):
        raise ValueError(f"[policy] release_codes must be a list of HoldReasonCodes, not {codes!r}")
    if forbidden := [c for c in codes if c in NEVER]:
        raise ValueError(f"[policy] release_codes may not hold {forbidden[0]}: code 1 is a user's own hold and "
                         "16 is spooling, which rsub's recovery owns")
    numbers: dict[str, float] = {}
    for key, minimum in (("max_releases", 0), ("backoff", 0), ("raise_factor", 1), ("max_request_memory", 1),
                         ("max_request_disk", 1)):
        value = table.get(key, getattr(d, key))
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < minimum:
            raise ValueError(f"[policy] {key} must be a number >= {minimum}, not {value!r}")
        numbers[key] = value
    return PolicyConfig(enabled=table.get("enabled", False), release_codes=tuple(codes),
                        max_releases=int(numbers["max_releases"]), backoff=float(numbers["backoff"]),
                        resubmit_overuse=table.get("resubmit_overuse", False),
                        raise_factor=float(numbers["raise_factor"]),
                        max_request_memory=int(numbers["max_request_memory"]),
                        max_request_disk=int(numbers["max_request_disk"]))

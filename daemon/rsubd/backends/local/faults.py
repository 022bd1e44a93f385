"""Schedd faults on demand, for tests and drills: refuse, hang, answer slowly, fail an operation, fail at random.

A local schedd configured with `faults_file = "PATH"` reads that JSON file
before every call (only when it changed), so a test or a person can break and
heal the schedd while rsubd runs:

    {"mode": "refuse"}                           every call: schedd_unreachable
    {"mode": "hang", "seconds": 5}               every call blocks, then times out
    {"mode": "slow", "seconds": 2}               every call waits, then succeeds
    {"mode": "fail", "ops": ["retrieve"], "kind": "transfer_failed"}
    {"mode": "random", "probability": 0.3}       each call fails with that chance
    {} or no file                                healthy

`ops` limits any mode to the named operations (submit, spool, query, retrieve,
edit, act, history).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from rsubd.backends.schedd import (
    ErrorKind,
    Schedd,
    ScheddError,
)
from rsubd.backends.wrappers import DelegatingSchedd

log = structlog.get_logger("rsubd.faults")
MODES = ("none", "refuse", "hang", "slow", "fail", "random")
OPS = ("submit", "spool", "query", "retrieve", "edit", "act", "history")


@dataclass(frozen=True)
class FaultPlan:
    mode: str = "none"
    ops: frozenset[str] = frozenset()
    seconds: float = 3600.0
    kind: ErrorKind = ErrorKind.OTHER
    probability: float = 0.5

    @classmethod
    def parse(cls, data: Any) -> FaultPlan:
        if not isinstance(data, dict):
            raise ValueError("a fault plan is a JSON object")
        mode = data.get("mode", "none")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        ops = frozenset(data.get("ops", ()))
        if not ops <= set(OPS):
            raise ValueError(f"ops must be among {', '.join(OPS)}")
        return cls(mode=mode, ops=ops, seconds=float(data.get("seconds", 3600.0)),
                   kind=ErrorKind(data.get("kind", ErrorKind.OTHER.value)),
                   probability=float(data.get("probability", 0.5)))

    def applies(self, op: str) -> bool:
        return self.mode != "none" and (not self.ops or op in self.ops)


class FaultySchedd(DelegatingSchedd[Schedd]):
    """Implements `rsubd.backends.schedd.Schedd` by delegation, injecting the faults its control file asks for."""

    def __init__(self, inner: Schedd, control: Path, *, call_timeout: float = 60.0,
                 rng: random.Random | None = None) -> None:
        super().__init__(inner)
        self.control = control
        self.call_timeout = call_timeout
        self.rng = rng or random.Random()
        self._stamp: tuple[int, int] | None = None
        self._plan = FaultPlan()

    def plan(self) -> FaultPlan:
        try:
            st = self.control.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._plan = FaultPlan() if stamp is None else FaultPlan.parse(json.loads(self.control.read_text()))
            except (OSError, ValueError) as e:
                log.warning("faults.bad_plan", file=str(self.control), error=str(e))
                self._plan = FaultPlan()
            log.info("faults.plan", schedd=self.name, mode=self._plan.mode, ops=sorted(self._plan.ops))
        return self._plan

    def before_call(self, op: str) -> None:
        plan = self.plan()
        if not plan.applies(op):
            return
        if plan.mode == "refuse":
            raise ScheddError(ErrorKind.UNREACHABLE, f"connection refused (injected fault during {op})")
        if plan.mode == "fail" or (plan.mode == "random" and self.rng.random() < plan.probability):
            raise ScheddError(plan.kind, f"injected failure of {op}")
        if plan.mode in ("hang", "slow"):
            # A hang is cut at the call limit, as the htcondor backend's worker would be.
            wait = min(plan.seconds, self.call_timeout) if plan.mode == "hang" else plan.seconds
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and self.plan().mode == plan.mode:
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            if plan.mode == "hang" and self.plan().mode == "hang":
                raise ScheddError(ErrorKind.TIMEOUT, f"{op} took longer than {self.call_timeout:g} s (injected hang)")

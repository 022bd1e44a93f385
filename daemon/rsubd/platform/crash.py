"""Named crash points, for proving that a crash anywhere loses nothing.

`crashpoint("submit.after_schedd")` does nothing unless rsubd was started with
`RSUBD_CRASH_AT` naming that point (`NAME` or `NAME:N` for its Nth passage, or
`random:P` for a chance P at every point); then rsubd kills itself with SIGKILL
on the spot: no cleanup, no flush, as a power cut would. The kill harness
(`tools/crash_harness.py`, docs/crash-harness.md) drives these points.
"""

from __future__ import annotations

import os
import random
import signal
import sys

# Every point, in the order a job meets them; the harness iterates over these. `local.*` is the embedded
# scheduler's, which runs in rsubd: a crash of rsubd is a crash of its schedd.
POINTS = (
    "submit.before_intent", "submit.after_intent", "submit.after_schedd", "submit.after_record",
    "submit.after_spool", "submit.after_spooled", "local.after_launch",
    "poll.after_query", "poll.after_news", "retrieve.before_schedd", "retrieve.after_schedd",
    "retrieve.after_record", "mark.after_schedd", "mark.after_record",
    "recover.after_schedd", "recover.after_record",
)
# `rsub resubmit`'s own points (services/resubmit.py), apart: the harness's workload never resubmits, so it
# could not reach them; tests/e2e/test_resubmit.py kills rsubd at them.
RESUBMIT_POINTS = ("resubmit.before_intent", "resubmit.after_intent", "resubmit.after_remove",
                   "resubmit.after_set_aside")
ENV = "RSUBD_CRASH_AT"

_plan = os.environ.get(ENV, "")
_name, _, _count = _plan.partition(":")
_left = int(_count) if _count.isdigit() else 1
_chance = float(_count) if _name == "random" and _count else 0.0


def crashpoint(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if this run was told to."""
    global _left
    if not _plan:
        return
    if _name == "random":
        if random.random() >= _chance:
            return
    elif name != _name:
        return
    else:
        _left -= 1
        if _left > 0:
            return
    sys.stderr.write(f"rsubd: crash point {name}: killing myself as asked by {ENV}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

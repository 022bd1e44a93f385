"""What rsubd does by itself after each poll: the hold policy (`[policy]`), and one notification per cluster done.

The hold policy is off by default. On, it releases a held job whose HoldReasonCode usually
heals (`release_codes`), at most `max_releases` times per job, the first after `backoff`
seconds and each next one after twice as long; it never touches code 16 (spooling: rsub's
recovery owns it) nor a user's own hold (code 1). For memory or disk overuse (codes 26 and
34) it can resubmit the job with the request raised by `raise_factor`, up to a cap. Each
action is recorded before it is taken (the count, the next allowed time, an event: intent
before action), so a crash in between costs at most one release of the budget; each is
told as a notification ("released automatically, 2nd time").

A cluster whose jobs are all final gets one notification (state `done`, with the summary of
`rsub status N --summary` in RSUB_SUMMARY), once: the ledger records it before the command runs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any

import structlog

from rsubd.backends.schedd import Action, HoldCode, ScheddError, job_id
from rsubd.ledger.schema import Row
from rsubd.services import notify
from rsubd.services.policyconfig import NEVER, PolicyConfig
from rsubd.services.resubmit import resubmit_cluster
from rsubd.services.submission import Submissions
from rsubd.services.usage import cluster_summary

log = structlog.get_logger("rsubd.services.automation")

OVERUSE = (26, int(HoldCode.JOB_OUT_OF_RESOURCES))


def ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


class Automation:
    """The hold policy and the cluster-done notifications, run after each poll of a schedd."""

    def __init__(self, config: PolicyConfig, submissions: Submissions, notifier: notify.Notifier) -> None:
        self.config = config
        self.submissions = submissions
        self.ledger = submissions.ledger
        self.notifier = notifier
        # Per schedd, the last event looked at for clusters done; from rsubd's start, so a cluster that ends in
        # the first poll (its jobs finished while rsubd was down) is told too.
        self._start = self.ledger.last_event_id()
        self._seen: dict[str, int] = {}

    async def after_poll(self, schedd: str) -> None:
        """Never raises: what rsubd does by itself must not stop its polls."""
        try:
            if self.config.enabled:
                await self.apply_policy(schedd)
            await asyncio.to_thread(self.clusters_done, schedd)
        except Exception:  # logged with its traceback; the next poll tries again
            log.exception("automation.failed", schedd=schedd)

    # -- the hold policy ---------------------------------------------------------

    async def apply_policy(self, schedd: str, now: float | None = None) -> int:
        """Release (or resubmit) the held jobs that are due; returns how many were acted on."""
        now = time.time() if now is None else now
        cfg, acted = self.config, 0
        for r in self.ledger.held_jobs(schedd):
            code, count = r["hold_code"], int(r["auto_releases"] or 0)
            key = (int(r["cluster"]), int(r["proc"]))
            overuse = cfg.resubmit_overuse and code in OVERUSE
            if code is None or code in NEVER or (code not in cfg.release_codes and not overuse):
                continue
            if count >= cfg.max_releases:
                continue
            if r["auto_release_at"] is None:  # first seen held since the last release: wait the backoff
                self.ledger.record_auto_release(schedd, key, count=count, next_at=now + cfg.backoff * 2 ** count,
                                                detail=None)
                continue
            if now < r["auto_release_at"]:
                continue
            acted += await (self._resubmit_raised(schedd, r, count) if overuse else self._release(schedd, r, count))
        return acted

    async def _release(self, schedd: str, r: Row, count: int) -> int:
        name = job_id(r["cluster"], r["proc"])
        detail = (f"released automatically, {ordinal(count + 1)} time (hold code {r['hold_code']}, of at most "
                  f"{self.config.max_releases})")
        self.ledger.record_auto_release(schedd, (r["cluster"], r["proc"]), count=count + 1, next_at=None,
                                        detail=detail)
        try:
            await asyncio.to_thread(self.submissions.hooks.submitter(schedd, None).act, Action.RELEASE, [name],
                                    f"rsub hold policy: {detail}")
        except ScheddError as e:
            log.warning("policy.release_failed", schedd=schedd, job=name, error=str(e))
            return 0
        log.info("policy.released", schedd=schedd, job=name, time=count + 1, code=r["hold_code"])
        self._tell(schedd, r, "released", detail)
        self.submissions.hooks.poke(schedd)
        return 1

    async def _resubmit_raised(self, schedd: str, r: Row, count: int) -> int:
        """Memory or disk overuse: the job again, its request raised by the factor, up to the cap."""
        cfg = self.config
        # Code 34 is memory or disk: the schedd's reason says which ("... memory limit ...", "... disk ...").
        reason = (r["hold_reason"] or "").lower()
        disk = r["hold_code"] == HoldCode.JOB_OUT_OF_RESOURCES and "disk" in reason and "memory" not in reason
        if disk:
            command, asked, used, cap = "request_disk", r["request_disk"], r["disk_kb"], cfg.max_request_disk
        else:
            command, asked, used, cap = "request_memory", r["request_memory"], r["memory_mb"], cfg.max_request_memory
        raised = min(cap, math.ceil(max(asked or 0, used or 0, 1) * cfg.raise_factor))
        key = (int(r["cluster"]), int(r["proc"]))
        if asked is not None and raised <= asked:
            self.ledger.record_auto_release(schedd, key, count=cfg.max_releases, next_at=None,
                                            detail=f"not resubmitted: {command} {asked} is at the cap ({cap})")
            return 0
        detail = f"resubmitted automatically with {command} = {raised} (hold code {r['hold_code']})"
        # The intent, before the action (a crash in between must not try it again and again): worded as one.
        self.ledger.record_auto_release(schedd, key, count=count + 1, next_at=None,
                                        detail=f"resubmitting automatically with {command} = {raised} "
                                               f"(hold code {r['hold_code']})")
        try:
            result = await resubmit_cluster(self.submissions, request_id=f"policy-{key[0]}.{key[1]}-{count + 1}",
                                            schedd=schedd, cluster=key[0], rows=[r], overrides=[(command, str(raised))])
        except Exception as e:  # noqa: BLE001 - a RequestError or a schedd's: said in the log, the job stays held
            log.warning("policy.resubmit_failed", schedd=schedd, job=job_id(*key), error=str(e))
            return 0
        self._tell(schedd, r, "resubmitted", f"{detail}: {result['replaces'][0]['old']} -> "
                   f"{result['replaces'][0]['new']}")
        return 1

    def _tell(self, schedd: str, r: Row, state: str, detail: str) -> None:
        self.notifier.jobs_changed([notify.Change(schedd, int(r["cluster"]), int(r["proc"]), state,
                                                  hold_reason=detail)])

    # -- one notification per cluster done ----------------------------------------------

    def clusters_done(self, schedd: str) -> int:
        """Tell each cluster whose last job just became final, once; returns how many were told."""
        upto = self.ledger.last_event_id()
        after = self._seen.get(schedd, self._start)
        self._seen[schedd] = upto
        if upto <= after or "done" not in self.notifier.config.on:
            return 0
        told = 0
        for summary in self.ledger.cluster_summaries(self.ledger.clusters_with_events(after, upto, [], schedd)):
            if summary["done"] != summary["total"] or not self.ledger.mark_cluster_told(schedd, summary["cluster"]):
                continue
            figures = cluster_summary(self.ledger.cluster_jobs(schedd, summary["cluster"]), {})
            told += self.notifier.cluster_done(schedd, summary["cluster"], figures, summary_text(figures))
        return told


def summary_text(s: Mapping[str, Any]) -> str:
    """A cluster's summary in one line, for a notification."""
    states = ", ".join(f"{n} {state}" for state, n in sorted(s["states"].items()))
    parts = [f"{s['jobs']} job(s): {states}"]
    bad = sum(n for code, n in s["exit_codes"].items() if code != "0")
    if bad:
        parts.append(f"{bad} exited non-zero")
    for key, unit in (("wall_seconds", "s wall"), ("memory_mb", "MB")):
        if s.get(key):
            parts.append(f"max {s[key]['max']:g} {unit}")
    parts += list(s.get("advice") or [])
    return "; ".join(parts)

"""The DAG side of a poll: each tracked DAG's progress, its live node jobs, its finished attempts, its end.

The poll's one query already returns them: the DAGMan job is one of rsub's jobs, and
each node job carries rsub's tag (services/dagsubmit.py adds it to every node's
description), with DAGManJobId and DAGNodeName. A history call is made only when a
node job rsub saw in the queue has left it, or when a DAG has ended: finished
attempts, with their exit codes, are in history only.

A completed DAG comes home through the poll's ordinary retrieve (into its staging
directory), after which `place_retrieved` moves each node's files home. A removed DAG
(its DAGMan job kept in the queue by leave_in_queue until RETRIEVED) is retrieved and
marked here, because a removed job is final to the rest of the poll.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from rsubd.backends.schedd import Action, AdValue, JobStatus, Schedd, ScheddError, job_id
from rsubd.ledger.dags import DAG_ATTRS
from rsubd.ledger.store import Ledger
from rsubd.services import dagadopt, dagretrieve

log = structlog.get_logger("rsubd.polling.poller")
NODE_HISTORY = ("ClusterId", "ProcId", "DAGManJobId", "DAGNodeName", "JobStatus", "ExitCode", "ExitBySignal",
                "ExitSignal", "JobStartDate", "CompletionDate", "EnteredCurrentStatus", "RemoveReason")
# DAGMan that cannot start (a wrong [[schedd]] dagman: exit 127) is started again and again, never held.
FAILED_STARTS = 3
REMOVE_SETTLE = 3.0  # seconds after a DAG's removal before its spool is fetched: DAGMan is still shutting down


def place_retrieved(ledger: Ledger, schedd: str, keys: Sequence[tuple[int, int]]) -> None:
    """After a retrieve: the DAGs among these jobs have their files moved home from the staging directory."""
    clusters = {c for c, _ in keys}
    dags = ledger.active_dags(schedd)
    if dagadopt.adopt(ledger, schedd, [c for c, p in keys if p == 0 and c not in dags]):
        dags = ledger.active_dags(schedd)
    for cluster, dag in dags.items():
        if cluster in clusters:
            _place(ledger, dag)


def _place(ledger: Ledger, dag: Mapping[str, Any]) -> bool:
    directory = Path(str(dag["staging_dir"]))
    try:
        kept = dagretrieve.place(directory)
    except OSError as e:
        ledger.record_dag_placed(int(dag["cluster_row"]), error=_place_error(directory, e))
        log.error("dag.place_failed", cluster=dag["cluster"], error=str(e))
        return False
    ledger.record_dag_placed(int(dag["cluster_row"]))
    log.info("dag.home", schedd=dag["schedd"], cluster=dag["cluster"], kept=kept)
    return True


PLACE_FAILED = "its outputs could not all be moved home"


def _place_error(directory: Path, e: OSError) -> str:
    return f"{PLACE_FAILED} and stay in {directory} (tried again, a minute later at first, then less often): {e}"


# When each DAG whose files could not all go home is tried next, and the wait after that: a minute at first,
# doubling to an hour (in memory: a restart tries once at once). Each try that changes nothing writes nothing.
_next_try: dict[int, tuple[float, float]] = {}
PLACE_RETRY_FIRST, PLACE_RETRY_MAX = 60.0, 3600.0


def _place_again(ledger: Ledger, schedd: str, now: float) -> None:
    """The DAGs whose files could not all go home (a full disk, a directory in the way): one more try each, when due."""
    for dag in ledger.dags_to_place_again(schedd, PLACE_FAILED):
        row = int(dag["cluster_row"])
        due, wait = _next_try.get(row, (0.0, PLACE_RETRY_FIRST))
        if now < due:
            continue
        directory = Path(str(dag["staging_dir"]))
        if not directory.is_dir():
            ledger.record_dag_cleaned(row)  # removed by hand: nothing left to move
            _next_try.pop(row, None)
            continue
        try:
            kept = dagretrieve.place(directory)
        except OSError as e:
            _next_try[row] = (now + wait, min(wait * 2, PLACE_RETRY_MAX))
            if (error := _place_error(directory, e)) != dag["error"]:
                ledger.record_dag_placed_again(row, error=error)
            continue
        _next_try.pop(row, None)
        ledger.record_dag_placed_again(row, error=None)  # then cleaned as any DAG home
        log.info("dag.home", schedd=schedd, cluster=dag["cluster"], kept=kept, again=True)


class DagWatch:
    """What one poll learns about the DAGs of one schedd."""

    def __init__(self, ledger: Ledger, schedd: Schedd, *, count: Callable[[str, float], None],
                 clock: Callable[[], float]) -> None:
        self.ledger = ledger
        self.schedd = schedd
        self._count = count
        self._clock = clock
        self.dags: dict[int, dict[str, Any]] = {}
        self._dagman_ads: dict[int, Mapping[str, AdValue]] = {}
        self._nodes: dict[int, dict[str, tuple[str, int]]] = {}

    def pending(self) -> bool:
        """Whether a DAG of this schedd is not home yet; staging directories no longer needed go first."""
        self.clean()
        return bool(self.ledger.active_dags(self.schedd.name))

    def clean(self) -> None:
        """Remove the staging directories of DAGs home and no longer tracked (a repeated retrieve writes there)."""
        _place_again(self.ledger, self.schedd.name, self._clock())
        for dag in self.ledger.dags_to_clean(self.schedd.name):
            dagretrieve.finish(Path(str(dag["staging_dir"])))
            self.ledger.record_dag_cleaned(int(dag["cluster_row"]))

    def begin(self) -> bool:
        """Read the DAGs this poll follows; False when there are none (the poll's loop then skips `see`)."""
        self.dags = self.ledger.active_dags(self.schedd.name)
        self._dagman_ads = {}
        self._nodes = {c: {} for c in self.dags}
        return bool(self.dags)

    def see(self, ad: Mapping[str, AdValue]) -> None:
        """One ad of the poll's query: a tracked DAG's DAGMan job, or one of its node jobs."""
        cluster = ad.get("ClusterId")
        if cluster in self.dags and isinstance(cluster, int):
            self._dagman_ads[cluster] = ad
            return
        parent = ad.get("DAGManJobId")
        if parent in self._nodes and isinstance(parent, int):
            name, status = ad.get("DAGNodeName"), ad.get("JobStatus")
            if isinstance(name, str) and isinstance(status, int):
                self._nodes[parent][name] = (f"{cluster}.{ad.get('ProcId')}", status)

    def end(self) -> None:
        """Record what the query showed; ask history for finished attempts where needed; finish removed DAGs."""
        need_history: list[int] = []
        for cluster, dag in self.dags.items():
            ad = self._dagman_ads.get(cluster)
            live = self._nodes.get(cluster, {})
            jobs = self.ledger.jobs_of_cluster(self.schedd.name, cluster) if ad is None else []
            if ad is None and all(j["state"] in ("retrieved", "removed", "failed") for j in jobs):
                # Gone from the queue without its files moved home. Retrieved (history said so after a restart,
                # or rsub retrieve --dest): whatever is in the staging directory goes home. Removed or lost
                # before rsub fetched its spool: nothing more will come.
                if jobs and all(j["state"] == "retrieved" for j in jobs):
                    _place(self.ledger, dag)
                else:
                    self.ledger.record_dag_placed(int(dag["cluster_row"]), error="the DAGMan job left the queue"
                                                  " before its files could be fetched; they are lost")
                continue
            nodes = self.ledger.dag_nodes(int(dag["cluster_row"]))
            before = {n["node"]: (n["live_job"], n["live_status"]) for n in nodes if n["live_job"]}
            left = any(live.get(node, ("",))[0] != job for node, (job, _s) in before.items())
            status = ad.get("JobStatus") if ad is not None else dag["job_status"]
            if left or ad is None or status in (JobStatus.COMPLETED, JobStatus.REMOVED):
                need_history.append(cluster)
            if ad is None:
                progress, dag_status, error = json.loads(dag["progress"] or "{}"), dag["dag_status"], dag["error"]
            else:
                progress = {short: ad.get(attr) for attr, short in DAG_ATTRS.items()}
                dag_status, error = ad.get("DAG_Status"), self._start_failure(cluster, ad) or dag["error"]
            new = (status, dag_status, json.dumps(progress), error, live)
            if new != (dag["job_status"], dag["dag_status"], dag["progress"], dag["error"], before):
                self.ledger.record_dag_progress(int(dag["cluster_row"]), job_status=status, dag_status=dag_status,
                                                progress=progress, error=error, live=live)
        if need_history:
            self._history(need_history)
        now = self._clock()
        for cluster, ad in self._dagman_ads.items():
            entered = ad.get("EnteredCurrentStatus")
            settled = isinstance(entered, (int, float)) and now - entered >= REMOVE_SETTLE
            # DAGMan writes the rescue DAG and removes the nodes after the schedd marks it removed.
            if ad.get("JobStatus") == JobStatus.REMOVED and ad.get("RETRIEVED") is not True and settled \
                    and not self._nodes.get(cluster):
                self._finish_removed(cluster)

    def _start_failure(self, cluster: int, ad: Mapping[str, AdValue]) -> str | None:
        """DAGMan that never got going: started again and again, with no DAG_* attributes of its own."""
        starts = ad.get("NumJobStarts")
        if ad.get("JobStatus") not in (JobStatus.IDLE, JobStatus.RUNNING) or not isinstance(starts, int) \
                or starts < FAILED_STARTS:
            return None
        if ad.get("DAG_NodesTotal") is not None:
            return None
        message = (f"DAGMan did not start ({starts} starts, and it never reported on the DAG): the access point"
                   " cannot run the condor_dagman of [[schedd]] dagman (exit 127: missing, or not its own). Set"
                   " dagman to the access point's condor_dagman ($(condor_config_val BIN)/condor_dagman there)"
                   " and submit again; the job is held")
        try:
            self.schedd.act(Action.HOLD, [job_id(cluster, 0)], "rsub: DAGMan cannot start on this access point")
        except ScheddError as e:
            log.warning("dag.hold_failed", schedd=self.schedd.name, cluster=cluster, error=str(e))
        log.error("dag.dagman_cannot_start", schedd=self.schedd.name, cluster=cluster, starts=starts)
        return message

    def _history(self, clusters: list[int]) -> None:
        self._count("history_calls", self._clock())
        constraint = " || ".join(f"DAGManJobId == {c}" for c in clusters)
        try:
            ads = self.schedd.history(constraint, NODE_HISTORY, match=None)
        except ScheddError as e:
            log.warning("dag.history_failed", schedd=self.schedd.name, error=str(e))
            return
        attempts: dict[int, dict[str, list[dict[str, Any]]]] = {c: {} for c in clusters}
        for ad in reversed(ads):  # history is newest first: attempts oldest first
            parent, name = ad.get("DAGManJobId"), ad.get("DAGNodeName")
            if parent in attempts and isinstance(name, str) and isinstance(parent, int):
                attempts[parent].setdefault(name, []).append({
                    "job": f"{ad.get('ClusterId')}.{ad.get('ProcId')}", "job_status": ad.get("JobStatus"),
                    "exit_code": ad.get("ExitCode") if ad.get("ExitBySignal") is not True else None,
                    "exit_signal": ad.get("ExitSignal") if ad.get("ExitBySignal") is True else None,
                    "started": ad.get("JobStartDate"), "completed": ad.get("CompletionDate"),
                    "remove_reason": ad.get("RemoveReason")})
        for cluster, found in attempts.items():
            found = {n: sorted(a, key=lambda x: (x["completed"] or 0, x["job"])) for n, a in found.items()}
            self.ledger.record_dag_attempts(int(self.dags[cluster]["cluster_row"]), found)

    def _finish_removed(self, cluster: int) -> None:
        """A removed DAG: fetch its spool (outputs so far, the rescue DAG), move it home, then let it go."""
        self._count("retrieve_calls", self._clock())
        try:
            self.schedd.retrieve([job_id(cluster, 0)])
        except ScheddError as e:
            log.warning("dag.retrieve_failed", schedd=self.schedd.name, cluster=cluster, error=str(e))
            return
        # Marked even when some files could not go home: the staging directory holds them now, not the spool.
        _place(self.ledger, self.dags[cluster])
        self._count("edit_calls", self._clock())
        try:
            self.schedd.edit([job_id(cluster, 0)], "RETRIEVED", "true")
        except ScheddError as e:
            log.warning("dag.mark_failed", schedd=self.schedd.name, cluster=cluster, error=str(e))

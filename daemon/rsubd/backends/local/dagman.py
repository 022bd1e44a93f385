"""The embedded scheduler's DAGMan: runs a DAG for one scheduler-universe job, in its spool directory.

It behaves as condor_dagman does with `-f -l . -Lockfile x.dag.lock -AutoRescue 1 -DoRescueFrom 0
-Dag x.dag`: it submits each node's job into the same queue when its parents are done (as a
real DAGMan's direct submit), follows them through the nodes log the scheduler writes, retries,
runs PRE and POST scripts, writes x.dag.dagman.out, x.dag.metrics, a rescue DAG on failure or
removal, keeps x.dag.lock while it runs, and sets the DAGMan job's DAG_* attributes. It is a task
of the scheduler (stepped on each tick), not a process: a hold stops it (exit 3, as SIGTERM) with
the nodes left running, a release starts it again in recovery from the lock file and nodes log.
What the DAG language parts do and refuse is in `dagfile`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from rsubd.backends.local import dagfile, daglog
from rsubd.backends.local.dagnodes import NodeLive, description, kill_script, start_script
from rsubd.backends.schedd import ScheddError
from rsubd.submitdesc import SubmitDescription, SubmitError

DEFAULT_UPDATE_INTERVAL = 300.0  # DAGMAN_QUEUE_UPDATE_INTERVAL, as on an access point left at its defaults
EXIT_OK, EXIT_FAILED, EXIT_REMOVED, EXIT_SIGTERM = 0, 1, 2, 3
STATUS_OK, STATUS_NODE_FAILED, STATUS_ABORT, STATUS_RM = 0, 2, 3, 4


class DagHost(Protocol):
    """What DAGMan needs of the scheduler it runs in."""

    def submit_node(self, dag_cluster: int, desc: SubmitDescription, iwd: str, attrs: dict[str, Any]) -> int: ...
    def remove_nodes(self, dag_cluster: int, reason: str) -> None: ...
    def update_dag_ad(self, dag_cluster: int, attrs: dict[str, Any]) -> None: ...


class DagRun:
    """One run of condor_dagman for the DAGMan job `cluster`, in `cwd` (its spool directory)."""

    def __init__(self, cluster: int, cwd: Path, argv: list[str], env: Mapping[str, str], host: DagHost,
                 dagman: str, clock: Callable[[], float] = time.time) -> None:
        self.cluster, self.cwd, self.host, self.clock = cluster, cwd, host, clock
        self.env = dict(env)
        self.exit_code: int | None = None
        self.status = STATUS_OK
        self.out, self.started = daglog.DagmanOut(cwd / self.env.get("_CONDOR_DAGMAN_LOG", "dagman.out")), time.time()
        self.nodes: dict[str, NodeLive] = {}
        self.by_cluster: dict[int, str] = {}
        self.jobs_submitted = self.jobs_completed = self.jobs_ok = 0
        self.rescue_used = 0
        self.recovery = False
        self._last_update = 0.0
        self._last_line: tuple[int, ...] = ()
        try:
            self.opts = dagfile.options(argv)
            if "_CONDOR_DAGMAN_LOG" not in self.env:
                self.out = daglog.DagmanOut(cwd / f"{self.opts.dag}.dagman.out")
            # -f and -l . are consumed by DaemonCore before DAGMan sees them, as dagman.out shows.
            shown = [a for i, a in enumerate(argv) if a != "-f" and not (a == "-l" or argv[i - 1:i] == ["-l"])]
            self.out.header(dagman, shown)
            self._begin()
        except (dagfile.DagError, ValueError) as e:  # ValueError: a setting that is not a number
            self.out.write(f"ERROR: {e}", "Aborting DAG...")
            self._exit(EXIT_FAILED, STATUS_NODE_FAILED if self.nodes else 1, rescue=False)

    # -- start ---------------------------------------------------------------

    def _begin(self) -> None:
        self.out.write(f"Workflow batch-id: <{self.cluster}.0>", f"Workflow batch-name: <{self.batch_name}>")
        self.dag = dagfile.parse(self.cwd / self.opts.dag)
        if self.dag.refused:
            raise dagfile.DagError(self.dag.refused)
        settings = {k[len("_CONDOR_"):].upper(): v for k, v in self.env.items() if k.upper().startswith("_CONDOR_")}
        if self.dag.config:
            settings.update(dagfile.read_config(self.cwd / self.dag.config))
        self.update_interval = float(settings.get("DAGMAN_QUEUE_UPDATE_INTERVAL", DEFAULT_UPDATE_INTERVAL))
        max_jobs = self.opts.max_jobs if self.opts.max_jobs is not None else int(
            settings.get("DAGMAN_MAX_JOBS_SUBMITTED", "0"))
        self.max_jobs = max_jobs
        self.nodes_log = self.cwd / f"{self.opts.dag}.nodes.log"
        self.lock = self.cwd / self.opts.lockfile
        self.out.write(f"Default node log file is: <{self.cwd}/./{self.opts.dag}.nodes.log>",
                       f"\tMaximum Submitted Nodes-------: {max_jobs}",
                       f"DAG Lockfile will be written to {self.opts.lockfile}", f"DAG Input file is {self.opts.dag}",
                       "Parsing 1 dagfiles", f"Parsing {self.opts.dag} ...",
                       f"Dag contains {len(self.dag.nodes)} total nodes")
        for name in self.dag.nodes:
            self.nodes[name] = NodeLive(name)
        self._apply_rescue()
        for name, node in self.dag.nodes.items():
            if node.done:
                self.nodes[name].state = "Done"
        self.recovery = self.lock.exists()
        if self.recovery:
            self.out.write(f"Lock file {self.opts.lockfile} detected,",
                           "Running in RECOVERY mode... >>>>>>>>>>>>>>>>>>>>>>>>>>>>>>")
        else:
            self.lock.write_bytes(b"")
            self.nodes_log.write_bytes(b"")  # MultiLogFiles: truncating log file
        self.out.write("Bootstrapping...", f"Number of pre-completed nodes: {self._count('Done')}")
        self.reader = daglog.EventReader(self.nodes_log)
        self._update_readiness()
        self.host.update_dag_ad(self.cluster, {
            "JobBatchId": f"{self.cluster}.0", "JobBatchName": self.batch_name, "DAGMan_MaxJobs": max_jobs,
            "DAGMan_MaxIdle": 1000, "DAGMan_MaxPreScripts": 20, "DAGMan_MaxPostScripts": 20,
            "DAGMan_MaxHoldScripts": 20, "DAGMan_MaxSubmitsPerInterval": 100, **self.ad_counts()})
        if self.recovery:
            self._events()
            for live in self.nodes.values():
                if live.state == "Postrun" and live.script is None:
                    self._start_script(live, "post")
            self.recovery = False
            self.out.write("       HTCondor Recovery Complete",
                           "...done with RECOVERY mode <<<<<<<<<<<<<<<<<<<<<<<<<<<<<<<")
            self._update_ad()
        self._report()

    @property
    def batch_name(self) -> str:
        return f"{Path(self.opts.dag).name}+{self.cluster}"

    def _apply_rescue(self) -> None:
        if not self.opts.auto_rescue and self.opts.rescue_from == 0:
            return
        number = self.opts.rescue_from or dagfile.rescue_number(self.opts.dag, self.cwd)
        if number == 0:
            return
        path = self.cwd / f"{self.opts.dag}.rescue{number:03d}"
        if not path.exists():
            raise dagfile.DagError(f"rescue DAG {path.name} does not exist")
        self.out.write(f"Found rescue DAG number {number}; running {path.name} in combination with normal DAG file",
                       f"USING RESCUE DAG {path.name}")
        for name in daglog.rescue_done(path):
            if name not in self.dag.nodes:
                raise dagfile.DagError(f"{path.name} marks unknown node {name} DONE")
            self.dag.nodes[name].done = True
        self.rescue_used = number

    # -- one cycle -------------------------------------------------------------

    def step(self) -> None:
        """One cycle: read the nodes log, reap scripts, submit what is ready, update the job ad."""
        if self.exit_code is not None:
            return
        self._events()
        for live in self.nodes.values():
            if live.script is not None and live.script.poll() is not None:
                self._script_ended(live)
        if self.exit_code is not None:
            return
        self._update_readiness()
        self._submit_ready()
        states = [live.state for live in self.nodes.values()]
        if all(s == "Done" for s in states):
            self.out.write("All jobs Completed!")
            self._exit(EXIT_OK, STATUS_OK, rescue=False)
            return
        if not any(s in ("Ready", "Prerun", "Queued", "Postrun") for s in states):
            failed = [n for n, live in self.nodes.items() if live.state == "Failed"]
            self.out.write("ERROR: the following job(s) failed:", *(f"      Node Name: {n}" for n in failed))
            self._exit(EXIT_FAILED, STATUS_NODE_FAILED, rescue=True)
            return
        self._report()
        if self.clock() - self._last_update >= self.update_interval:
            self._update_ad()

    def _events(self) -> None:
        suffix = " [recovery mode]" if self.recovery else ""
        for ev in self.reader.read():
            name = ev.node if ev.code == 0 and ev.node in self.nodes else self.by_cluster.get(ev.cluster)
            if name is None:
                continue
            live = self.nodes[name]
            if ev.code != 16:
                self.out.write(f"Event: {daglog.event_name(ev.code)} for HTCondor Node {name} "
                               f"({ev.cluster}.0.0) {{{ev.stamp}}}{suffix}")
            if ev.code == 0:
                self.by_cluster[ev.cluster] = name
                self.jobs_submitted += 1
                if live.cluster != ev.cluster:  # a submit made before a restart: recovery
                    live.cluster, live.state, live.job_status = ev.cluster, "Queued", 1
            elif ev.code in (1, 4, 12, 13) and live.cluster == ev.cluster:
                live.job_status = {1: 2, 4: 1, 12: 5, 13: 1}[ev.code]
            elif ev.code in (5, 9) and live.cluster == ev.cluster and live.state == "Queued":
                self.jobs_completed += ev.code == 5
                self.jobs_ok += ev.code == 5 and ev.value == 0
                code = ev.value if ev.code == 5 and ev.value is not None else 1
                word = "completed successfully" if code == 0 else f"failed with status {code}"
                self.out.write(f"Node {name} job proc ({ev.cluster}.0.0) {word if ev.code == 5 else 'was aborted'}.",
                               f"Node {name} job(s) have exited the queue")
                live.job_status, live.job_return = 0, code
                if self.dag.nodes[name].post is not None:
                    live.state = "Postrun"
                    if not self.recovery:
                        self._start_script(live, "post")
                else:
                    self._result(live, code)
            elif ev.code == 16 and live.state == "Postrun" and live.script is None:
                self._result(live, ev.value or 0)

    def _update_readiness(self) -> None:
        for name, live in self.nodes.items():
            if live.state == "Unready" and all(self.nodes[p].state == "Done" for p in self.dag.nodes[name].parents):
                live.state = "Ready"

    def _submit_ready(self) -> None:
        ready = [n for n, live in self.nodes.items() if live.state == "Ready"]
        ready.sort(key=lambda n: -self.dag.nodes[n].priority)  # stable: file order among equals
        submitted = 0
        for name in ready:
            live, node = self.nodes[name], self.dag.nodes[name]
            if node.noop:
                self._result(live, 0)
                continue
            if node.pre is not None and not live.pre_done:
                self._start_script(live, "pre")
                continue
            if self.max_jobs and self._count("Queued") >= self.max_jobs:
                continue
            limit = self.dag.maxjobs.get(node.category or "")
            if limit and sum(1 for n, v in self.nodes.items() if v.state == "Queued"
                             and self.dag.nodes[n].category == node.category) >= limit:
                continue
            self._submit(live, node)
            submitted += 1
        if submitted:
            self.out.write(f"Just submitted {submitted} job{'s' if submitted > 1 else ''} this cycle...")

    def _submit(self, live: NodeLive, node: dagfile.Node) -> None:
        iwd = str(self.cwd / node.directory) if node.directory else str(self.cwd)
        self.out.write(f"Submitting HTCondor Node {node.name} job(s)...",
                       f"Submitting node {node.name} from file {node.submit} using direct job submission")
        attrs = {"DAGManJobId": self.cluster, "DAGNodeName": node.name,
                 "DAGParentNodeNames": ",".join(node.parents), "DAGManNodesLog": f"{self.cwd}/./{self.nodes_log.name}",
                 "JobBatchName": self.batch_name, "JobBatchId": f"{self.cluster}.0", "JobSubmitFile": node.submit,
                 "SubmitEventNotes": f"DAG Node: {node.name}", "JobSubmitMethod": 1}
        try:
            desc = description(Path(iwd) / node.submit, node, live.retry, self.cluster)
            if node.priority:
                attrs["JobPrio"] = node.priority
            cluster = self.host.submit_node(self.cluster, desc, iwd, attrs)
        except (OSError, SubmitError, ValueError, ScheddError) as e:
            self.out.write(f"ERROR: submit of node {node.name} failed: {e}")
            live.job_return = 1
            self._result(live, 1)
            return
        self.out.write(f"\tassigned HTCondor ID ({cluster}.0.0)")
        live.cluster, live.state, live.job_status = cluster, "Queued", 1
        self.by_cluster[cluster] = node.name

    # -- scripts and results ---------------------------------------------------

    def _start_script(self, live: NodeLive, kind: str) -> None:
        node = self.dag.nodes[live.name]
        script = node.pre if kind == "pre" else node.post
        assert script is not None
        self.out.write(f"Running {kind.upper()} script of Node {node.name}...")
        live.state, live.script_kind = ("Prerun" if kind == "pre" else "Postrun"), kind
        try:
            live.script = start_script(script, node, live, self.cwd, self.env,
                                       status=self.status, failed=self._count("Failed"))
        except OSError as e:
            self.out.write(f"ERROR: {kind.upper()} script of node {node.name} failed to start: {e.strerror}")
            live.script = None
            self._script_result(live, kind, 1)

    def _script_ended(self, live: NodeLive) -> None:
        assert live.script is not None
        code = live.script.returncode
        code = 128 - code if code < 0 else code
        live.script = None
        self._script_result(live, live.script_kind, code)

    def _script_result(self, live: NodeLive, kind: str, code: int) -> None:
        self.out.write(f"{kind.upper()} Script of node {live.name} "
                       f"{'completed successfully' if code == 0 else f'failed with status {code}'}.")
        if kind == "pre":
            live.pre_return = code
            if code == 0:
                live.pre_done, live.state = True, "Ready"
            else:
                self._result(live, code)
        else:
            daglog.post_script_event(self.nodes_log, live.cluster or 0, live.name, code)
            self._result(live, code)

    def _result(self, live: NodeLive, code: int) -> None:
        """A node's attempt is over with `code` (its POST script's, else its job's): done, retry or failed."""
        node = self.dag.nodes[live.name]
        live.pre_done = False
        if code == 0:
            live.state = "Done"
            return
        rule = self.dag.abort.get(live.name)
        if rule is not None and rule.value == code:
            exit_code = rule.returns if rule.returns is not None else code
            self.out.write(f"Aborting DAG because we got the ABORT exit value from a job of node {live.name}")
            live.state = "Failed"
            self.host.remove_nodes(self.cluster, "DAG Abort: DAG is exiting and writing rescue file.")
            self._exit(exit_code, STATUS_ABORT, rescue=True)
            return
        if live.retry < node.retry and node.unless_exit != code:
            live.retry += 1
            live.state = "Ready"
            self.out.write(f"Retrying node {live.name} (retry #{live.retry} of {node.retry})...")
            return
        live.state = "Failed"
        self.status = STATUS_NODE_FAILED
        self._futile(live.name)

    def _futile(self, name: str) -> None:
        for child in self.dag.nodes[name].children:
            if self.nodes[child].state in ("Unready", "Ready"):
                self.nodes[child].state = "Futile"
                self._futile(child)

    # -- signals and the end -----------------------------------------------------

    def stop(self) -> None:
        """SIGTERM (the job held, the schedd shutting down): exit 3, the nodes and the lock file left as they are."""
        if self.exit_code is not None:
            return
        self.out.write("Caught SIGTERM: si_pid=0 si_uid=0", "Got SIGTERM. Performing graceful shutdown.")
        self._kill_scripts()
        self._update_ad()
        self.out.write(f"**** condor_dagman (condor_DAGMAN) pid {os.getpid()} EXITING WITH STATUS {EXIT_SIGTERM}")
        self.exit_code = EXIT_SIGTERM

    def removed(self) -> None:
        """SIGUSR1 (the DAGMan job removed; its nodes already gone): rescue DAG, exit 2."""
        if self.exit_code is not None:
            return
        self._events()
        self.out.write("Received SIGUSR1", "Aborting DAG...")
        self.out.write("Removing submitted jobs...", "Removing any/all submitted HTCondor jobs...")
        self._exit(EXIT_REMOVED, STATUS_RM, rescue=True)

    def _kill_scripts(self) -> None:
        for live in self.nodes.values():
            kill_script(live)

    def _exit(self, code: int, status: int, *, rescue: bool) -> None:
        self.status = status
        self._kill_scripts()
        opts = getattr(self, "opts", None)
        if opts is not None and hasattr(self, "dag"):
            if rescue:
                number = dagfile.rescue_number(opts.dag, self.cwd) + 1
                name = f"{opts.dag}.rescue{number:03d}"
                self.out.write(f"Writing Rescue DAG to {name}...")
                daglog.write_rescue(self.cwd / name, Path(opts.dag).name,
                                    [n for n, v in self.nodes.items() if v.state == "Done"],
                                    [n for n, v in self.nodes.items() if v.state == "Failed"], len(self.nodes))
            self._report(force=True)
            daglog.write_metrics(self.cwd / f"{opts.dag}.metrics", cluster=self.cluster, start=self.started,
                                 exit_code=code, status=status, rescue=self.rescue_used, nodes=len(self.nodes),
                                 done=self._count("Done"), failed=self._count("Failed"),
                                 jobs_submitted=self.jobs_submitted, jobs_ok=self.jobs_ok)
            self.out.write(f"Wrote metrics file {opts.dag}.metrics.")
            if hasattr(self, "lock"):
                self.lock.unlink(missing_ok=True)
        self.exit_code = code
        self._update_ad()
        self.out.write(f"**** condor_dagman (condor_DAGMAN) pid {os.getpid()} EXITING WITH STATUS {code}")

    # -- counting and reporting --------------------------------------------------

    def _count(self, state: str) -> int:
        return sum(1 for live in self.nodes.values() if live.state == state)

    def ad_counts(self) -> dict[str, Any]:
        queued = [v for v in self.nodes.values() if v.state == "Queued"]
        return {
            "DAG_NodesTotal": len(self.nodes), "DAG_NodesDone": self._count("Done"),
            "DAG_NodesPrerun": self._count("Prerun"), "DAG_NodesQueued": len(queued),
            "DAG_NodesPostrun": self._count("Postrun"), "DAG_NodesReady": self._count("Ready"),
            "DAG_NodesFailed": self._count("Failed"), "DAG_NodesUnready": self._count("Unready"),
            "DAG_NodesFutile": self._count("Futile"), "DAG_NodesHoldrun": 0, "DAG_Status": self.status,
            "DAG_InRecovery": int(self.recovery), "DAG_JobsSubmitted": self.jobs_submitted,
            "DAG_JobsIdle": sum(1 for v in queued if v.job_status == 1),
            "DAG_JobsRunning": sum(1 for v in queued if v.job_status == 2),
            "DAG_JobsHeld": sum(1 for v in queued if v.job_status == 5),
            "DAG_JobsCompleted": self.jobs_completed, "DAG_AdUpdateTime": int(self.clock()),
        }

    def _update_ad(self) -> None:
        self._last_update = self.clock()
        self.host.update_dag_ad(self.cluster, self.ad_counts())

    def _report(self, *, force: bool = False) -> None:
        counts = {s: self._count(s) for s in ("Done", "Prerun", "Queued", "Postrun", "Ready", "Unready",
                                              "Failed", "Futile")}
        held = sum(1 for v in self.nodes.values() if v.state == "Queued" and v.job_status == 5)
        line = (*counts.values(), held, self.status)
        if force or line != self._last_line:
            self._last_line = line
            self.out.status(self.status, counts, len(self.nodes), held)

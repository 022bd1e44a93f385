"""Scheduler-universe jobs in the embedded scheduler: DAGMan (its own, see `dagman`) and plain programs.

As on a real schedd: a scheduler-universe job runs on the access point with cwd = its spool
directory, outside the slots. One whose `Cmd` is the configured condor_dagman path (with
`transfer_executable = false`) runs the embedded DAGMan; any other executable runs as a process
there. When it exits, `OnExitRemove` decides: true completes it (JobStatus 4), false requeues it
idle with a cool-down (`JobCoolDownExpiration`, unless `DisableCoolDown`), as a spooled copy of
condor_dagman that cannot load its libraries (exit 127) does. A hold stops it (DAGMan: exit 3,
its nodes left running) and sets the cool-down too; a remove first removes the jobs its
`OtherJobRemoveRequirements` names, then DAGMan writes its rescue DAG and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from rsubd.backends.local import events, jobads, transfer
from rsubd.backends.local.actions import QueueActions
from rsubd.backends.local.dagman import DagRun
from rsubd.backends.local.queue import Key
from rsubd.backends.schedd import JobStatus
from rsubd.submitdesc import SubmitDescription, expand

DEFAULT_DAGMAN = "/usr/bin/condor_dagman"
COOL_DOWN_SECONDS = 300  # SCHEDD's default cool-down after a scheduler-universe job exits unexpectedly
TRANSFER_INPUT_HOLD = 13
SPOOLED_DAGMAN_ERROR = ("{path}: error while loading shared libraries: libcondor_utils_25_13_2.so: "
                        "cannot open shared object file: No such file or directory\n")
STAGED = "staged.json"  # beside the spool Iwd: what spool() put there, so a retrieve sends only the new


class SchedulerUniverse(QueueActions):
    """The scheduler-universe part of the embedded scheduler (a mixin of `LocalSchedd`)."""

    def __init__(self, *args: Any, dagman: str = DEFAULT_DAGMAN, **kwargs: Any) -> None:
        self.dagman = dagman  # the access point's condor_dagman path: a job running it runs the embedded DAGMan
        self._dagruns: dict[Key, DagRun] = {}
        self._programs: dict[Key, subprocess.Popen[bytes]] = {}
        self._removing: set[Key] = set()
        super().__init__(*args, **kwargs)

    def _scheduler_state(self) -> tuple[dict[Key, DagRun], dict[Key, subprocess.Popen[bytes]]]:
        return self._dagruns, self._programs

    # -- the tick ------------------------------------------------------------

    def _scheduler_universe(self) -> None:
        runs, programs = self._scheduler_state()
        now = self._clock()
        for key in list(self._unslotted):
            if key not in self._procs:
                self._unslotted.discard(key)
                continue
            status = self._status(key)
            if status == JobStatus.IDLE:
                cool = self.ad(key).get("JobCoolDownExpiration")
                if not isinstance(cool, (int, float)) or cool <= now:
                    self._start_scheduler(key)
            elif status == JobStatus.RUNNING and key not in runs and key not in programs:
                # Its DAGMan or program ended with a daemon that is gone: run it again, as after a schedd restart.
                self._set(key, JobStatus=int(JobStatus.IDLE), LastJobStatus=int(JobStatus.RUNNING),
                          EnteredCurrentStatus=int(now), **self._cool_down(key))
        for key, run in list(runs.items()):
            try:
                run.step()
            except Exception as e:  # noqa: BLE001 - one DAGMan's crash is its job's, not the scheduler's
                self._write(self._std_path(self.ad(key), "Err", transfer.STDERR), f"condor_dagman crashed: {e!r}\n")
                run.exit_code = 1
            if run.exit_code is not None:
                del runs[key]
                self._exited(key, run.exit_code)
        for key, popen in list(programs.items()):
            if popen.poll() is not None:
                del programs[key]
                self._exited(key, popen.returncode if popen.returncode >= 0 else 128 - popen.returncode)

    def _shutdown_scheduler_universe(self) -> None:
        """The scheduler stops: DAGMan gets SIGTERM (exit 3) and its job waits idle, as on a schedd's shutdown."""
        for key in list(self._dagruns) + list(self._programs):
            if key in self._procs:
                self._kill(key)
                self._set(key, JobStatus=int(JobStatus.IDLE), LastJobStatus=int(JobStatus.RUNNING),
                          EnteredCurrentStatus=int(self._clock()))

    def _start_scheduler(self, key: Key) -> None:
        ad = self.ad(key)
        iwd = Path(ad["Iwd"])
        iwd.mkdir(parents=True, exist_ok=True)
        now = int(self._clock())
        self._set(key, JobStatus=int(JobStatus.RUNNING), LastJobStatus=int(JobStatus.IDLE), EnteredCurrentStatus=now,
                  JobCurrentStartDate=now, JobStartDate=ad.get("JobStartDate") or now,
                  NumJobStarts=int(ad.get("NumJobStarts") or 0) + 1, JobCoolDownExpiration=None)
        out, err = self._std_path(ad, "Out", transfer.STDOUT), self._std_path(ad, "Err", transfer.STDERR)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               **jobads.parse_environment(ad.get("Environment")), "CONDOR_ID": f"{key[0]}.{key[1]}"}
        argv = jobads.split_arguments(ad)
        runs, programs = self._scheduler_state()
        cmd = str(ad.get("Cmd", ""))
        if ad.get("TransferExecutable") is False and cmd == self.dagman:
            self._write(out, "Executing condor dagman ... \n")
            self._write(err, "")
            config = env.get("CONDOR_CONFIG")
            if config is not None and not os.access(config, os.R_OK):
                # The client's CONDOR_CONFIG (getenv): condor_dagman cannot read it and exits 1 at once (ref. 1e).
                self._write(err, f'Cannot stat file specified in CONDOR_CONFIG environment variable:\n"{config}", '
                                 "errno: 2\n")
                programs[key] = subprocess.Popen(["/bin/sh", "-c", "exit 1"])
                return
            runs[key] = DagRun(key[0], iwd, argv, env, self, self.dagman, self._clock)
            return
        exe = cmd if os.path.isabs(cmd) else str(iwd / cmd)
        if ad.get("TransferExecutable") is not False and os.path.basename(cmd) == "condor_dagman":
            # A spooled copy of condor_dagman cannot find HTCondor's libraries beside it: the loader's exit.
            self._write(err, SPOOLED_DAGMAN_ERROR.format(path=exe))
            programs[key] = subprocess.Popen(["/bin/sh", "-c", "exit 127"])
            return
        try:
            with (open(out or os.devnull, "ab") as fout, open(err or os.devnull, "ab") as ferr):
                programs[key] = subprocess.Popen([exe, *argv], cwd=iwd, env=env, stdin=subprocess.DEVNULL,
                                                 stdout=fout, stderr=ferr, start_new_session=True)
        except OSError as e:
            self._write(err, f"{exe}: {e.strerror}\n")
            programs[key] = subprocess.Popen(["/bin/sh", "-c", "exit 127"])

    @staticmethod
    def _std_path(ad: dict[str, Any], attr: str, spooled: str) -> Path | None:
        name = ad.get(attr)
        if not isinstance(name, str) or not name or name == os.devnull:
            return None
        return Path(ad["Iwd"]) / (spooled if os.path.isabs(name) else name)

    @staticmethod
    def _write(path: Path | None, text: str) -> None:
        if path is not None:
            with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as f:  # best effort, as a schedd's
                f.write(text)

    def _cool_down(self, key: Key) -> dict[str, Any]:
        if self.ad(key).get("DisableCoolDown") is True:
            return {}
        return {"JobCoolDownExpiration": int(self._clock()) + COOL_DOWN_SECONDS}

    def _exited(self, key: Key, code: int) -> None:
        """The job's program (or DAGMan) exited with `code`: OnExitRemove completes it or requeues it."""
        if key not in self._procs or self._status(key) != JobStatus.RUNNING:
            return
        now = int(self._clock())
        self._set(key, ExitCode=code, ExitStatus=code, ExitBySignal=False)
        remove = self._classad(key).eval("OnExitRemove") if "OnExitRemove" in self.ad(key) else True
        if remove is True:
            # A schedd puts a scheduler-universe job that exited non-zero in cool-down even as it completes.
            self._set(key, JobStatus=int(JobStatus.COMPLETED), LastJobStatus=int(JobStatus.RUNNING),
                      EnteredCurrentStatus=now, CompletionDate=now, OnExitRemove=True,
                      **(self._cool_down(key) if code else {}))
            self._leave_check.add(key)
        else:
            self._set(key, JobStatus=int(JobStatus.IDLE), LastJobStatus=int(JobStatus.RUNNING),
                      EnteredCurrentStatus=now, **self._cool_down(key))

    # -- hold and remove ---------------------------------------------------------

    def _start(self, key: Key) -> None:
        try:
            super()._start(key)
        except transfer.TransferError as e:
            # A direct job's input missing from its Iwd: the shadow's transfer fails and the job is held.
            self._set(key, JobStatus=int(JobStatus.HELD), LastJobStatus=int(JobStatus.IDLE),
                      EnteredCurrentStatus=int(self._clock()), HoldReason=str(e),
                      HoldReasonCode=TRANSFER_INPUT_HOLD, HoldReasonSubCode=2,
                      NumHolds=int(self.ad(key).get("NumHolds") or 0) + 1)

    def _kill(self, key: Key) -> None:
        if key not in self._unslotted:
            super()._kill(key)
            return
        runs, programs = self._scheduler_state()
        run = runs.pop(key, None)
        if run is not None:
            run.stop()  # as SIGTERM: DAGMan exits 3, its nodes go on
        popen = programs.pop(key, None)
        if popen is not None:
            try:
                os.killpg(popen.pid, 15)
            except (ProcessLookupError, PermissionError):
                pass
            popen.wait()
        if self._status(key) == JobStatus.RUNNING and key not in self._removing:
            self._set(key, **self._cool_down(key))  # held: it starts again after the cool-down

    def _remove(self, key: Key, reason: str | None) -> None:
        ad = self.ad(key)
        other = ad.get("OtherJobRemoveRequirements")
        if isinstance(other, str) and other.strip():
            fired = (f"removed because <OtherJobRemoveRequirements = {other}> fired when job "
                     f"({key[0]}.{key[1]}) was removed")
            for k in self._select(other):
                if k != key and k in self._procs and self._status(k) not in (JobStatus.REMOVED,
                                                                            JobStatus.COMPLETED):
                    self._remove(k, fired)
                    self._leave_check.add(k)
        run = self._dagruns.pop(key, None)
        if run is not None:
            run.removed()  # as SIGUSR1: the rescue DAG, then exit 2
        self._removing.add(key)
        try:
            super()._remove(key, reason)
        finally:
            self._removing.discard(key)

    # -- what DAGMan asks of its scheduler (the DagHost protocol) -------------------

    def submit_node(self, dag_cluster: int, desc: SubmitDescription, iwd: str, attrs: dict[str, Any]) -> int:
        cluster = self._store.next_cluster()
        qdate = int(self._clock())
        ads = []
        for proc, commands in enumerate(expand(desc, cluster=cluster)):
            ad = jobads.proc_ad(commands, cluster=cluster, proc=proc, cwd=iwd, owner=self._owner, qdate=qdate,
                                spool_iwd=iwd)
            # Not spooled: idle at once, Iwd where DAGMan runs, the executable named in full, no SUBMIT_*.
            submit_iwd = ad.pop("SUBMIT_Iwd")
            if "SUBMIT_Cmd" in ad:
                ad.pop("SUBMIT_Cmd")
                ad["Cmd"] = os.path.normpath(os.path.join(submit_iwd, commands.get("executable", "").strip()))
            for name in ("HoldReason", "HoldReasonCode"):
                ad.pop(name, None)
            ad.update(attrs, Iwd=submit_iwd, JobStatus=int(JobStatus.IDLE), InitialJobStatus=int(JobStatus.IDLE),
                      TotalSubmitProcs=1)
            ads.append(ad)
        shared, procs = jobads.split_cluster(ads)
        self._add_cluster(cluster, shared, procs)
        for proc in range(len(procs)):
            self._jobdir((cluster, proc)).mkdir(parents=True, exist_ok=True)
            events.submitted(self.ad((cluster, proc)), qdate)
        return cluster

    def remove_nodes(self, dag_cluster: int, reason: str) -> None:
        for key in self._select(f"DAGManJobId =?= {dag_cluster}"):
            if key in self._procs and self._status(key) not in (JobStatus.REMOVED, JobStatus.COMPLETED):
                self._remove(key, reason)
                self._leave_check.add(key)

    def update_dag_ad(self, dag_cluster: int, attrs: dict[str, Any]) -> None:
        if (dag_cluster, 0) in self._procs:
            self._set((dag_cluster, 0), **attrs)

    # -- spool and retrieve --------------------------------------------------------

    def _staged(self, key: Key, spool_iwd: Path) -> None:
        """Remember what spool() put in a scheduler-universe job's spool directory."""
        files = {str(p.relative_to(spool_iwd)): [p.stat().st_mtime_ns, p.stat().st_size]
                 for p in spool_iwd.rglob("*") if p.is_file()}
        (spool_iwd.parent / STAGED).write_text(json.dumps(files), encoding="utf-8")

    def _retrieve_changed(self, key: Key, ad: dict[str, Any]) -> None:
        """A scheduler-universe job's retrieve: every file of its spool directory that is new or changed."""
        spool_iwd = Path(ad["Iwd"])
        try:
            staged = json.loads((spool_iwd.parent / STAGED).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            staged = {}
        iwd = Path(ad["SUBMIT_Iwd"])
        remaps = transfer.parse_remaps(ad.get("SUBMIT_TransferOutputRemaps"))
        # transfer_output_files narrows it to the files named (with output, error and the log), as in ref. 08.
        named = set(transfer.split_list(ad.get("TransferOutput")))
        if named:
            named |= {str(ad.get(a)) for a in ("Out", "Err") if isinstance(ad.get(a), str)}
            named |= {log for log in (events.retrievable(ad),) if log}
        for path in sorted(spool_iwd.rglob("*")) if spool_iwd.is_dir() else []:
            rel = str(path.relative_to(spool_iwd))
            if not path.is_file() or path.name.endswith(".rsub-partial") or (named and rel not in named):
                continue
            stat = path.stat()
            if not named and staged.get(rel) == [stat.st_mtime_ns, stat.st_size]:
                continue
            dest = {transfer.STDOUT: ad.get("Out"), transfer.STDERR: ad.get("Err")}.get(rel) or remaps.get(rel, rel)
            target = Path(dest) if os.path.isabs(dest) else iwd / dest
            try:
                transfer.copy_file_durably(path, target)
            except FileNotFoundError:
                continue  # gone meanwhile (a lock file DAGMan removed): a real retrieve sends what exists
        missing = sorted(n for n in transfer.split_list(ad.get("TransferOutput")) if not (spool_iwd / n).exists())
        if missing:  # the others are written; the retrieve fails naming the first missing one
            raise transfer.TransferError(
                f"File transfer failed for target job {key[0]}.{key[1]}: SCHEDD failed to send file(s) to TOOL: "
                f"|Error: 1 total failures: first failure: reading from file {spool_iwd / missing[0]}: "
                "(errno 2) No such file or directory")

"""rsubd: wires configuration, ledger, schedds, pollers and the socket server together.

This is the only module that knows about all the others. The lifecycle is
uvicorn's: `startup()`, `serve()` until asked to stop, `shutdown()`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import fcntl
import functools
import gc
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from rsub.wire import paths
from rsub.wire.protocol import Request
from rsub.wire.vocabulary import iso
from rsubd import __version__, handlers
from rsubd.backends.local.auth import TokenCheckedSchedd
from rsubd.backends.registry import make_schedd
from rsubd.backends.schedd import ErrorKind, Schedd, ScheddError
from rsubd.config import LOG_LEVELS, Config, ConfigError, load
from rsubd.handlers import Services
from rsubd.ledger.store import Ledger, LedgerError
from rsubd.platform import logs, systemd
from rsubd.polling.loop import PollLoop, PollSchedule
from rsubd.polling.poller import Poller
from rsubd.polling.schedule import EarlyDecision, EarlyPolls, PollPolicy, TokenBucket
from rsubd.services import automation, recovery
from rsubd.services.notify import ClusterSettings, Notifier
from rsubd.services.submission import Submissions
from rsubd.services.views import ClusterFacts, freshness, token_brief
from rsubd.tokens.manager import Credential, TokenManager
from rsubd.transport.server import SocketServer

log = structlog.get_logger("rsubd")


class StartupError(Exception):
    """rsubd cannot start; the message says why and what to do."""


class Daemon:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.ledger: Ledger
        self.schedds: dict[str, Schedd] = {}
        self.tokens: TokenManager
        self._submitters: dict[tuple[str, str], Schedd] = {}
        self._refreshes: dict[str, asyncio.Task[Any]] = {}
        self.pollers: dict[str, Poller] = {}
        self.policies: dict[str, PollPolicy] = {}
        self.early: dict[str, EarlyPolls] = {}
        self.loops: dict[str, PollLoop] = {}
        self.started_at = time.time()
        self._stop = asyncio.Event()
        self._poll_done = asyncio.Condition()
        self._lock_file: Any = None
        self.scheduler = AsyncIOScheduler()
        self.submissions: Submissions  # these two are built in startup, once the ledger and the tokens are open
        self.services: Services
        self.server = SocketServer(config.socket, self._dispatch, idle_timeout=config.idle_timeout,
                                   send_timeout=config.send_timeout, max_clients=config.max_clients)
        self._unrecovered: set[str] = {s.name for s in config.schedds}  # settle unfinished submits first

    # -- lifecycle -------------------------------------------------------------

    async def startup(self) -> None:
        cfg = self.config
        try:
            paths.ensure_private_dir(cfg.state_dir)
            paths.ensure_private_dir(cfg.socket.parent)
        except (OSError, PermissionError) as e:
            raise StartupError(str(e)) from None
        # Open for rsubd's whole life: the flock on it is what keeps a second rsubd out.
        lock = cfg.state_dir / "rsubd.lock"
        self._lock_file = os.fdopen(os.open(lock, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600), "a+")
        os.fchmod(self._lock_file.fileno(), 0o600)  # a lock file made 0644 by an older rsubd, too
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StartupError(f"another rsubd is already running with state in {cfg.state_dir}") from None
        try:
            self.ledger = Ledger(cfg.ledger_path, busy_timeout=cfg.ledger_busy_timeout)
        except LedgerError as e:
            raise StartupError(str(e)) from None
        self.tokens = TokenManager(cfg.tokens, private_dir=cfg.state_dir / "tokens")
        self.notifier = Notifier(cfg.notify, per_cluster=ClusterSettings(self.ledger.descriptions))
        for s in cfg.schedds:
            self.schedds[s.name] = make_schedd(s, cfg.state_dir, self._credential_for(s.token))
            self.pollers[s.name] = Poller(self.ledger, self.schedds[s.name], on_change=self.notifier.jobs_changed,
                                          retry_base=max(2.0, s.poll_interval), retry_max=s.retrieve_retry_max,
                                          attention_after=s.retrieve_attention_after, compact_after=cfg.compact_after)
            self.policies[s.name] = PollPolicy.for_schedd(s)
            self.early[s.name] = EarlyPolls(self.policies[s.name],
                                            bucket=TokenBucket.every(s.early_poll_every, s.early_poll_burst))
            schedule = PollSchedule(self.policies[s.name], self.early[s.name], slack=s.poll_stall_slack,
                                    max_duration=s.poll_max_duration)
            self.loops[s.name] = PollLoop(s.name, schedule, functools.partial(self._poll, s.name),
                                          on_done=self._polled)
        self.submissions = Submissions(self.ledger, self.tokens, self, schedds={s.name: s.token for s in cfg.schedds},
                                       max_age_seconds=int(cfg.leave_in_queue_days * 86400),
                                       limits={s.name: s.submit_limits for s in cfg.schedds})
        self.automation = automation.Automation(cfg.policy, self.submissions, self.notifier)  # after each poll
        self.services = Services(config=cfg, ledger=self.ledger, schedds=self.schedds, pollers=self.pollers,
                                 tokens=self.tokens, submissions=self.submissions, polls=self, control=self,
                                 facts=ClusterFacts(self.ledger.submitted_descriptions, size=cfg.facts_cache_size,
                                                    group_attribute=cfg.jobsub.group_attribute))
        try:
            passed = systemd.listen_socket()
        except ValueError as e:
            raise StartupError(str(e)) from None
        await self.server.start(passed)
        for loop in self.loops.values():
            loop.start()
        # The loops cannot lose their next poll, and this check proves it: a schedule found
        # stalled is logged, counted and re-armed, and the watchdog is not fed meanwhile.
        self.scheduler.add_job(self.check_liveness, "interval", id="liveness",
                               seconds=min([cfg.liveness_interval, *(s.poll_interval for s in cfg.schedds)]),
                               max_instances=1, coalesce=True)
        if cfg.tokens:
            self.scheduler.add_job(self.refresh_due_tokens, "interval", id="tokens", seconds=cfg.token_scan_interval,
                                   max_instances=1, coalesce=True, next_run_time=_now())
        watchdog = systemd.watchdog_interval()
        if watchdog:
            # Pinged from the event loop itself: a frozen loop stops the pings and systemd restarts rsubd.
            self.scheduler.add_job(self._watchdog, "interval", id="watchdog", seconds=watchdog,
                                   max_instances=1, coalesce=True, next_run_time=_now())
        self.scheduler.start()
        # What start-up built lives as long as rsubd: keep it out of every later collection (a big poll's
        # garbage collections otherwise walk it again and again).
        gc.freeze()
        systemd.notify(f"READY=1\nSTATUS={self.status_line()}")
        log.info("rsubd.started", pid=os.getpid(), socket=str(cfg.socket), state_dir=str(cfg.state_dir),
                 schedds=[s.name for s in cfg.schedds], version=__version__, socket_activated=passed is not None)

    async def serve(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        log.info("rsubd.stopping")
        systemd.notify("STOPPING=1")
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        await self.server.close()
        if hasattr(self, "tokens"):
            self.tokens.close()
        for task in self._refreshes.values():
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
        await asyncio.gather(*(loop.stop() for loop in self.loops.values()))
        for schedd in [*self._submitters.values(), *self.schedds.values()]:
            schedd.close()
        if hasattr(self, "ledger"):
            self.ledger.close()
        log.info("rsubd.stopped")

    async def _dispatch(self, request: Request) -> dict[str, Any] | AsyncIterator[dict[str, Any]]:
        return await handlers.dispatch(self.services, request)

    def request_stop(self) -> None:
        asyncio.get_running_loop().call_soon(self._stop.set)

    async def _watchdog(self) -> None:
        """Feed systemd's watchdog only while every schedd's poll schedule is alive."""
        self.check_liveness()
        # A re-armed schedule counts as alive again only once a poll has started on it.
        stalled = [n for n, loop in self.loops.items() if loop.schedule.stalled_now is not None]
        if stalled:
            systemd.notify(f"STATUS=poll schedule stalled: {', '.join(stalled)}")
            return
        systemd.notify(f"WATCHDOG=1\nSTATUS={self.status_line()}")

    def check_liveness(self) -> list[str]:
        """The liveness invariant: every schedd's next poll starts within its bound. Returns the stalled ones."""
        stalled = []
        for name, loop in self.loops.items():
            schedule = loop.schedule
            why = "its poll loop ended" if not loop.alive and not self._stop.is_set() else schedule.check()
            if why is None:
                continue
            stalled.append(name)
            if schedule.stalled_now is None:  # once per stall, not once per check
                schedule.stalls += 1
                log.error("poll.stalled", schedd=name, why=why, stalls=schedule.stalls,
                          polling=schedule.running, **{k: v for k, v in schedule.state().items()
                                                       if k.startswith("seconds_since")})
            schedule.stalled_now = why
            if not schedule.running:
                loop.rearm()
        return stalled

    def status_line(self) -> str:
        """One line for systemctl status: jobs in flight, schedds in trouble, people needed."""
        active = sum(n for s in self.schedds for st, n in self.ledger.counts_by_state(s).items()
                     if st not in ("retrieved", "removed", "failed"))
        parts = [f"{active} jobs in flight on {len(self.schedds)} schedd(s)"]
        parts += [f"{n} backing off" for n, p in self.policies.items() if p.backing_off]
        now = time.time()
        parts += [f"token {n}: action needed" for n in self.tokens.states if self.tokens.action(n, now)]
        return "; ".join(parts)

    # -- tokens ------------------------------------------------------------------

    def _credential_for(self, profile: str | None) -> Callable[[], Credential] | None:
        return None if profile is None else (lambda: self.tokens.credential(profile))

    async def refresh_due_tokens(self) -> None:
        """Start a refresh of every profile that is due; each runs in a thread of its own."""
        for name in await asyncio.to_thread(self.tokens.scan):
            self.start_refresh(name)

    def start_refresh(self, name: str, *, manual: bool = False) -> asyncio.Task[Any]:
        task = self._refreshes.get(name)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(self.tokens.refresh, name, manual=manual), name=f"refresh:{name}")
            self._refreshes[name] = task
        return task

    def submitter(self, schedd: str, profile: str | None, own_token: Credential | None = None) -> Schedd:
        """The backend a submit goes through: the schedd's own, one presenting another token profile, or
        (`own_token`: a token of this submit's own) a new one, with a worker of its own, that the caller closes."""
        cfg = self.config.schedd(schedd)
        if own_token is None and (profile is None or profile == cfg.token):
            return self.schedds[schedd]
        key = (schedd, profile or "")
        if own_token is not None or key not in self._submitters:
            base = self.schedds[schedd]
            local = base.inner if isinstance(base, TokenCheckedSchedd) else base
            built = make_schedd(cfg, self.config.state_dir, self._credential_for(profile) if own_token is None
                                else lambda: own_token, local=local if cfg.backend == "local" else None)
            if own_token is not None:
                return built
            self._submitters[key] = built
        return self._submitters[key]

    def note_schedd_error(self, schedd: str, profile: str | None, kind: ErrorKind, message: str) -> None:
        """A schedd that refuses the token makes the token's profile ask for a person."""
        if kind is ErrorKind.AUTHENTICATION and profile is not None:
            self.tokens.note_refused(profile, message)

    # -- polling -----------------------------------------------------------------

    def needs_recovery(self, name: str) -> None:
        """Settle this schedd's unfinished submits before its next poll."""
        self._unrecovered.add(name)

    async def _recover(self, name: str) -> None:
        try:
            settled = await recovery.recover_submits(self.submissions, self.schedds[name], name,
                                                     unspooled=self.config.unspooled,
                                                     max_resubmits=self.config.max_resubmits)
        except ScheddError as e:
            log.warning("recovery.deferred", schedd=name, error=str(e))  # the poll meets the same error
            return
        self._unrecovered.discard(name)
        if settled:
            log.info("recovery.done", schedd=name, submits=settled)

    async def _poll(self, name: str) -> str:
        """One poll of one schedd (its loop runs one at a time): settle unfinished submits, then reconcile."""
        if name in self._unrecovered:
            await self._recover(name)
        report = await asyncio.to_thread(self.pollers[name].poll_once)
        await self.automation.after_poll(name)  # the hold policy, and clusters done: never raises
        error = self.pollers[name].stats.last_error
        if report.outcome == "error" and error and error.startswith(ErrorKind.AUTHENTICATION.value):
            self.note_schedd_error(name, self.config.schedd(name).token, ErrorKind.AUTHENTICATION, error)
        return report.outcome

    async def _polled(self) -> None:
        async with self._poll_done:
            self._poll_done.notify_all()

    def poke(self, name: str | None = None, *, force: bool = False) -> dict[str, EarlyDecision]:
        """Ask for an early poll of one schedd (or all), within the early-poll budget; says what each decided.

        A schedd whose poll is running answers QUEUED: one more poll follows that one.
        """
        return {n: self.loops[n].poke(force=force) for n in ([name] if name else list(self.loops))
                if n in self.loops}

    def poll_state(self, name: str) -> dict[str, Any]:
        """What a poke reply says of one schedd besides the decision."""
        return {"backing_off": self.policies[name].backing_off,
                "next_poll_in": self.loops[name].schedule.state()["next_poll_in"], **self.early[name].state()}

    def schedd_answered(self, name: str) -> None:
        """A submit or an action succeeded: the schedd is up, so any backoff ends (it was no query)."""
        self.policies[name].on_answered()

    async def wait_for_poll(self, timeout: float) -> None:
        async with self._poll_done:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._poll_done.wait(), timeout)

    # -- reporting ---------------------------------------------------------------

    def freshness(self) -> dict[str, Any]:
        """How current the ledger's view of each schedd is."""
        return freshness({name: poller.stats for name, poller in self.pollers.items()}, time.time())

    def status(self) -> dict[str, Any]:
        now = time.time()
        schedds = {}
        for s in self.config.schedds:
            st = self.pollers[s.name].stats
            schedds[s.name] = {
                "backend": s.backend, "schedd_name": s.schedd_name, "poll_interval": s.poll_interval,
                "last_poll_at": iso(st.last_poll_at),
                "last_poll_duration": None if st.last_duration is None else round(st.last_duration, 4),
                "last_outcome": st.last_outcome, "last_error": st.last_error,
                **st.totals,
                "last_hour": st.last_hour(now),
                **self.policies[s.name].state(),
                **{k: iso(v) if k.endswith("_at") else v for k, v in self.loops[s.name].schedule.state().items()},
                **self.early[s.name].state(),
                "jobs": self.ledger.counts_by_state(s.name),
                "token": None if s.token is None else token_brief(self.tokens, s.token, now),
            }
        return {"pid": os.getpid(), "rsubd_version": __version__, "uptime": round(now - self.started_at, 1),
                "socket": str(self.config.socket), "state_dir": str(self.config.state_dir), "schedds": schedds,
                "tokens": self.tokens.status()}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def run(config: Config) -> None:
    daemon = Daemon(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.startup()
        await daemon.serve()
    finally:
        await daemon.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rsubd", description="The rsub daemon: submits, tracks and retrieves HTCondor jobs for one user.",
        epilog="example: rsubd --config ~/.config/rsub/config.toml",
    )
    parser.add_argument("--config", help="config file (default: $RSUB_CONFIG, else $XDG_CONFIG_HOME/rsub/config.toml)")
    parser.add_argument("--log-file", metavar="PATH", help="write the log here, rotated by size ('-': stderr; "
                        "default: stderr on a terminal or the journal, else <state dir>/rsubd.log)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="least level logged (default: the config's, info)")
    parser.add_argument("--version", action="version", version=f"rsubd {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as e:
        print(f"rsubd: bad configuration: {e}", file=sys.stderr)
        return 2
    try:
        logs.setup(args.log_level or config.log_level, args.log_file or config.log_file, config.state_dir,
                   max_bytes=config.log_max_bytes, backups=config.log_backups)
    except OSError as e:
        print(f"rsubd: cannot start: cannot open its log: {e}", file=sys.stderr)
        return 1
    try:
        asyncio.run(run(config))
    except StartupError as e:
        if logs.current().to == "file":  # stderr (a terminal, the journal) gets the line below anyway
            log.error("rsubd.cannot_start", error=str(e))
        print(f"rsubd: cannot start: {e}", file=sys.stderr)
        return 1
    except Exception:
        if logs.current().to == "file":  # the traceback goes to the log too, not only to a stderr nobody reads
            log.exception("rsubd.crashed")
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

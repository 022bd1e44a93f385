"""rsubd checks its own poll schedules: a dead or stuck one is logged, counted, re-armed, and starves the watchdog."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from rsubd import app
from rsubd.config import Config, ScheddConfig


def test_a_dead_poll_loop_is_found_counted_restarted_and_withholds_the_watchdog(
        monkeypatch: pytest.MonkeyPatch) -> None:
    told: list[str] = []
    monkeypatch.setattr(app.systemd, "notify", lambda message, env=None: told.append(message) or True)
    with tempfile.TemporaryDirectory(prefix="rsub-l-", dir="/tmp") as root:
        config = Config(socket=Path(root) / "s.sock", state_dir=Path(root) / "state",
                        schedds=(ScheddConfig(name="local", backend="local", poll_interval=0.2),))

        async def scenario() -> None:
            daemon = app.Daemon(config)
            await daemon.startup()
            try:
                loop = daemon.loops["local"]
                for _ in range(100):
                    if loop.schedule.ended_at is not None:
                        break
                    await asyncio.sleep(0.02)
                assert daemon.check_liveness() == []
                await daemon._watchdog()
                assert told[-1].startswith("WATCHDOG=1")

                assert loop._task is not None
                loop._task.cancel()  # whatever ended it
                await asyncio.sleep(0.05)
                assert not loop.alive
                assert daemon.check_liveness() == ["local"]
                assert loop.schedule.stalls == 1 and loop.schedule.stalled_now == "its poll loop ended"
                status = daemon.status()["schedds"]["local"]
                assert status["stalls"] == 1 and status["schedule_alive"] is False
                await daemon._watchdog()  # still counted as one stall, and no WATCHDOG=1 while it lasts
                assert loop.schedule.stalls == 1
                assert "WATCHDOG=1" not in told[-1] and "stalled: local" in told[-1]

                assert loop.alive  # re-armed: the loop runs again and polls
                started = loop.schedule.started_at
                for _ in range(100):
                    if loop.schedule.started_at != started:
                        break
                    await asyncio.sleep(0.02)
                assert loop.schedule.started_at != started
                assert daemon.check_liveness() == []
                await daemon._watchdog()
                assert told[-1].startswith("WATCHDOG=1")
                assert daemon.status()["schedds"]["local"]["schedule_alive"] is True
            finally:
                await daemon.shutdown()

        asyncio.run(scenario())

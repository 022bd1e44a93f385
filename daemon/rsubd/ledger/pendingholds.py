"""The ledger's record of holds asked for while a job was still held for spooling (migration 5).

A schedd answers a hold of a job it holds for spooling (code 16) with "already done", then
releases the job once its input is in, and the user's hold is lost. rsubd keeps the intent
here, durably, until a poll sees the spool hold over and the hold is sent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from sqlite3 import Connection
from typing import Any

Key = tuple[int, int]


class PendingHolds:
    """Mixed into `Ledger`, which supplies `transaction` and `_query`."""

    def transaction(self) -> AbstractContextManager[Connection]:
        raise NotImplementedError

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def add_pending_holds(self, schedd: str, keys: Sequence[Key], reason: str, at: float) -> None:
        """Keep the user's hold of these jobs until their spool hold ends (a later ask replaces an earlier one)."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO pending_holds (schedd, cluster, proc, reason, asked_at)"
                             " VALUES (?, ?, ?, ?, ?)", [(schedd, c, p, reason, at) for c, p in keys])

    def pending_holds(self, schedd: str) -> dict[Key, tuple[str, float]]:
        """This schedd's pending holds: (cluster, proc) -> (reason, when asked)."""
        return {(r["cluster"], r["proc"]): (r["reason"], r["asked_at"]) for r in self._query(
            "SELECT cluster, proc, reason, asked_at FROM pending_holds WHERE schedd = ?", [schedd])}

    def drop_pending_holds(self, schedd: str, keys: Sequence[Key]) -> None:
        with self.transaction() as conn:
            conn.executemany("DELETE FROM pending_holds WHERE schedd = ? AND cluster = ? AND proc = ?",
                             [(schedd, c, p) for c, p in keys])

    def pending_hold_count(self, schedd: str) -> int:
        return int(self._query("SELECT COUNT(*) AS n FROM pending_holds WHERE schedd = ?", [schedd])[0]["n"])

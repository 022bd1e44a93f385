"""The last pages of jobs rsubd read for `rsub q`, `status` and `history`, kept until the ledger changes.

A page's rows (with their run times from the events, and their lineage) are what
a view costs most to read: 1,000 rows of `rsub q` are about 7 ms of SQLite and
dicts at 100,000 active jobs. Between two polls nothing that a page holds can
change, so the same request asked again (a `watch -n 2 rsub q`, a script that
checks its cluster) is answered from here. Any write to the ledger starts again:
the key holds `Ledger.generation()`, read before the page, which any change on
rsubd's connection or committed by another moves.

Only what does not depend on the clock is kept: the rows. The views built from
them (a running job's RUN_TIME grows by the second) are made for each request,
and a page filtered by the age of its submits (`--since`, `--older-than`) is
never kept.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

Entry = tuple[list[dict[str, Any]], int]  # the page's rows and how many jobs its filters match


class PageCache:
    """At most `size` pages, of at most `max_rows` rows in all, all from one generation of the ledger.

    The bound is on rows, not pages: 10,000 full rows (`rsub status`, fifty columns each) are about 25 MB,
    brief ones a fraction of that; a page of more (limit 0: up to 100,000) is not kept at all.
    """

    def __init__(self, *, size: int = 8, max_rows: int = 10_000) -> None:
        self.size = size
        self.max_rows = max_rows
        self._generation: Hashable = None
        self._pages: dict[Hashable, Entry] = {}
        self._rows = 0  # of the kept pages, in all
        self.hits = self.misses = 0

    def get(self, generation: Hashable, key: Hashable) -> Entry | None:
        """The page kept for `key` if the ledger is still at `generation`; else None (and the old pages go)."""
        if generation != self._generation:
            self._pages.clear()
            self._rows = 0
            self._generation = generation
        entry = self._pages.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, generation: Hashable, key: Hashable, rows: list[dict[str, Any]], total: int) -> None:
        """Keep a page read at `generation` (the ledger's, taken before the reads), unless the ledger moved since."""
        if generation != self._generation or len(rows) > self.max_rows:
            return
        old = self._pages.pop(key, None)
        self._rows -= len(old[0]) if old else 0
        while self._pages and (len(self._pages) >= self.size or self._rows + len(rows) > self.max_rows):
            self._rows -= len(self._pages.pop(next(iter(self._pages)))[0])  # the oldest kept
        self._pages[key] = (rows, total)
        self._rows += len(rows)

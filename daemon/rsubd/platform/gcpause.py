"""Python's cycle collector held off over a burst of work that makes many objects and no cycles.

A poll of 100,000 jobs unpickles 100,000 ads and makes tuples and dicts for each, and each
few hundred allocations let the collector run; past the young generations it walks every
object rsubd holds (the tracked jobs in memory among them), all to find no cycle: about a
fifth of the poll's CPU. Objects are still freed as their last reference goes; a cycle made
meanwhile is collected once the collector runs again.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0  # polls of several schedds may overlap: the last to end lets the collector run again
_since = 0.0  # when the collector last ran, or was last held off with no pause before
# Polls of several schedds could overlap for ever (one hung on a slow schedd while the others come
# and go): past this, the next pause to begin lets the collector run once, so cycles never pile up.
MAX_HELD = 30.0


@contextmanager
def paused(clock: Callable[[], float] = time.monotonic) -> Iterator[None]:
    global _holders, _since
    with _lock:
        ours = _holders > 0 or gc.isenabled()  # if someone else turned it off, theirs to turn on
        if ours:
            now = clock()
            if _holders == 0:
                _since = now
            elif now - _since > MAX_HELD:
                gc.collect()
                _since = now
            _holders += 1
            gc.disable()
    try:
        yield
    finally:
        if ours:
            with _lock:
                _holders -= 1
                if _holders == 0:
                    gc.enable()

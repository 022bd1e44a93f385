"""`rsub watch` on a terminal: a full-screen view drawn with the standard library's curses.

The stream is read by a thread into a queue; the screen loop takes what has come, redraws at
most five times a second, and reads keys: `q` (or Ctrl-C) quits, a resize redraws. Layout:
a header (what is watched, each schedd's last poll and staleness), one row per cluster with
its progress bar and counts, and the latest events at the bottom.
"""

from __future__ import annotations

import argparse
import curses
import queue
import threading
import time

from rsub.connection import Failure
from rsub.follow import Tracker, follow
from rsub.progress import cluster_line, exit_word

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker
    from typing import Any

FRAME_SECONDS = 0.2


def event_line(frame: dict[str, Any]) -> str:
    """A change as the bottom lines show it: `12:01:05  12.3@local  running -> completed (exit 0)`."""
    at = str(frame.get("at") or "")[11:19]
    text = f"{at}  {frame['id']}  {frame.get('from') or 'new'} -> {frame['to']}"
    word = exit_word(frame) if frame["to"] in ("completed", "retrieved") else ""
    if frame.get("hold_reason"):
        word = str(frame["hold_reason"])
    elif frame["to"] in ("removed", "failed") and frame.get("detail"):
        word = str(frame["detail"])
    return text + (f" ({word})" if word else "")


def header(tracker: Tracker, args: argparse.Namespace) -> list[str]:
    what = " ".join(args.ids) if args.ids else "every active cluster"
    lines = [f"rsub watch: {what}" + (f" on {args.schedd}" if args.schedd else "") + "   (q quits)"]
    for name, fresh in sorted(tracker.schedds.items()):
        stale = fresh.get("stale_seconds")
        state = "never polled yet" if stale is None else f"last poll {fresh.get('last_ok_poll')} ({stale:g} s ago)"
        error = f"; error: {fresh['last_error']}" if fresh.get("last_error") else ""
        lines.append(f"  {name}: {state}{error}")
    return lines


def screen_lines(tracker: Tracker, args: argparse.Namespace, height: int, width: int) -> list[str]:
    """What the screen shows, top to bottom, cut to fit (the plain-text capture in docs/ is this)."""
    top = header(tracker, args)
    rows = [cluster_line(s) for s in tracker.clusters.values()] or ["  (no active clusters)"]
    room = max(0, height - len(top) - 3)
    rows = rows[:room]
    events = [event_line(f) for f in tracker.recent]
    events = events[-max(0, height - len(top) - len(rows) - 3):] if height - len(top) - len(rows) - 3 > 0 else []
    lines = [*top, "", *rows, "", "recent events:" if events else "", *events]
    if tracker.ended is not None:
        lines.append("(the stream ended: " + ("all done" if tracker.ended.get("done") else "timeout") + ")")
    return [line[:max(0, width - 1)] for line in lines[:height]]


def run(args: argparse.Namespace, tracker: Tracker, fields: dict[str, Any]) -> int:
    frames: queue.Queue[object] = queue.Queue(maxsize=1000)
    stop = threading.Event()

    def read() -> None:
        try:
            for _ in follow(args, tracker, **fields):
                # The tracker is updated by follow; the queue only wakes the screen (bounded: a
                # full queue means a redraw is already due).
                if stop.is_set():
                    return
                try:
                    frames.put_nowait(None)
                except queue.Full:
                    pass
            frames.put(StopIteration)
        except Failure as e:
            frames.put(e)

    reader = threading.Thread(target=read, name="watch-stream", daemon=True)
    reader.start()
    try:
        result: int | Failure = curses.wrapper(_loop, tracker, args, frames)
    except KeyboardInterrupt:
        result = 0
    stop.set()
    if isinstance(result, Failure):
        raise result
    return result


def _loop(screen: curses.window, tracker: Tracker, args: argparse.Namespace,
          frames: queue.Queue[object]) -> int | Failure:
    curses.curs_set(0)
    screen.timeout(int(FRAME_SECONDS * 1000))
    ended_at: float | None = None
    while True:
        while True:
            try:
                item = frames.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Failure):
                return item
            if item is StopIteration and ended_at is None:
                ended_at = time.monotonic()
        height, width = screen.getmaxyx()
        screen.erase()
        for row, text in enumerate(screen_lines(tracker, args, height, width)):
            try:
                screen.addstr(row, 0, text)
            except curses.error:
                pass  # the bottom-right cell cannot be written; a tiny window cuts the rest
        screen.refresh()
        key = screen.getch()
        if key in (ord("q"), ord("Q"), 27):
            return 0
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
        if ended_at is not None and args.exit and time.monotonic() - ended_at > 1.0:
            return 0

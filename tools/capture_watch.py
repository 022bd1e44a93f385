"""Capture `rsub watch` and `rsub wait` on a 1,000-job cluster as a user's terminal shows them.

Starts its own rsubd on the embedded scheduler in a temporary directory, submits a cluster of
short jobs (a few exit non-zero), runs `rsub wait` and `rsub watch` in pseudo-terminals, and
writes the screens (rendered by pyte, as plain text) to docs/watch-capture.md:

    .venv/bin/python tools/capture_watch.py [--jobs 1000] [--out docs/watch-capture.md]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.daemon import BIN, Rsubd, short_root
from tests.support.terminal import Terminal

CONFIG = """\
[[schedd]]
name = "local"
backend = "local"
slots = 8
poll_interval = 2
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--out", default="docs/watch-capture.md")
    args = p.parse_args()
    root = short_root("rsub-cap-")
    daemon = Rsubd(root, CONFIG)
    daemon.start()
    work = root / "work"
    work.mkdir()
    try:
        (work / "job.sub").write_text(
            "executable = /bin/sh\narguments = \"-c 'sleep 0.2; test $(Process) -lt " + str(args.jobs - 3) + "'\"\n"
            "transfer_executable = false\noutput = out/$(Process).out\nerror = out/$(Process).err\n"
            f"queue {args.jobs}\n")
        (work / "out").mkdir()
        submitted = daemon.rsub("submit", "--json", "job.sub", cwd=work)
        assert submitted.returncode == 0, submitted.stderr
        cluster = json.loads(submitted.stdout)["cluster"]
        wait = Terminal([str(BIN / "rsub"), "wait", str(cluster)], daemon.env, cwd=work, columns=100, lines=12)
        watch = Terminal([str(BIN / "rsub"), "watch"], daemon.env, cwd=work, columns=100, lines=24)
        started = time.monotonic()
        mid_wait = mid_watch = ""
        while wait.proc.poll() is None and time.monotonic() - started < 1800:
            wait.pump(0.5)
            watch.pump(0.1)
            screen = watch.text()
            if not mid_watch and _done(screen, cluster) >= args.jobs // 2:
                mid_watch, mid_wait = screen, wait.text()
        code = wait.wait(60)
        watch.pump(2.0)
        end_watch = watch.text()
        watch.send(b"q")
        watch.wait(10)
        took = time.monotonic() - started
        out = Path(args.out)
        out.write_text(
            f"# `rsub wait` and `rsub watch` on a {args.jobs:,}-job cluster\n\n"
            "Captured by `tools/capture_watch.py` from pseudo-terminals (rendered as a terminal shows them, by"
            " pyte): rsubd on the embedded scheduler with 8 slots, a cluster of `sleep 0.2` jobs of which the last"
            f" three exit 1. The wait took {took:.0f} s and ended with exit code {code} (some job exited non-zero).\n\n"
            "## `rsub wait` half-way\n\n```\n" + mid_wait + "\n```\n\n"
            "## `rsub wait` at the end\n\n```\n" + wait.text() + "\n```\n\n"
            "## `rsub watch` half-way\n\n```\n" + mid_watch + "\n```\n\n"
            "## `rsub watch` at the end\n\n```\n" + end_watch + "\n```\n")
        print(f"wrote {out} ({args.jobs} jobs in {took:.0f} s, rsub wait exit {code})")
        wait.close()
        watch.close()
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _done(screen: str, cluster: int) -> int:
    for line in screen.splitlines():
        if line.startswith(f"{cluster}@local  ["):
            return int(line.split("]", 1)[1].split("/", 1)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

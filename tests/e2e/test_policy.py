"""The hold policy heals a transient hold by itself; a cluster done is told once, with its summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Rsubd
from tests.support.deadlines import holds_for, wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

RECORDER = """\
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write(json.dumps({"argv": sys.argv[2:], "env": {k: v for k, v in os.environ.items()
                                                       if k.startswith("RSUB_")}}) + "\\n")
"""


def test_a_transient_hold_is_released_and_the_cluster_done_told_once(short_tmp: Path, workdir: Path) -> None:
    recorder, told = short_tmp / "recorder.py", short_tmp / "told.jsonl"
    recorder.write_text(RECORDER)
    daemon = Rsubd(short_tmp, f"""
[notify]
command = ["{sys.executable}", "{recorder}", "{told}"]
on = ["held", "released", "done"]

[policy]
enabled = true
backoff = 0.3

[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
""")
    daemon.start()
    try:
        # The first run "loses" its output (held, code 12, as a failed transfer is); the second makes it.
        count = workdir / "runs"
        write_job(workdir, "job.sh", f"""\
            n=$(cat {count} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {count}
            [ $n -ge 2 ] && echo "made on run $n" > result.txt
            exit 0
        """)
        (workdir / "job.sub").write_text("executable = job.sh\ntransfer_output_files = result.txt\nqueue\n")
        cluster = daemon.json("submit", "job.sub", cwd=workdir)["cluster"]
        assert daemon.rsub("wait", "--timeout", "60", str(cluster)).returncode == 0
        assert (workdir / "result.txt").read_text() == "made on run 2\n"
        job = daemon.json("status", f"{cluster}.0")["jobs"][0]
        assert job["state"] == "retrieved" and job["auto_releases"] == 1 and job["usage"]["job_starts"] == 2
        assert "released automatically, 1st time" in daemon.rsub("status", str(cluster)).stdout

        def calls() -> list[dict[str, Any]]:
            return [json.loads(line) for line in told.read_text().splitlines()] if told.exists() else []

        done = wait_until(lambda: [c for c in calls() if c["argv"][1] == "done"] or None, 30, "the cluster told done")
        states = [c["argv"][1] for c in calls()]
        assert states.index("held") < states.index("released") < states.index("done")
        released = next(c for c in calls() if c["argv"][1] == "released")
        assert "released automatically, 1st time (hold code 12" in released["env"]["RSUB_HOLD_REASON"]
        # One for the cluster, however many polls follow.
        holds_for(lambda: [c for c in calls() if c["argv"][1] == "done"] == done, 1.5, "a single done")
        assert done[0]["argv"][0] == f"{cluster}@local" and done[0]["env"]["RSUB_SUMMARY"].startswith("1 job(s): ")
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()


def test_memory_overuse_is_resubmitted_with_the_request_raised(short_tmp: Path, workdir: Path) -> None:
    daemon = Rsubd(short_tmp, """
[policy]
enabled = true
backoff = 0.2
resubmit_overuse = true
raise_factor = 2.0

[[schedd]]
name = "local"
backend = "local"
poll_interval = 0.3
""")
    daemon.start()
    try:
        write_job(workdir, "job.sh", """\
            exec python3 -c "block = bytearray(80 * 1024 * 1024)
            for i in range(0, len(block), 4096): block[i] = 1
            print('done')"
        """)
        (workdir / "job.sub").write_text("executable = job.sh\noutput = out.txt\nrequest_memory = 50\nqueue\n")
        cluster = daemon.json("submit", "job.sub", cwd=workdir)["cluster"]
        # Over its request: held with code 34 (the embedded scheduler measures the peak, as cgroups do) ...
        old = wait_until(lambda: next((j for j in daemon.json("status", str(cluster))["jobs"]
                                       if j["replaced_by"] not in (None, "pending")), None), 60, "the resubmit")
        new_cluster = int(old["replaced_by"].split(".")[0])
        assert old["state"] == "removed" and old["hold_code"] == 34 and old["usage"]["memory_mb"] > 80
        # ... and run again with request_memory raised to twice what it used.
        assert daemon.rsub("wait", "--timeout", "60", str(new_cluster)).returncode == 0
        new = daemon.json("status", f"{new_cluster}.0")["jobs"][0]
        assert new["replaces"] == f"{cluster}.0" and new["state"] == "retrieved"
        assert new["usage"]["request_memory_mb"] == 2 * old["usage"]["memory_mb"]
        assert (workdir / "out.txt").read_text() == "done\n"
        events = [e["detail"] or "" for e in daemon.json("why", f"{cluster}.0")["jobs"][0]["events"]]
        assert any(d.startswith("resubmitting automatically with request_memory = ") for d in events), events
    finally:
        daemon.stop()
        daemon.kill_leftover_jobs()

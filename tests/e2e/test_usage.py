"""What jobs really used: the embedded scheduler measures its job processes, rsub status shows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.daemon import Rsubd
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

# Item a holds 40 MB resident; item b 8 MB and exits 3; both spin, sleep and write a 2 MB file in the sandbox.
USAGE_SUB = """\
executable = job.sh
arguments = $(mb) $(code)
output = out_$(mb).txt
request_memory = 4096
queue mb, code from (
40, 0
8, 3
)
"""


def test_usage_recorded_and_summarised(rsubd: Rsubd, workdir: Path) -> None:
    write_job(workdir, "job.sh", """\
        head -c 2097152 /dev/zero > scratch.bin
        exec python3 -c "import sys, time
        block = bytearray(int(sys.argv[1]) * 1024 * 1024)
        for i in range(0, len(block), 4096): block[i] = 1
        for i in range(5000000): pass
        time.sleep(0.5)
        sys.exit(int(sys.argv[2]))" "$1" "$2"
    """)
    (workdir / "job.sub").write_text(USAGE_SUB)
    cluster = rsubd.json("submit", "job.sub", cwd=workdir)["cluster"]
    assert rsubd.rsub("wait", "--timeout", "60", str(cluster)).returncode == 13  # one exited non-zero

    jobs = {j["proc"]: j for j in rsubd.json("status", str(cluster), "--json")["jobs"]}
    big, small = jobs[0]["usage"], jobs[1]["usage"]
    # The peak resident set is measured from the job's own process: 40 MB held, 8 MB held.
    assert 40 <= big["memory_mb"] < 200 and 8 <= small["memory_mb"] < big["memory_mb"]
    assert big["resident_set_kb"] >= 40 * 1024 and big["memory_mb"] == (big["resident_set_kb"] + 1023) // 1024
    assert big["user_cpu_seconds"] + big["sys_cpu_seconds"] >= 0.05  # a fixed count of loops, whatever the load
    assert big["wall_seconds"] >= 0.5
    assert big["disk_kb"] >= 2048  # the sandbox held the 2 MB scratch file
    assert big["request_memory_mb"] == 4096 and big["job_starts"] == 1 and big["shadow_starts"] == 1
    assert jobs[0]["jobsub"]["run_time"] == big["wall_seconds"]  # RUN_TIME is RemoteWallClockTime

    summary = rsubd.json("status", str(cluster), "--summary", "--json")["clusters"][0]
    assert summary["jobs"] == 2 and summary["exit_codes"] == {"0": 1, "3": 1}
    assert summary["memory_mb"]["max"] == big["memory_mb"]
    assert summary["wall_seconds"]["max"] == max(big["wall_seconds"], small["wall_seconds"])
    assert any(a.startswith(f"request_memory 4096 MB, max used {big['memory_mb']} MB:") and "would do" in a
               for a in summary["advice"])
    text = rsubd.rsub("status", str(cluster), "--summary").stdout
    assert f"cluster {cluster}@local: 2 job(s)" in text and "would do" in text

    long = rsubd.rsub("status", f"{cluster}.0").stdout
    assert f"job            {cluster}.0@local" in long
    assert f"memory         {big['memory_mb']} MB used" in long and "request_memory 4096 MB" in long

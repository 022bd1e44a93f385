"""The soak harness (tools/soak.py), short: one minute of mixed work against a real rsubd, with schedd
faults and restarts, audited every 5 s for polls that stop; nothing lost, nothing stuck, no stall."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_one_minute_soak_has_no_stall_and_loses_nothing(short_tmp: Path) -> None:
    seed = os.environ.get("RSUB_SOAK_SEED", "13")
    # Its own session, so that a harness cut off by the timeout takes its rsubd and clients with it.
    harness = subprocess.Popen([sys.executable, str(REPO / "tools" / "soak.py"), "--minutes", "1", "--seed", seed,
                                "--drain", "90", "--json", "--quiet", "--workdir", str(short_tmp / "soak")],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        out, err = harness.communicate(timeout=280)
    except subprocess.TimeoutExpired:
        os.killpg(harness.pid, signal.SIGKILL)
        harness.communicate()
        raise
    assert out, err[-3000:]
    report = json.loads(out)
    why = json.dumps({k: report[k] for k in ("seed", "stalls_auditor", "stalls_rsubd", "violations", "log",
                                             "command_failures", "problems")}, indent=1)[-6000:]
    assert report["jobs_submitted"] > 0 and report["retrieved"] > 0, why
    assert report["restarts"] >= 1 and report["faults"] >= 1, why
    assert report["audits"] > 0 and report["polls"] > 0, why
    assert report["retrieved"] + report["removed"] + report["lost"] + report["stuck"] >= report["jobs_submitted"]
    assert report["stalls"] == 0, why
    assert report["lost"] == 0, why
    assert report["stuck"] == 0, why
    assert harness.returncode == 0, why

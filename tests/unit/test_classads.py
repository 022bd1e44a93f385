"""Constraints are checked with HTCondor's own ClassAd parser in rsubd, before any schedd sees them."""

from __future__ import annotations

import pathlib

import pytest

from rsubd.backends.classads import check_expression


# The malformed constraints of the reference run (12_errors_constraint_unreachable): a real schedd
# answered the query with only "Failed to fetch ads from schedd, errmsg=".
@pytest.mark.parametrize("text", ["JobStatus ==", "ClusterId == (", "ClusterId ===", "x = 3", "JobStatus == 5 junk"])
def test_what_no_schedd_could_parse_is_refused_with_the_parsers_words(text: str) -> None:
    with pytest.raises(ValueError, match="the ClassAd parser says: Unable to parse"):
        check_expression(text)


@pytest.mark.parametrize("text", ["JobStatus == 5", "RequestMemory > 4000 && Owner =?= \"alice\"", "true",
                                  "regexp(\"^run_\", Cmd)", "ProcId >= 0"])
def test_well_formed_constraints_pass(text: str) -> None:
    check_expression(text)


LEAK_PROBE = """
import gc, os, sys
import classad2
from rsubd.backends.classads import quiet_classad_library
if sys.argv[1] == "quiet":
    quiet_classad_library()
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
for _ in range(2000):
    classad2.ClassAd({"A": 1})
gc.collect()
before = rss_kb()
for i in range(50000):
    classad2.ClassAd({"ClusterId": i, "JobStatus": 2})
    classad2.ExprTree("JobStatus == 2")
gc.collect()
print(rss_kb() - before, os.environ.get("CONDOR_CONFIG", "unset"))
"""


def test_classads_freed_give_their_memory_back_once_the_library_is_quieted() -> None:
    # classad2 alone keeps a dprintf message in memory for every ClassAd and ExprTree it frees (about
    # 150 and 450 bytes): rsubd, which runs for weeks, quiets it at start (backends/classads.py).
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CONDOR_CONFIG"}

    def grown_kb(mode: str) -> tuple[int, str]:
        out = subprocess.run([sys.executable, "-c", LEAK_PROBE, mode], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        return int(out[0]), out[1]

    # Without quiet_classad_library the 25.14 wheel's process grows by about 29 MB here.
    quieted, condor_config = grown_kb("quiet")
    assert quieted < 2_000, f"{quieted} KB kept for 100,000 freed ClassAds and expressions"
    # What jobs and binding workers inherit is as it was: htcondor2's own CONDOR_CONFIG is taken back.
    assert condor_config == "unset"


def test_a_broken_condor_config_in_the_environment_does_not_take_rsubd_down(tmp_path: pathlib.Path) -> None:
    # HTCondor exits the process on a configuration it cannot parse; rsubd's own ClassAds need none.
    import os
    import subprocess
    import sys

    broken = tmp_path / "condor_config"
    broken.write_text("if\ninclude : /nonexistent/x.conf\n")
    probe = ("import os\nfrom rsubd.backends.classads import quiet_classad_library\nquiet_classad_library()\n"
             "print('alive', os.environ['CONDOR_CONFIG'])\n")
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "CONDOR_CONFIG": str(broken)},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["alive", str(broken)]  # and handed on to jobs and workers as it was

"""jobsub_lite's other options, through a real rsubd and real rsub command lines: what each makes of the job's ad.

The ad is read where the embedded scheduler keeps it (its queue.db), so each test sees what
the schedd was given, after rsubd's own checks and rendering.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rsubd.services.views import owner
from tests.support.daemon import Rsubd
from tests.support.deadlines import wait_until
from tests.support.jobs import write_job

pytestmark = pytest.mark.e2e

IMAGE = "/cvmfs/singularity.example.org/wn-el9:latest"
CONFIG = f"""
[jobsub]
singularity_image = "{IMAGE}"
accounting_group = "group_{{group}}.{{user}}"
sites_attribute = "Site_Wanted"
"""


@pytest.fixture
def site(short_tmp: Path) -> Iterator[Rsubd]:
    """An rsubd (and rsub) whose config has a [jobsub] table."""
    daemon = Rsubd(short_tmp, CONFIG)
    daemon.start()
    yield daemon
    daemon.stop()
    daemon.kill_leftover_jobs()


def cluster_of(stdout: str) -> int:
    m = re.search(r"to cluster (\d+) on schedd local", stdout)
    assert m, stdout
    return int(m.group(1))


def ads(daemon: Rsubd, cluster: int) -> list[dict[str, Any]]:
    """The embedded scheduler's ads of a cluster's queued jobs: the cluster ad with each proc's on top."""
    db = sqlite3.connect(f"file:{daemon.state_dir / 'local' / 'local' / 'queue.db'}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT c.ad, j.ad FROM jobs j JOIN clusters c USING (cluster) WHERE cluster = ?",
                          (cluster,)).fetchall()
    finally:
        db.close()
    return [{**json.loads(c), **json.loads(j)} for c, j in rows]


def submitted_description(daemon: Rsubd, cluster: int) -> str:
    db = sqlite3.connect(f"file:{daemon.state_dir / 'ledger.db'}?mode=ro", uri=True)
    try:
        (text,) = db.execute("SELECT submitted_description FROM clusters WHERE cluster = ?", (cluster,)).fetchone()
    finally:
        db.close()
    return str(text)


def sleeper(work: Path) -> None:
    write_job(work, "run.sh", "sleep 60\n")


def test_every_option_reaches_the_ad(site: Rsubd, workdir: Path) -> None:
    sleeper(workdir)
    submitted = site.rsub(
        "submit", "-G", "dune", "--mail_on_error", "--email-to", "alice@example.org", "--onsite",
        "--resource-provides", "CVMFS=OSG", "--resource-provides", "GPU_TYPE=A100",
        "-c", "Memory > 1", "-c", 'Arch =!= "none"', "--timeout", "2h", "-L", "mine.log", "--gpu", "2",
        f"file://{workdir}/run.sh", cwd=workdir)
    assert submitted.returncode == 0, submitted.stderr
    cluster = cluster_of(submitted.stdout)
    # -G with no token profile for the group: one line says so, and the job goes with the schedd's own token.
    notes = [line for line in submitted.stderr.splitlines() if "no token profile" in line]
    assert notes == ["note: no token profile for group 'dune': -G dune names the job's group; it goes to schedd "
                     "local with the credentials it has by default"], submitted.stderr
    (ad,) = wait_until(lambda: ads(site, cluster), 10, "the job's ad")
    assert ad["Jobsub_Group"] == "dune"
    assert ad["AccountingGroup"] == f"group_dune.{owner()}"
    assert ad["JobNotification"] == 3  # HTCondor's NotifyError
    assert ad["NotifyUser"] == "alice@example.org"
    assert ad["SingularityImage"] == IMAGE
    assert ad["DESIRED_usage_model"] == "OPPORTUNISTIC,DEDICATED"
    assert (ad["DESIRED_CVMFS"], ad["DESIRED_GPU_TYPE"]) == ("OSG", "A100")
    assert ad["RequestGPUs"] == 2
    text = submitted_description(site, cluster)
    assert 'requirements = (TARGET.HAS_SINGULARITY =?= true) && (Memory > 1) && (Arch =!= "none")' in text
    assert "periodic_remove = JobStatus == 2 && (time() - EnteredCurrentStatus) > 7200" in text
    # -L names the job event log (rsubd may send a relative one under a name of its own, keeping yours).
    assert re.search(r"^(rsub_)?log = mine\.log$", text, re.MULTILINE), text
    assert "TARGET.HAS_SINGULARITY" in str(ad["Requirements"]) and "Memory > 1" in str(ad["Requirements"])
    assert "7200" in str(ad["PeriodicRemove"])
    # q's filters: the group comes from the job's own description; every job is rsubd's user's.
    assert [j["id"] for j in site.json("q", "-G", "dune")["jobs"]] == [f"{cluster}.0@local"]
    assert site.json("q", "-G", "dune")["jobs"][0]["jobsub"]["group"] == "dune"
    assert site.json("q", "-G", "nova")["jobs"] == []
    # Spooled and queued. No slot of the embedded scheduler has HAS_SINGULARITY, so, as in a pool without
    # one, the job stays idle (rsub why says so): hold, release and rm act on it all the same.
    wait_until(lambda: site.states(str(cluster)) == {f"{cluster}.0@local": "idle"}, 20, "the job to be queued")
    assert any("HAS_SINGULARITY" in s for s in site.json("why", f"{cluster}.0")["jobs"][0]["says"])
    assert [j["id"] for j in site.json("q", "--user", owner(), "--idle", "--run")["jobs"]] == [f"{cluster}.0@local"]
    assert site.json("q", "--user", "somebody-else")["jobs"] == []
    assert site.json("q", "--hold")["jobs"] == []
    # -J gives the id the jobsub way.
    held = site.rsub("hold", "-J", f"{cluster}.0@local", "--reason", "by -J")
    assert held.returncode == 0 and "1 success" in held.stdout, held.stdout + held.stderr
    assert [j["id"] for j in site.json("q", "--hold")["jobs"]] == [f"{cluster}.0@local"]
    assert site.rsub("release", "-J", f"{cluster}.0@local").returncode == 0
    removed = site.rsub("rm", "-J", f"{cluster}@local")
    assert removed.returncode == 0 and "1 success" in removed.stdout, removed.stdout + removed.stderr
    wait_until(lambda: site.states(str(cluster)) == {f"{cluster}.0@local": "removed"}, 20, "the job to be removed")
    dest = workdir / "logs"
    fetched = site.rsub("fetchlog", "-J", f"{cluster}.0@local", "--dest", str(dest))
    assert fetched.returncode == 0, fetched.stderr
    assert (dest / f"{cluster}.0@local.tgz").is_file()


def test_site_defaults_come_from_the_config_and_give_way(site: Rsubd, workdir: Path) -> None:
    sleeper(workdir)
    plain = site.rsub("submit", "--dry-run", f"file://{workdir}/run.sh", cwd=workdir)
    assert plain.returncode == 0, plain.stderr
    assert f'+SingularityImage = "{IMAGE}"' in plain.stdout  # the [jobsub] default image
    assert "Jobsub_Group" not in plain.stdout and "AccountingGroup" not in plain.stdout  # no -G, no group
    own = site.rsub("submit", "--dry-run", "--apptainer-image", "/img/mine.sif", "--site", "FNAL, BNL",
                    f"file://{workdir}/run.sh", cwd=workdir)
    assert own.returncode == 0, own.stderr
    assert '+SingularityImage = "/img/mine.sif"' in own.stdout and IMAGE not in own.stdout
    assert '+Site_Wanted = "FNAL,BNL"' in own.stdout  # the config's sites_attribute
    none = site.rsub("submit", "--no-singularity", "--offsite", "--mail_always", f"file://{workdir}/run.sh",
                     cwd=workdir)
    assert none.returncode == 0, none.stderr
    (ad,) = wait_until(lambda: ads(site, cluster_of(none.stdout)), 10, "the job's ad")
    assert "SingularityImage" not in ad and "HAS_SINGULARITY" not in str(ad.get("Requirements"))
    assert ad["DESIRED_usage_model"] == "OFFSITE"
    assert ad["JobNotification"] == 1  # NotifyAlways
    assert site.rsub("rm", str(cluster_of(none.stdout))).returncode == 0


def test_without_a_jobsub_table_there_is_no_image(rsubd: Rsubd, workdir: Path) -> None:
    sleeper(workdir)
    result = rsubd.rsub("submit", "--dry-run", "-G", "dune", "--gpu", f"file://{workdir}/run.sh", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "SingularityImage" not in result.stdout and "requirements" not in result.stdout
    assert '+Jobsub_Group = "dune"' in result.stdout and "AccountingGroup" not in result.stdout
    assert "request_gpus = 1" in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--timeout", "2x"], "--timeout '2x': expected a duration"),
    (["--need-storage-modify", "dune/out"], "--need-storage-modify 'dune/out': an absolute path"),
    (["--need-scope", "storage.read:/a storage.read:/b"], "a scope is one word without blanks"),
    (["--resource-provides", "CVMFS"], "--resource-provides 'CVMFS': expected KEY=VALUE"),
    (["-c", "(Memory > 1"], "-c '(Memory > 1': unbalanced parentheses"),
    (["--email-to", "a@b c@d"], "--email-to 'a@b c@d': one address"),
    (["-G", "du ne"], "-G 'du ne': a group is a name"),
    (["-c", "Memory > 1", "-l", "requirements = true"], "would both set requirements"),
    (["--timeout", "1h", "-l", "periodic_remove = false"], "--timeout sets periodic_remove, and so does a -l line"),
    (["--site", "A", "--resource-provides", "x=1", "--resource-provides", "x=2"],
     "--resource-provides x: +DESIRED_x is already set by --resource-provides x"),
])
def test_bad_option_values_are_refused_before_anything_is_written(
        rsubd: Rsubd, workdir: Path, args: list[str], message: str) -> None:
    sleeper(workdir)
    result = rsubd.rsub("submit", *args, f"file://{workdir}/run.sh", cwd=workdir)
    assert result.returncode == 5, result.stderr
    assert message in result.stderr
    assert not (rsubd.state_dir / "jobs").exists()
    assert rsubd.json("status")["jobs"] == []


@pytest.mark.parametrize(("args", "message"), [
    (["--blacklist", "BNL"], "--blacklist: keep the jobs off those sites with -c"),
    (["-n"], "-n: use --dry-run"),
    (["--no-such-option"], "rsub submit does not know --no-such-option (neither an rsub option nor a jobsub_submit "
                           "one that rsub takes); any submit command can be given with -l 'key = value' or "
                           "-l '+Attr = value'"),
])
def test_unsupported_options_say_so_by_name(rsubd: Rsubd, workdir: Path, args: list[str], message: str) -> None:
    sleeper(workdir)
    result = rsubd.rsub("submit", *args, f"file://{workdir}/run.sh", cwd=workdir)
    assert result.returncode == 2
    assert message in result.stderr
    assert "usage:" not in result.stderr and "unrecognized arguments" not in result.stderr
    assert not (rsubd.state_dir / "jobs").exists()


def test_role_needs_a_group_and_a_profile(rsubd: Rsubd, workdir: Path) -> None:
    sleeper(workdir)
    alone = rsubd.rsub("submit", "--role", "production", f"file://{workdir}/run.sh", cwd=workdir)
    assert alone.returncode == 2
    assert "--role production: give the group too, as -G GROUP --role production" in alone.stderr
    assert "None" not in alone.stderr
    (workdir / "job.sub").write_text("executable = run.sh\nqueue\n")
    plain = rsubd.rsub("submit", "--role", "production", "job.sub", cwd=workdir)
    assert plain.returncode == 2 and "give the group too" in plain.stderr and "None" not in plain.stderr
    named = rsubd.rsub("submit", "--token", "fnal", "--role", "production", "job.sub", cwd=workdir)
    assert named.returncode == 2 and "no token profile named 'fnal'" in named.stderr  # --token decides, not --role
    both = rsubd.rsub("submit", "-G", "dune", "--role", "production", f"file://{workdir}/run.sh", cwd=workdir)
    assert both.returncode == 2
    assert "no token profile for group 'dune' and role 'production'; configured: none" in both.stderr
    assert not any((rsubd.state_dir / "jobs").iterdir())  # the refused submit's directory is gone
    assert rsubd.json("status")["jobs"] == []


def test_group_on_a_submit_file_uses_the_schedds_token(rsubd: Rsubd, workdir: Path) -> None:
    sleeper(workdir)
    (workdir / "job.sub").write_text("executable = run.sh\nqueue\n")
    result = rsubd.rsub("submit", "-G", "dune", "job.sub", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "note: no token profile for group 'dune'" in result.stderr
    rsubd.rsub("rm", str(cluster_of(result.stdout)))


def test_jobid_option_errors(rsubd: Rsubd) -> None:
    neither = rsubd.rsub("fetchlog")
    assert neither.returncode == 2 and "fetchlog needs one job id: ID or -J ID" in neither.stderr
    both = rsubd.rsub("fetchlog", "1.0", "-J", "2.0")
    assert both.returncode == 2 and "not both 1.0 and -J 2.0" in both.stderr
    unknown = rsubd.rsub("hold", "-J", "99.0@local")
    assert unknown.returncode == 4, unknown.stderr
    bad = rsubd.rsub("q", "--bogus")
    assert bad.returncode == 2 and "rsub q: unrecognized option --bogus (see rsub q --help)" in bad.stderr
    assert "usage:" not in bad.stderr

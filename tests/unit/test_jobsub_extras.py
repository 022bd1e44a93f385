"""jobsub_lite's submit options that are submit commands, and the [jobsub] table that gives the site's names."""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

import pytest

from rsub import jobsub
from rsub.commands.submit import submit_options_parser
from rsub.connection import Failure
from rsub.jobsub import BuildError, Extras, build_extras
from rsub.wire.jobsubconf import JobsubConfig, JobsubConfigError, from_file, parse
from rsubd import config

DEFAULT = JobsubConfig()


def lines(**options: object) -> list[str]:
    return list(build_extras(DEFAULT, user="alice", **options).lines)  # type: ignore[arg-type]


# -- the options -------------------------------------------------------------------


def test_nothing_given_makes_nothing() -> None:
    assert build_extras(DEFAULT, user="alice") == Extras()


@pytest.mark.parametrize(("mail", "value"), [("never", "Never"), ("on_error", "Error"), ("always", "Always")])
def test_mail_is_notification(mail: str, value: str) -> None:
    assert lines(mail=mail) == [f"notification = {value}"]


def test_email_to_is_notify_user() -> None:
    assert lines(email_to=" alice@example.org ") == ["notify_user = alice@example.org"]
    for bad in ("a@b c@d", "a@b,c@d", ""):
        with pytest.raises(BuildError, match="--email-to"):
            lines(email_to=bad)


def test_group_names_the_job_and_the_accounting_group_when_configured() -> None:
    assert lines(group="dune") == ['+Jobsub_Group = "dune"']
    conf = JobsubConfig(group_attribute="Experiment", accounting_group="group_{group}.{user}")
    assert list(build_extras(conf, user="alice", group="dune").lines) == [
        '+Experiment = "dune"', '+AccountingGroup = "group_dune.alice"']
    with pytest.raises(BuildError, match="-G 'du\"ne'"):
        lines(group='du"ne')


def test_the_image_is_the_options_else_the_sites_else_none() -> None:
    conf = JobsubConfig(singularity_image="/cvmfs/site.img")
    assert build_extras(conf, user="a").lines == ('+SingularityImage = "/cvmfs/site.img"',
                                                  "requirements = (TARGET.HAS_SINGULARITY =?= true)")
    mine = build_extras(conf, user="a", image="/img/mine.sif")
    assert mine.lines[0] == '+SingularityImage = "/img/mine.sif"'
    assert build_extras(conf, user="a", no_singularity=True) == Extras()
    assert build_extras(DEFAULT, user="a") == Extras()  # no site image: none
    quiet = JobsubConfig(singularity_image="/i", singularity_requirement="", singularity_attribute="Image")
    assert build_extras(quiet, user="a").lines == ('+Image = "/i"',)


def test_usage_model_sites_and_resources() -> None:
    assert lines(usage_model="onsite") == ['+DESIRED_usage_model = "OPPORTUNISTIC,DEDICATED"']
    assert lines(usage_model="offsite") == ['+DESIRED_usage_model = "OFFSITE"']
    assert lines(sites="FNAL, BNL") == ['+DESIRED_Sites = "FNAL,BNL"']
    assert lines(resources=["CVMFS=OSG", "GPU=A100"]) == ['+DESIRED_CVMFS = "OSG"', '+DESIRED_GPU = "A100"']
    conf = JobsubConfig(resource_prefix="WANT_", onsite="LOCAL")
    assert build_extras(conf, user="a", resources=["X=1"], usage_model="onsite").lines == (
        '+DESIRED_usage_model = "LOCAL"', '+WANT_X = "1"')
    with pytest.raises(BuildError, match="already set by --onsite"):
        lines(usage_model="onsite", resources=["usage_model=OFFSITE"])
    for bad in ("CVMFS", "=OSG", "9X=1", 'X="q"'):
        with pytest.raises(BuildError, match="--resource-provides"):
            lines(resources=[bad])
    with pytest.raises(BuildError, match="--site"):
        lines(sites="A,,B")


def test_requirements_are_anded_and_checked() -> None:
    assert lines(requirements=["Memory > 1", 'Arch == "X(86"']) == [
        'requirements = (Memory > 1) && (Arch == "X(86")']
    for bad in ("(Memory > 1", "Memory > 1)", '"open', "", "a\nb", "$(x) > 1"):
        with pytest.raises(BuildError, match="-c"):
            lines(requirements=[bad])
    with pytest.raises(BuildError, match="would both set requirements"):
        lines(requirements=["true"], lines=["requirements = false"])


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400),
                                               ("600", 600), ("1.5h", 5400)])
def test_timeout_removes_the_job_past_its_run_time(text: str, seconds: int) -> None:
    assert lines(timeout=text) == [f"periodic_remove = JobStatus == 2 && (time() - EnteredCurrentStatus) > {seconds}"]


@pytest.mark.parametrize("text", ["2x", "", "0s", "-1h", "h"])
def test_bad_timeouts_are_refused(text: str) -> None:
    with pytest.raises(BuildError, match="--timeout"):
        lines(timeout=text)


def test_log_file_and_gpus() -> None:
    extras = build_extras(DEFAULT, user="a", log_file="job.log", gpus=2)
    assert extras.log == "job.log" and extras.lines == ("request_gpus = 2",)
    with pytest.raises(BuildError, match="-L sets log"):
        build_extras(DEFAULT, user="a", log_file="x.log", lines=["log = y.log"])
    with pytest.raises(BuildError, match="-L"):
        build_extras(DEFAULT, user="a", log_file="a.log, b.log")


def test_a_line_and_an_option_may_not_set_the_same_attribute() -> None:
    with pytest.raises(BuildError, match="--gpu sets request_gpus, and so does a -l line"):
        lines(gpus=1, lines=["request_gpus = 4"])
    with pytest.raises(BuildError, match="-G sets \\+Jobsub_Group"):
        lines(group="dune", lines=['My.Jobsub_Group = "nova"'])


def test_describe_puts_the_extras_before_the_users_lines(tmp_path: Path) -> None:
    run = tmp_path / "run.sh"
    run.write_text("#!/bin/sh\n")
    run.chmod(0o755)
    plan = jobsub.build(f"file://{run}", [], lines=['+Mine = "x"'], cwd=str(tmp_path), environ={})
    text = jobsub.describe(plan, tmp_path / "d", build_extras(DEFAULT, user="a", gpus=1, log_file="my.log"))
    assert "\nlog = my.log\n" in text and "$(Cluster).log" not in text
    assert text.endswith('request_gpus = 1\n+Mine = "x"\nqueue\n')
    assert "\nlog = $(Cluster).log\n" in jobsub.describe(plan, tmp_path / "d")


# -- the command line ---------------------------------------------------------------


def parse_args(*argv: str) -> argparse.Namespace:
    return submit_options_parser().parse_args(list(argv))


def test_the_options_parse_as_jobsub_lite_names_them() -> None:
    a = parse_args("-Q", "--email-to", "x@y", "--apptainer-image", "/i", "--offsite", "--resource-provides", "A=1",
                   "--append_condor_requirements", "true", "-c", "false", "--timeout", "1h", "--log_file", "l",
                   "--gpu", "3")
    assert (a.mail, a.email_to, a.image, a.usage_model, a.resources) == ("never", "x@y", "/i", "offsite", ["A=1"])
    assert (a.requirements, a.timeout, a.log_file, a.gpus) == (["true", "false"], "1h", "l", 3)
    assert parse_args("--mail-on-error").mail == "on_error" and parse_args("--mail_always").mail == "always"
    assert parse_args("--gpu").gpus == 1
    assert parse_args("--gpu", "file:///x.sh").displaced == ["file:///x.sh"]  # not its count: left for the target
    assert jobsub.options_used(parse_args("--gpu", "--site", "A")) == ["--site", "--gpu"]


@pytest.mark.parametrize("argv", [["--onsite", "--offsite"], ["--site", "A", "--onsite"],
                                  ["--singularity-image", "/i", "--no-singularity"]])
def test_exclusive_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(*argv)


@pytest.mark.parametrize("option", ["--blacklist", "--OS", "-n", "--debug"])
def test_unsupported_options_are_refused_by_name(option: str) -> None:
    with pytest.raises(Failure) as e:
        parse_args(option, "x")
    assert e.value.exit_code == 2
    assert e.value.message.startswith(f"rsub submit does not support jobsub_submit's {option}: ")


def test_need_scope_and_storage_modify_as_jobsub_lite_reads_them() -> None:
    from rsub.jobsub import BuildError, need_scopes

    args = parse_args("--need-scope", "storage.create:/dune/x", "--need-storage-modify", "/dune/out/../out2",
                      "--need-storage-modify", "/pnfs/dune/scratch/u")
    scopes, notes = need_scopes(args.need_scopes, args.need_modify)
    assert scopes == ["storage.create:/dune/x", "storage.modify:/dune/out2", "storage.modify:/dune/scratch/u"]
    assert notes == ["--need-storage-modify /pnfs/dune/scratch/u: the storage path starts after the mount point; "
                     "asking for /dune/scratch/u"]
    with pytest.raises(BuildError, match="an absolute path"):
        need_scopes([], ["relative/dir"])
    with pytest.raises(BuildError, match="one word without blanks"):
        need_scopes(["a b"], [])


# -- the [jobsub] table ---------------------------------------------------------------


def test_the_table_is_checked_naming_the_key() -> None:
    assert parse({}) == DEFAULT
    conf = parse({"singularity_image": "/i", "accounting_group": "group_{group}", "sites_attribute": "Sites"})
    assert (conf.singularity_image, conf.accounting_group, conf.sites_attribute) == ("/i", "group_{group}", "Sites")
    for table, message in [
        ({"image": "/i"}, "unknown key [jobsub] 'image'"),
        ({"group_attribute": "Has Space"}, "[jobsub] group_attribute 'Has Space' is not a ClassAd attribute name"),
        ({"accounting_group": "g_{grp}"}, "only {group} and {user} are filled in, not {grp}"),
        ({"singularity_image": 3}, "[jobsub] singularity_image must be a non-empty string"),
        ({"singularity_image": 'a"b'}, "no line break or double quote"),
        ({"onsite": "$(x)"}, "'$('"),
    ]:
        with pytest.raises(JobsubConfigError, match=re.escape(message)):
            parse(table)


def test_rsubd_refuses_a_bad_table_at_start() -> None:
    assert config.from_dict({"jobsub": {"singularity_image": "/i"}}).jobsub.singularity_image == "/i"
    assert config.from_dict({}).jobsub == DEFAULT
    with pytest.raises(config.ConfigError, match="unknown key \\[jobsub\\] 'nope'"):
        config.from_dict({"jobsub": {"nope": 1}})


def test_rsub_reads_the_table_from_the_config_file(tmp_path: Path) -> None:
    assert from_file(None) == DEFAULT and from_file(tmp_path / "none.toml") == DEFAULT
    cfg = tmp_path / "config.toml"
    cfg.write_text('socket = "/tmp/x.sock"\n')
    assert from_file(cfg) == DEFAULT
    cfg.write_text('[jobsub]\nsingularity_image = "/i"\n')
    assert from_file(cfg).singularity_image == "/i"


def test_the_example_config_has_a_jobsub_table() -> None:
    example = Path(__file__).parents[2] / "config.example.toml"
    assert from_file(example) == DEFAULT == config.load(str(example)).jobsub  # it writes out the defaults
    # The commented keys are good values once a site uncomments them.
    text = example.read_text()
    for key in ("singularity_image", "accounting_group"):
        text = text.replace(f"# {key} = ", f"{key} = ")
    conf = parse(tomllib.loads(text)["jobsub"])
    assert conf.singularity_image == "/cvmfs/singularity.opensciencegrid.org/fermilab/fnal-wn-el9:latest"
    assert conf.accounting_group == "group_{group}.{user}"

"""`rsub submit`: a submit description file, or a script given as file:///path as jobsub_submit takes it."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rsub.commands import dagsubmit
from rsub.connection import Failure, call, submit_call
from rsub.views import emit_json
from rsub.wire.vocabulary import EXIT_BAD_SUBMIT, EXIT_TOKEN, EXIT_USAGE, JSON_VERSION

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

    from rsub.commands import AddParser


def add_submit_options(parser: argparse.ArgumentParser) -> None:
    """The options of `rsub submit`, shared by its parser and by `submit_options_parser`."""
    from rsub import jobsub

    parser.add_argument("--schedd", help="schedd name from the config (default: the first)")
    parser.add_argument("-G", "--group", help="the group (experiment) whose token profile to use, as jobsub's -G")
    parser.add_argument("--role", help="the role within the group, as jobsub's --role")
    parser.add_argument("--token", help="the token profile to use, by name (default: the schedd's)")
    parser.add_argument("--json", action="store_true", help=f"print the result as JSON (shape version {JSON_VERSION})")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print each job's id, one per line")
    d = parser.add_argument_group("DAGs (rsub submit work.dag; see README \"DAGs\")")
    d.add_argument("--dag", action="store_true", help="the target is a DAG: a .dag file, or a jobsub_lite dagnabbit"
                   " file as file:///path/work.dagnabbit")
    d.add_argument("--maxConcurrent", "--max-concurrent", dest="max_concurrent", type=jobsub.count, metavar="N",
                   help="run at most N of the DAG's node jobs at once (DAGMan's -MaxJobs)")
    d.add_argument("--rescue", metavar="ID", help="run the rescue DAG of the failed or removed DAG ID: only the"
                   " nodes not done")
    jobsub.add_options(parser)
    jobsub.unsupported(parser)


def submit_options_parser() -> argparse.ArgumentParser:
    """Reads options given after a plain submit file ("rsub submit job.sub --json")."""
    parser = argparse.ArgumentParser(prog="rsub submit", add_help=False)
    add_submit_options(parser)
    return parser


def show_submitted(result: dict[str, Any], source: str, *, verbose: bool = False) -> None:
    """condor_submit's line (`500 job(s) submitted to cluster 12.`, naming the schedd); with -v, each job's id."""
    print(f"{len(result['jobs'])} job(s) submitted to cluster {result['cluster']} on schedd {result['schedd']}.")
    if verbose:
        print("\n".join(result["jobs"]))
    for key in result.get("replaced", []):
        print(f"note: rsub set its own {key}; the value in {source} was replaced", file=sys.stderr)
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    if result.get("scopes"):
        print(f"note: the jobs have a token of their own in $BEARER_TOKEN_FILE, with {' '.join(result['scopes'])}",
              file=sys.stderr)


def jobsub_config(args: argparse.Namespace) -> Any:
    """The [jobsub] table of the config file rsub reads (as it reads `socket`): the site's jobsub defaults."""
    import tomllib

    from rsub.wire import paths
    from rsub.wire.jobsubconf import JobsubConfigError, from_file

    cfg = paths.config_file(args.config)
    try:
        return from_file(cfg)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, JobsubConfigError) as e:
        raise Failure(EXIT_USAGE, f"cannot read config {cfg}: {e}") from None


def check_role(args: argparse.Namespace) -> None:
    if args.role and not args.group and not args.token:  # a named profile wins over group and role, as in rsubd
        raise Failure(EXIT_USAGE, f"--role {args.role}: give the group too, as -G GROUP --role {args.role}: "
                      "a role is one within a group")


def read_description(path: Path) -> str:
    """The text of a submit description file; a program or other binary file is refused as not being one."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise Failure(EXIT_BAD_SUBMIT, f"cannot read submit file {path}: {e.strerror or e}") from None
    if b"\0" not in data[:8192]:  # text never holds a NUL; a program almost always does
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass
    kind = "a program" if data[:4] == b"\x7fELF" or os.access(path, os.X_OK) else "a binary file"
    raise Failure(EXIT_BAD_SUBMIT, f"{path} is not a submit description (it is {kind}, not text). To run it, "
                  f"submit a description with `executable = {path}` and `queue`, or a script as "
                  "rsub submit file:///path/to/script")


def cmd_submit(args: argparse.Namespace) -> int:
    # The submit file (or file:// script) and what follows it arrive as one list: after a
    # file:// script everything is the job's arguments, as with jobsub_submit.
    target = [*getattr(args, "displaced", []), *args.target]  # what `--gpu` took that is not its count
    if target[:1] == ["--"]:
        target = target[1:]
    check_role(args)
    if not target and args.rescue is not None:
        return dag_target(args, target)
    if not target:
        raise Failure(EXIT_USAGE, "submit needs a submit description file, or a script as file:///path/to/script")
    if args.rescue is not None or args.dag or (not target[0].startswith("file://") and dagsubmit.is_dag(target[0])):
        return dag_target(args, target)
    if args.max_concurrent is not None:
        raise Failure(EXIT_USAGE, "--maxConcurrent limits a DAG's node jobs: give it with a DAG (rsub submit"
                      " --dag ...)")
    if target[0].startswith("file://"):
        return submit_script(args, target[0], target[1:])
    if target[1:]:
        parser = submit_options_parser()
        args, extra = parser.parse_known_args(target[1:], namespace=args)
        if extra:
            raise Failure(EXIT_USAGE, f"{' '.join(extra)}: after a submit file rsub takes only its own options "
                          "(see rsub submit --help)")
        check_role(args)
    from rsub import jobsub

    if used := jobsub.options_used(args):
        raise Failure(EXIT_USAGE, f"{', '.join(used)}: only for a script given as file:///path/to/script, "
                                           "not with a submit description file")
    path = Path(target[0])
    text = read_description(path)
    if args.dry_run:
        checked = call(args, "dry_run", description=text, cwd=os.getcwd(), schedd=args.schedd)
        if args.json:
            emit_json({"version": JSON_VERSION, **checked})
            return 0
        print(checked["description"], end="")
        for job in checked.get("jobs") or []:  # what differs between the jobs, as comments: still a description
            if job["commands"]:
                print(f"# job {job['proc']}: " + "; ".join(f"{k} = {v}" for k, v in job["commands"].items()))
        if checked.get("jobs") and any(j["commands"] for j in checked["jobs"]) and checked.get("jobs_not_listed"):
            print(f"# ... and {checked['jobs_not_listed']:,} more job(s), not listed")
        print(f"rsub: dry run: {checked['num_procs']} job(s) would be submitted to schedd {checked['schedd']}"
              " as above; nothing was sent", file=sys.stderr)
        return 0
    result = submit_call(args, description=text, cwd=os.getcwd(), submit_file=str(path.resolve()),
                         schedd=args.schedd, token=args.token, group=args.group, role=args.role)
    if args.json:
        emit_json({"version": JSON_VERSION, **result})
        return 0
    show_submitted(result, path.name, verbose=args.verbose)
    return 0


def dag_target(args: argparse.Namespace, target: list[str]) -> int:
    """A DAG: a .dag file, a dagnabbit file (--dag file://...), or the rescue of DAG ID (--rescue ID)."""
    if target[1:]:
        args, extra = submit_options_parser().parse_known_args(target[1:], namespace=args)
        if extra:
            raise Failure(EXIT_USAGE, f"{' '.join(extra)}: after a DAG file rsub takes only its own options")
    if args.rescue is not None:
        if target:
            raise Failure(EXIT_USAGE, "--rescue ID reruns a DAG rsub submitted: give no DAG file with it")
        from rsub.commands import dagrescue

        return dagrescue.rescue(args, args.rescue)
    url = target[0]
    if url.startswith("file://"):
        from rsub.jobsub import dagnabbit

        dagsubmit.check_dag_options(args)
        try:
            built = dagnabbit.build_dag(Path(url.removeprefix("file://")), cwd=os.getcwd(), environ=os.environ,
                                        config=jobsub_config(args))
        except dagnabbit.DagnabbitError as e:
            raise Failure(EXIT_BAD_SUBMIT, str(e)) from None
        return dagsubmit.submit_dag(args, built)
    dagsubmit.check_dag_options(args)
    return dagsubmit.submit_dag(args, Path(url))


def submit_script(args: argparse.Namespace, url: str, job_args: list[str]) -> int:
    """`rsub submit [options] file:///path/to/script [ARG ...]`: build the job as jobsub_submit does, then submit it."""
    from rsub import jobsub

    try:
        plan = jobsub.build(url, job_args, count=args.count, input_files=args.input_files, tars=args.tars,
                            memory=args.memory, disk=args.disk, cpus=args.cpus, lifetime=args.lifetime,
                            environment=args.environment, lines=args.lines, cwd=os.getcwd(), environ=os.environ)
        import getpass

        extras = jobsub.build_extras(
            jobsub_config(args), user=getpass.getuser(), group=args.group, mail=args.mail, email_to=args.email_to,
            image=args.image, no_singularity=args.no_singularity, usage_model=args.usage_model, sites=args.sites,
            resources=args.resources, requirements=args.requirements, timeout=args.timeout, log_file=args.log_file,
            gpus=args.gpus, lines=plan.lines)
        scopes, notes = jobsub.need_scopes(args.need_scopes, args.need_modify)
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        directory = jobsub.submit_dir(plan.script.name)
        text = jobsub.describe(plan, directory, extras)
        if args.dry_run:
            print(text, end="")
            print("rsub: dry run: nothing was written or submitted" + (
                f"; the job's token would be asked for {' '.join(scopes)}" if scopes else ""), file=sys.stderr)
            return 0
        jobsub.materialize(plan, directory, text, job_token=bool(scopes))
    except jobsub.BuildError as e:
        raise Failure(EXIT_BAD_SUBMIT, str(e)) from None
    scoped: dict[str, Any] = {"scopes": scopes} if scopes else {}  # sent only when asked: older rsubds
    try:
        with jobsub.Progress(jobsub.input_bytes(plan, directory), sys.stderr):
            result = submit_call(args, description=text, cwd=str(directory),
                                 submit_file=str(directory / jobsub.SUBMIT_FILE), schedd=args.schedd,
                                 token=args.token, group=args.group, role=args.role, **scoped)
    except Failure as e:
        # rsubd refused before sending anything to a schedd: no job will ever use the directory.
        if e.exit_code in (EXIT_BAD_SUBMIT, EXIT_USAGE, EXIT_TOKEN):
            import shutil

            shutil.rmtree(directory, ignore_errors=True)
        raise
    if args.json:
        emit_json({"version": JSON_VERSION, **result, "output_dir": str(directory)})
        return 0
    show_submitted(result, jobsub.SUBMIT_FILE, verbose=args.verbose)
    print(f"output will be in {directory}")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add("submit", "submit a submit description file, or a script as jobsub_submit does",
            "rsub submit examples/hello.sub\n"
            "rsub submit -v job.sub            # and each job's id\n"
            "rsub submit -N 10 -f data.txt --tar code/ file://$PWD/run.sh --seed 7",
            usage="rsub submit [options] FILE.sub\n       rsub submit [options] file:///path/to/script [ARG ...]")
    add_submit_options(s)
    s.add_argument("target", nargs=argparse.REMAINDER, metavar="FILE | file:///SCRIPT [ARG ...]",
                   help="the submit description file; or the script, options first, then the job's arguments")
    s.set_defaults(func=cmd_submit)

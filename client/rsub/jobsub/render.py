"""The text of a jobsub-style job: its submit description and the wrapper that is its executable."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from rsub.jobsub.extras import Extras
from rsub.jobsub.plan import INPUT_DIR, Plan, TarInput
from rsub.wire.vocabulary import JOB_TOKEN, WRAPPER

SUBMIT_FILE = "job.sub"
UNWIND = ".unwind_{}"  # where tarball N is moved and unpacked, as jobsub_lite names it
# Arguments made only of these need no quoting in either HTCondor or a POSIX shell.
_PLAIN_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


# -- quoting ---------------------------------------------------------------------


def _condor_word(word: str) -> str:
    """One argument or value in HTCondor's new syntax: single quotes protect blanks, '' and "" are literal quotes."""
    if _PLAIN_RE.fullmatch(word):
        return word
    # Anything else is single-quoted, backslashes included: literal for HTCondor and a shell alike.
    return "'" + word.replace("'", "''").replace('"', '""') + "'"


def quote_arguments(arguments: Sequence[str]) -> str:
    """The value of `arguments` in HTCondor's new syntax, double quotes included."""
    return '"' + " ".join(_condor_word(a) for a in arguments) + '"'


def quote_environment(pairs: Sequence[tuple[str, str]], *, preset: str = "") -> str:
    """The value of `environment` in HTCondor's new syntax ("A=1 B='two words'"), after `preset` as written."""
    words = [preset] if preset else []
    words += [f"{name}={_condor_word(value) if value else ''}" for name, value in pairs]
    return '"' + " ".join(words) + '"'


def tar_path(plan: Plan, tar: TarInput, directory: Path) -> Path:
    return directory / tar.name if tar.from_directory else tar.source


def describe(plan: Plan, directory: Path, extras: Extras | None = None) -> str:
    """The submit description, with the per-submit directory as initialdir, and the lines of `extras`."""
    extras = extras or Extras()
    inputs = [plan.script, *plan.inputs, *(tar_path(plan, t, directory) for t in plan.tars)]
    out = [
        f"# written by rsub submit for file://{plan.script}",
        "universe = vanilla",
        f"executable = {directory / WRAPPER}",
    ]
    if plan.arguments:
        out.append(f"arguments = {quote_arguments(plan.arguments)}")
    out += [
        f"initialdir = {directory}",
        f"transfer_input_files = {', '.join(str(p) for p in inputs)}",
        "should_transfer_files = YES",
        "when_to_transfer_output = ON_EXIT",
        "output = $(Cluster).$(Process).out",
        "error = $(Cluster).$(Process).err",
        f"log = {extras.log or '$(Cluster).log'}",
        # jobsub's jobs know their ids as $CLUSTER and $PROCESS.
        f"environment = {quote_environment(plan.environment, preset='CLUSTER=$(Cluster) PROCESS=$(Process)')}",
    ]
    if plan.memory_mb is not None:
        out.append(f"request_memory = {plan.memory_mb}")
    if plan.disk_kb is not None:
        out.append(f"request_disk = {plan.disk_kb}")
    if plan.cpus is not None:
        out.append(f"request_cpus = {plan.cpus}")
    if plan.lifetime is not None:
        out.append(f"+JOB_EXPECTED_MAX_LIFETIME = {plan.lifetime}")
    out += list(extras.lines)
    out += list(plan.lines)
    out.append(f"queue {plan.count}" if plan.count != 1 else "queue")
    return "\n".join(out) + "\n"


def wrapper(plan: Plan, *, job_token: bool = False) -> str:
    """The job's executable (POSIX sh): lay out the inputs as jobsub's wrapper does, then run the script.

    `job_token`: the submit asked for a token of its own (--need-scope), which rsubd ships as JOB_TOKEN.
    """
    q = shlex.quote
    out = [
        "#!/bin/sh",
        f"# written by rsub submit: sets up the inputs of {q(plan.script.name)} as jobsub_submit's wrapper does,",
        "# then runs it with the job's arguments, and exits with its status.",
        'rsub_fail() { echo "rsub wrapper: $*" >&2; exit 1; }',
        'scratch=${_CONDOR_SCRATCH_DIR:-$(pwd)}',
        f"CONDOR_DIR_INPUT=$scratch/{INPUT_DIR}",
        "export CONDOR_DIR_INPUT",
        'mkdir -p "$CONDOR_DIR_INPUT" || rsub_fail "cannot make $CONDOR_DIR_INPUT"',
    ]
    for path in plan.inputs:
        out.append(f'mv -f "$scratch"/{q(path.name)} "$CONDOR_DIR_INPUT"/ '
                   f'|| rsub_fail {q("input file " + path.name + " is not in the job directory")}')
    for i, tar in enumerate(plan.tars):
        suffix = f"_{i}" if i else ""
        unwind = f'"$scratch"/{UNWIND.format(i)}'
        flag = f"-x{tar.tar_flag}f"
        out += [
            f"mkdir -p {unwind} && mv -f \"$scratch\"/{q(tar.name)} {unwind}/ &&",
            f"  (cd {unwind} && tar {flag} {q(tar.name)}) || rsub_fail {q('cannot unpack ' + tar.name)}",
            f"INPUT_TAR_FILE{suffix}=$scratch/{UNWIND.format(i)}/{q(tar.name)}",
            f"INPUT_TAR_DIR_LOCAL{suffix}=$scratch/{UNWIND.format(i)}",
            f"export INPUT_TAR_FILE{suffix} INPUT_TAR_DIR_LOCAL{suffix}",
        ]
    if job_token:
        out += [
            f'[ -s "$scratch"/{JOB_TOKEN} ] || rsub_fail "the token asked for with --need-scope is not in the job\'s'
            ' directory"',
            f"BEARER_TOKEN_FILE=$scratch/{JOB_TOKEN}",
            "export BEARER_TOKEN_FILE",
        ]
    out += [
        f'chmod u+x "$scratch"/{q(plan.script.name)} 2>/dev/null',
        f'exec "$scratch"/{q(plan.script.name)} "$@"',
    ]
    return "\n".join(out) + "\n"

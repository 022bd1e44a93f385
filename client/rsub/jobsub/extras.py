"""jobsub_submit's options that are submit commands: mail, image, sites, resources, requirements, timeout, ...

Each maps onto HTCondor as jobsub_lite maps it; the site's names and defaults (the image,
the usage-model and sites attributes, the group attribute, the accounting group) come from
the `[jobsub]` config table (`rsub.wire.jobsubconf`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rsub.jobsub.plan import BuildError, duration_seconds, writable
from rsub.wire.jobsubconf import JobsubConfig

NOTIFICATION = {"never": "Never", "on_error": "Error", "always": "Always"}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# The submit commands an option here sets: a -l line may not set them as well (the last would win, silently).
_KEY_RE = re.compile(r"\s*([+]|[Mm][Yy]\.)?([A-Za-z_][A-Za-z0-9_.]*)\s*=")


@dataclass(frozen=True)
class Extras:
    """The submit lines these options make, the requirements to AND, and the job event log's name."""

    lines: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    log: str | None = None


def _value(text: str, what: str) -> str:
    """A value written inside a ClassAd string: no double quote or backslash, nor what a line cannot carry."""
    text = writable(text.strip(), what)
    if not text:
        raise BuildError(f"{what}: empty")
    if '"' in text or "\\" in text:
        raise BuildError(f"{what} {text!r}: a double quote or backslash cannot be written in the attribute")
    return text


def _expression(text: str, option: str) -> str:
    """A ClassAd expression to AND into requirements: one balanced expression, on one line."""
    expr = writable(text.strip(), option)
    if not expr:
        raise BuildError(f"{option}: empty expression")
    depth, quoted = 0, False
    for ch in re.sub(r'\\.', "", expr):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "()":
            depth += 1 if ch == "(" else -1
            if depth < 0:
                break
    if depth or quoted:
        raise BuildError(f"{option} {text!r}: unbalanced parentheses or quotes; give one ClassAd expression")
    return expr


def _set_by_lines(lines: Sequence[str]) -> set[str]:
    keys = set()
    for line in lines:
        m = _KEY_RE.match(line)
        if m:
            keys.add(("+" if m.group(1) else "") + m.group(2).lower())
    return keys


def build_extras(conf: JobsubConfig, *, user: str, group: str | None = None, mail: str | None = None,
                 email_to: str | None = None, image: str | None = None, no_singularity: bool = False,
                 usage_model: str | None = None, sites: str | None = None, resources: Sequence[str] = (),
                 requirements: Sequence[str] = (), timeout: str | None = None, log_file: str | None = None,
                 gpus: int | None = None, lines: Sequence[str] = ()) -> Extras:
    """Check these options; BuildError says what is wrong, before anything is written or sent."""
    out: list[str] = []
    attrs: dict[str, str] = {}  # attribute (lower case) -> the option that set it
    taken = _set_by_lines(lines)

    def command(key: str, value: str, option: str) -> None:
        name = key.lower()
        if name in attrs:
            raise BuildError(f"{option}: {key} is already set by {attrs[name]}")
        if name in taken:
            raise BuildError(f"{option} sets {key}, and so does a -l line: give one of them")
        attrs[name] = option
        out.append(f"{key} = {value}")

    if group is not None:
        if not _GROUP_RE.fullmatch(group):
            raise BuildError(f"-G {group!r}: a group is a name of letters, digits, '.', '_' and '-'")
        command(f"+{conf.group_attribute}", f'"{group}"', "-G")
        if conf.accounting_group:
            command("+AccountingGroup", f'"{_value(conf.accounting_group.format(group=group, user=user), "-G")}"',
                    "-G (the [jobsub] accounting_group)")
    if mail is not None:
        command("notification", NOTIFICATION[mail], f"--mail_{mail}")
    if email_to is not None:
        address = _value(email_to, "--email-to")
        if any(c.isspace() for c in address) or "," in address:
            raise BuildError(f"--email-to {email_to!r}: one address, without blanks")
        command("notify_user", address, "--email-to")
    reqs: list[str] = []
    chosen = image if image is not None else None if no_singularity else conf.singularity_image
    if chosen is not None:
        command(f"+{conf.singularity_attribute}", f'"{_value(chosen, "--singularity-image")}"',
                "--singularity-image" if image is not None else "the [jobsub] singularity_image")
        if conf.singularity_requirement:
            reqs.append(conf.singularity_requirement)
    if usage_model is not None:
        model = conf.onsite if usage_model == "onsite" else conf.offsite
        command(f"+{conf.usage_model_attribute}", f'"{model}"', f"--{usage_model}")
    if sites is not None:
        names = [s.strip() for s in _value(sites, "--site").split(",")]
        if not all(names):
            raise BuildError(f"--site {sites!r}: a comma-separated list of site names, none empty")
        command(f"+{conf.sites_attribute}", f'"{",".join(names)}"', "--site")
    for entry in resources:
        key, eq, value = entry.partition("=")
        key = key.strip()
        if not eq or not _NAME_RE.fullmatch(key):
            raise BuildError(f"--resource-provides {entry!r}: expected KEY=VALUE, KEY a name like CVMFS or GPU")
        command(f"+{conf.resource_prefix}{key}", f'"{_value(value, f"--resource-provides {key}")}"',
                f"--resource-provides {key}")
    for expr in requirements:
        reqs.append(_expression(expr, "-c"))
    if reqs:
        if "requirements" in taken:
            raise BuildError("-c (or the singularity image's requirement) and a -l 'requirements = ...' line would "
                             "both set requirements; give the expression with -c only")
        out.append("requirements = " + " && ".join(f"({r})" for r in reqs))
    if timeout is not None:
        seconds = duration_seconds(timeout, "--timeout")
        # Removed once it has run that long, as jobsub_lite's --timeout kills it; EnteredCurrentStatus is when it
        # started running this time.
        command("periodic_remove", f"JobStatus == 2 && (time() - EnteredCurrentStatus) > {seconds}", "--timeout")
    log = None
    if log_file is not None:
        log = writable(log_file.strip(), "-L")
        if not log or "," in log:
            raise BuildError(f"-L {log_file!r}: give one file name for the job event log")
        if "log" in taken:
            raise BuildError("-L sets log, and so does a -l line: give one of them")
    if gpus is not None:
        command("request_gpus", str(gpus), "--gpu")
    return Extras(lines=tuple(out), requirements=tuple(reqs), log=log)

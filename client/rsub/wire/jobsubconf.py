"""The `[jobsub]` config table: the site's defaults for jobsub-style submits, read by rsubd and rsub alike.

rsubd checks the table at start (a wrong key or value is refused, naming it); rsub reads
it from the same config file when it builds a `file://` job, as it reads `socket`.
Every key is optional. The attribute names default to the ones jobsub_lite writes; the
singularity image and the accounting group have no default: a site sets them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

_ATTR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


class JobsubConfigError(ValueError):
    """The [jobsub] table is refused; the message names the key."""


@dataclass(frozen=True)
class JobsubConfig:
    singularity_image: str | None = None  # the image a job runs in unless --no-singularity; none: no image
    singularity_attribute: str = "SingularityImage"
    singularity_requirement: str = "TARGET.HAS_SINGULARITY =?= true"  # ANDed into requirements; "" for none
    group_attribute: str = "Jobsub_Group"  # set to the -G group
    accounting_group: str | None = None  # e.g. "group_{group}.{user}": +AccountingGroup, with -G
    usage_model_attribute: str = "DESIRED_usage_model"
    onsite: str = "OPPORTUNISTIC,DEDICATED"  # the usage model --onsite asks for
    offsite: str = "OFFSITE"  # the usage model --offsite asks for
    sites_attribute: str = "DESIRED_Sites"  # --site
    resource_prefix: str = "DESIRED_"  # --resource-provides K=V sets +<prefix>K = "V"


ATTRIBUTE_KEYS = ("singularity_attribute", "group_attribute", "usage_model_attribute", "sites_attribute")
KEYS = tuple(f.name for f in fields(JobsubConfig))


def _text(value: Any, key: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value.strip()):
        raise JobsubConfigError(f"[jobsub] {key} must be a {'' if empty else 'non-empty '}string, not {value!r}")
    if "\n" in value or "\r" in value or ('"' in value and key != "singularity_requirement"):
        raise JobsubConfigError(f"[jobsub] {key} {value!r}: no line break or double quote")
    return value.strip()


def parse(table: Any) -> JobsubConfig:
    """The [jobsub] table, checked; JobsubConfigError names the key that is wrong."""
    if not isinstance(table, dict):
        raise JobsubConfigError("jobsub must be a table: [jobsub]")
    for key in table:
        if key not in KEYS:
            raise JobsubConfigError(f"unknown key [jobsub] {key!r}; allowed keys: {', '.join(sorted(KEYS))}")
    values: dict[str, str] = {}
    for key, value in table.items():
        values[key] = _text(value, key, empty=key == "singularity_requirement")
    for key in ATTRIBUTE_KEYS:
        if key in values and not _ATTR_RE.fullmatch(values[key]):
            raise JobsubConfigError(f"[jobsub] {key} {values[key]!r} is not a ClassAd attribute name")
    if "resource_prefix" in values and not _ATTR_RE.fullmatch(values["resource_prefix"]):
        raise JobsubConfigError(f"[jobsub] resource_prefix {values['resource_prefix']!r} must start an attribute name")
    if "accounting_group" in values:
        unknown = set(_PLACEHOLDER_RE.findall(values["accounting_group"])) - {"group", "user"}
        if unknown:
            raise JobsubConfigError(f"[jobsub] accounting_group {values['accounting_group']!r}: only {{group}} and "
                                    f"{{user}} are filled in, not {{{sorted(unknown)[0]}}}")
    if "$(" in "".join(values.values()):
        raise JobsubConfigError("[jobsub] values cannot hold '$(': it would be read as a submit macro")
    return JobsubConfig(**values)


def from_file(path: Path | None) -> JobsubConfig:
    """The [jobsub] table of a config file (the defaults when there is no file or no table).

    OSError and tomllib.TOMLDecodeError go to the caller, as JobsubConfigError does.
    """
    if path is None or not path.exists():
        return JobsubConfig()
    import tomllib

    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return parse(data["jobsub"]) if "jobsub" in data else JobsubConfig()

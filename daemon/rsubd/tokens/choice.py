"""Which token profile a submit uses: named, else by group and role, else the schedd's own."""

from __future__ import annotations

from collections.abc import Mapping

from rsubd.tokens.claims import TokenProfile


def choose(profiles: Mapping[str, TokenProfile], *, token: str | None, group: str | None, role: str | None,
           default: str | None) -> tuple[str | None, bool]:
    """The profile a submit uses, and whether -G named a group no profile has (the schedd's own is used).

    Named, else matched by group and role, else the schedd's own. jobsub users give -G by reflex: a
    group without a profile only names the job's group. A role picks a credential, so a role without
    a matching profile is refused, as is a role without a group. KeyError says why.
    """
    if token:
        if token not in profiles:
            raise KeyError(f"no token profile named {token!r}; configured: {', '.join(profiles) or 'none'}")
        return token, False
    if role and not group:
        raise KeyError(f"--role {role}: give the group too, as -G GROUP --role {role}: "
                       "a role is one within a group")
    if group:
        for name, p in profiles.items():
            if p.group == group and (role or None) == (p.role or None):
                return name, False
        if not role:
            return default, True
        have = ", ".join(f"{n} ({p.group}/{p.role or '-'})" for n, p in profiles.items())
        raise KeyError(f"no token profile for group {group!r} and role {role!r}; configured: {have or 'none'}. "
                       f"A role picks a token: add a [tokens.NAME] profile with group = \"{group}\" and "
                       f"role = \"{role}\", or leave --role out to use the schedd's own token")
    return default, False

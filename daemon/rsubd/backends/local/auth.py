"""The embedded scheduler behind a token check, the way a real schedd and the bindings behave.

A real schedd refuses a missing or expired token, and the bindings keep the
security session of the token they first authenticated with until their process
is replaced. This wrapper does both: it reads the token once per credential
generation (a new "session") and refuses calls once that token has expired. So
the daemon's token refresh is tested for real: if rsubd did not hand the backend
the fresh token, calls would start failing when the old one expires.

It also limits what a token may do as HTCondor does: a token whose scopes name
HTCondor authorizations (`condor:/READ`, `condor:/WRITE`, or the WLCG
`compute.read`, and `compute.create`, `compute.modify`, `compute.cancel`, which
mean WRITE) may do only that, WRITE implying READ; a token naming none is limited
only by who it says its bearer is. A submit needs WRITE, a query READ. So a
per-submit token narrowed too far (tokens/scoped.py) is refused here as a schedd
would refuse it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rsub.wire.vocabulary import iso
from rsubd.backends.schedd import (
    ErrorKind,
    Schedd,
    ScheddError,
)
from rsubd.backends.wrappers import DelegatingSchedd
from rsubd.tokens.claims import TokenError, decode
from rsubd.tokens.manager import Credential

# What each call needs, as the schedd's command table has it; the rest needs WRITE.
NEEDS = {"query": "READ", "history": "READ"}
_LEVELS = {"condor:/READ": ("READ",), "condor:/WRITE": ("WRITE", "READ"), "compute.read": ("READ",),
           # HTCondor's hierarchy: ADMINISTRATOR and DAEMON imply WRITE, which implies READ.
           "condor:/ADMINISTRATOR": ("WRITE", "READ"), "condor:/DAEMON": ("WRITE", "READ"),
           "compute.create": ("WRITE", "READ"), "compute.modify": ("WRITE", "READ"),
           "compute.cancel": ("WRITE", "READ")}


def authorizations(scopes: tuple[str, ...]) -> set[str] | None:
    """The authorization levels a token's scopes grant, or None when they name none (no limit)."""
    named = [s for s in scopes if s.startswith("condor:/") or s.startswith("compute.")]
    if not named:
        return None
    return {level for s in named for level in _LEVELS.get(s, ())}


class TokenCheckedSchedd(DelegatingSchedd[Schedd]):
    """Implements `rsubd.backends.schedd.Schedd` by delegation, after checking the presented token."""

    def __init__(self, inner: Schedd, credential: Callable[[], Credential], *, owns_inner: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(inner)
        self._credential = credential
        self._owns = owns_inner
        self._clock = clock
        self._generation: int | None = None
        self._token: str | None = None
        self.sessions = 0  # how many times a new token was taken up

    def _authenticate(self, op: str) -> None:
        cred = self._credential()
        if cred.generation != self._generation:
            self._generation = cred.generation
            self._token = None
            self.sessions += 1
            if cred.token_file is not None:
                try:
                    lines = cred.token_file.read_text(encoding="utf-8").split()
                    self._token = lines[0] if lines else None
                except (OSError, UnicodeDecodeError):
                    self._token = None
        if self._token is None:
            raise ScheddError(ErrorKind.AUTHENTICATION, f"no token to present for profile {cred.profile!r}")
        try:
            claims = decode(self._token)
        except TokenError as e:
            raise ScheddError(ErrorKind.AUTHENTICATION, f"the schedd refused the token: {e}") from None
        if claims.exp is not None and claims.exp <= self._clock():
            raise ScheddError(ErrorKind.AUTHENTICATION,
                              f"the schedd refused the token: it expired at {iso(claims.exp)}")
        granted = authorizations(claims.scopes)
        needed = NEEDS.get(op, "WRITE")
        if granted is not None and needed not in granted:
            raise ScheddError(ErrorKind.AUTHENTICATION, f"the schedd refused the token: {op} needs {needed} "
                              f"authorization and the token's scopes grant {', '.join(sorted(granted)) or 'none'} "
                              f"(a {needed} token carries condor:/{needed}"
                              f"{' or compute.read' if needed == 'READ' else ' or compute.create'})")

    def before_call(self, op: str) -> None:
        # Spooling continues the submit's session, as the bindings do with the SubmitResult.
        if op != "spool":
            self._authenticate(op)

    def close(self) -> None:
        if self._owns:
            self.inner.close()

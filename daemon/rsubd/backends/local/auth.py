"""The embedded scheduler behind a token check, the way a real schedd and the bindings behave.

A real schedd refuses a missing or expired token, and the bindings keep the
security session of the token they first authenticated with until their process
is replaced. This wrapper does both: it reads the token once per credential
generation (a new "session") and refuses calls once that token has expired. So
the daemon's token refresh is tested for real: if rsubd did not hand the backend
the fresh token, calls would start failing when the old one expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rsubd.backends.schedd import (
    Action,
    ActResult,
    ErrorKind,
    JobAd,
    JobSpec,
    Schedd,
    ScheddError,
    SubmitRequest,
    SubmitResult,
)
from rsubd.tokens.manager import Credential
from rsubd.tokens.claims import TokenError, decode, iso


class TokenCheckedSchedd:
    """Implements `rsubd.backends.schedd.Schedd` by delegation, after checking the presented token."""

    def __init__(self, inner: Schedd, credential: Callable[[], Credential], *, owns_inner: bool = True,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = inner.name
        self.inner = inner
        self._credential = credential
        self._owns = owns_inner
        self._clock = clock
        self._generation: int | None = None
        self._token: str | None = None
        self.sessions = 0  # how many times a new token was taken up

    def _authenticate(self) -> None:
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

    def submit(self, request: SubmitRequest) -> SubmitResult:
        self._authenticate()
        return self.inner.submit(request)

    def spool(self, result: SubmitResult) -> None:
        # Spooling continues the submit's session, as the bindings do with the SubmitResult.
        self.inner.spool(result)

    def query(self, constraint: str, projection: Sequence[str]) -> list[JobAd]:
        self._authenticate()
        return self.inner.query(constraint, projection)

    def retrieve(self, jobs: JobSpec) -> None:
        self._authenticate()
        self.inner.retrieve(jobs)

    def edit(self, jobs: JobSpec, attr: str, value: str) -> int:
        self._authenticate()
        return self.inner.edit(jobs, attr, value)

    def act(self, action: Action, jobs: JobSpec, reason: str | None = None) -> ActResult:
        self._authenticate()
        return self.inner.act(action, jobs, reason)

    def history(self, constraint: str, projection: Sequence[str], match: int | None = None,
                since: int | str | None = None) -> list[JobAd]:
        self._authenticate()
        return self.inner.history(constraint, projection, match, since)

    def close(self) -> None:
        if self._owns:
            self.inner.close()

"""A token the schedd refuses (issue 13, item 3): every call says so as an authentication failure.

rsub counts on this to make the first refusal a matter for a person (exit 8, the
profile marked) rather than a schedd error to retry. The token here is signed
with a key no schedd holds and expired an hour ago, so a real schedd refuses it
whichever it checks first, and the embedded scheduler's token check refuses it
too. On a real pool the client is limited to IDTOKENS, so that it cannot fall
back on another method the pool may also accept.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rsubd.backends.condor.client import CondorSchedd
from rsubd.backends.local.auth import TokenCheckedSchedd
from rsubd.backends.local.scheduler import LocalSchedd
from rsubd.backends.schedd import Action, ErrorKind, Schedd, ScheddError
from rsubd.tokens.manager import Credential
from tests.tokenkit import make_jwt

from .contract_kit import JobKit

# The pool's trust domain when known (RSUB_TEST_TOKEN_ISSUER); any other refuses the token the same way.
ISSUER = os.environ.get("RSUB_TEST_TOKEN_ISSUER", "rsub-contract.invalid")


@pytest.fixture
def refused(schedd: Schedd, tmp_path: Path) -> Iterator[Schedd]:
    """The suite's schedd, reached with a token it refuses."""
    directory = tmp_path / "tokens"
    directory.mkdir(mode=0o700)
    token = directory / "00-refused"
    now = int(time.time())
    claims = {"sub": "rsub-contract@refused.invalid", "iss": ISSUER, "iat": now - 7200, "exp": now - 3600,
              "scope": "condor:/READ condor:/WRITE"}
    token.write_text(make_jwt(claims, key=os.urandom(32)) + "\n", encoding="utf-8")
    token.chmod(0o600)
    credential = Credential(profile="refused", generation=1, token_file=token,
                            env={"_condor_SEC_TOKEN_DIRECTORY": str(directory)})
    if isinstance(schedd, LocalSchedd):
        yield TokenCheckedSchedd(schedd, lambda: credential, owns_inner=False)
        return
    assert isinstance(schedd, CondorSchedd), schedd
    settings = schedd.settings
    params = {**settings.params, "SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
              "SEC_CLIENT_AUTHENTICATION": "REQUIRED"}
    condor = CondorSchedd(dataclasses.replace(settings, params=params), credential=lambda: credential)
    try:
        yield condor
    finally:
        condor.close()


def test_a_refused_token_fails_the_submit_as_authentication_and_makes_no_job(
    schedd: Schedd, refused: Schedd, tmp_path: Path
) -> None:
    kit = JobKit(refused, tmp_path)
    with pytest.raises(ScheddError) as caught:
        kit.submit_job("echo never")
    assert caught.value.kind is ErrorKind.AUTHENTICATION, caught.value
    # Seen with a token the schedd accepts: nothing of this test reached the queue.
    assert schedd.query(kit.constraint, ["ClusterId", "ProcId"]) == []


@pytest.mark.parametrize("operation", ["query", "act", "edit", "history"])
def test_a_refused_token_fails_every_call_as_authentication(refused: Schedd, operation: str) -> None:
    constraint = 'RsubInstance == "contract-refused-token-none"'
    with pytest.raises(ScheddError) as caught:
        if operation == "query":
            refused.query(constraint, ["ClusterId"])
        elif operation == "act":
            refused.act(Action.HOLD, constraint, "contract: refused token")
        elif operation == "edit":
            refused.edit(constraint, "RsubContractProbe", "1")
        else:
            refused.history(constraint, ["ClusterId"], 1)
    assert caught.value.kind is ErrorKind.AUTHENTICATION, caught.value

"""Real JWTs for the token tests, and a fake refresh command.

`make_jwt` signs with HS256 (rsub never checks signatures; a schedd would).
Run as a script, this module is a refresh command that behaves as asked:

    python tokenkit.py MODE [LIFETIME]

MODE is one of: ok (write a token of LIFETIME seconds to $BEARER_TOKEN_FILE),
print (print the token on stdout, as condor_token_fetch does), fail (exit 1),
usage (exit 2), hang (sleep for ever), login (print a browser URL and wait),
garbage (write something that is not a JWT), expired (write an expired token),
nogroup (write a token without the wlcg.groups asked for), silent (exit 0 and
write nothing), scoped (a token with exactly the scopes of $RSUB_TOKEN_SCOPES, as
htgettoken --scopes gives, or SCOPED_BASE without it). Each run appends a line to $FAKE_REFRESH_LOG when it is set.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sys
import time
from typing import Any

KEY = b"rsub-test-signing-key"
LOGIN_URL = "https://vault.example.org/ui/vault/identity/oidc/provider/device?user_code=ABCD-EFGH"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any], key: bytes = KEY) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


SCOPE = "compute.create compute.read storage.read:/dune"
# The "scoped" mode's token when no scopes are asked for: it may query, not submit, and may modify one tree.
SCOPED_BASE = "compute.read storage.read:/dune storage.modify:/dune/scratch/users/alice"


def scitoken(lifetime: float, *, groups: tuple[str, ...] = ("/dune",), now: float | None = None,
             sub: str = "alice", scope: str = SCOPE) -> str:
    now = time.time() if now is None else now
    return make_jwt({"iss": "https://cilogon.org/dune", "sub": sub, "iat": int(now), "nbf": int(now),
                     "exp": int(now + lifetime), "scope": scope,
                     "wlcg.groups": list(groups), "wlcg.ver": "1.0", "jti": os.urandom(8).hex()})


def idtoken(lifetime: float | None, *, now: float | None = None, sub: str = "alice@fs") -> str:
    now = time.time() if now is None else now
    claims: dict[str, Any] = {"iss": "schedd.example.org", "sub": sub, "iat": int(now),
                              "scope": "condor:/READ condor:/WRITE", "jti": os.urandom(8).hex()}
    if lifetime is not None:
        claims["exp"] = int(now + lifetime)
    return make_jwt(claims)


def _write(text: str) -> None:
    if os.environ.get("FAKE_REFRESH_TOKENS"):  # the tests look for these in logs and replies
        with open(os.environ["FAKE_REFRESH_TOKENS"], "a", encoding="utf-8") as f:
            f.write(text + "\n")
    path = os.environ["BEARER_TOKEN_FILE"]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text + "\n")


def main(argv: list[str]) -> int:
    mode = argv[1]
    lifetime = float(argv[2]) if len(argv) > 2 else 3600.0
    if os.environ.get("FAKE_REFRESH_LOG"):
        with open(os.environ["FAKE_REFRESH_LOG"], "a", encoding="utf-8") as f:
            f.write(f"{time.time():.3f} {mode}\n")
    if mode == "ok":
        _write(scitoken(lifetime))
    elif mode == "print":
        print(idtoken(lifetime))
    elif mode == "fail":
        print("htgettoken: vault said no", file=sys.stderr)
        return 1
    elif mode == "usage":
        return 2
    elif mode == "hang":
        time.sleep(3600)
    elif mode == "login":
        print("Attempting OIDC authentication with https://vault.example.org:8200", flush=True)
        print(f"Complete the authentication at:\n    {LOGIN_URL}", flush=True)
        time.sleep(3600)
    elif mode == "garbage":
        _write("this is not a token")
    elif mode == "expired":
        _write(scitoken(-60))
    elif mode == "nogroup":
        _write(scitoken(lifetime, groups=("/other",)))
    elif mode == "silent":
        pass
    elif mode == "scoped":
        _write(scitoken(lifetime, scope=os.environ.get("RSUB_TOKEN_SCOPES") or SCOPED_BASE))
    else:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

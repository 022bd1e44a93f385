"""Running a token refresh command: its process, its time limit, its output, and the login URL it prints.

The command runs with no shell and no terminal, in a session of its own (so its
whole process group dies at the time limit or when rsubd stops); its output is
kept to the last lines and read for the URL of a browser login. What it produced
is found where it put it; `TokenManager` checks it before it replaces the old token.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from rsubd.tokens.files import stamp

URL = re.compile(r"https?://[^\s'\"<>]+")
# htgettoken names its vault's URL first; the login URL follows "Complete the authentication at:".
LOGIN_PROMPT = re.compile(r"complete the authentication|web browser|log ?in|authenticate at", re.IGNORECASE)
KEEP_OUTPUT_LINES = 50


@dataclass(frozen=True)
class RunResult:
    returncode: int | None
    timed_out: bool = False
    output: tuple[str, ...] = ()
    url: str | None = None
    error: str | None = None  # the command could not be started


Runner = Callable[[tuple[str, ...], Mapping[str, str], float, Callable[[str], None], threading.Event], RunResult]


def run_command(argv: tuple[str, ...], env: Mapping[str, str], timeout: float,
                on_line: Callable[[str], None], cancel: threading.Event) -> RunResult:
    """Run a refresh command: no shell, no terminal, its own session, killed at the time limit or on cancel."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=dict(env), start_new_session=True, close_fds=True)
    except FileNotFoundError:
        hint = " (install htgettoken or set refresh_command)" if argv[0] == "htgettoken" else ""
        return RunResult(None, error=f"refresh command {argv[0]!r} not found{hint}")
    except OSError as e:
        return RunResult(None, error=f"cannot run refresh command {argv[0]!r}: {e.strerror}")
    lines: list[str] = []
    url: list[str] = []
    prompted = [False]

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            lines.append(line)
            del lines[:-KEEP_OUTPUT_LINES]
            prompted[0] = prompted[0] or bool(LOGIN_PROMPT.search(line))
            found = URL.search(line)
            if found and not url and (prompted[0] or "user_code" in found.group(0) or "/device" in found.group(0)):
                url.append(found.group(0))
            on_line(line)

    reader = threading.Thread(target=read, name="token-refresh-output", daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    code: int | None = None
    while code is None and not cancel.is_set() and time.monotonic() < deadline:
        try:
            code = proc.wait(min(0.2, max(0.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            continue
    timed_out = code is None
    if timed_out:
        _kill_group(proc)
    reader.join(5)
    assert proc.stdout is not None
    proc.stdout.close()
    return RunResult(code, timed_out=timed_out, output=tuple(lines), url=url[0] if url else None)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(2)
            break
        except subprocess.TimeoutExpired:
            continue


def command_env(profile: str, new: Path, target: Path, htgettoken_options: str | None) -> dict[str, str]:
    """The refresh command's environment: rsubd's own, less what is not the command's, plus where to write."""
    env = {k: v for k, v in os.environ.items() if k not in ("BEARER_TOKEN", "NOTIFY_SOCKET", "LISTEN_FDS")}
    # The command writes beside the token, not over it, so that a bad token never replaces a good one.
    env.update(BEARER_TOKEN_FILE=str(new), RSUB_TOKEN_FILE=str(target), RSUB_TOKEN_PROFILE=profile)
    if htgettoken_options:
        env["HTGETTOKENOPTS"] = f"{htgettoken_options} {env.get('HTGETTOKENOPTS', '')}".strip()
    return env


def produced(new: Path, target: Path, before: object, output: tuple[str, ...]) -> list[str] | None:
    """The token lines a successful refresh produced, wherever the command put them."""
    if new.exists():
        return [s for s in (line.strip() for line in new.read_text("utf-8", "replace").splitlines()) if s]
    printed = [line.strip() for line in output if line.strip().startswith("eyJ") and line.count(".") == 2]
    if printed:
        return printed  # condor_token_fetch and friends print the token
    if target.exists() and stamp(target) != before:
        # The command wrote the real file itself (it ignored $BEARER_TOKEN_FILE).
        return [s for s in (line.strip() for line in target.read_text("utf-8", "replace").splitlines()) if s]
    return None

"""Running rsub in a pseudo-terminal and reading the screen as a user would see it (pyte renders it)."""

from __future__ import annotations

import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable, Mapping, Sequence
from fcntl import ioctl
from pathlib import Path

import pyte


class Terminal:
    """A command on a pty of `columns` x `lines`; `screen()` is what the terminal shows now."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None,
                 columns: int = 120, lines: int = 30) -> None:
        self.master, slave = pty.openpty()
        ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        self.proc = subprocess.Popen(list(argv), stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                                     env={**env, "TERM": "xterm-256color"}, start_new_session=True)
        os.close(slave)
        self._screen = pyte.Screen(columns, lines)
        self._stream = pyte.ByteStream(self._screen)
        self.raw = bytearray()

    def pump(self, seconds: float = 0.1) -> None:
        """Read what the command wrote within `seconds`."""
        end = time.monotonic() + seconds
        while True:
            left = end - time.monotonic()
            ready, _, _ = select.select([self.master], [], [], max(0.0, left))
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the command is gone and its side of the pty with it
                    return
                if not data:
                    return
                self.raw += data
                self._stream.feed(data)
            elif left <= 0:
                return

    def screen(self) -> list[str]:
        return [line.rstrip() for line in self._screen.display]

    def text(self) -> str:
        return "\n".join(self.screen()).rstrip()

    def until(self, predicate: Callable[[list[str]], bool], timeout: float, what: str) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.2)
            if predicate(self.screen()):
                return self.screen()
        raise AssertionError(f"timed out waiting for {what}; the screen:\n{self.text()}")

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.pump(0.1)
        self.pump(0.2)
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"still running after {timeout} s; the screen:\n{self.text()}")
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)

"""rsub's start-up time is a feature: the client imports only the standard library and its protocol."""

from __future__ import annotations

import subprocess
import sys


def test_client_imports_nothing_heavy() -> None:
    code = (
        "import sys, rsub.cli\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rsubd', 'htcondor2', 'htcondor', 'classad2', 'classad', 'structlog', 'apscheduler', 'sqlite_utils'))\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_a_command_imports_only_its_own_module() -> None:
    # `rsub q` builds only its own parser: neither the other commands nor the jobsub builder (tarfile, threads).
    code = (
        "import sys, rsub.cli\n"
        "rsub.cli.build_parser('q')\n"
        "loaded = (m for m in sys.modules if m.startswith(('rsub.commands.', 'rsub.jobsub', 'tarfile')))\n"
        "print(','.join(sorted(loaded)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "rsub.commands.status"


def test_only_rsub_watch_loads_curses_and_only_wait_and_watch_the_stream_follower() -> None:
    code = (
        "import sys, rsub.cli\n"
        "for name in ('q', 'status', 'submit', 'wait', 'watch'):\n"
        "    rsub.cli.build_parser(name)\n"
        "    print(name, sorted(m for m in sys.modules if m in ('curses', '_curses', 'rsub.watchview', 'rsub.follow')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Building a parser is what every command does first; curses comes in only when rsub watch draws.
    assert result.stdout.splitlines() == ["q []", "status []", "submit []", "wait ['rsub.follow']",
                                          "watch ['rsub.follow']"]


def test_a_plain_submit_loads_only_the_jobsub_options() -> None:
    # `rsub submit job.sub` needs the jobsub option definitions for its parser, not the file:// builder.
    code = (
        "import sys, rsub.cli\n"
        "rsub.cli.build_parser('submit')\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(('rsub.jobsub', 'tarfile', 'dataclasses')))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "rsub.jobsub,rsub.jobsub.options"

"""rsub: the command line client of rsubd. This module is the parser and `main`; the commands are in rsub.commands.

Imports only the standard library and `rsub.wire`, so it starts in the time
Python itself takes. Exit codes: 0 ok, 1 error, 2 usage or bad request,
3 rsubd not running, 4 no such job, 5 submit description refused, 6 timed out,
7 the schedd failed, 8 a token is missing, expired or refused (a person must act),
9 a job needs attention (rsub wait), 10 rate limited: try again later.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from rsub import __version__
from rsub.connection import Failure
from rsub.wire.vocabulary import EXIT_USAGE

# argparse looks each of its own words up in gettext's catalogs (importing locale, and a dozen stats for .mo
# files that Python does not ship): 1.5 ms of every start. rsub speaks English; so does argparse, untranslated.
argparse._ = lambda message: message  # type: ignore[attr-defined]
argparse.ngettext = lambda singular, plural, n: singular if n == 1 else plural  # type: ignore[attr-defined]

# `rsub q` must start in little more than Python's own time: modules only some commands need
# (subprocess, shutil, jobsub) are imported where they are used, and typing only for the checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


EXIT_CODES = """\
exit codes:
  0  done
  1  error inside rsubd (see its log: rsub daemon log)
  2  usage error or malformed request
  3  rsubd is not running
  4  no such job in the ledger
  5  submit description refused (nothing was sent to the schedd)
  6  timed out (rsub wait --timeout)
  7  the schedd failed or refused
  8  a token is missing, expired or refused: a person must act
  9  rsub wait: some job needs attention (its output cannot be retrieved until you act)
 10  not now: rate limited (rsub token refresh within refresh_floor); try again later
 11  rsub wait: all final, and some job failed (its submit, spool or output was lost)
 12  rsub wait: all final, and some job was removed
 13  rsub wait: all final, and some job exited non-zero or was killed by a signal"""


MAIN_EXAMPLES = """\
examples:
  rsub submit job.sub && rsub wait 12
  rsub q --state running --since 2h
  rsub history --json | jq '.jobs[].id'
  rsub fetchlog 12.0@local --dest logs/
  rsub hold --constraint 'RequestMemory > 4000'
"""


# Each command and the module of rsub.commands that defines it, in the order of `rsub --help`. Only the
# module of the command about to run is imported: `rsub q` loads neither tarfile nor the jobsub builder.
MODULES = {"ping": "ping", "poke": "ping", "submit": "submit", "q": "status", "status": "status",
           "history": "status", "resubmit": "resubmit", "why": "why", "wait": "wait", "watch": "watch",
           "retrieve": "retrieve", "fetchlog": "fetchlog",
           "hold": "act", "release": "act", "rm": "act", "daemon": "daemon", "token": "token",
           "completion": "completion"}
COMMANDS = tuple(MODULES)
VALUED_OPTIONS = ("--socket", "--config")


def terminal_columns() -> int:
    """The width shutil.get_terminal_size gives: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return columns
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class RawFormatter(argparse.RawDescriptionHelpFormatter):
    """argparse's raw formatter, as wide, without importing shutil (and bz2, lzma) at every start for its width:
    argparse makes a formatter for each option it adds."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, terminal_columns() - 2 if width is None else width)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; given the command about to run, only its subparser (argparse builds each in ~2 ms)."""
    raw = RawFormatter
    p = argparse.ArgumentParser(
        prog="rsub", description="Submit HTCondor jobs through rsubd and follow them until their output is home.",
        epilog=MAIN_EXAMPLES + "\n" + EXIT_CODES, formatter_class=raw,
    )
    p.add_argument("--socket",
                   help="rsubd's socket (default: $RSUB_SOCKET, the config's socket, or the XDG runtime dir)")
    p.add_argument("--config", help="config file to read the socket path from")
    p.add_argument("--version", action="version", version=f"rsub {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, examples: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A subcommand whose help ends with its examples, one per line."""
        lines = "\n".join(f"  {e}" for e in examples.split("\n"))
        description = help_text[:1].upper() + help_text[1:] + "."
        return sub.add_parser(name, help=help_text, description=description, formatter_class=raw,
                              epilog=f"examples:\n{lines}\n\nexit codes: see rsub --help", **kwargs)

    for name in COMMANDS:
        if command is None or command == name:
            importlib.import_module(f"rsub.commands.{MODULES[name]}").add_parser(name, add)
    if command in (None, "completion"):
        p.set_defaults(build_full_parser=build_parser)  # rsub.commands.completion reads every command's parser
    return p


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in argv, if it is a known one (else the full parser explains)."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in VALUED_OPTIONS:
            skip = True
        elif not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def unrecognized(command: str, extra: list[str]) -> str:
    """What rsub says of arguments its parser does not know: their names, and for submit the way around."""
    options = [a for a in extra if a.startswith("-")]
    if command == "submit" and options:
        return (f"rsub submit does not know {', '.join(options)} (neither an rsub option nor a jobsub_submit one "
                "that rsub takes); any submit command can be given with -l 'key = value' or -l '+Attr = value'")
    what = "option" if options else "argument"
    return f"rsub {command}: unrecognized {what}{'s' if len(extra) > 1 else ''} {' '.join(extra)} " \
        f"(see rsub {command} --help)"


EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell sees from coreutils whose reader went away (`rsub q | head -1`)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:  # what argparse would print, without building every command's parser first
        print(f"rsub {__version__}")
        return 0
    try:
        args, extra = build_parser(command_of(argv)).parse_known_args(argv)
        if extra:
            raise Failure(EXIT_USAGE, unrecognized(args.command, extra))
        code: int = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe can be caught, not at the interpreter's exit
        return code
    except Failure as e:
        print(f"rsub: {e.message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader is gone (head, less quit): stop quietly, as coreutils do. Whatever is still
        # buffered goes to /dev/null, so the exit's own flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE


if __name__ == "__main__":
    sys.exit(main())

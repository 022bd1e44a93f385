"""The jobsub_submit options of `rsub submit` (-N, -f, --tar, --memory, ...), as argparse reads them."""

from __future__ import annotations

import argparse


def count(text: str) -> int:
    """A count of at least 1 (argparse names the type "count" in its error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    """The jobsub_submit options of `rsub submit`; they apply to file:// submits only."""
    g = parser.add_argument_group("jobsub-style options (with file:///path/to/script; they go before it)")
    g.add_argument("-N", dest="count", type=count, metavar="COUNT",
                   help="submit COUNT copies of the job ($PROCESS is 0..COUNT-1)")
    g.add_argument("-f", dest="input_files", action="append", default=[], metavar="FILE",
                   help="an input file, found by the job in $CONDOR_DIR_INPUT (repeatable)")
    g.add_argument("--tar", "--tar-file-name", "--tar_file_name", dest="tars", action="append", default=[],
                   metavar="DIR|TARBALL", help="a directory (tarred up now) or a tarball, unpacked for the job; "
                   "found through $INPUT_TAR_FILE, $INPUT_TAR_FILE_1, ... (repeatable)")
    g.add_argument("--memory", metavar="SIZE", help="request_memory, e.g. 2000MB or 2GB (no unit: MB)")
    g.add_argument("--disk", metavar="SIZE", help="request_disk, e.g. 500MB or 10GB (no unit: KB)")
    g.add_argument("--cpus", "--cpu", dest="cpus", type=count, metavar="N", help="request_cpus")
    g.add_argument("--expected-lifetime", dest="lifetime", metavar="TIME",
                   help="short (3h), medium (8h), long (23.7h) or a duration like 3h, 45m, 3600s (no unit: s)")
    g.add_argument("-e", "--environment", dest="environment", action="append", default=[], metavar="VAR[=VALUE]",
                   help="pass VAR to the job with its value here, or with VALUE (repeatable)")
    g.add_argument("-l", "--lines", dest="lines", action="append", default=[], metavar="LINE",
                   help="an extra submit description line, put before 'queue' (repeatable)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the submit description as it would be sent (any submit, after every check) and exit;"
                        " nothing is written or sent")


def options_used(args: argparse.Namespace) -> list[str]:
    """The jobsub-style options given, by name: a plain submit file cannot take them."""
    given = {"-N": args.count is not None, "-f": bool(args.input_files), "--tar": bool(args.tars),
             "--memory": args.memory is not None, "--disk": args.disk is not None, "--cpus": args.cpus is not None,
             "--expected-lifetime": args.lifetime is not None, "-e": bool(args.environment),
             "-l": bool(args.lines)}
    return [name for name, used in given.items() if used]

"""The jobsub_submit options of `rsub submit` (-N, -f, --tar, --memory, ...), as argparse reads them."""

from __future__ import annotations

import argparse

from rsub.connection import Failure
from rsub.wire.vocabulary import EXIT_USAGE

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: `rsub submit job.sub` builds its parser from this module
    from collections.abc import Sequence
    from typing import Any

# jobsub_lite's submit options that rsub does not support, and what to do instead. Each says so by name,
# never with the bare usage line: (the option's names, whether it takes a value, the advice).
UNSUPPORTED: tuple[tuple[tuple[str, ...], bool, str], ...] = (
    (("--blacklist",), True, "keep the jobs off those sites with -c '!stringListMember(GLIDEIN_Site, \"A,B\")'"),
    (("--OS",), True, "choose the OS with --singularity-image IMAGE, or -l '+DesiredOS = \"SL7\"'"),
    (("--overwrite-condor-requirements", "--overwrite_condor_requirements"), True,
     "give the whole expression with -l 'requirements = EXPR'"),
    (("--subgroup",), True, "set the attribute your pool reads with -l '+Attr = \"VALUE\"'"),
    (("-d",), True, "write the output into the job's working directory: it comes back into the output directory"),
    (("--dataset-definition", "--dataset_definition", "--dataset"), True, "rsub submits no SAM DAGs"),
    (("--generate-email-summary",), False, "rsub submits no DAGs; see --mail_always and --email-to"),
    (("-n", "--no_submit", "--no-submit"), False, "use --dry-run: it prints the description and sends nothing"),
    (("--debug",), False, "use --dry-run to see the submit description"),
    (("--tarball-exclusion-file",), True, "tar the directory yourself and give the tarball to --tar"),
    (("--use-cvmfs-dropbox", "--use-pnfs-dropbox"), False, "rsub ships -f and --tar inputs with the job itself"),
    (("--devserver",), False, "name the schedd with --schedd NAME"),
    (("-r", "-i", "-t", "--cmtconfig"), True, "set up the release in your script"),
)


class _Unsupported(argparse.Action):
    """An option of jobsub_submit that rsub does not take: stop with its name and what to do instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, advice: str = "", **kwargs: Any) -> None:
        self.advice = advice
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        raise Failure(EXIT_USAGE, f"rsub submit does not support jobsub_submit's {option_string}: {self.advice}")


def count(text: str) -> int:
    """A count of at least 1 (argparse names the type "count" in its error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


class _OptionalCount(argparse.Action):
    """`--gpu [N]`: a count if the next argument is one; else 1, and that argument stays where it was.

    argparse gives an optional value whatever follows (`--gpu file:///run.sh`); a value that is not a
    count is kept in `displaced`, and `rsub submit` puts it back in front of its target.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is not None and not (isinstance(values, str) and values.isascii() and values.isdigit()):
            namespace.displaced = [*getattr(namespace, "displaced", []), values]
            values = None
        try:
            setattr(namespace, self.dest, 1 if values is None else count(values))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None


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
    g.add_argument("-Q", "--mail_never", "--mail-never", dest="mail", action="store_const", const="never",
                   help="notification = Never: no mail about the job")
    g.add_argument("--mail_on_error", "--mail-on-error", dest="mail", action="store_const", const="on_error",
                   help="notification = Error: mail if the job fails")
    g.add_argument("--mail_always", "--mail-always", dest="mail", action="store_const", const="always",
                   help="notification = Always: mail when the job ends")
    g.add_argument("--email-to", "--email_to", dest="email_to", metavar="ADDR", help="notify_user: where mail goes")
    image = g.add_mutually_exclusive_group()
    image.add_argument("--singularity-image", "--apptainer-image", dest="image", metavar="IMAGE",
                       help="run the job in this image (default: the [jobsub] singularity_image, if set)")
    image.add_argument("--no-singularity", "--no-apptainer", dest="no_singularity", action="store_true",
                       help="no image, not even the [jobsub] default")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--onsite", "--onsite-only", dest="usage_model", action="store_const", const="onsite",
                       help="only onsite resources (the usage model is the [jobsub] onsite value)")
    where.add_argument("--offsite", "--offsite-only", dest="usage_model", action="store_const", const="offsite",
                       help="only offsite resources (the [jobsub] offsite value)")
    where.add_argument("--site", dest="sites", metavar="SITES", help="only these sites (comma-separated)")
    g.add_argument("--resource-provides", dest="resources", action="append", default=[], metavar="KEY=VALUE",
                   help='+DESIRED_KEY = "VALUE" (the prefix is the [jobsub] resource_prefix; repeatable)')
    g.add_argument("-c", "--append_condor_requirements", "--append-condor-requirements", dest="requirements",
                   action="append", default=[], metavar="EXPR", help="ANDed into requirements (repeatable)")
    g.add_argument("--timeout", metavar="TIME",
                   help="remove the job once it has run this long: 90s, 30m, 2h, 1d (no unit: s)")
    g.add_argument("-L", "--log-file", "--log_file", dest="log_file", metavar="FILE",
                   help="the job event log (log = FILE); a relative name lands in the output directory")
    g.add_argument("--gpu", "--gpus", dest="gpus", action=_OptionalCount, nargs="?", metavar="N",
                   help="request_gpus (default 1)")
    g.add_argument("--need-scope", dest="need_scopes", action="append", default=[], metavar="SCOPE",
                   help="ask the token profile for a token with this scope too, for this submit and its jobs "
                        "(repeatable)")
    g.add_argument("--need-storage-modify", dest="need_modify", action="append", default=[], metavar="PATH",
                   help="... with storage.modify:PATH (within what the profile's token allows; repeatable)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the submit description as it would be sent (any submit, after every check) and exit;"
                        " nothing is written or sent")


def options_used(args: argparse.Namespace) -> list[str]:
    """The jobsub-style options given, by name: a plain submit file cannot take them."""
    given = {"-N": args.count is not None, "-f": bool(args.input_files), "--tar": bool(args.tars),
             "--memory": args.memory is not None, "--disk": args.disk is not None, "--cpus": args.cpus is not None,
             "--expected-lifetime": args.lifetime is not None, "-e": bool(args.environment),
             "-l": bool(args.lines), "--mail_*": args.mail is not None, "--email-to": args.email_to is not None,
             "--singularity-image": args.image is not None, "--no-singularity": args.no_singularity,
             "--onsite/--offsite": args.usage_model is not None, "--site": args.sites is not None,
             "--resource-provides": bool(args.resources), "-c": bool(args.requirements),
             "--timeout": args.timeout is not None, "-L": args.log_file is not None, "--gpu": args.gpus is not None,
             "--need-scope": bool(args.need_scopes), "--need-storage-modify": bool(args.need_modify)}
    return [name for name, used in given.items() if used]


def unsupported(parser: argparse.ArgumentParser) -> None:
    """jobsub_submit's options that rsub does not take, each refused by name with what to do instead."""
    for names, valued, advice in UNSUPPORTED:
        parser.add_argument(*names, action=_Unsupported, advice=advice, nargs="?" if valued else 0,
                            help=argparse.SUPPRESS)

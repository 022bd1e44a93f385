"""`rsub submit [options] file:///path/to/script [ARG ...]`: build the submit description the way jobsub_submit does.

The options and their meaning follow jobsub_lite (`-N`, `-f`, `--tar`, `--memory`,
`--disk`, `--cpus`, `--expected-lifetime`, `-e`, `-l`, and those that are submit commands: `--mail_*`,
`--email-to`, `--singularity-image`, `--onsite`/`--offsite`/`--site`, `--resource-provides`, `-c`,
`--timeout`, `-L`, `--gpu`; `--need-scope` and `--need-storage-modify` ask rsubd for a token of the
submit's own, which the job finds in `$BEARER_TOKEN_FILE`). Each submit gets a fresh
directory of its own under rsub's state directory:

    <state>/jobs/<UTC time>-<script>-<id>/
        job.sub                the submit description, as sent to rsubd
        rsub_wrapper.sh        the job's executable: lays out the inputs, then runs the script
        <DIR>.tar.gz           one per `--tar DIR`, made at submit time
        <cluster>.log          the job event log (a real schedd writes it)
        <cluster>.<proc>.out   stdout, and .err stderr, of each job once retrieved

The wrapper gives the script what jobsub's wrapper gives it: `$CONDOR_DIR_INPUT`
holding the `-f` files; each tarball moved into a directory of its own and unpacked
there, its path in `$INPUT_TAR_FILE` (then `$INPUT_TAR_FILE_1`, ...) and that directory
in `$INPUT_TAR_DIR_LOCAL` (then `$INPUT_TAR_DIR_LOCAL_1`, ...); `$CLUSTER` and `$PROCESS`.

Standard library only: the client must start fast. So the package loads its modules
on first use (PEP 562): `rsub submit job.sub` builds its parser from `options` alone,
and only a `file://` submit loads the builder (tarfile, dataclasses, the wrapper text).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # the names, for the checker; at run time each is loaded on first use (__getattr__)
    from typing import Any

    from rsub.jobsub.extras import Extras, build_extras
    from rsub.jobsub.options import add_options, count, options_used, unsupported
    from rsub.jobsub.plan import (
        INPUT_DIR,
        LIFETIMES,
        BuildError,
        Plan,
        TarInput,
        build,
        disk_kb,
        lifetime_seconds,
        memory_mb,
    )
    from rsub.jobsub.render import SUBMIT_FILE, UNWIND, describe, quote_arguments, quote_environment, tar_path, wrapper
    from rsub.jobsub.scopes import need_scopes
    from rsub.jobsub.submitdir import (
        PROGRESS_THRESHOLD,
        Progress,
        human_size,
        input_bytes,
        make_private,
        materialize,
        submit_dir,
    )
    from rsub.wire.vocabulary import WRAPPER

__all__ = [
    "INPUT_DIR", "LIFETIMES", "PROGRESS_THRESHOLD", "SUBMIT_FILE", "UNWIND", "WRAPPER", "BuildError", "Extras",
    "Plan", "Progress", "TarInput", "add_options", "build", "build_extras", "count", "describe", "disk_kb",
    "human_size", "input_bytes", "lifetime_seconds", "make_private", "materialize", "memory_mb", "need_scopes",
    "options_used", "quote_arguments", "quote_environment", "submit_dir", "tar_path", "unsupported", "wrapper",
]

# Each name and the module that defines it.
_WHERE = {
    **dict.fromkeys(("Extras", "build_extras"), "rsub.jobsub.extras"),
    **dict.fromkeys(("add_options", "count", "options_used", "unsupported"), "rsub.jobsub.options"),
    **dict.fromkeys(("INPUT_DIR", "LIFETIMES", "BuildError", "Plan", "TarInput", "build", "disk_kb",
                     "lifetime_seconds", "memory_mb"), "rsub.jobsub.plan"),
    **dict.fromkeys(("SUBMIT_FILE", "UNWIND", "describe", "quote_arguments", "quote_environment", "tar_path",
                     "wrapper"), "rsub.jobsub.render"),
    **dict.fromkeys(("PROGRESS_THRESHOLD", "Progress", "human_size", "input_bytes", "make_private", "materialize",
                     "submit_dir"),
                    "rsub.jobsub.submitdir"),
    "need_scopes": "rsub.jobsub.scopes",
    "WRAPPER": "rsub.wire.vocabulary",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rsub.jobsub' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use finds it at once
    return value

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

Standard library only: the client must start fast.
"""

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
from rsub.jobsub.submitdir import PROGRESS_THRESHOLD, Progress, human_size, input_bytes, materialize, submit_dir
from rsub.wire.vocabulary import WRAPPER

__all__ = [
    "INPUT_DIR", "LIFETIMES", "PROGRESS_THRESHOLD", "SUBMIT_FILE", "UNWIND", "WRAPPER", "BuildError", "Extras",
    "Plan", "Progress", "TarInput", "add_options", "build", "build_extras", "count", "describe", "disk_kb",
    "human_size", "input_bytes", "lifetime_seconds", "materialize", "memory_mb", "need_scopes", "options_used",
    "quote_arguments", "quote_environment", "submit_dir", "tar_path", "unsupported", "wrapper",
]

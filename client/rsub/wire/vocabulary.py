"""The words rsubd and rsub share: job and cluster states, error and exit codes, the JSON shape version.

Defined once, here; `rsub.wire` imports nothing else of the project, and rsubd
imports nothing else of the client. The states and codes are plain strings, named
in classes that are namespaces, not enums: building three enum classes cost every
`rsub` start 1.7 ms, and nothing needs more of them than their values.
"""

from __future__ import annotations


def _values(names: type) -> tuple[str, ...]:
    """A namespace class's values, in the order written."""
    return tuple(v for k, v in vars(names).items() if k.isupper())


class JobState:
    """rsub's state of one job, in the order a job goes through them (`rsub q --state`)."""

    SUBMITTING = "submitting"
    SPOOLING = "spooling"  # held with HoldReasonCode 16 until the inputs are uploaded
    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    COMPLETED = "completed"  # output not yet home
    RETRIEVED = "retrieved"
    REMOVED = "removed"
    FAILED = "failed"


STATES: tuple[str, ...] = _values(JobState)
ACTIVE_STATES: tuple[str, ...] = (JobState.SUBMITTING, JobState.SPOOLING, JobState.IDLE, JobState.RUNNING,
                                  JobState.HELD, JobState.COMPLETED)
FINAL_STATES: tuple[str, ...] = (JobState.RETRIEVED, JobState.REMOVED, JobState.FAILED)


class ClusterState:
    """Where a submit stands in the ledger (docs/protocol.md)."""

    SUBMITTING = "submitting"  # intent recorded; the schedd may not have heard of it
    SPOOLING = "spooling"  # the schedd made the cluster; inputs being uploaded
    SUBMITTED = "submitted"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # never reached the schedd; a retry may submit it again
    REPLACING = "replacing"  # an unspooled cluster being removed, to be submitted again
    REPLACED = "replaced"


class ErrorCode:
    """Error codes in replies; each maps to a client exit code, distinct but for the generic 1.

    INTERNAL and VERSION both exit 1 (EXIT_ERROR), as the client documents.
    """

    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    BAD_SUBMIT = "bad_submit"
    SCHEDD = "schedd_error"
    TIMEOUT = "timeout"
    INTERNAL = "internal"
    VERSION = "version_mismatch"
    TOKEN = "token"


class RequestError(Exception):
    """A request that cannot be done: raised by rsubd's handlers, answered by its transport as an error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# The version of the JSON that `rsub ... --json` prints for each reading command (see the README).
JSON_VERSION = 1

# Client exit codes (documented in the README).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_NOT_FOUND = 4
EXIT_BAD_SUBMIT = 5
EXIT_TIMEOUT = 6
EXIT_SCHEDD = 7
EXIT_TOKEN = 8
EXIT_ATTENTION = 9  # rsub wait: every job is final or needs a person (its output cannot be written)
EXIT_LATER = 10  # not now: rsubd declined a rate-limited request (rsub token refresh); try again later
# rsub wait: every job is final, and not every one ended well (the first that applies, in this order)
EXIT_FAILED = 11  # some job failed: its submit or spool failed, or its output was lost
EXIT_REMOVED = 12  # some job was removed
EXIT_NONZERO = 13  # some job exited with a code other than 0, or was killed by a signal
EXIT_BY_CODE = {
    ErrorCode.BAD_REQUEST: EXIT_USAGE,
    ErrorCode.NOT_FOUND: EXIT_NOT_FOUND,
    ErrorCode.BAD_SUBMIT: EXIT_BAD_SUBMIT,
    ErrorCode.SCHEDD: EXIT_SCHEDD,
    ErrorCode.TIMEOUT: EXIT_TIMEOUT,
    ErrorCode.INTERNAL: EXIT_ERROR,
    ErrorCode.VERSION: EXIT_ERROR,
    ErrorCode.TOKEN: EXIT_TOKEN,
}

def iso(ts: float | None) -> str | None:
    """A time as every reply prints it: UTC, seconds precision, with `Z` (2026-12-01T09:00:00Z)."""
    if ts is None:
        return None
    import time  # here, not at the top: the client imports this module at every start

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# The executable of a job `rsub submit file://` builds: views show the user's script instead.
WRAPPER = "rsub_wrapper.sh"
# The token of a submit's own (--need-scope), as the job finds it in its scratch directory.
JOB_TOKEN = "rsub_bearer_token"

"""HTCondorException messages to `ErrorKind`: what went wrong at the schedd, from the bindings' own words."""

from __future__ import annotations

from rsubd.backends.schedd import ErrorKind

# Messages of HTCondorException, in the order they are tested, and what they mean.
ERROR_PATTERNS: tuple[tuple[str, ErrorKind], ...] = (
    # A frozen schedd makes HTCondor's own client give up first: "SECMAN:2007:Failed to end classad
    # message" / "... did not respond in a reasonable time" (HTCondor 25.13). Before AUTHENTICATE: the
    # same message may go on to name a failed authentication that never had its chance.
    ("SECMAN:2007", ErrorKind.TIMEOUT),
    ("did not respond in a reasonable time", ErrorKind.TIMEOUT),
    ("Failed communication with collector", ErrorKind.COLLECTOR_UNREACHABLE),
    ("AUTHENTICATE", ErrorKind.AUTHENTICATION),
    ("Failed to authenticate", ErrorKind.AUTHENTICATION),
    ("DENIED", ErrorKind.PERMISSION),
    ("Failed to start command", ErrorKind.AUTHENTICATION),
    ("Failed to create new User record", ErrorKind.PERMISSION),
    ("immutable attribute", ErrorKind.PERMISSION),
    ("nonexistent job", ErrorKind.NOT_FOUND),
    ("spoolJobFiles", ErrorKind.INPUT_MISSING),
    ("receiveJobSandbox:7003", ErrorKind.TRANSFER),
    ("CEDAR:6001", ErrorKind.UNREACHABLE),
    ("Failed to connect", ErrorKind.UNREACHABLE),
    ("Unable to locate", ErrorKind.UNREACHABLE),
    ("Error when performing action on the schedd", ErrorKind.UNREACHABLE),  # ACT_FAILED, below
    ("Failed to create job ad", ErrorKind.REJECTED),
    ("Failed to create new cluster", ErrorKind.REJECTED),
    ("invalid Queue statement", ErrorKind.REJECTED),
    ("Unable to edit jobs", ErrorKind.INVALID),
    ("invalid constraint", ErrorKind.INVALID),
    ("job_spec", ErrorKind.INVALID),
)


# HTCondor's own client gives up on a schedd that accepted the connection and never answered after 20 s
# (measured with the 25.14 wheel against a silent loopback listener). act() then says only "Error when
# performing action on the schedd.", the same words as for a refused connection, which fails at once: a
# failure that took this long was a silence, not a refusal.
SILENT_AFTER = 15.0
ACT_FAILED = "Error when performing action on the schedd"


def classify(message: str, *, is_value_error: bool = False, elapsed: float = 0.0) -> ErrorKind:
    """The kind of a failed binding call, from its exception's message and how long the call took."""
    if is_value_error:
        return ErrorKind.REJECTED if "Queue statement" in message else ErrorKind.INVALID
    for needle, kind in ERROR_PATTERNS:
        if needle in message:
            if kind is ErrorKind.INPUT_MISSING and "No such file" not in message:
                return ErrorKind.TRANSFER
            if needle == ACT_FAILED and elapsed >= SILENT_AFTER:
                return ErrorKind.TIMEOUT  # a refusal fails at once; "Failed to connect" after 20 s stays unreachable
            return kind
    return ErrorKind.OTHER


def explain(message: str, elapsed: float) -> tuple[ErrorKind, str]:
    """The kind of a failed binding call and its message, saying so when a silence is what failed it."""
    kind = classify(message, elapsed=elapsed)
    text = message or "the schedd gave no message"
    if kind is ErrorKind.TIMEOUT and ACT_FAILED in message and classify(message) is ErrorKind.UNREACHABLE:
        text += (f" (after {elapsed:.0f} s: the schedd took the connection and never answered;"
                 " it may be frozen or overloaded)")
    return kind, text

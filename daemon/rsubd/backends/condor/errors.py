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
    ("Error when performing action on the schedd", ErrorKind.UNREACHABLE),
    ("Failed to create job ad", ErrorKind.REJECTED),
    ("Failed to create new cluster", ErrorKind.REJECTED),
    ("invalid Queue statement", ErrorKind.REJECTED),
    ("Unable to edit jobs", ErrorKind.INVALID),
    ("invalid constraint", ErrorKind.INVALID),
    ("job_spec", ErrorKind.INVALID),
)


def classify(message: str, *, is_value_error: bool = False) -> ErrorKind:
    """The kind of a failed binding call, from its exception's message."""
    if is_value_error:
        return ErrorKind.REJECTED if "Queue statement" in message else ErrorKind.INVALID
    for needle, kind in ERROR_PATTERNS:
        if needle in message:
            if kind is ErrorKind.INPUT_MISSING and "No such file" not in message:
                return ErrorKind.TRANSFER
            return kind
    return ErrorKind.OTHER

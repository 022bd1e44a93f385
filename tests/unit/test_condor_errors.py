"""HTCondorException messages (as recorded from a real HTCondor 25 schedd) map to actionable kinds."""

from __future__ import annotations

import pytest

from rsubd.backends.condor.errors import classify, explain
from rsubd.backends.schedd import ErrorKind


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        ("Failed to fetch ads from schedd, errmsg=CEDAR:6001:Failed to connect to <127.0.0.1:1>", ErrorKind.UNREACHABLE),
        ("Failed to connect to schedd, errmsg=CEDAR:6001:Failed to connect to <127.0.0.1:1>", ErrorKind.UNREACHABLE),
        ("Error when performing action on the schedd.", ErrorKind.UNREACHABLE),
        ("DCSchedd::receiveJobSandbox:6001:Failed to connect to schedd", ErrorKind.UNREACHABLE),
        ("Unable to locate local daemon.", ErrorKind.UNREACHABLE),
        # A frozen schedd, HTCondor 25.13 (issue 13, item 5): HTCondor's client times out first.
        ("Failed to fetch ads from schedd, errmsg=SECMAN:2007:Failed to end classad message.", ErrorKind.TIMEOUT),
        ("Failed to connect to schedd, errmsg=SECMAN:2007:Failed to receive post-auth ClassAd: the schedd did not"
         " respond in a reasonable time", ErrorKind.TIMEOUT),
        ("Failed communication with collector.", ErrorKind.COLLECTOR_UNREACHABLE),
        ("Failed to connect to schedd, errmsg=AUTHENTICATE:1003:Failed to authenticate with any method|"
         "AUTHENTICATE:1004:Failed to authenticate using IDTOKENS", ErrorKind.AUTHENTICATION),
        ('Failed to connect to schedd, errmsg=SECMAN:2010:Received "DENIED" from server for user carol@localpool '
         "using method IDTOKENS.", ErrorKind.PERMISSION),
        ("Failed to create new cluster.SCHEDD:13:Failed to create new User record for condor@localpool.",
         ErrorKind.PERMISSION),
        ("Failed to create job ad, errmsg=Submit:-1:I don't know about the 'bogus' universe.\n", ErrorKind.REJECTED),
        ("DCSchedd::spoolJobFiles:7002:File transfer failed for target job 27.0: TOOL at 127.0.0.1 failed to send "
         "file(s) to <127.0.0.1:9619>: |Error: 1 total failures: first failure: reading from file /x/does_not_exist.txt: "
         "(errno 2) No such file or directory; SCHEDD failed to receive file(s) from <127.0.0.1:33021>",
         ErrorKind.INPUT_MISSING),
        ("DCSchedd::receiveJobSandbox:7003:File transfer failed for target job 26.0: SCHEDD at 127.0.0.1 failed",
         ErrorKind.TRANSFER),
        ("Unable to commit transaction:Modifying attribute Foo in nonexistent job 17.7", ErrorKind.NOT_FOUND),
        ("Unable to commit transaction:Attempt to edit immutable attribute Owner in job 44.0", ErrorKind.PERMISSION),
        ("Unable to edit jobs matching constraint", ErrorKind.INVALID),
        ("something nobody has seen", ErrorKind.OTHER),
    ],
)
def test_classify_htcondor_messages(message: str, kind: ErrorKind) -> None:
    assert classify(message) is kind


def test_value_errors_from_the_bindings() -> None:
    assert classify("The job_spec string must be a clusterID[.procID] or the string form of an ExprTree.",
                    is_value_error=True) is ErrorKind.INVALID
    assert classify("invalid Queue statement, errmsg=can't open file items.txt", is_value_error=True) is ErrorKind.REJECTED


def test_an_action_the_schedd_never_answered_is_a_timeout_not_a_refusal() -> None:
    # act() has one message for both; measured with the 25.14 wheel: 0.0 s refused, 20.0 s silent.
    generic = "Error when performing action on the schedd."
    assert explain(generic, 0.1) == (ErrorKind.UNREACHABLE, generic)
    kind, text = explain(generic, 20.0)
    assert kind is ErrorKind.TIMEOUT
    assert text.startswith(generic) and "after 20 s" in text and "never answered" in text
    # A connection that failed slowly (a host dropping packets) failed before anything was sent: still unreachable.
    slow = "Failed to connect to schedd, errmsg=CEDAR:6001:Failed to connect to <10.0.0.9:9618>"
    assert explain(slow, 21.0) == (ErrorKind.UNREACHABLE, slow)
    # A message that already names its kind keeps it, however long the call took.
    assert explain("Failed to connect to schedd, errmsg=AUTHENTICATE:1003:x", 30.0)[0] is ErrorKind.AUTHENTICATION
    assert explain("", 0.0) == (ErrorKind.OTHER, "the schedd gave no message")

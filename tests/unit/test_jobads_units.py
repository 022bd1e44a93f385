"""The embedded scheduler reads request_memory and request_disk with units as condor_submit does."""

from __future__ import annotations

import pytest

from rsubd.backends.local.ads import Expr
from rsubd.backends.local.jobads import proc_ad
from rsubd.backends.schedd import ScheddError

# The first four and "2G" for disk are what `condor_submit -dry-run` (HTCondor 25.13) wrote (issue 13,
# item 7); the others follow the same rule.
CASES = [
    ("request_memory", "1GB", "RequestMemory", 1024),
    ("request_memory", "1G", "RequestMemory", 1024),
    ("request_memory", "1024MB", "RequestMemory", 1024),
    ("request_memory", "1 GB", "RequestMemory", 1024),
    ("request_memory", "2048", "RequestMemory", 2048),
    ("request_memory", "512m", "RequestMemory", 512),
    ("request_memory", "0.5G", "RequestMemory", 512),
    ("request_disk", "2G", "RequestDisk", 2097152),
    ("request_disk", "10 MB", "RequestDisk", 10240),
    ("request_disk", "4096", "RequestDisk", 4096),
    ("request_disk", "1T", "RequestDisk", 1073741824),
    # parse_int64_bytes (condor_utils/metric_units.cpp): a fraction counts to three digits, a leading
    # "." is a number, "Gb" is G, and the result is rounded up to the attribute's unit.
    ("request_memory", "1.0001G", "RequestMemory", 1024),
    ("request_memory", ".5G", "RequestMemory", 512),
    ("request_memory", "1Gb", "RequestMemory", 1024),
    ("request_memory", "1.5", "RequestMemory", 2),
    ("request_disk", "1.5M", "RequestDisk", 1536),
]


def ad_for(key: str, value: str) -> dict[str, object]:
    commands = {"executable": "/bin/true", key: value}
    return proc_ad(commands, cluster=1, proc=0, cwd="/tmp", owner="alice", qdate=0, spool_iwd="/tmp/spool")


@pytest.mark.parametrize(("key", "value", "attr", "expected"), CASES)
def test_sizes_with_units_are_stored_in_the_attributes_own_unit(key: str, value: str, attr: str,
                                                               expected: int) -> None:
    ad = ad_for(key, value)
    assert ad[attr] == expected and type(ad[attr]) is int


def test_an_expression_stays_an_expression() -> None:
    ad = ad_for("request_memory", "ifThenElse(MemoryUsage > 100, 2048, 1024)")
    assert isinstance(ad["RequestMemory"], Expr) and ad["RequestMemory"].text.startswith("ifThenElse")


@pytest.mark.parametrize("value", ["1B", "100b", "1KiB"])
def test_a_unit_condor_submit_does_not_know_is_a_bad_expression(value: str) -> None:
    # parse_int64_bytes knows K, M, G and T only; the rest goes to the ClassAd parser, which refuses it.
    with pytest.raises(ScheddError, match="Parse error in expression"):
        ad_for("request_memory", value)


def test_an_empty_command_is_one_not_given_and_an_empty_attribute_is_undefined() -> None:
    # submit_utils.cpp: submit_param() returns NULL for a value that expands to nothing, and
    # SetForcedAttributes() assigns `undefined` for an empty My.X / +X.
    assert ad_for("request_memory", "")["RequestMemory"] == ad_for("universe", "vanilla")["RequestMemory"]
    assert ad_for("request_disk", " ")["RequestDisk"] == ad_for("universe", "vanilla")["RequestDisk"]
    for key in ("My.Later", "+Later"):
        ad = ad_for(key, "")
        assert "Later" in ad and ad["Later"] is None

"""Constraints are checked with HTCondor's own ClassAd parser in rsubd, before any schedd sees them."""

from __future__ import annotations

import pytest

from rsubd.backends.classads import check_expression


# The malformed constraints of the reference run (12_errors_constraint_unreachable): a real schedd
# answered the query with only "Failed to fetch ads from schedd, errmsg=".
@pytest.mark.parametrize("text", ["JobStatus ==", "ClusterId == (", "ClusterId ===", "x = 3", "JobStatus == 5 junk"])
def test_what_no_schedd_could_parse_is_refused_with_the_parsers_words(text: str) -> None:
    with pytest.raises(ValueError, match="the ClassAd parser says: Unable to parse"):
        check_expression(text)


@pytest.mark.parametrize("text", ["JobStatus == 5", "RequestMemory > 4000 && Owner =?= \"alice\"", "true",
                                  "regexp(\"^run_\", Cmd)", "ProcId >= 0"])
def test_well_formed_constraints_pass(text: str) -> None:
    check_expression(text)

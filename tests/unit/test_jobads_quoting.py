"""HTCondor's new argument and environment syntax, as the embedded scheduler reads it."""

from __future__ import annotations

import pytest

from rsubd.backends.local import jobads


@pytest.mark.parametrize(("text", "argv"), [
    ("a b  c", ["a", "b", "c"]),
    ("'two words' x", ["two words", "x"]),
    ("'it''s'", ["it's"]),
    ('say "hi"', ["say", '"hi"']),  # a double quote is an ordinary character in the ad
    ("'' x", ["", "x"]),
    (r"back\slash", [r"back\slash"]),
])
def test_v2_arguments_split_as_htcondor_does(text: str, argv: list[str]) -> None:
    assert jobads.split_v2(text) == argv


def test_arguments_and_environment_from_a_submit_description() -> None:
    assert jobads.split_arguments({"Arguments": "'it''s' 'a b' \"q\""}) == ["it's", "a b", '"q"']
    assert jobads.parse_environment("A=1 B='two words' C='it''s' D=\"x\"") == {
        "A": "1", "B": "two words", "C": "it's", "D": '"x"'}

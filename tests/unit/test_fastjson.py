"""rsub.wire.fastjson: the json package's own C encoder and scanner, without importing json at rsub's start."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import pytest

from rsub.wire import fastjson

VALUES: list[Any] = [
    {"v": 1, "id": "ab12", "kind": "status", "ids": ["12.0@local", "é", "漢字", "\x00\n\t\"\\", "\ud83d"],
     "limit": 1000, "since": 7200.5, "older_than": None, "active": True, "brief": False, "clusters": [1, 2**40]},
    [], {}, "", 0, -1, 1e-7, 1.5e300, 0.1, True, False, None, [[[]], {"a": {"b": [None]}}],
]


@pytest.mark.parametrize("value", VALUES)
def test_dumps_and_loads_are_the_json_packages(value: Any) -> None:
    text = fastjson.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert fastjson.loads(text) == json.loads(text) and fastjson.loads(f" \n{text}\r\n") == json.loads(text)


@pytest.mark.parametrize("text", ["", " ", "{", '{"a": 1} x', "[1,]", "'a'", '"\\ud83d', "\x00"])
def test_loads_refuses_what_is_not_one_json_value(text: str) -> None:
    with pytest.raises(ValueError):
        fastjson.loads(text)


def test_dumps_refuses_what_json_refuses_and_goes_on() -> None:
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(ValueError):
        fastjson.dumps({"a": circular})
    with pytest.raises(TypeError):
        fastjson.dumps({"a": object()})
    assert fastjson.dumps({"a": [1]}) == '{"a":[1]}'  # nothing left behind by the failed calls


def test_a_view_of_rsub_imports_no_json_package() -> None:
    """What the module is for: `rsub q` (cli, the status command, the table) without `import json`."""
    code = ("import sys; from rsub import cli; cli.build_parser('q'); import rsub.views, rsub.connection;"
            " print('json' in sys.modules, 'locale' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_loads_reads_nan_and_infinity_as_json_loads_does() -> None:
    # rsubd's encoder may write them (a usage figure from an ad); the client read replies so before fastjson.
    value = fastjson.loads('{"a": NaN, "b": [Infinity, -Infinity]}')
    assert math.isnan(value["a"]) and value["b"] == [math.inf, -math.inf]

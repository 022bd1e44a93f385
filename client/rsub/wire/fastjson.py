"""JSON for the socket, through the json package's own C encoder and scanner (`_json`) without importing it.

`import json` compiles the package's regular expressions at every start of a
process (2 ms of every `rsub q`, whose whole budget beside Python's own start is
about 25 ms); the frames need none of them. `dumps` is what `json.dumps(obj,
separators=(",", ":"))` makes (the same C encoder, ASCII-escaped, floats by
`float.__repr__`); `loads` is `json.loads` of one frame (the same C scanner,
strict, NaN and Infinity refused as the protocol does). Where `_json` is missing
(an interpreter without the accelerator), both fall back to the json package.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from typing import Any

try:
    import _json
except ImportError:  # pragma: no cover - CPython has it
    _json = None  # type: ignore[assignment]

_WHITESPACE = " \t\n\r"


def _default(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class _Context:
    """What `_json.make_scanner` reads of its context: json.loads's defaults (NaN and Infinity read as floats,
    as the client read replies before; rsubd refuses them in requests)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = float  # "NaN", "Infinity", "-Infinity"


_scan = None if _json is None else _json.make_scanner(_Context())  # type: ignore[arg-type]


def dumps(obj: Any) -> str:
    """`json.dumps(obj, separators=(",", ":"))`; ValueError for a circular structure, TypeError for a non-JSON value."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(obj, separators=(",", ":"))
    # A new encoder each time: its markers (the circular check) are left behind by a failed call.
    encode = _json.make_encoder({}, _default, _json.encode_basestring_ascii, None, ":", ",", False, False, True)
    return "".join(encode(obj, 0))


def loads(text: str) -> Any:
    """One JSON value and nothing but whitespace around it; ValueError (json.JSONDecodeError or not) if not."""
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as e:
        raise ValueError(f"no JSON value at character {e.value}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after the JSON value at character {end}")
    return value

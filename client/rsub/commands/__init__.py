"""The subcommands: one module per command or small family, each with its `cmd_*` functions and the
`add_parser(name, add)` by which `rsub.cli` builds the parser of a command it is about to run."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    import argparse
    from typing import Any, Protocol

    class AddParser(Protocol):
        """`rsub.cli`'s helper: a subcommand whose help ends with its examples, one per line."""

        def __call__(self, name: str, help_text: str, examples: str, **kwargs: Any) -> argparse.ArgumentParser: ...

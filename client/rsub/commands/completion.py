"""`rsub completion bash|zsh`: print a shell completion script generated from the full parser."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing only for the checker: the client's start-up time is a feature
    from rsub.commands import AddParser


def cmd_completion(args: argparse.Namespace) -> int:
    from rsub import completion

    # Every command's parser: `rsub.cli` hands over its builder in the namespace, since a command
    # module never imports rsub.cli (which imports the command modules: that would be a circle).
    print(completion.script(args.shell, args.build_full_parser()), end="")
    return 0


def add_parser(name: str, add: AddParser) -> None:
    s = add("completion", "print a shell completion script for bash or zsh",
            "rsub completion bash > ~/.local/share/bash-completion/completions/rsub\n"
            "rsub completion zsh > ~/.zfunc/_rsub   # with fpath+=(~/.zfunc) before compinit in ~/.zshrc")
    s.add_argument("shell", choices=("bash", "zsh"))
    s.set_defaults(func=cmd_completion)

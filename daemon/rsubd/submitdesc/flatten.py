"""Several queue statements made into one, so that one submit makes one cluster on any schedd.

condor_submit reads a file with several queue statements as one cluster whose procs are numbered
on, each queue statement using the commands in force where it stands (HTCondor 25.13:
`arguments = a` / `queue 2` / `arguments = b` / `queue 1` gives procs 0, 1, 2 with a, a, b).
The bindings' `Submit` holds a single queue statement, so rsub writes the file as one: every
command whose value is the same for every proc stays a command, with that value; each other one
reads a queue variable, and one item per proc carries its values. rsub expands the macros per
proc, so $(Step), $(Row) and $(ItemIndex) keep the meaning they had in their own queue
statement, while what only the schedd knows ($(ClusterId), $ENV(), $INT() and the other
functions) is left for it. Items are separated by the ASCII unit separator, as the bindings do
for item data, so values may hold commas and blanks.
"""

from __future__ import annotations

from collections.abc import Sequence

from rsubd.submitdesc.expand import expand_queue
from rsubd.submitdesc.model import QueueSpec, SubmitDescription

PROC_VAR = "RsubProc"
VALUE_VAR = "RsubValue"


def flatten(sections: Sequence[tuple[Sequence[tuple[str, str]], QueueSpec]]) -> SubmitDescription:
    """One description making the procs of every (commands in force, queue statement) in order."""
    procs: list[dict[str, str]] = []
    for commands, queue in sections:
        procs += expand_queue(commands, queue, cluster=None, first_proc=len(procs))
    return one_queue(procs, range(len(procs)))


def one_queue(procs: Sequence[dict[str, str]], numbers: Sequence[int]) -> SubmitDescription:
    """One queue statement making these expanded procs: the commands equal for all stay commands, the
    others read queue variables; each item is one proc's number (`RsubProc`, from `numbers`) and values."""
    keys: dict[str, None] = {}
    for proc in procs:
        keys.update(dict.fromkeys(proc))
    fixed: list[tuple[str, str]] = []
    varying: list[tuple[str, list[str]]] = []
    for key in keys:
        values = [proc.get(key, "").strip() for proc in procs]
        if all(v == values[0] for v in values):
            fixed.append((key, values[0]))
        else:
            varying.append((key, values))
    names = (PROC_VAR, *(f"{VALUE_VAR}{n}" for n in range(1, len(varying) + 1)))
    commands = fixed + [(key, f"$({name})") for (key, _), name in zip(varying, names[1:], strict=True)]
    items = tuple((str(p), *(values[n] for _, values in varying)) for n, p in enumerate(numbers))
    return SubmitDescription(tuple(commands), QueueSpec(1, names, items))

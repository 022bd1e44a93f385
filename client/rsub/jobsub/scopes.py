"""`--need-scope` and `--need-storage-modify`: the extra scopes a submit asks its token for, read as jobsub_lite."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence

from rsub.jobsub.plan import BuildError

_SCOPE_RE = re.compile(r"[!-~]+")  # one word of printable ASCII: scopes are space separated
# The storage namespace starts after the mount point (jobsub_lite corrects this common mistake too).
_MOUNTS = ("/pnfs/", "/eos/")


def need_scopes(scopes: Sequence[str], modify: Sequence[str]) -> tuple[list[str], list[str]]:
    """The scopes to ask for (each `--need-scope`, then `storage.modify:PATH` per path), and notes to print."""
    out: list[str] = []
    notes: list[str] = []
    for scope in scopes:
        if not _SCOPE_RE.fullmatch(scope):
            raise BuildError(f"--need-scope {scope!r}: a scope is one word without blanks, like storage.create:/dune"
                             "/scratch/users/$USER (give --need-scope once for each)")
        out.append(scope)
    for path in modify:
        if not path.startswith("/") or not _SCOPE_RE.fullmatch(path):
            raise BuildError(f"--need-storage-modify {path!r}: an absolute path in the storage namespace, without "
                             "blanks, like /dune/scratch/users/$USER/out")
        path = posixpath.normpath(path)  # don't be fooled by /a/b/../../c
        if path.startswith(_MOUNTS):
            fixed = path[path.find("/", 1):]
            notes.append(f"--need-storage-modify {path}: the storage path starts after the mount point; "
                         f"asking for {fixed}")
            path = fixed
        out.append(f"storage.modify:{path}")
    return list(dict.fromkeys(out)), notes

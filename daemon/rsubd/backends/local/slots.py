"""The embedded scheduler's slots, as a pool's slot ads, and whether a job matches one.

Each of its `slots` offers this machine's memory, free disk (of the scheduler's own
directory) and cores, as a partitionable slot of a one-machine pool would. A job matches
a slot when its Requirements, and the resource requests a schedd adds to them
(`TARGET.Memory >= RequestMemory`, ...), evaluate to true (backends/matching.py): the
embedded scheduler starts only jobs that match, so a job asking for more than the machine
has stays idle, as it would in a pool, and `rsub why` can say why.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rsubd.backends import matching
from rsubd.backends.local.ads import Ad, Expr


def machine_slots(count: int, root: Path) -> list[Ad]:
    """The slot ads of this machine: `count` slots, each with all of its memory (MB), free disk (KiB) and cores."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    st = os.statvfs(root)
    disk = st.f_bavail * st.f_frsize // 1024
    cpus = os.cpu_count() or 1
    host = socket.gethostname()
    arch = platform.machine()
    arch = {"x86_64": "X86_64", "amd64": "X86_64"}.get(arch.lower(), arch)
    return [{"MyType": "Machine", "Name": f"slot{n}@{host}", "Machine": host, "Arch": arch, "OpSys": "LINUX",
             "Memory": memory, "TotalMemory": memory, "Disk": disk, "TotalDisk": disk, "Cpus": cpus, "TotalCpus": cpus,
             "HasFileTransfer": True, "State": "Unclaimed", "Activity": "Idle", "START": True,
             "SlotType": "Partitionable"}
            for n in range(1, count + 1)]


def plain(ad: Mapping[str, Any]) -> dict[str, Any]:
    """A queue ad for matching: each Expr as {"__expr__": text} (backends/matching.py)."""
    return {k: {"__expr__": v.text} if isinstance(v, Expr) else v for k, v in ad.items()}


def matches(job: Mapping[str, Any], slots: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some slot can run the job (its Requirements and requests)."""
    return matching.matches(plain(job), slots)

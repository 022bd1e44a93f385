"""The real HTCondor backend."""

from rsubd.backends.condor.client import CondorSchedd, CondorSettings

__all__ = ["CondorSchedd", "CondorSettings"]

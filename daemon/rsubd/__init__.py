"""rsubd: the per-user daemon that submits, tracks and retrieves HTCondor jobs."""

__version__ = "0.1.0"

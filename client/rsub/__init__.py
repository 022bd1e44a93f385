"""rsub: the client of rsubd. Standard library only, so it starts fast."""

__version__ = "0.1.0"

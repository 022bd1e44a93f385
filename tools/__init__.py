"""Developer tools that ship with the repository but not with the rsub distribution."""

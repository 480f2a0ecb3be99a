"""zoo's version, in its own module so that anything (the environment record of a run) can read
it without importing the package's public namespace."""

__version__ = "0.1.0"

"""zoo: a pluggable model zoo and benchmark harness for activations, inits and quantization."""

from zoo.version import __version__

__all__ = ["__version__"]

"""zoo: a pluggable model zoo and benchmark harness for activations, inits and quantization."""

__version__ = "0.1.0"

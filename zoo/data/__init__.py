"""Data sets as tensors and token streams, ready for a task."""

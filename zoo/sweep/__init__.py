"""Sweeps: the grid, the runner, executors, submissions."""

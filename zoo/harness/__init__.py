"""The old home of the harness, kept so that code written against it keeps working.

The harness now lives in one package per job (see README, "Layout"): zoo.runs, zoo.data,
zoo.train, zoo.tasks, zoo.evaluate, zoo.sweep, zoo.boards, zoo.tools. The public entry points
that lived here are re-exported by the modules of this package under their old names.
"""

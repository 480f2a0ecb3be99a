"""Re-export of the old public path: `zoo.harness.probe.probe_model` is now `zoo.tools.probe`."""

from zoo.tools.probe import ProbeRow, probe_model

__all__ = ["ProbeRow", "probe_model"]

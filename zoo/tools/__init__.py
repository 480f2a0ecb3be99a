"""Tools around the runs: benchmarks, probes, registry listings."""

"""A learning rate per variant (`zoo sweep --tune-lr 0.5,1,2`): the first seed of each variant
trains at every multiple of the protocol's lr, the multiple with the best validation score is
the variant's pick, and the other seeds train at the pick.

Nothing but the runs is stored: a run's `lr_scale` is part of its run id (not of its protocol),
so the candidates of a variant are its first-seed runs at each scale, and the pick is derived
from their validation metrics, the same way by the sweep and by the leaderboards.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import replace

from zoo.errors import ZooError
from zoo.runs.config import TrainConfig
from zoo.runs.results import RunRecord


def parse_scales(text: str) -> list[float]:
    """`"0.5,1,2"` -> [0.5, 1.0, 2.0]: at least two positive, finite, distinct multiples."""
    try:
        scales = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ZooError(f"--tune-lr takes multiples of the recipe's lr, e.g. 0.5,1,2; got "
                       f"'{text}'") from None
    if len(set(scales)) < 2 or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ZooError(f"--tune-lr needs at least two distinct positive multiples, got '{text}'")
    return sorted(set(scales))


def candidates(config: TrainConfig, scales: Iterable[float]) -> list[TrainConfig]:
    """The config at each lr multiple."""
    return [replace(config, lr_scale=float(scale)) for scale in scales]


def validation_score(run: RunRecord) -> float | None:
    """Higher is better: validation accuracy, or minus validation bits per byte."""
    metrics = run.metrics or {}
    for key, sign in (("val_acc", 1.0), ("val_bpb", -1.0)):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            return sign * value
    return None


def pick(scored: Mapping[float, float | None]) -> float | None:
    """The multiple with the best validation score (a diverged candidate, scored None, is
    never picked); None when no candidate has a score. Ties go to the multiple nearest 1,
    then the smaller one."""
    if not scored:
        return None
    finite = {scale: score for scale, score in scored.items() if score is not None}
    if not finite:
        return None
    return max(finite, key=lambda s: (finite[s], -abs(math.log(s)), -s))


def picks_from_runs(runs: Iterable[RunRecord], variant_key, scale_of) -> dict:
    """{variant: (picked scale, {scale: score})} for every variant with runs at two or more
    scales among `runs` (the first-seed runs of one protocol). `variant_key(run)` says which
    variant a run is, `scale_of(run)` its lr multiple."""
    by_variant: dict = {}
    for run in runs:
        if run.status in ("completed", "diverged"):
            by_variant.setdefault(variant_key(run), {})[scale_of(run)] = (
                validation_score(run) if run.status == "completed" else None)
    return {variant: (pick(scored), dict(sorted(scored.items())))
            for variant, scored in by_variant.items() if len(scored) >= 2}


def lr_scale(run: RunRecord) -> float:
    """A stored run's lr multiple (1 for runs stored before tuning existed)."""
    return float((run.config.get("config") or {}).get("lr_scale", 1.0))

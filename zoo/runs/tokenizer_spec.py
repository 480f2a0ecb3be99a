"""What an image generator's tokenizer is and how it is trained, as a run's config names it:

    --tokenizer msvq                              VAR's multi-scale schedule for the latent side
    --tokenizer vq                                one scale: the raster-order baseline's
    --tokenizer "msvq:scales=1-2-4-7,codebook=256,steps=500"

Training and storing it is `zoo.tasks.image_tokenizer`."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from zoo.errors import ZooError

KINDS = ("msvq", "vq")


@dataclass(frozen=True)
class TokenizerSpec:
    """What a tokenizer is and how it is trained. `scales` None: the kind's default schedule."""

    kind: str = "msvq"
    scales: tuple[int, ...] | None = None
    codebook: int = 512
    latent: int = 32  # channels of the latent (the codebook's width)
    # Sized so that Fashion-MNIST's tokenizer trains in minutes on a CPU (0.2 s a step on two
    # cores); on a GPU, more steps or width are cheap: msvq:steps=8000,width=64
    width: int = 32  # conv width of encoder and decoder
    steps: int = 2000
    batch: int = 128
    lr: float = 1e-3
    seed: int = 0

    def canonical(self) -> str:
        """The shortest text that parses back to this spec: the kind and non-default values."""
        default = TokenizerSpec(kind=self.kind)
        options = [f"{f.name}={_format(getattr(self, f.name))}" for f in fields(self)
                   if f.name != "kind" and getattr(self, f.name) != getattr(default, f.name)]
        return self.kind + (":" + ",".join(options) if options else "")


def _format(value: Any) -> str:
    return "-".join(str(s) for s in value) if isinstance(value, tuple) else str(value)


def parse_tokenizer(text: str) -> TokenizerSpec:
    """`KIND[:key=value,...]`; a bad spec is a one-line error naming the valid keys."""
    kind, _, options = str(text).partition(":")
    if kind not in KINDS:
        raise ZooError(f"unknown image tokenizer '{kind}' (choose {', '.join(KINDS)}, with "
                       "options like msvq:scales=1-2-3-4-5-7,codebook=512)")
    types = {f.name: f.type for f in fields(TokenizerSpec)}
    values: dict[str, Any] = {}
    for item in filter(None, options.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in types or key == "kind":
            keys = ", ".join(k for k in types if k != "kind")
            raise ZooError(f"bad tokenizer option '{item}' (options: {keys})")
        try:
            if key == "scales":
                values[key] = tuple(int(s) for s in value.split("-"))
            elif key == "lr":
                values[key] = float(value)
            else:
                values[key] = int(value)
        except ValueError:
            raise ZooError(f"bad tokenizer option '{item}': not a number") from None
    spec = TokenizerSpec(kind=kind, **values)
    for key in ("codebook", "latent", "width", "steps", "batch"):
        if getattr(spec, key) <= 0:
            raise ZooError(f"tokenizer option {key} must be positive, got {getattr(spec, key)}")
    if not (spec.lr > 0 and math.isfinite(spec.lr)):
        raise ZooError(f"tokenizer option lr must be positive, got {spec.lr}")
    if kind == "vq" and spec.scales is not None and len(spec.scales) != 1:
        raise ZooError("the vq tokenizer has one scale; use msvq for several")
    return spec

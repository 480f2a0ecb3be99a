"""Training-step time of `kat` against `vit` on one GPU: issue 20's target is a kat step at most
1.5x a vit step (the group-rational kernel is what makes the KAN MLPs affordable).

    python benchmarks/gpu_step_ratio.py --device cuda --json step-ratio.json
    python benchmarks/gpu_step_ratio.py --check     # CPU: build both, one step each, no timing

Both models are zoo's own (`build_model` with the architecture's recipe for the data set: the
same widths, patches and optimizer `zoo train` uses) and take the steps `zoo train` takes: bf16
autocast on CUDA, cross-entropy on float32 logits, AdamW (`make_optimizer`), channels-last
images. The data are random tensors of the data set's shape already on the device, so only the
step is timed. Each repetition times `--steps` steps of each model with CUDA events, the two
models alternating (and swapping which goes first) so that drift in clocks hits both; the
figure is the ratio of the medians. Shapes: `fashion-mnist` (28x28x1, batch 128, 7x7 patches:
the recipe of zoo's main boards; the headline) and `cifar10` (32x32x3, batch 256). The last
line printed is the JSON result.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.build import build_model
from zoo.errors import ZooError
from zoo.kernels import runtime
from zoo.runs.config import TrainConfig
from zoo.runs.device import resolve_device
from zoo.train.trainer import make_optimizer

ARCHS = ("vit", "kat")
SHAPES = {
    "fashion-mnist": {"dataset": "fashion-mnist", "image_size": (28, 28), "channels": 1,
                      "num_classes": 10, "batch_size": None},  # None: the recipe's (128)
    "cifar10": {"dataset": "cifar10", "image_size": (32, 32), "channels": 3, "num_classes": 10,
                "batch_size": 256},
}
HEADLINE = "fashion-mnist"


class Stepper:
    """One model, its optimizer and a fixed batch; `step()` is one training step."""

    def __init__(self, arch: str, shape: dict, device: torch.device,
                 batch_size: int | None = None) -> None:
        config = TrainConfig.for_arch(arch, dataset=shape["dataset"],
                                      batch_size=batch_size or shape["batch_size"])
        self.config, self.device = config, device
        self.model = build_model(
            arch, act=config.act, init=config.init, seed=config.seed,
            act_params=config.act_params, init_params=config.init_params,
            arch_params=config.arch_params, image_size=shape["image_size"],
            channels=shape["channels"], num_classes=shape["num_classes"],
        ).to(device).to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = make_optimizer(self.model, config)
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(config.batch_size, shape["channels"], *shape["image_size"],
                             generator=g).to(device).contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(shape["num_classes"], (config.batch_size,), generator=g).to(device)
        self.autocast = device.type == "cuda"
        self.params = sum(p.numel() for p in self.model.parameters())

    def step(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            logits = self.model(self.x)
        loss = F.cross_entropy(logits.float(), self.y,
                               label_smoothing=self.config.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def time_steps(stepper: Stepper, steps: int) -> float:
    """Milliseconds per step over `steps` consecutive steps (CUDA events)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        stepper.step()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / steps


def measure(shape_name: str, device: torch.device, steps: int, repeats: int, warmup: int,
            batch_size: int | None = None) -> dict:
    shape = SHAPES[shape_name]
    steppers = {arch: Stepper(arch, shape, device, batch_size) for arch in ARCHS}
    losses = {}
    for arch, stepper in steppers.items():  # compile the kernels, warm the allocator
        for _ in range(warmup):
            losses[arch] = stepper.step()
    torch.cuda.synchronize(device)
    times: dict[str, list[float]] = {arch: [] for arch in ARCHS}
    for r in range(repeats):
        for arch in (ARCHS if r % 2 == 0 else ARCHS[::-1]):
            times[arch].append(time_steps(steppers[arch], steps))
    median = {arch: statistics.median(times[arch]) for arch in ARCHS}
    vit = steppers["vit"]
    return {
        "shape": shape_name, "batch_size": vit.config.batch_size,
        "image": [shape["channels"], *shape["image_size"]],
        "arch_params": {arch: s.config.arch_params for arch, s in steppers.items()},
        "params": {arch: s.params for arch, s in steppers.items()},
        "vit_ms": median["vit"], "kat_ms": median["kat"],
        "ratio": median["kat"] / median["vit"],
        "times_ms": times, "steps_per_timing": steps, "repeats": repeats,
        "finite": all(bool(torch.isfinite(loss)) for loss in losses.values()),
    }


def check(device: str = "cpu", shapes: list[str] | None = None) -> dict:
    """No timing: both models build for each shape and take one finite step (the dry run)."""
    dev = resolve_device(device)
    found = {}
    for shape_name in shapes or list(SHAPES):
        shape = SHAPES[shape_name]
        for arch in ARCHS:
            stepper = Stepper(arch, shape, dev, batch_size=2)
            loss = stepper.step()
            if not torch.isfinite(loss):
                raise RuntimeError(f"{arch} on the {shape_name} shape: non-finite loss {loss}")
            found[f"{shape_name}/{arch}"] = round(float(loss), 4)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="default cuda; with --check, cpu")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help=f"comma-separated, of {', '.join(SHAPES)} (the first is the headline)")
    parser.add_argument("--steps", type=int, default=25, help="steps per timing (default 25)")
    parser.add_argument("--repeats", type=int, default=7, help="timings per model (default 7)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    parser.add_argument("--batch-size", type=int, help="override every shape's batch size")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--check", action="store_true",
                        help="build and step both models once on --device (default cpu), no timing")
    args = parser.parse_args(argv)
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown or not shapes:
        parser.error(f"unknown shape(s) {unknown or args.shapes!r}; known: {', '.join(SHAPES)}")
    if args.check:
        print(json.dumps({"check": check(args.device or "cpu", shapes)}))
        return 0
    dev = resolve_device(args.device or "cuda")
    if dev.type != "cuda":
        parser.error("the timing needs a CUDA device (--check runs on a CPU)")
    probe = torch.empty(1, device=dev, dtype=torch.bfloat16)
    result = {
        "device": torch.cuda.get_device_name(dev), "torch": torch.__version__,
        "cupy": getattr(runtime.cupy_or_none(), "__version__", None),
        "rational_kernel": runtime.can_launch(probe), "headline": shapes[0], "shapes": {},
    }
    for shape in shapes:
        result["shapes"][shape] = measure(shape, dev, args.steps, args.repeats, args.warmup,
                                          args.batch_size)
        m = result["shapes"][shape]
        print(f"{shape}: batch {m['batch_size']}, vit {m['vit_ms']:.3f} ms/step, kat "
              f"{m['kat_ms']:.3f} ms/step, kat/vit {m['ratio']:.3f}", flush=True)
    result["ratio"] = result["shapes"][shapes[0]]["ratio"]
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ZooError as exc:
        print(f"gpu_step_ratio: error: {exc}", file=sys.stderr)
        sys.exit(2)

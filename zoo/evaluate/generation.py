"""Stored generator runs: `zoo eval` (token loss and generation metrics with chosen sampling
settings) and `zoo sample` (a PNG grid). How generators are measured is `zoo.tasks.gen_eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.errors import ZooError
from zoo.evaluate.stored import find_run, load_run_model
from zoo.registry import ARCHS
from zoo.registry.kinds import is_generator_arch
from zoo.runs.files import atomic_write_json
from zoo.tasks import gen_metrics
from zoo.tasks.gen_eval import GenProtocol, check_pinned_feature_net, generate_per_class


def is_generator_run(run: str, out: str | Path = "runs") -> bool:
    arch = (find_run(run, out).read_json("config.json").get("config") or {}).get("arch")
    return arch in ARCHS and is_generator_arch(arch)


def describe_generation(metrics: dict[str, Any]) -> str:
    """One line: the generation metrics and what they were measured with."""
    p = metrics["gen_protocol"]
    line = (f"FID {metrics['fid']:.2f} (real-data floor {metrics['fid_real_floor']:.2f}), "
            f"precision {metrics['precision']:.3f}, recall {metrics['recall']:.3f}, class "
            f"consistency {metrics['class_consistency']:.2%} ({p['samples']} samples, cfg "
            f"{p['cfg']:g}, top-k {p['top_k']}, top-p {p['top_p']:g}, in the features of "
            f"{p['feature_net']['id']})")
    if "images_per_s" in metrics:
        line += (f"; {metrics['images_per_s']:.1f} images/s, {metrics['speedup_vs_raster']:.2f}x "
                 "the raster-order baseline")
    return line


def _settings_name(protocol: GenProtocol) -> str:
    return (f"cfg{protocol.cfg:g}-k{protocol.top_k}-p{protocol.top_p:g}-t{protocol.temperature:g}"
            f"-s{protocol.seed}")


def evaluate_generator(run: str, protocol: GenProtocol, out: str | Path = "runs",
                       device: str = "auto", inception: bool = False
                       ) -> tuple[dict[str, Any], Path]:
    """Token loss and generation metrics of a stored generator run with `protocol`; writes
    RUN/gen_eval-<settings>.json (the stored result in the database is not changed)."""
    run_dir, _, task, model, epoch = load_run_model(run, out, device)
    test = task.evaluate(model, "test", autocast=task.device.type == "cuda")
    stored = (run_dir.read_json_if_present("result.json") or {}).get("metrics", {})
    check_pinned_feature_net((stored.get("gen_protocol") or {}).get("feature_net"),
                             task.feature_net(), run_dir.name)
    report = {"run_id": run_dir.name, "epoch": epoch, "test_loss": test["loss"],
              "test_acc": test["acc"], "stored_test_loss": stored.get("test_loss"),
              **task.generation_metrics(model, protocol)}
    if inception:
        fake, _ = generate_per_class(model, task.num_classes, protocol.samples_per_class,
                                     protocol, task.device)
        reference = _to_uint8(task.images[protocol.reference])
        report["inception_fid"] = gen_metrics.inception_fid(reference, _to_uint8(fake))
    path = run_dir.path / f"gen_eval-{_settings_name(protocol)}-n{protocol.samples_per_class}.json"
    atomic_write_json(path, report)
    return report, path


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def sample_run(run: str, protocol: GenProtocol, n: int = 64, file: str | Path | None = None,
               out: str | Path = "runs", device: str = "auto") -> Path:
    """`zoo sample`: a PNG grid of `n` samples of a stored generator, class j in column j."""
    if not is_generator_run(run, out):
        raise ZooError(f"{run} is not an image generator run (var, rar): nothing to sample")
    run_dir, _, task, model, _ = load_run_model(run, out, device)
    path = Path(file) if file else run_dir.path / f"samples-{_settings_name(protocol)}-n{n}.png"
    if path.suffix.lower() != ".png":
        raise ZooError(f"--file must end in .png, got {path}")
    return task.write_grid(model, protocol, path, n=n)

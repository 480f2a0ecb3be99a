"""How a class-conditional image generator is measured.

Inception weights are not available offline, so FID, precision/recall and class consistency are
computed in the feature space of a classifier zoo trains itself on the same data set: a `resnet`
with `relu`, trained once with a fixed recipe (`FEATURE_NET_RECIPE`) into
`<runs folder>/evaluators/`, a zoo run like any other, plus `evaluator.json` with its version
and the sha256 of its weights. Every generation metric records that checksum, the sample count,
guidance, top-k/p, temperature, seed and the reference set, so two numbers are comparable only
when those agree. (`zoo.tasks.gen_metrics.inception_fid` gives the standard Inception FID for
online users.)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.build import build_model
from zoo.errors import ZooError
from zoo.runs.config import TrainConfig
from zoo.runs.files import atomic_write, atomic_write_json, file_lock, sha256_file
from zoo.tasks.classify import ImageClassification
from zoo.tasks.gen_metrics import class_consistency, fid, precision_recall
from zoo.train.trainer import Trainer

FEATURE_NET_VERSION = 1
FEATURE_NET_RECIPE = {"arch": "resnet", "act": "relu", "seed": 0}
# Epochs: about 128k training images seen, at most 5 epochs (digits: 5; Fashion-MNIST: 3).
FEATURE_NET_IMAGES, FEATURE_NET_MAX_EPOCHS = 128_000, 5


def feature_net_epochs(train_size: int) -> int:
    return max(1, min(FEATURE_NET_MAX_EPOCHS, math.ceil(FEATURE_NET_IMAGES / max(1, train_size))))


# The metrics hold every sample's features at once (and the images for Inception FID): 10000 per
# class is 100000 images on a 10-class set, about 300 MB of 28x28 images in float32; more would
# exhaust a laptop's memory long after the sampling time was spent.
MAX_SAMPLES_PER_CLASS = 10_000
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class GenProtocol:
    """The sampling settings and sample count behind a generation metric."""

    samples_per_class: int = 100
    cfg: float = 1.5  # guidance scale: 1 = conditional only
    top_k: int = 0  # 0 = off
    top_p: float = 0.95  # 1 = off
    temperature: float = 1.0
    seed: int = 0  # of the sampling generator
    reference: str = "test"  # the real images FID compares against

    def validate(self) -> None:
        # written so that nan fails every check (a comparison with nan is False)
        if not 1 <= self.samples_per_class <= MAX_SAMPLES_PER_CLASS:
            raise ZooError(f"--samples-per-class must be in [1, {MAX_SAMPLES_PER_CLASS}], got "
                           f"{self.samples_per_class}")
        if not 0 <= self.cfg < math.inf:
            raise ZooError(f"--cfg must be finite and >= 0, got {self.cfg}")
        if not 0 <= self.top_k:
            raise ZooError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ZooError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not 0 < self.temperature < math.inf:
            raise ZooError(f"--temperature must be positive and finite, got {self.temperature}")
        if not 0 <= self.seed <= MAX_SEED:
            raise ZooError(f"--sample-seed must be in [0, {MAX_SEED}], got {self.seed}")

    def sampling(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "top_k": self.top_k, "top_p": self.top_p,
                "temperature": self.temperature}


# --- the feature network ----------------------------------------------------------------------

@dataclass
class FeatureNet:
    """A trained classifier: penultimate features for FID/precision/recall, predictions for
    class consistency. Takes images in [-1, 1] (N, C, H, W), as the generator produces them."""

    id: str
    sha256: str
    test_acc: float
    recipe: dict[str, Any]
    model: nn.Module
    mean: torch.Tensor  # the classifier's input normalization, per channel
    std: torch.Tensor

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        # to 8-bit levels first: generated and real images are compared as the pictures a user
        # would save, and the classifier was trained on 8-bit data
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 255
        return (pixels - self.mean) / self.std

    @torch.no_grad()
    def features_and_classes(self, images: torch.Tensor, batch_size: int = 500
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        feats, classes = [], []
        for batch in images.split(batch_size):
            h = self.model.forward_head(self.model.forward_features(self._prepare(batch)),
                                        pre_logits=True)
            feats.append(h.float().cpu())
            classes.append(self.model.get_classifier()(h).argmax(-1).cpu())
        return torch.cat(feats), torch.cat(classes)

    def reference(self) -> dict[str, Any]:
        return {"id": self.id, "sha256": self.sha256, "test_acc": self.test_acc,
                "version": FEATURE_NET_VERSION, **self.recipe}


def check_pinned_feature_net(pinned: dict[str, Any] | None, net: FeatureNet, run: str) -> None:
    """A generator run's stored metrics name the feature network they were measured in; new
    metrics of that run must use the same network, or they are not comparable."""
    if pinned and pinned.get("sha256") != net.sha256:
        raise ZooError(f"run {run} was measured in the features of {pinned.get('id')} (sha256 "
                       f"{str(pinned.get('sha256'))[:12]}…), not in those of the network found "
                       f"now ({net.id}, sha256 {net.sha256[:12]}…); restore that network's run "
                       "folder, or train the generator again")


def feature_net_config(dataset: str, train_size: int):
    """The feature network's run. The architecture's base recipe, not its data-set recipes:
    generator runs pin this network's checksum, so it stays the one they were evaluated with."""
    return TrainConfig.for_arch(FEATURE_NET_RECIPE["arch"], act=FEATURE_NET_RECIPE["act"],
                                dataset=dataset, epochs=feature_net_epochs(train_size),
                                seed=FEATURE_NET_RECIPE["seed"], dataset_recipe=False)


def _classification(config: TrainConfig, device: torch.device, out: Path, show_progress: bool):
    return ImageClassification(config, device)


def feature_net(dataset: str, train_size: int, out: str | Path, device: torch.device,
                show_progress: bool = True) -> FeatureNet:
    """The data set's feature network: trained on first use, reused afterwards.
    `train_size`: the data set's number of training images (sets the epochs)."""
    recipe = {**FEATURE_NET_RECIPE, "epochs": feature_net_epochs(train_size)}
    config = feature_net_config(dataset, train_size)
    trainer = Trainer(config, out=Path(out) / "evaluators", device=str(device),
                      show_progress=show_progress, make_task=_classification)
    with file_lock(Path(out) / "evaluators" / f".{config.run_id()}.wait"):
        outcome = trainer.run()
    run_dir = outcome.run_dir
    _, folder, _ = run_dir.checkpoint_pointer()
    checksum = sha256_file(folder / "model.safetensors")
    stored = run_dir.read_json_if_present("evaluator.json")
    if stored is not None and stored.get("sha256") != checksum:
        raise ZooError(f"feature network {run_dir.name}: its weights no longer match the checksum "
                       f"in evaluator.json; delete {run_dir.path} to retrain it (metrics made "
                       "with the old one are not comparable to new ones)")
    test_acc = float(outcome.record.metrics["test_acc"])
    if stored is None:
        atomic_write_json(run_dir.path / "evaluator.json", {
            "id": run_dir.name, "version": FEATURE_NET_VERSION, "sha256": checksum,
            "test_acc": test_acc, "recipe": recipe, "dataset": dataset})
    _, state = run_dir.load_model_state()
    spec = run_dir.read_json("config.json")["data_spec"]
    model = build_model(config.arch, act=config.act, init=config.init, seed=config.seed,
                        image_size=spec["image_size"], channels=spec["channels"],
                        num_classes=spec["num_classes"]).to(device)
    model.load_state_dict({k: v.to(device) for k, v in state.items()})
    shape = (1, -1, 1, 1)
    return FeatureNet(run_dir.name, checksum, test_acc, recipe, model.eval(),
                      torch.tensor(spec["mean"], device=device).view(shape),
                      torch.tensor(spec["std"], device=device).view(shape))


# --- metrics ----------------------------------------------------------------------------------

def timed(fn, device: torch.device, min_seconds: float = 1.0, min_calls: int = 2) -> float:
    """Seconds per call of `fn()`, after one warm-up call."""
    fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        fn()
        calls += 1
    sync()
    return (time.perf_counter() - start) / calls


def generate_per_class(model: nn.Module, num_classes: int, per_class: int,
                       protocol: GenProtocol, device: torch.device,
                       batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_class` images of every class (labels 0, 0, ..., 1, 1, ...), reproducible from
    the protocol's seed."""
    labels = torch.arange(num_classes, device=device).repeat_interleave(per_class)
    generator = torch.Generator(device=device).manual_seed(protocol.seed)
    images = [model.generate(batch, generator=generator, **protocol.sampling())
              for batch in labels.split(batch_size)]
    return torch.cat(images), labels


def generation_metrics(model: nn.Module, net: FeatureNet, real_images: torch.Tensor,
                       num_classes: int, protocol: GenProtocol,
                       device: torch.device) -> dict[str, Any]:
    """FID, precision/recall (k=3) and class consistency of `model`'s samples against
    `real_images` (in [-1, 1]), in `net`'s feature space, with everything they depend on."""
    fake, labels = generate_per_class(model, num_classes, protocol.samples_per_class, protocol,
                                      device)
    fake_feats, fake_classes = net.features_and_classes(fake)
    real_feats, _ = net.features_and_classes(real_images)
    # precision/recall compare sets of equal size: a fixed random subset of the larger one
    n = min(len(fake_feats), len(real_feats))
    pick = torch.Generator().manual_seed(protocol.seed)
    real_sub = real_feats[torch.randperm(len(real_feats), generator=pick)[:n]]
    fake_sub = fake_feats[torch.randperm(len(fake_feats), generator=pick)[:n]]
    precision, recall = precision_recall(real_sub, fake_sub, k=3)
    return {
        "fid": fid(real_feats, fake_feats),
        "precision": precision,
        "recall": recall,
        "class_consistency": class_consistency(fake_classes, labels.cpu()),
        "gen_protocol": {**asdict(protocol), "samples": len(fake), "reference_images":
                         len(real_images), "pr_k": 3, "pr_samples": n,
                         "feature_net": net.reference()},
    }


def real_data_floor(net: FeatureNet, train_images: torch.Tensor, real_images: torch.Tensor,
                    samples: int, seed: int = 0) -> float:
    """FID of `samples` real training images against the reference set: what a perfect
    generator would score with this sample count (FID is biased upwards at small counts)."""
    pick = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(train_images), generator=pick)[:samples]
    train_feats, _ = net.features_and_classes(train_images[index.to(train_images.device)])
    real_feats, _ = net.features_and_classes(real_images)
    return fid(real_feats, train_feats)


def sampling_speed(model: nn.Module, baseline: nn.Module, num_classes: int,
                   protocol: GenProtocol, device: torch.device, batch: int = 64
                   ) -> dict[str, Any]:
    """Images per second of `model` and of `baseline` (the raster-order transformer of the same
    size), one batch of `batch` images per call, with the protocol's guidance, same device."""
    labels = torch.arange(batch, device=device) % num_classes

    def sampler(m):
        generator = torch.Generator(device=device).manual_seed(protocol.seed)
        return lambda: m.generate(labels, generator=generator, **protocol.sampling())

    ours = batch / timed(sampler(model), device)
    raster = batch / timed(sampler(baseline), device)
    return {"images_per_s": ours, "raster_images_per_s": raster, "speedup_vs_raster":
            ours / raster, "speed_batch": batch}


def save_grid(images: torch.Tensor, path: str | Path, columns: int) -> Path:
    """A PNG grid of images in [-1, 1], written atomically."""
    from torchvision.utils import save_image  # torchvision's image writer, on use

    path = Path(path)
    grid = (images.detach().float().cpu().clamp(-1, 1) + 1) / 2
    atomic_write(path, lambda tmp: save_image(grid, str(tmp), nrow=columns, padding=1,
                                              pad_value=1.0, format="png"))
    return path

"""Class-conditional image generation as a training task (VAR's next-scale prediction, or the
raster-order baseline): images become token sequences through a frozen tokenizer, and the
transformer learns to predict them, label first.

A training example is the row (label, t_1 .. t_L) of a whole image's tokens, the target
(t_1 .. t_L); the loss is the mean cross-entropy over tokens. The tokenizer is trained (or
reused) before the generator and is not part of the generator's checkpoint: the run records its
id and checksum (`run_summary()["dependencies"]`), and a run resumed or evaluated on a
tokenizer with another checksum is refused. The final metrics add FID, precision/recall and class
consistency in a zoo classifier's feature space (`zoo.tasks.gen_eval`), sampling speed against
the raster-order baseline of the same size, and a sample grid `samples.png` in the run folder.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.build import build_model
from zoo.data.images import ShuffledBatches, eval_batches, load_dataset
from zoo.errors import ZooError
from zoo.models.msvq import MultiScaleVQ
from zoo.runs.config import TrainConfig
from zoo.runs.tokenizer_spec import TokenizerSpec, parse_tokenizer
from zoo.tasks.classify import load_data
from zoo.tasks.gen_eval import (
    GenProtocol,
    feature_net,
    generation_metrics,
    real_data_floor,
    sampling_speed,
    save_grid,
)
from zoo.tasks.image_tokenizer import TokenizerStore, model_config

GRID_ROWS = 8  # samples per class in a run's samples.png
MAX_GRID_IMAGES = 10_000  # a 1000-row grid of a 10-class set: larger is no longer a picture
SAMPLING_BATCH = 500  # images generated at once (as the generation metrics do)
BASELINE_ARCH = "rar"  # the raster-order transformer every generator's speed is compared with


class ImageGeneration:
    unit = "tokens"  # what throughput counts

    def __init__(self, config: TrainConfig, device: torch.device, out: str | Path = "runs",
                 show_progress: bool = True):
        self.config, self.device, self.out = config, device, Path(out)
        self.show_progress = show_progress
        self.data = load_data(config, device)
        spec = self.data.spec
        if spec.image_size[0] != spec.image_size[1]:
            raise ZooError(f"{config.arch} needs square images; {config.dataset} has "
                           f"{spec.image_size[0]}x{spec.image_size[1]}")
        self.images = {split: self._unit_range(self.data.split(split)[0])
                       for split in ("train", "validation", "test")}
        # a tokenizer trained on a subset is another tokenizer (tests train on a few images)
        data_key = config.dataset + (f"-first{config.train_subset}" if config.train_subset
                                     else "")
        self.tokenizer = TokenizerStore(self.out / "tokenizers").get_or_train(
            parse_tokenizer(config.tokenizer), data_key, self.images["train"],
            self.images["validation"], device, show_progress)
        self.tokens = {split: self._tokenize(self.images[split], self.data.split(split)[1])
                       for split in self.images}
        self._feature_net = None

    # --- data -----------------------------------------------------------------------------
    def _unit_range(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized classifier inputs back to pixels in [-1, 1], the tokenizer's range."""
        spec = self.data.spec
        mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean) * 2 - 1

    @torch.no_grad()
    def _tokenize(self, images: torch.Tensor, labels: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows of label + tokens, tokens) for a split."""
        tok = self.tokenizer.model
        tokens = torch.cat([tok.flatten(tok.encode(batch)) for batch in images.split(512)]) \
            if len(images) else torch.zeros(0, tok.token_count, dtype=torch.long,
                                            device=images.device)
        return torch.cat([labels[:, None], tokens], dim=1), tokens

    @property
    def num_classes(self) -> int:
        return self.data.spec.num_classes

    # --- the trainer's interface ----------------------------------------------------------
    def build(self, arch: str | None = None, tokenizer=None) -> nn.Module:
        config = self.config
        spec = self.data.spec
        return build_model(
            arch or config.arch, image_size=spec.image_size, channels=spec.channels,
            num_classes=spec.num_classes,
            tokenizer=copy.deepcopy(tokenizer or self.tokenizer.model),
            act=config.act, init=config.init, quant=config.quant, seed=config.seed,
            act_params=config.act_params, init_params=config.init_params,
            quant_params=config.quant_params, arch_params=config.arch_params,
            calibration_batch=self.calibration_batch)

    def calibration_batch(self) -> torch.Tensor:
        return self.tokens["train"][0][: self.config.batch_size]

    def calibration_description(self) -> str:
        return f"the first {len(self.calibration_batch())} training images' token sequences"

    def train_batches(self) -> ShuffledBatches:
        rows, targets = self.tokens["train"]
        return ShuffledBatches(rows, targets, self.config.batch_size, self.config.seed)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, -2), y.flatten(),
                               label_smoothing=self.config.label_smoothing)

    @staticmethod
    def correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (logits.detach().argmax(dim=-1) == y).sum()

    @torch.no_grad()
    def evaluate(self, model: nn.Module, split: str, autocast: bool,
                 keep_predictions: bool = False) -> dict[str, Any]:
        """Mean token loss and next-token accuracy over a split (labels never dropped)."""
        rows, targets = self.tokens[split]
        was_training = model.training
        model.eval()
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        for xb, yb in eval_batches(rows, targets, 256):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = model(xb)
            loss_sum += F.cross_entropy(logits.float().flatten(0, -2), yb.flatten(),
                                        reduction="sum")
            correct += (logits.argmax(dim=-1) == yb).sum()
        model.train(was_training)
        n = max(1, targets.numel())
        return {"loss": loss_sum.item() / n, "acc": correct.item() / n}

    def diagnostics_input(self) -> torch.Tensor:
        return self.tokens["validation"][0][:256]

    def describe(self) -> str:
        sizes = self.data.spec.sizes
        tok = self.tokenizer.model
        return (f"{self.config.dataset} ({sizes['train']} train / {sizes['validation']} val / "
                f"{sizes['test']} test images) as {tok.token_count} tokens each (scales "
                f"{'-'.join(map(str, tok.scales))}, codebook {tok.codebook_size}, tokenizer "
                f"{self.tokenizer.id})")

    def run_summary(self) -> dict[str, Any]:
        spec = self.data.spec
        height, width = spec.image_size
        tok = self.tokenizer.model
        return {"data": {"image": f"{height}x{width}x{spec.channels}",
                         "classes": spec.num_classes, **spec.sizes,
                         "tokens_per_image": tok.token_count},
                "data_spec": asdict(spec),
                "dependencies": {"tokenizer": self.tokenizer.reference()}}

    def final_metrics(self, model: nn.Module, autocast: bool) -> tuple[dict[str, Any], None]:
        test = self.evaluate(model, "test", autocast)
        found = {f"test_{key}": value for key, value in test.items()}
        protocol = GenProtocol()
        found.update(self.generation_metrics(model, protocol))
        found.update(self.speed(model, protocol))
        self.write_grid(model, protocol, self.out / self.config.run_id() / "samples.png")
        return found, None

    # --- generation -----------------------------------------------------------------------
    def feature_net(self):
        if self._feature_net is None:
            # sized by the whole training split, also when this run trains on a subset
            train_size = self.data.spec.sizes["train"]
            if self.config.train_subset:
                train_size = load_dataset(self.config.dataset)["train"].num_rows
            self._feature_net = feature_net(self.config.dataset, train_size, self.out,
                                            self.device, self.show_progress)
        return self._feature_net

    def generation_metrics(self, model: nn.Module, protocol: GenProtocol) -> dict[str, Any]:
        protocol.validate()
        net = self.feature_net()
        reference = self.images[protocol.reference]
        found = generation_metrics(model, net, reference, self.num_classes, protocol,
                                   self.device)
        samples = found["gen_protocol"]["samples"]
        found["fid_real_floor"] = real_data_floor(net, self.images["train"], reference,
                                                  samples, protocol.seed)
        return found

    def raster_baseline(self) -> nn.Module:
        """The raster-order transformer of the same size, on a single-scale tokenizer of the
        same codebook: random weights (speed does not depend on their values)."""
        stored = parse_tokenizer(self.config.tokenizer)
        single = TokenizerSpec(kind="vq", codebook=stored.codebook, latent=stored.latent,
                               width=stored.width)
        spec = self.data.spec
        tok = MultiScaleVQ(model_config(single, spec.image_size[0], spec.channels))
        return self.build(arch=BASELINE_ARCH, tokenizer=tok.to(self.device).eval()).to(self.device)

    def speed(self, model: nn.Module, protocol: GenProtocol) -> dict[str, Any]:
        baseline = model if self.config.arch == BASELINE_ARCH else self.raster_baseline()
        return sampling_speed(model, baseline, self.num_classes, protocol, self.device)

    def write_grid(self, model: nn.Module, protocol: GenProtocol, path: Path,
                   n: int | None = None) -> Path:
        """`n` samples (default: GRID_ROWS per class), class j in column j."""
        n = n or GRID_ROWS * self.num_classes
        if not 1 <= n <= MAX_GRID_IMAGES:
            raise ZooError(f"--n must be in [1, {MAX_GRID_IMAGES}] (one PNG grid), got {n}; "
                           "for more samples, write several grids with other --sample-seed")
        labels = torch.arange(n, device=self.device) % self.num_classes
        generator = torch.Generator(device=self.device).manual_seed(protocol.seed)
        # bounded batches: the transformer's activations grow with the batch, the grid does not
        images = torch.cat([model.generate(batch, generator=generator, **protocol.sampling())
                            for batch in labels.split(SAMPLING_BATCH)])
        return save_grid(images, path, columns=self.num_classes)

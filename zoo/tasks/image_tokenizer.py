"""The image generator's tokenizer: a (multi-scale) VQ autoencoder trained once per data set and
spec, then frozen. Generator runs name it by id and record its checksum, the way a language
model run names its tokenizer; a run refuses to resume on a tokenizer with another checksum.

    --tokenizer msvq                              VAR's multi-scale schedule for the latent side
    --tokenizer vq                                one scale: the raster-order baseline's
    --tokenizer "msvq:scales=1-2-4-7,codebook=256,steps=500"

Stored under `<runs folder>/tokenizers/<id>/` (written to a temporary folder and renamed, so a
killed training leaves nothing half written):

    tokenizer.json      id, version, spec, model config, data set, metrics, sha256 of the weights
    model.safetensors   the weights
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from zoo.errors import ZooError
from zoo.models.msvq import (
    MSVQConfig,
    MultiScaleVQ,
    default_downsample,
    default_scales,
    reconstruction_by_scales,
)
from zoo.runs import environment
from zoo.runs.files import file_lock, sha256_file
from zoo.runs.ids import canonical_json
from zoo.runs.tokenizer_spec import TokenizerSpec
from zoo.train.progress import TrainingProgress
from zoo.train.trainer import lr_schedule

# Bump when the tokenizer's architecture or training procedure changes: stored tokenizers of
# another version are never reused (their id differs).
TOKENIZER_VERSION = 1


def model_config(spec: TokenizerSpec, image_size: int, channels: int):
    """The MSVQConfig of `spec` on images of `image_size` (square) x `channels`."""
    downsample = default_downsample(image_size)
    side = image_size // downsample
    scales = spec.scales or (default_scales(side) if spec.kind == "msvq" else (side,))
    config = MSVQConfig(image_size=image_size, channels=channels, scales=tuple(scales),
                        codebook_size=spec.codebook, latent_channels=spec.latent,
                        width=spec.width, downsample=downsample)
    config.validate()
    return config


def tokenizer_id(spec: TokenizerSpec, dataset: str, config) -> str:
    """`<kind>-<dataset>-<digest>`: the digest covers the version, the data set, the spec and
    the resolved model config, so any change gives a new tokenizer, never a silent reuse."""
    blob = canonical_json({"version": TOKENIZER_VERSION, "dataset": dataset,
                           "spec": asdict(spec), "config": asdict(config)})
    return f"{spec.kind}-{dataset}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


@dataclass
class StoredTokenizer:
    id: str
    path: Path
    model: Any  # zoo.models.msvq.MultiScaleVQ, frozen, eval mode
    info: dict[str, Any]

    @property
    def sha256(self) -> str:
        return self.info["sha256"]

    def reference(self) -> dict[str, Any]:
        """What a generator run records about its tokenizer."""
        return {"id": self.id, "sha256": self.sha256, "version": self.info["version"],
                "scales": self.info["config"]["scales"],
                "recon_mse_by_scales": self.info["metrics"]["recon_mse_by_scales"]}


class TokenizerStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def load(self, token_id: str, device: torch.device | str = "cpu") -> StoredTokenizer:
        folder = self.root / token_id
        try:
            info = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ZooError(f"tokenizer {token_id} is not stored in {self.root}") from None
        except (OSError, ValueError) as exc:
            raise ZooError(f"{folder}/tokenizer.json is unreadable or corrupt: {exc}") from None
        weights = folder / "model.safetensors"
        if not weights.is_file() or sha256_file(weights) != info.get("sha256"):
            raise ZooError(f"tokenizer {token_id}: model.safetensors does not match the checksum "
                           f"in tokenizer.json (damaged or replaced); delete {folder} to retrain")
        config = MSVQConfig(**{**info["config"], "scales": tuple(info["config"]["scales"])})
        model = MultiScaleVQ(config)
        model.load_state_dict(load_file(str(weights)))
        model.requires_grad_(False)
        return StoredTokenizer(token_id, folder, model.to(device).eval(), info)

    def get_or_train(self, spec: TokenizerSpec, dataset: str, train_images: torch.Tensor,
                     val_images: torch.Tensor, device: torch.device,
                     show_progress: bool = True) -> StoredTokenizer:
        """The stored tokenizer of (spec, dataset), trained first if there is none. Images are
        float (N, C, H, W) in [-1, 1]."""
        config = model_config(spec, train_images.shape[-1], train_images.shape[1])
        token_id = tokenizer_id(spec, dataset, config)
        with self._lock(token_id):
            if not (self.root / token_id / "tokenizer.json").is_file():
                self._train(token_id, spec, dataset, config, train_images, val_images, device,
                            show_progress)
        return self.load(token_id, device)

    def _lock(self, token_id: str):
        return file_lock(self.root / f".{token_id}.lock")

    def _train(self, token_id, spec, dataset, config, train_images, val_images, device,
               show_progress) -> None:
        torch.manual_seed(spec.seed)
        model = MultiScaleVQ(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_schedule("cosine", spec.steps, max(1, spec.steps // 50)))
        generator = torch.Generator().manual_seed(spec.seed)
        progress = TrainingProgress(f"tokenizer {token_id}", spec.steps, enabled=show_progress,
                                    unit="images")
        progress.note(f"training tokenizer {token_id} ({spec.canonical()}, scales "
                      f"{'-'.join(map(str, config.scales))}) on {dataset}: {spec.steps} steps "
                      "(once; later runs reuse it)")
        model.train()
        mse = usage = 0.0
        with progress:
            for step in range(1, spec.steps + 1):
                index = torch.randint(len(train_images), (spec.batch,), generator=generator)
                loss, parts = model.loss(train_images[index.to(train_images.device)])
                if not math.isfinite(loss.item()):
                    raise ZooError(f"tokenizer {token_id} diverged at step {step}; try a lower "
                                   "lr (tokenizer option lr=...)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                mse, usage = parts["recon_mse"], parts["usage"]
                if step % 10 == 0 or step == spec.steps:
                    progress.update(step, spec.steps, loss=mse, acc=usage)
        model.eval()
        with torch.no_grad():
            by_scales = _mean_by_scales(model, val_images)
            codes = torch.cat([torch.cat([m.flatten(1) for m in model.encode(batch)], 1)
                               for batch in val_images.split(512)])
        metrics = {"train_recon_mse": mse, "train_usage": usage,
                   "recon_mse_by_scales": by_scales,
                   "val_codebook_usage": codes.unique().numel() / config.codebook_size}
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{token_id}.", dir=self.root))
        try:
            save_file(state, str(staging / "model.safetensors"))
            info = {"id": token_id, "version": TOKENIZER_VERSION, "dataset": dataset,
                    "spec": spec.canonical(), "config": asdict(config), "metrics": metrics,
                    "sha256": sha256_file(staging / "model.safetensors"),
                    "environment": environment.capture(torch.device(device))}
            (staging / "tokenizer.json").write_text(json.dumps(info, indent=2, sort_keys=True)
                                                    + "\n", encoding="utf-8")
            os.chmod(staging, 0o755)
            os.replace(staging, self.root / token_id)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        progress.note(f"tokenizer {token_id}: validation MSE by scales "
                      + " ".join(f"{v:.4f}" for v in by_scales)
                      + f", codebook usage {metrics['val_codebook_usage']:.0%}")


def _mean_by_scales(model, images: torch.Tensor) -> list[float]:
    """Validation reconstruction MSE when decoding the first k scales, k = 1..K."""
    totals, count = None, 0
    for batch in images.split(512):
        found = reconstruction_by_scales(model, batch)
        totals = [t + v * len(batch) for t, v in zip(totals or [0.0] * len(found), found)]
        count += len(batch)
    return [t / count for t in totals]

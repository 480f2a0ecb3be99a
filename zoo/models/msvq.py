"""A multi-scale residual vector-quantized autoencoder: the image tokenizer of a VAR-style
next-scale generator (Tian et al. 2024, "Visual Autoregressive Modeling: Scalable Image Generation
via Next-Scale Prediction", arXiv 2404.02905), sized for small images (8x8 digits, 28x28
Fashion-MNIST, 32x32 CIFAR).

An image is encoded to a latent f of side `scales[-1]`, then quantized coarse to fine: at scale k
(side s_k) the residual that the earlier scales left is area-downsampled to s_k x s_k, each vector
is replaced by its nearest entry of one shared codebook, the looked-up map is upsampled back to the
latent side (bicubic) and refined by a 3x3 conv ("phi"), and the result h_k is added to the
reconstruction f_hat and subtracted from the residual. The K token maps are the image's tokens; a
generator predicts map k+1 from the f_hat of maps 0..k (`teacher_inputs`, `next_scale_input`).

    config = MSVQConfig(image_size=28, channels=1, scales=(1, 2, 3, 4, 5, 7))
    model = MultiScaleVQ(config)
    loss, logs = model.loss(x)               # x (B, 1, 28, 28) in [-1, 1]
    indices = model.encode(x)                # K maps (B, s_k, s_k) of codebook ids
    tokens = model.flatten(indices)          # (B, 104): scale after scale, row-major within one
    images = model.decode(indices[:3])       # only the 3 coarsest scales

Design choices (the paper leaves them to the implementation, or our data sets differ from it):
- Lookup: plain L2 distance on raw vectors, as VAR's released tokenizer (using_znorm=False).
  Cosine lookup would ignore the residual's norm, which is what shrinks from scale to scale.
- VQ loss: beta ||sg(f_hat_k) - f||^2 + ||f_hat_k - sg(f)||^2 averaged over the partial sums
  f_hat_k of every scale k (as VAR does), not only the final f_hat: every prefix of the scales is
  then trained to approximate f, which is what makes coarse decodes (and a coarse-to-fine
  generator) meaningful.
- Dead codes: in training mode every forward updates an EMA (decay `dead_code_decay`) of each
  code's share of the batch's tokens; a code whose EMA falls below `dead_code_threshold` / V (V
  the codebook size, 1/V the uniform share) is re-initialised to a random vector the quantizer was
  asked to encode in this batch (a downsampled residual of the current encoder output, any scale),
  and its EMA reset to 1/V, a grace period before it can be judged again. The EMA starts at 1/V,
  so no code is restarted in the first ~log(threshold)/log(decay) steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ZooError

PHI_RATIO = 0.5  # h <- (1 - r) h + r conv3x3(h): VAR's quant_resi


@dataclass(frozen=True)
class MSVQConfig:
    image_size: int  # square images, side in pixels
    channels: int  # 1 or 3
    scales: tuple[int, ...]  # strictly increasing token-map sides; the last is the latent side
    codebook_size: int = 512
    latent_channels: int = 32
    width: int = 64  # conv width of encoder/decoder
    downsample: int = 4  # image side / latent side; 1, 2, 4 or 8
    beta: float = 0.25  # commitment loss weight
    dead_code_decay: float = 0.9  # EMA decay of per-code usage (training mode)
    dead_code_threshold: float = 0.05  # restart codes under this fraction of uniform use; 0: never

    def __post_init__(self):
        if isinstance(self.scales, list):  # a list from a JSON config: keep the dataclass hashable
            object.__setattr__(self, "scales", tuple(self.scales))

    @property
    def latent_side(self) -> int:
        return self.image_size // self.downsample

    def validate(self) -> None:
        def positive_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value > 0

        if not positive_int(self.image_size):
            raise ZooError(f"msvq: image_size must be a positive int, got {self.image_size!r}")
        if self.channels not in (1, 3):
            raise ZooError(f"msvq: channels must be 1 or 3, got {self.channels!r}")
        if self.downsample not in (1, 2, 4, 8):
            raise ZooError(f"msvq: downsample must be 1, 2, 4 or 8, got {self.downsample!r}")
        if self.image_size % self.downsample:
            raise ZooError(f"msvq: image_size {self.image_size} is not divisible by downsample "
                           f"{self.downsample}")
        scales = self.scales
        if (not isinstance(scales, tuple) or not scales
                or not all(positive_int(s) for s in scales)
                or any(a >= b for a, b in zip(scales, scales[1:]))):
            raise ZooError(f"msvq: scales must be strictly increasing positive ints, got "
                           f"{scales!r}")
        if scales[-1] != self.latent_side:
            raise ZooError(f"msvq: the last scale ({scales[-1]}) must be the latent side, "
                           f"image_size // downsample = {self.latent_side}")
        if not positive_int(self.codebook_size) or self.codebook_size < 2:
            raise ZooError(f"msvq: codebook_size must be an int >= 2, got {self.codebook_size!r}")
        if not positive_int(self.latent_channels):
            raise ZooError(f"msvq: latent_channels must be a positive int, got "
                           f"{self.latent_channels!r}")
        if not positive_int(self.width):
            raise ZooError(f"msvq: width must be a positive int, got {self.width!r}")
        if not self.beta >= 0:
            raise ZooError(f"msvq: beta must be >= 0, got {self.beta!r}")
        if not 0 <= self.dead_code_decay < 1:
            raise ZooError(f"msvq: dead_code_decay must be in [0, 1), got {self.dead_code_decay!r}")
        if not 0 <= self.dead_code_threshold < 1:
            raise ZooError(f"msvq: dead_code_threshold must be in [0, 1), got "
                           f"{self.dead_code_threshold!r}")


def default_scales(latent_side: int) -> tuple[int, ...]:
    """A VAR-like schedule ending at `latent_side`: every side 1..4, then a geometric progression
    from 4 to latent_side in the fewest steps whose ratio is at most 1.45, rounded (and kept
    strictly increasing). 7 -> (1, 2, 3, 4, 5, 7); 8 -> (1, 2, 3, 4, 6, 8);
    16 -> (1, 2, 3, 4, 6, 8, 11, 16)."""
    if not isinstance(latent_side, int) or latent_side < 1:
        raise ZooError(f"msvq: latent side must be a positive int, got {latent_side!r}")
    scales = list(range(1, min(latent_side, 4) + 1))
    if latent_side > 4:
        steps = math.ceil(math.log(latent_side / 4) / math.log(1.45) - 1e-9)
        for i in range(1, steps + 1):
            side = round(4 * (latent_side / 4) ** (i / steps))
            scales.append(min(max(side, scales[-1] + 1), latent_side))
    return tuple(scales)


def default_downsample(image_size: int) -> int:
    """4 for sides >= 16 divisible by 4 (28 -> 7, 32 -> 8), else 2 when even (8 -> 4), else 1."""
    if image_size >= 16 and image_size % 4 == 0:
        return 4
    return 2 if image_size % 2 == 0 else 1


def msvq_config(image_size: int, channels: int, **overrides) -> MSVQConfig:
    """An MSVQConfig with the default downsample and scale schedule for this image size."""
    downsample = overrides.pop("downsample", default_downsample(image_size))
    scales = overrides.pop("scales", default_scales(image_size // downsample))
    return MSVQConfig(image_size=image_size, channels=channels, scales=scales,
                      downsample=downsample, **overrides)


# --- encoder / decoder ---------------------------------------------------------------------------

def _norm(width: int) -> nn.GroupNorm:
    # The most groups (up to 32) that still leave >= 2 channels each: GroupNorm, not BatchNorm,
    # so that encode() is the same function in train and eval mode and at any batch size.
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if width % g == 0 and width // g >= min(2, width))
    return nn.GroupNorm(groups, width)


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x))))))."""

    def __init__(self, width: int):
        super().__init__()
        self.branch = nn.Sequential(
            _norm(width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
            _norm(width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class Encoder(nn.Module):
    """stem, log2(downsample) x (stride-2 conv, ResBlock), a ResBlock at the latent side, then
    norm, act and a 1x1 conv to latent_channels. The residual blocks run after each downsampling,
    at the lower resolution: most of the compute stays off the full-size image."""

    def __init__(self, config: MSVQConfig):
        super().__init__()
        w = config.width
        self.stem = nn.Conv2d(config.channels, w, 3, padding=1)
        self.stages = nn.Sequential(*(
            nn.Sequential(nn.Conv2d(w, w, 3, stride=2, padding=1), ResBlock(w))
            for _ in range(int(math.log2(config.downsample)))))
        self.mid = ResBlock(w)
        self.out = nn.Sequential(_norm(w), nn.SiLU(), nn.Conv2d(w, config.latent_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mid(self.stages(self.stem(x))))


class Decoder(nn.Module):
    """The encoder mirrored: 3x3 conv in, a ResBlock, log2(downsample) x (ResBlock, nearest 2x
    upsample, 3x3 conv), then norm, act and a 3x3 conv to the image channels (no squashing: the
    reconstruction loss sees raw values, decode() clamps)."""

    def __init__(self, config: MSVQConfig):
        super().__init__()
        w = config.width
        self.stem = nn.Conv2d(config.latent_channels, w, 3, padding=1)
        self.mid = ResBlock(w)
        self.stages = nn.Sequential(*(
            nn.Sequential(ResBlock(w), nn.Upsample(scale_factor=2, mode="nearest"),
                          nn.Conv2d(w, w, 3, padding=1))
            for _ in range(int(math.log2(config.downsample)))))
        self.out = nn.Sequential(_norm(w), nn.SiLU(), nn.Conv2d(w, config.channels, 3, padding=1))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.out(self.stages(self.mid(self.stem(f))))


# --- quantizer -----------------------------------------------------------------------------------

class Phi(nn.Module):
    """VAR's refinement of an upsampled token map: h <- (1 - r) h + r conv3x3(h)."""

    def __init__(self, channels: int, ratio: float = PHI_RATIO):
        super().__init__()
        self.ratio = ratio
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return (1 - self.ratio) * h + self.ratio * self.conv(h)


class MultiScaleQuantizer(nn.Module):
    """The shared codebook, one phi per scale, and the per-code usage EMA for dead-code restarts."""

    def __init__(self, config: MSVQConfig):
        super().__init__()
        self.config = config
        self.scales = tuple(config.scales)
        self.side = config.latent_side
        V, C = config.codebook_size, config.latent_channels
        self.codebook = nn.Embedding(V, C)
        nn.init.uniform_(self.codebook.weight, -1.0 / V, 1.0 / V)  # VQGAN's init; restarts fix it
        self.phis = nn.ModuleList(Phi(C) for _ in self.scales)
        # each code's EMA share of the tokens; starts uniform, so new codes get a grace period
        self.register_buffer("code_usage", torch.full((V,), 1.0 / V))

    def down(self, f: torch.Tensor, side: int) -> torch.Tensor:
        """Area-downsample a latent-side map to side x side (identity at the latent side)."""
        return f if side == self.side else F.interpolate(f, size=(side, side), mode="area")

    @torch.no_grad()
    def lookup(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest codebook ids (L2) of the vectors of z (B, C, s, s) -> (B, s, s)."""
        B, C, s, _ = z.shape
        z = z.permute(0, 2, 3, 1).reshape(-1, C)
        e = self.codebook.weight
        # |z - e|^2 = |z|^2 - 2 z.e + |e|^2; |z|^2 is the same for every code, so it is left out
        distance = torch.addmm(e.square().sum(1), z, e.t(), alpha=-2)
        return distance.argmin(1).view(B, s, s)

    def contribution(self, k: int, idx: torch.Tensor) -> torch.Tensor:
        """h_k: the codes of map k (B, s_k, s_k), upsampled to the latent side and refined."""
        h = self.codebook(idx).permute(0, 3, 1, 2)  # (B, C, s, s)
        if idx.shape[-1] != self.side:
            h = F.interpolate(h, size=(self.side, self.side), mode="bicubic")
        return self.phis[k](h.contiguous())

    def quantize(self, f: torch.Tensor):
        """The residual quantization of f: (partial sums f_hat_k, token maps, lookup inputs).
        The residual is computed from sg(f): only the VQ loss and the straight-through estimator
        send gradients to the encoder."""
        rest = f.detach()
        f_hat = torch.zeros_like(rest)
        partials, indices, inputs = [], [], []
        for k, side in enumerate(self.scales):
            z = self.down(rest, side)
            idx = self.lookup(z)
            h = self.contribution(k, idx)
            f_hat = f_hat + h
            rest = rest - h.detach()
            partials.append(f_hat)
            indices.append(idx)
            inputs.append(z)
        return partials, indices, inputs

    def forward(self, f: torch.Tensor):
        """-> (the decoder's input: f_hat's value with f's gradient, the VQ loss, token maps)."""
        partials, indices, inputs = self.quantize(f)
        beta, f_sg = self.config.beta, f.detach()
        vq_loss = sum(beta * F.mse_loss(f_hat.detach(), f) + F.mse_loss(f_hat, f_sg)
                      for f_hat in partials) / len(partials)
        f_q = f + (partials[-1] - f).detach()  # straight-through: decoder gradient goes to f
        if self.training:
            self.restart_dead_codes(indices, inputs)
        return f_q, vq_loss, indices

    @torch.no_grad()
    def restart_dead_codes(self, indices: list[torch.Tensor], inputs: list[torch.Tensor]) -> int:
        """Update the usage EMA with this batch's tokens and move every code whose EMA share fell
        below dead_code_threshold / V onto a random vector of this batch's lookup inputs.
        Returns the number of codes restarted."""
        config = self.config
        V = config.codebook_size
        hits = torch.cat([i.flatten() for i in indices]).bincount(minlength=V).float()
        self.code_usage.mul_(config.dead_code_decay).add_(
            hits / hits.sum(), alpha=1 - config.dead_code_decay)
        dead = (self.code_usage < config.dead_code_threshold / V).nonzero().squeeze(1)
        if not dead.numel():
            return 0
        C = config.latent_channels
        pool = torch.cat([z.permute(0, 2, 3, 1).reshape(-1, C) for z in inputs])
        # distinct vectors when the batch has enough of them
        pick = (torch.randperm(len(pool), device=pool.device)[:len(dead)] if len(pool) >= len(dead)
                else torch.randint(len(pool), (len(dead),), device=pool.device))
        self.codebook.weight[dead] = pool[pick].to(self.codebook.weight.dtype)
        self.code_usage[dead] = 1.0 / V
        return len(dead)


# --- the tokenizer -------------------------------------------------------------------------------

@dataclass
class MSVQOutput:
    recon: torch.Tensor  # (B, C, H, W), not clamped
    vq_loss: torch.Tensor  # scalar
    indices: list[torch.Tensor]  # K LongTensors (B, s_k, s_k)


class MultiScaleVQ(nn.Module):
    def __init__(self, config: MSVQConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = MultiScaleQuantizer(config)
        self.decoder = Decoder(config)
        boundaries = [0]
        for s in config.scales:
            boundaries.append(boundaries[-1] + s * s)
        self._boundaries = boundaries

    # --- shape facts ---

    @property
    def scales(self) -> tuple[int, ...]:
        return self.config.scales

    @property
    def token_count(self) -> int:
        return self._boundaries[-1]

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def latent_side(self) -> int:
        return self.config.latent_side

    @property
    def scale_slices(self) -> list[slice]:
        """Where each scale's tokens lie in the flat sequence."""
        return [slice(a, b) for a, b in zip(self._boundaries, self._boundaries[1:])]

    # --- training ---

    def _check_images(self, x: torch.Tensor) -> None:
        c, n = self.config.channels, self.config.image_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, n, n):
            raise ZooError(f"msvq takes images of shape (batch, {c}, {n}, {n}), got "
                           f"{tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> MSVQOutput:
        self._check_images(x)
        f_q, vq_loss, indices = self.quantizer(self.encoder(x))
        return MSVQOutput(recon=self.decoder(f_q), vq_loss=vq_loss, indices=indices)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """MSE(recon, x) + VQ loss, and its parts (and the batch's codebook usage) for logs."""
        out = self(x)
        recon_mse = F.mse_loss(out.recon, x)
        total = recon_mse + out.vq_loss
        return total, {"recon_mse": recon_mse.item(), "vq_loss": out.vq_loss.item(),
                       "usage": self.codebook_usage(out.indices)}

    def codebook_usage(self, indices: list[torch.Tensor] | torch.Tensor) -> float:
        """The fraction of the codebook that these token maps (or flat tokens) use."""
        flat = indices if isinstance(indices, torch.Tensor) else torch.cat(
            [i.flatten() for i in indices])
        return flat.unique().numel() / self.codebook_size

    # --- tokens <-> images ---

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """K token maps (B, s_k, s_k); no usage tracking, so the same in train and eval mode."""
        self._check_images(x)
        return self.quantizer.quantize(self.encoder(x))[1]

    def _token_maps(self, indices: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
        if isinstance(indices, torch.Tensor):
            return self.unflatten(indices)
        if not 0 < len(indices) <= len(self.scales):
            raise ZooError(f"msvq: expected 1 to {len(self.scales)} token maps, got "
                           f"{len(indices)}")
        for idx, s in zip(indices, self.scales):
            if idx.ndim != 3 or tuple(idx.shape[1:]) != (s, s):
                raise ZooError(f"msvq: token maps must have shapes (batch, s, s) for scales "
                               f"{self.scales}, got {tuple(idx.shape)} for side {s}")
        return list(indices)

    @torch.no_grad()
    def indices_to_latent(self, indices: list[torch.Tensor] | torch.Tensor,
                          upto: int | None = None) -> torch.Tensor:
        """f_hat (B, C_lat, side, side) from the first `upto` scales (all given ones if None)."""
        maps = self._token_maps(indices)
        if upto is not None:
            if not 0 < upto <= len(maps):
                raise ZooError(f"msvq: upto must be in 1..{len(maps)}, got {upto}")
            maps = maps[:upto]
        return sum(self.quantizer.contribution(k, idx) for k, idx in enumerate(maps))

    @torch.no_grad()
    def decode_latent(self, f_hat: torch.Tensor) -> torch.Tensor:
        return self.decoder(f_hat).clamp(-1, 1)

    @torch.no_grad()
    def decode(self, indices: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from token maps, or flat tokens (B, L'). Fewer maps than scales (or a
        flat prefix ending at a scale boundary) decode from the coarsest scales only."""
        return self.decode_latent(self.indices_to_latent(indices))

    def flatten(self, indices: list[torch.Tensor]) -> torch.Tensor:
        """(B, L): scale after scale, row-major within a scale."""
        return torch.cat([idx.flatten(1) for idx in self._token_maps(indices)], dim=1)

    def unflatten(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Token maps from (B, L) flat tokens; a prefix of whole scales gives the first maps."""
        if tokens.ndim != 2 or tokens.shape[1] not in self._boundaries[1:]:
            raise ZooError(f"msvq: flat tokens must be (batch, L) with L one of "
                           f"{self._boundaries[1:]} (whole scales), got {tuple(tokens.shape)}")
        B, L = tokens.shape
        return [tokens[:, sl].reshape(B, s, s)
                for sl, s in zip(self.scale_slices, self.scales) if sl.stop <= L]

    # --- for the generator: teacher forcing and sampling ---

    @torch.no_grad()
    def begin(self, batch: int, device=None) -> torch.Tensor:
        """The f_hat before any scale: zeros (B, C_lat, side, side)."""
        side = self.latent_side
        return torch.zeros(batch, self.latent_channels, side, side, device=device,
                           dtype=self.quantizer.codebook.weight.dtype)

    @torch.no_grad()
    def next_scale_input(self, f_hat: torch.Tensor, k: int,
                         tokens_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale k's tokens (B, s_k^2) to f_hat; return it and the input of scale k+1,
        f_hat area-downsampled to s_{k+1} and flattened row-major to (B, s_{k+1}^2, C_lat), or
        None after the last scale. f_hat is not modified in place."""
        if not 0 <= k < len(self.scales):
            raise ZooError(f"msvq: scale index {k} out of range 0..{len(self.scales) - 1}")
        s = self.scales[k]
        if tokens_k.shape[1:].numel() != s * s:
            raise ZooError(f"msvq: scale {k} has {s * s} tokens, got {tuple(tokens_k.shape)}")
        f_hat = f_hat + self.quantizer.contribution(k, tokens_k.reshape(-1, s, s))
        if k == len(self.scales) - 1:
            return f_hat, None
        nxt = self.quantizer.down(f_hat, self.scales[k + 1])
        return f_hat, nxt.flatten(2).transpose(1, 2)

    @torch.no_grad()
    def teacher_inputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """The generator's inputs for scales 1..K-1 under teacher forcing, (B, L - s_0^2, C_lat):
        the same computation as the begin / next_scale_input loop, so training and sampling
        see identical inputs."""
        maps = self.unflatten(tokens)
        if len(maps) != len(self.scales):
            raise ZooError(f"msvq: teacher_inputs needs all {self.token_count} tokens, got "
                           f"{tokens.shape[1]}")
        f_hat = self.begin(tokens.shape[0], tokens.device)
        inputs = [f_hat.new_zeros(tokens.shape[0], 0, self.latent_channels)]
        for k, idx in enumerate(maps[:-1]):
            f_hat, nxt = self.next_scale_input(f_hat, k, idx)
            inputs.append(nxt)
        return torch.cat(inputs, dim=1)

    @torch.no_grad()
    def code_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw codebook vectors of tokens (B, T) -> (B, T, C_lat)."""
        return self.quantizer.codebook(tokens)


@torch.no_grad()
def reconstruction_by_scales(model: MultiScaleVQ, x: torch.Tensor) -> list[float]:
    """MSE against x of the images decoded from the first k scales, k = 1..K."""
    indices = model.encode(x)
    return [F.mse_loss(model.decode(indices[:k]), x).item() for k in range(1, len(indices) + 1)]


__all__ = ["MSVQConfig", "MSVQOutput", "MultiScaleVQ", "MultiScaleQuantizer", "Encoder",
           "Decoder", "ResBlock", "Phi", "default_scales", "default_downsample", "msvq_config",
           "reconstruction_by_scales"]

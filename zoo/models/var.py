"""VAR, a class-conditional image generator that predicts the next *scale* of a multi-scale token
map (Tian et al. 2024, "Visual Autoregressive Modeling", arXiv 2404.02905), and in the same class
the raster-order autoregressive baseline of the same size, written to be read.

A multi-scale tokenizer (the `tokenizer` below; zoo's is in msvq.py) turns an image into K token
maps of growing sides `scales`, e.g. (1, 2, 3, 4, 5, 7): a coarse-to-fine residual decomposition
of one latent f (B, C, S, S), with the last side S. The transformer sees the maps flattened one
after the other (row-major within a map) as one sequence of L = sum(s * s) tokens and predicts
all the tokens of scale k at once, from everything in scales < k: attention is *block-causal*, a
token sees every token of its own and earlier scales, none of later ones (`block_causal_mask`).
Its input at the positions of scale k is the tokenizer's view of the image so far (the sum of
the decoded scales 0..k-1, resized to s_k x s_k: `tokenizer.teacher_inputs`), and at the first
scale the start token, the class embedding. So training is one forward pass with teacher
forcing, and generation takes K steps instead of L.

`order="raster"` is the usual baseline: one token at a time, in raster order, over a single-scale
tokenizer (`scales` of one entry), causal attention, and the input at position t is the codebook
vector of token t - 1 (`tokenizer.code_vectors`). Both share every layer, so they compare at
equal size and training cost.

Blocks are pre-norm transformer blocks with adaptive layer norm, as in DiT and VAR: the class
embedding c gives, per block, a shift, scale and gate for each branch (`ada`, initialized to zero
so every block starts as the identity: adaLN-Zero). Modules are named the way zoo's inits,
quantization and diagnostics find them: `blocks[i].attn.qkv`, `.attn.proj`, `.mlp.fc1`,
`.mlp.act` (the pluggable activation), `.mlp.fc2`, and `get_classifier()` is `head`.

The tokenizer is trained first and attached after construction, frozen. It is deliberately not
a registered submodule (see `attach_tokenizer`): zoo's inits, quantization, activation check,
parameter count and checkpoints all walk the modules and must see only the transformer.

    model = small_var(image_size=(32, 32), channels=3, num_classes=10,
                      act_layer=act_layer_for("gelu"), scales=tok.scales,
                      codebook_size=tok.codebook_size, latent_channels=tok.latent_channels)
    model.attach_tokenizer(tok)              # frozen, always in eval mode
    logits = model(batch)                    # batch (B, 1 + L) int64: [label, tokens] -> (B, L, V)
    loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    images = model.generate(labels, cfg=1.5, top_k=0, top_p=1.0)   # (B, C_img, H, W) in [-1, 1]

Classifier-free guidance: in training a label is replaced by the null class (index num_classes)
with probability `cond_drop`; generation runs the batch with its labels and with the null class
and takes uncond + cfg * (cond - uncond). (VAR ramps cfg up over the scales; here it is constant.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ZooError

ORDERS = ("scale", "raster")


@dataclass
class VARConfig:
    scales: tuple[int, ...]  # token-map sides of the tokenizer, e.g. (1, 2, 3, 4, 5, 7)
    codebook_size: int  # V
    latent_channels: int  # C: the tokenizer's feature width (teacher inputs are (B, ., C))
    num_classes: int
    order: str = "scale"  # "scale": next-scale prediction; "raster": next token, one scale
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: float = 4.0  # MLP hidden width / n_embd
    dropout: float = 0.0
    cond_drop: float = 0.1  # probability of the null class in training (classifier-free guidance)

    def __post_init__(self):
        self.scales = tuple(int(s) for s in self.scales)  # a list from a config file works too
        if not self.scales or min(self.scales) < 1:
            raise ZooError(f"var: scales must be positive token-map sides, got {self.scales}")
        if self.order not in ORDERS:
            raise ZooError(f"var: unknown order '{self.order}' (orders: {', '.join(ORDERS)})")
        if self.order == "raster" and len(self.scales) != 1:
            raise ZooError(f"var: raster order runs over a single-scale tokenizer, got scales "
                           f"{self.scales}")
        if self.n_embd % self.n_head:
            raise ZooError(f"var: n_embd ({self.n_embd}) must be a multiple of n_head "
                           f"({self.n_head})")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ZooError(f"var: cond_drop must be in [0, 1), got {self.cond_drop}")

    @property
    def seq_len(self) -> int:
        return sum(s * s for s in self.scales)

    @property
    def first_len(self) -> int:
        """Positions filled with start tokens: the whole first scale (nothing comes before it),
        or the first token in raster order."""
        return self.scales[0] ** 2 if self.order == "scale" else 1

    @property
    def mlp_hidden(self) -> int:
        return round(self.mlp_ratio * self.n_embd)


# Named sizes: (n_layer, n_head, n_embd), GPT-2-like widths for small images.
VAR_SIZES: dict[str, dict[str, int]] = {
    "nano": dict(n_layer=2, n_head=2, n_embd=64),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128),
    "small": dict(n_layer=8, n_head=8, n_embd=256),
}
_OVERRIDABLE = ("n_layer", "n_head", "n_embd", "mlp_ratio", "dropout", "cond_drop")


def block_causal_mask(scales) -> torch.Tensor:
    """(L, L) bool, True where query i may attend to key j: scale(j) <= scale(i)."""
    level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(scales)])
    return level[:, None] >= level[None, :]


def causal_mask(length: int) -> torch.Tensor:
    """(L, L) bool, True where j <= i."""
    return torch.ones(length, length, dtype=torch.bool).tril()


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """`logits` (..., V) with all but the top_k largest (0: all) set to -inf, then all but the
    smallest set of the most probable tokens whose probability reaches top_p (1.0: all)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # a token is dropped when the tokens before it already reach top_p (the first never is)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class SelfAttention(nn.Module):
    """Multi-head self-attention under a boolean mask, with a KV cache for generation: while
    `cache` is a list, the keys and values of every call are appended to it and the next call's
    queries attend to all of them plus its own positions, unmasked."""

    def __init__(self, config: VARConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        # q, k and v of every head from one matmul, rows [q; k; v] (timm's and gpt2.py's layout)
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.resid_drop = nn.Dropout(config.dropout)
        self.cache: list[torch.Tensor] | None = None  # [keys, values] while generating

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.cache is not None:
            if self.cache:
                k, v = torch.cat([self.cache[0], k], dim=2), torch.cat([self.cache[1], v], dim=2)
            self.cache[:] = [k, v]
            # a generation step holds one whole scale (or one token), and everything before it
            # is in the cache: attending to all of it is exactly the block-causal mask's row
            mask = None
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: VARConfig, act_layer: Callable[..., nn.Module]):
        super().__init__()
        self.fc1 = nn.Linear(config.n_embd, config.mlp_hidden)
        self.act = act_layer()
        self.fc2 = nn.Linear(config.mlp_hidden, config.n_embd)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class Block(nn.Module):
    """Pre-norm block with adaptive layer norm (DiT's adaLN-Zero): from the condition c, per
    branch a shift and scale of the normalized input and a gate on the branch's output."""

    def __init__(self, config: VARConfig, act_layer: Callable[..., nn.Module]):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, elementwise_affine=False)  # affine comes from c
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, elementwise_affine=False)
        self.mlp = MLP(config, act_layer)
        self.ada = nn.Linear(config.n_embd, 6 * config.n_embd)

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # c (B, D) is silu(class embedding): one set of modulations per sequence
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None, :].chunk(6, dim=-1)
        x = x + gate1 * self.attn(_modulate(self.ln_1(x), shift1, scale1), mask)
        return x + gate2 * self.mlp(_modulate(self.ln_2(x), shift2, scale2))


class AdaLNHead(nn.Module):
    """The final layer norm, shifted and scaled by the condition (no gate: nothing to add to)."""

    def __init__(self, config: VARConfig):
        super().__init__()
        self.ln = nn.LayerNorm(config.n_embd, elementwise_affine=False)
        self.ada = nn.Linear(config.n_embd, 2 * config.n_embd)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c)[:, None, :].chunk(2, dim=-1)
        return _modulate(self.ln(x), shift, scale)


class VAR(nn.Module):
    def __init__(self, config: VARConfig, act_layer: Callable[..., nn.Module]):
        super().__init__()
        self.config = config
        D, L = config.n_embd, config.seq_len
        self.class_emb = nn.Embedding(config.num_classes + 1, D)  # the last one: null class
        self.pos_start = nn.Parameter(torch.empty(config.first_len, D))
        self.word_embed = nn.Linear(config.latent_channels, D)
        self.pos_embed = nn.Parameter(torch.empty(L, D))
        # which scale a position belongs to (VAR's level embedding); raster order has one
        self.lvl_embed = nn.Embedding(len(config.scales), D) if config.order == "scale" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, act_layer) for _ in range(config.n_layer))
        self.head_norm = AdaLNHead(config)
        self.head = nn.Linear(D, config.codebook_size)
        level = torch.cat([torch.full((s * s,), k) for k, s in enumerate(config.scales)])
        self.register_buffer("level", level, persistent=False)
        mask = block_causal_mask(config.scales) if config.order == "scale" else causal_mask(L)
        self.register_buffer("mask", mask, persistent=False)
        self.tokenizer: nn.Module | None = None  # attach_tokenizer
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """As VAR and DiT: N(0, 0.02) Linear and Embedding weights and position embeddings, zero
        biases, the last layer of each residual branch N(0, 0.02 / sqrt(2 n_layer)) (2 n_layer
        branches add into the residual stream), and zero `ada` layers: every gate starts at 0,
        so each block starts as the identity and the network as embeddings -> norm -> head."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.pos_start, mean=0.0, std=0.02)
        nn.init.normal_(self.pos_embed, mean=0.0, std=0.02)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            for layer in (block.attn.proj, block.mlp.fc2):
                nn.init.normal_(layer.weight, mean=0.0, std=residual_std)
        for ada in [block.ada for block in self.blocks] + [self.head_norm.ada]:
            nn.init.zeros_(ada.weight)
            nn.init.zeros_(ada.bias)

    def get_classifier(self) -> nn.Module:
        """The output layer, as timm names it (its input: the final normalized hidden states)."""
        return self.head

    def attention_mask(self) -> torch.Tensor:
        """(L, L) bool, True where a position may attend: block-causal in scale order, causal in
        raster order."""
        return self.mask

    # --- the tokenizer ---------------------------------------------------------------------------

    def attach_tokenizer(self, tokenizer: nn.Module) -> "VAR":
        """Attach a trained tokenizer as `model.tokenizer`: frozen (no gradients, eval mode for
        good) and moved or cast along with the model (`_apply`), but not a registered submodule,
        so `modules()`, `parameters()` and `state_dict()` hold the transformer alone. Registered,
        it would be re-initialized by zoo's inits, quantized, counted, checkpointed with every
        run (it is stored once, as the runs' dependency), and its own nonlinearities (a VQ-VAE's
        SiLUs) would fail zoo's activation check. It must have this model's scales, codebook
        size and feature width."""
        config = self.config
        got = (tuple(tokenizer.scales), tokenizer.codebook_size, tokenizer.latent_channels)
        want = (config.scales, config.codebook_size, config.latent_channels)
        if got != want:
            raise ZooError(f"var: the tokenizer has scales {got[0]}, codebook size {got[1]} and "
                           f"{got[2]} latent channels; the model was built for {want[0]}, "
                           f"{want[1]} and {want[2]}")
        tokenizer.requires_grad_(False)
        object.__setattr__(self, "tokenizer", tokenizer.eval())  # bypasses registration
        return self

    def train(self, mode: bool = True) -> "VAR":
        super().train(mode)  # does not reach the tokenizer (not a submodule)
        if self.tokenizer is not None:
            self.tokenizer.eval()  # and it stays in eval mode even if someone switched it
        return self

    def _apply(self, fn, *args, **kwargs):
        """`to`, `cuda`, `half`, ... reach the tokenizer too (modules() does not list it)."""
        super()._apply(fn, *args, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer._apply(fn, *args, **kwargs)
        return self

    def extra_repr(self) -> str:
        tok = self.tokenizer
        return f"order={self.config.order}, scales={self.config.scales}, tokenizer=" + (
            type(tok).__name__ + " (frozen, not a submodule)" if tok is not None else "None")

    def _tokenizer(self) -> nn.Module:
        if self.tokenizer is None:
            raise ZooError("var: no tokenizer attached; call model.attach_tokenizer(tok) first")
        return self.tokenizer

    # --- training ----------------------------------------------------------------------------

    def _condition(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The class embedding (the start token) and silu of it (the condition of every `ada`).
        The SiLU is functional, not a module: it belongs to the conditioning path (fixed, as in
        DiT and VAR), not to the MLPs, and zoo's leak check counts nonlinearity modules as the
        activation under test."""
        cond = self.class_emb(labels)
        return cond, F.silu(cond)

    def _embed(self, features: torch.Tensor, start: int) -> torch.Tensor:
        """Input features (B, T, C) of positions start..start+T-1 -> (B, T, D)."""
        x = self.word_embed(features) + self.pos_embed[start:start + features.shape[1]]
        if self.lvl_embed is not None:
            x = x + self.lvl_embed(self.level[start:start + features.shape[1]])
        return x

    def _start_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        n = self.config.first_len
        x = cond[:, None, :] + self.pos_start + self.pos_embed[:n]
        if self.lvl_embed is not None:
            x = x + self.lvl_embed(self.level[:n])
        return x

    def _logits(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, c, mask)
        return self.head(self.head_norm(x, c))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """batch (B, 1 + L) int64: the class label, then the L target tokens -> logits (B, L, V),
        where position i predicts token i."""
        config = self.config
        L = config.seq_len
        if batch.ndim != 2 or batch.shape[1] != 1 + L:
            raise ZooError(f"var takes (batch, 1 + {L}) int64: a label then {L} tokens (scales "
                           f"{config.scales}), got {tuple(batch.shape)}")
        tokenizer = self._tokenizer()
        labels, tokens = batch[:, 0], batch[:, 1:]
        if self.training and config.cond_drop > 0:
            drop = torch.rand(labels.shape, device=labels.device) < config.cond_drop
            labels = torch.where(drop, torch.full_like(labels, config.num_classes), labels)
        cond, c = self._condition(labels)
        if config.order == "scale":
            features = tokenizer.teacher_inputs(tokens)  # (B, L - s0 * s0, C)
        else:
            features = tokenizer.code_vectors(tokens[:, :-1])  # (B, L - 1, C)
        x = torch.cat([self._start_tokens(cond),
                       self._embed(features.to(cond.dtype), config.first_len)], dim=1)
        return self._logits(self.drop(x), c, self.mask)

    # --- generation --------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, labels: torch.Tensor, cfg: float = 1.5, top_k: int = 0,
                 top_p: float = 1.0, temperature: float = 1.0,
                 generator: torch.Generator | None = None, return_tokens: bool = False):
        """Images (B, C_img, H, W) in [-1, 1] of the classes `labels` (B,) (num_classes: the null
        class, unconditional), decoded by the tokenizer; and the (B, L) tokens if return_tokens.
        K steps of a whole scale each (scale order) or L steps of one token (raster order), with
        a KV cache; sampling is reproducible for a given `generator`."""
        config = self.config
        if labels.ndim != 1:
            raise ZooError(f"var.generate takes labels of shape (batch,), got "
                           f"{tuple(labels.shape)}")
        if temperature <= 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
            raise ZooError(f"var.generate: need temperature > 0, top_k >= 0 and 0 < top_p <= 1, "
                           f"got {temperature}, {top_k}, {top_p}")
        tokenizer = self._tokenizer()
        device = self.pos_embed.device
        labels = labels.to(device)
        B, guided = labels.shape[0], cfg != 1
        if guided:  # conditional and unconditional halves as one batch of 2B
            labels = torch.cat([labels, torch.full_like(labels, config.num_classes)])
        cond, c = self._condition(labels)

        def sample(x: torch.Tensor) -> torch.Tensor:
            logits = self._logits(x, c, None).float()  # (B or 2B, n, V)
            if guided:
                cond_logits, uncond_logits = logits[:B], logits[B:]
                logits = uncond_logits + cfg * (cond_logits - uncond_logits)
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
            return torch.multinomial(probs.flatten(0, 1), 1, generator=generator).view(B, -1)

        def embed(features: torch.Tensor, start: int) -> torch.Tensor:
            x = self._embed(features.to(cond.dtype), start)
            return x.repeat(2, 1, 1) if guided else x

        was_training = self.training
        self.eval()
        for block in self.blocks:
            block.attn.cache = []
        try:
            x, start, sampled = self._start_tokens(cond), 0, []
            if config.order == "scale":
                f_hat = tokenizer.begin(B, device)
                for k, s in enumerate(config.scales):
                    sampled.append(sample(x))
                    start += s * s
                    f_hat, features = tokenizer.next_scale_input(f_hat, k, sampled[-1])
                    if features is not None:
                        x = embed(features, start)
                tokens = torch.cat(sampled, dim=1)
                images = tokenizer.decode_latent(f_hat)
            else:
                for t in range(config.seq_len):
                    sampled.append(sample(x))
                    if t + 1 < config.seq_len:
                        x = embed(tokenizer.code_vectors(sampled[-1]), t + 1)
                tokens = torch.cat(sampled, dim=1)
                images = tokenizer.decode(tokens)
        finally:
            for block in self.blocks:
                block.attn.cache = None
            self.train(was_training)
        return (images, tokens) if return_tokens else images


def small_var(*, image_size, channels: int, num_classes: int, act_layer: Callable[..., nn.Module],
              scales, codebook_size: int, latent_channels: int, size: str = "tiny",
              order: str = "scale", **overrides) -> VAR:
    """A VAR of a named size (VAR_SIZES), with `n_layer`, `n_head`, `n_embd`, `mlp_ratio`,
    `dropout`, `cond_drop` overridable. image_size and channels are the tokenizer's business:
    recorded on the model, unused by the transformer."""
    if size not in VAR_SIZES:
        raise ZooError(f"unknown var size '{size}' (sizes: {', '.join(VAR_SIZES)})")
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ZooError(f"var has no option {', '.join(unknown)} (options: size, order, "
                       f"{', '.join(_OVERRIDABLE)})")
    config = VARConfig(scales=tuple(scales), codebook_size=codebook_size,
                       latent_channels=latent_channels, num_classes=num_classes, order=order,
                       **{**VAR_SIZES[size], **overrides})
    model = VAR(config, act_layer)
    model.image_size, model.channels = image_size, channels
    return model


__all__ = ["VAR", "VARConfig", "VAR_SIZES", "Block", "SelfAttention", "MLP", "AdaLNHead",
           "block_causal_mask", "causal_mask", "filter_logits", "small_var"]

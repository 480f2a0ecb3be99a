"""GPT-2, a decoder-only transformer language model, written to be read (after the layout of
Karpathy's nanoGPT), with the activation pluggable and Hugging Face GPT-2 weights loadable.

Modules are named the way zoo's inits and diagnostics already understand timm's transformers:
`blocks[i].attn.qkv`, `.attn.proj`, `.mlp.fc1`, `.mlp.act`, `.mlp.fc2`, so `residual_blocks`
finds every block and `residual_branch_ends` its attn.proj and mlp.fc2. The output layer reuses
the token embedding (weight tying) and is not an nn.Linear: see `TiedLMHead`.

    model = small_gpt2(vocab_size=256, act_layer=act_layer_for("gelu_tanh"), size="tiny")
    logits = model(idx)                      # idx (B, T) int64 -> logits (B, T, vocab)
    model = load_hf_gpt2("gpt2")             # OpenAI's 124M weights, through transformers
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from zoo.errors import ZooError


@dataclass
class GPT2Config:
    vocab_size: int
    block_size: int  # the longest context: the number of position embeddings
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers (LayerNorm always has them, as in GPT-2)
    mlp_ratio: float = 4.0  # MLP hidden width / n_embd

    @property
    def mlp_hidden(self) -> int:
        return round(self.mlp_ratio * self.n_embd)


# Named sizes: (n_layer, n_head, n_embd, block_size). `small` is OpenAI's GPT-2 small (124M
# parameters with its 50257-token vocabulary).
GPT2_SIZES: dict[str, dict[str, int]] = {
    "nano": dict(n_layer=2, n_head=2, n_embd=64, block_size=128),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=256),
    "mini": dict(n_layer=6, n_head=6, n_embd=384, block_size=256),
    "small": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024),
}
_OVERRIDABLE = ("n_layer", "n_head", "n_embd", "dropout", "bias", "mlp_ratio")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t only sees positions <= t."""

    def __init__(self, config: GPT2Config):
        super().__init__()
        if config.n_embd % config.n_head:
            raise ZooError(f"gpt2: n_embd ({config.n_embd}) must be a multiple of n_head "
                           f"({config.n_head})")
        self.n_head = config.n_head
        self.dropout = config.dropout
        # q, k and v of every head from one matmul: output rows are [q; k; v], each n_embd wide
        # (the layout timm's ViT uses, which zoo's weight_selection splits in thirds).
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        # (B, T, C) -> (B, heads, T, head size): attention runs per head over the T axis
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config, act_layer: Callable[..., nn.Module]):
        super().__init__()
        self.fc1 = nn.Linear(config.n_embd, config.mlp_hidden, bias=config.bias)
        self.act = act_layer()
        self.fc2 = nn.Linear(config.mlp_hidden, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPT2Config, act_layer: Callable[..., nn.Module]):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config, act_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TiedLMHead(nn.Module):
    """logits = h @ E^T with E the token embedding (weight tying), read at every call.

    Not an nn.Linear: zoo's inits re-initialize every nn.Linear, which would overwrite a tied
    embedding. The embedding is a plain attribute, not a registered submodule, so it lives in the
    state_dict once, as `wte.weight`: a second entry sharing its storage would make safetensors
    refuse to save, and would load twice. (A weakref would not survive copy.deepcopy; a plain
    attribute is remapped by deepcopy's memo to the copy's own embedding.)
    """

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        object.__setattr__(self, "embedding", embedding)  # bypasses submodule registration

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.embedding.weight)

    def extra_repr(self) -> str:
        vocab, width = self.embedding.weight.shape
        return f"in_features={width}, out_features={vocab}, tied to the token embedding"


class GPT2(nn.Module):
    def __init__(self, config: GPT2Config, act_layer: Callable[..., nn.Module]):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, act_layer) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = TiedLMHead(self.wte)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """GPT-2's own initialization: N(0, 0.02) for Linear and Embedding weights, zero biases,
        LayerNorm (1, 0); the last layer of each residual branch N(0, 0.02 / sqrt(2 n_layer)),
        because 2 n_layer branches add into the residual stream and their variances sum."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
            if isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            for layer in (block.attn.proj, block.mlp.fc2):
                nn.init.normal_(layer.weight, mean=0.0, std=residual_std)

    def get_classifier(self) -> nn.Module:
        """The output layer, as timm names it: zoo's diagnostics read its input (the final
        normalized hidden states) as the penultimate features."""
        return self.lm_head

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.ndim != 2:
            raise ZooError(f"gpt2 takes token ids of shape (batch, time), got {tuple(idx.shape)}")
        T = idx.shape[1]
        if T > self.config.block_size:
            raise ZooError(f"gpt2: a sequence of {T} tokens is longer than block_size "
                           f"{self.config.block_size} (the model has no position embedding "
                           "beyond it)")
        pos = torch.arange(T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    @classmethod
    def from_hf(cls, model_or_name, act_layer: Callable[..., nn.Module] | None = None,
                dropout: float = 0.0) -> "GPT2":
        """A zoo GPT2 with the weights of a Hugging Face GPT-2: a `GPT2LMHeadModel` (or
        `GPT2Model`) instance, or a hub name / local folder loaded with `from_pretrained`.
        The activation defaults to the checkpoint's own as a torch module (GPT-2's "gelu_new"
        is `nn.GELU(approximate="tanh")`); `act_layer=zoo.build.act_layer_for("gelu_tanh")`
        gives zoo's (fused on GPU)."""
        hf = _hf_from_pretrained(model_or_name) if isinstance(model_or_name, str) else model_or_name
        hf_config = hf.config
        _check_hf_config(hf_config)
        if act_layer is None:
            act_layer = hf_act_layer(hf_config.activation_function)
        n_inner = getattr(hf_config, "n_inner", None) or 4 * hf_config.n_embd
        config = GPT2Config(vocab_size=hf_config.vocab_size, block_size=hf_config.n_positions,
                            n_layer=hf_config.n_layer, n_head=hf_config.n_head,
                            n_embd=hf_config.n_embd, dropout=dropout, bias=True,
                            mlp_ratio=n_inner / hf_config.n_embd)
        model = cls(config, act_layer)
        missing, unexpected = model.load_state_dict(
            hf_gpt2_state_dict_to_zoo(hf.state_dict()), strict=False)
        # Only an activation's own learnable parameters (zoo's, not GPT-2's) may be left out.
        missing = [k for k in missing if ".mlp.act." not in k]
        if missing or unexpected:
            raise ZooError(f"gpt2: the Hugging Face weights do not fit (missing: "
                           f"{', '.join(missing) or 'none'}; unexpected: "
                           f"{', '.join(unexpected) or 'none'})")
        return model


def small_gpt2(*, vocab_size: int, block_size: int | None = None,
               act_layer: Callable[..., nn.Module], size: str = "tiny", **overrides) -> GPT2:
    """A GPT-2 of a named size (GPT2_SIZES), with `n_layer`, `n_head`, `n_embd`, `dropout`,
    `bias`, `mlp_ratio` overridable; `block_size` None takes the size's."""
    if size not in GPT2_SIZES:
        raise ZooError(f"unknown gpt2 size '{size}' (sizes: {', '.join(GPT2_SIZES)})")
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ZooError(f"gpt2 has no option {', '.join(unknown)} (options: block_size, size, "
                       f"{', '.join(_OVERRIDABLE)})")
    shape = {**GPT2_SIZES[size], **overrides}
    if block_size is not None:
        shape["block_size"] = block_size
    return GPT2(GPT2Config(vocab_size=vocab_size, **shape), act_layer)


# --- Hugging Face GPT-2 --------------------------------------------------------------------------

# HF name (after "transformer.") -> zoo name. HF's GPT-2 uses Conv1D, whose weight is (in, out):
# the transpose of nn.Linear's (out, in).
_HF_NAMES = [
    (r"wte\.weight", "wte.weight"),
    (r"wpe\.weight", "wpe.weight"),
    (r"ln_f\.(weight|bias)", r"ln_f.\1"),
    (r"h\.(\d+)\.(ln_1|ln_2)\.(weight|bias)", r"blocks.\1.\2.\3"),
    (r"h\.(\d+)\.attn\.c_attn\.(weight|bias)", r"blocks.\1.attn.qkv.\2"),
    (r"h\.(\d+)\.attn\.c_proj\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"h\.(\d+)\.mlp\.c_fc\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (r"h\.(\d+)\.mlp\.c_proj\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
]
_CONV1D = re.compile(r"\.(c_attn|c_proj|c_fc)\.weight$")
# The causal mask buffers of older transformers versions: constants, not weights.
_HF_MASKS = re.compile(r"\.attn\.(bias|masked_bias)$")


def hf_gpt2_state_dict_to_zoo(hf_state: dict) -> dict:
    """A `transformers` GPT2LMHeadModel (or GPT2Model) state dict in this module's names and
    layouts. `lm_head.weight` is dropped: it is the tied token embedding (refused if it is not)."""
    zoo_state = {}
    for hf_name, tensor in hf_state.items():
        name = hf_name.removeprefix("transformer.")
        if name == "lm_head.weight" or _HF_MASKS.search(name):
            continue
        for pattern, replacement in _HF_NAMES:
            if re.fullmatch(pattern, name):
                if _CONV1D.search(name):
                    tensor = tensor.t()
                zoo_state[re.sub(pattern, replacement, name)] = tensor.contiguous()
                break
        else:
            raise ZooError(f"gpt2: unknown tensor in the Hugging Face state dict: {hf_name}")
    head = hf_state.get("lm_head.weight")
    embedding = zoo_state.get("wte.weight")
    if head is not None and embedding is not None and not torch.equal(head, embedding):
        raise ZooError("gpt2: this checkpoint's lm_head is not tied to its token embedding; "
                       "zoo's GPT2 always ties them")
    return zoo_state


class _TorchAct:
    """A checkpoint's own activation as PyTorch's module, with the `act_layer(inplace=...)`
    signature the blocks call (as in timm, model code defaults to torch's layers)."""

    def __init__(self, make: Callable[[], nn.Module]):
        self.make = make

    def __call__(self, inplace: bool = False) -> nn.Module:
        return self.make()


_HF_ACTS = {"gelu_new": lambda: nn.GELU(approximate="tanh"),
            "gelu_pytorch_tanh": lambda: nn.GELU(approximate="tanh"),
            "gelu_fast": lambda: nn.GELU(approximate="tanh"),
            "gelu": nn.GELU, "relu": nn.ReLU}


def hf_act_layer(hf_name: str) -> Callable[..., nn.Module]:
    """The act_layer of a Hugging Face GPT-2 `activation_function`, as torch modules."""
    if hf_name not in _HF_ACTS:
        raise ZooError(f"gpt2: no activation for the checkpoint's '{hf_name}'; pass act_layer")
    return _TorchAct(_HF_ACTS[hf_name])


def _check_hf_config(hf_config) -> None:
    """Refuse the GPT-2 variants that compute attention differently from this module."""
    if not getattr(hf_config, "scale_attn_weights", True) or getattr(
            hf_config, "scale_attn_by_inverse_layer_idx", False):
        raise ZooError("gpt2: the checkpoint scales attention differently from GPT-2 "
                       "(scale_attn_weights / scale_attn_by_inverse_layer_idx)")
    if getattr(hf_config, "layer_norm_epsilon", 1e-5) != 1e-5:
        raise ZooError(f"gpt2: layer_norm_epsilon {hf_config.layer_norm_epsilon} is not GPT-2's "
                       "1e-5")


def _hf_from_pretrained(name_or_path: str):
    try:
        from transformers import GPT2LMHeadModel
    except ImportError:
        raise ZooError("loading Hugging Face GPT-2 weights needs transformers: "
                       "pip install 'zoo-bench[lm]'") from None
    try:
        return GPT2LMHeadModel.from_pretrained(name_or_path)
    except (OSError, ValueError) as exc:  # not found, offline, not a GPT-2 checkpoint
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ZooError(f"cannot load GPT-2 weights '{name_or_path}' ({first}); check the name "
                       "or path, and the network (HF_HUB_OFFLINE=1 allows cached models "
                       "only)") from None


def load_hf_gpt2(name_or_path: str, act_layer: Callable[..., nn.Module] | None = None) -> GPT2:
    """Hugging Face GPT-2 weights ("gpt2", "gpt2-medium", ..., or a local folder) as a zoo
    GPT2 of the same configuration, with the checkpoint's activation (torch's tanh GELU for
    GPT-2) unless `act_layer` says otherwise."""
    return GPT2.from_hf(name_or_path, act_layer=act_layer)


__all__ = ["GPT2", "GPT2Config", "GPT2_SIZES", "Block", "CausalSelfAttention", "MLP",
           "TiedLMHead", "small_gpt2", "hf_gpt2_state_dict_to_zoo", "load_hf_gpt2"]

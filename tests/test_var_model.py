"""zoo's VAR: next-scale prediction under a block-causal mask (and the raster-order baseline under a
causal one), adaLN blocks conditioned on the class, classifier-free guidance, KV-cache generation
that equals recomputing the whole prefix, top-k / top-p sampling, and zoo's layer names.

The tokenizer is a small deterministic fake with the interface of zoo's multi-scale tokenizer: a
fixed random codebook, VAR's residual accumulation of upsampled code maps into f_hat, and 1x1
convolutions around a SiLU as decoder (a nonlinearity of its own, like a real VQ-VAE's)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import zoo.models.var as var_module
from zoo.build import act_layer_for, check_activations
from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.models.var import (
    VAR,
    VAR_SIZES,
    VARConfig,
    block_causal_mask,
    causal_mask,
    filter_logits,
    small_var,
)
from zoo.registry import INITS
from zoo.registry.inits import residual_blocks, residual_branch_ends

V, C, CLASSES = 32, 8, 10
SCALES = (1, 2, 3)  # L = 14
RASTER = (3,)  # L = 9


class FakeTokenizer(nn.Module):
    """The multi-scale tokenizer interface over a fixed codebook. f_hat (B, C, S, S), S the last
    side, is the sum of every decoded scale so far, each code map upsampled (bicubic) to S; the
    input features of scale k + 1 are f_hat resized (area) to its side, as in VAR."""

    def __init__(self, scales=SCALES, codebook_size=V, latent_channels=C, seed=0):
        super().__init__()
        self.scales = tuple(scales)
        self.token_count = sum(s * s for s in self.scales)
        self.codebook_size, self.latent_channels = codebook_size, latent_channels
        g = torch.Generator().manual_seed(seed)
        self.codebook = nn.Embedding(codebook_size, latent_channels)
        self.decoder = nn.Sequential(nn.Conv2d(latent_channels, 16, 1), nn.SiLU(),
                                     nn.Conv2d(16, 3, 1))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def begin(self, batch, device):
        side = self.scales[-1]
        return torch.zeros(batch, self.latent_channels, side, side, device=device)

    def next_scale_input(self, f_hat, k, tokens_k):
        s, side = self.scales[k], self.scales[-1]
        h = self.codebook(tokens_k).transpose(1, 2).reshape(-1, self.latent_channels, s, s)
        if s != side:
            h = F.interpolate(h, size=(side, side), mode="bicubic")
        f_hat = f_hat + h
        if k + 1 == len(self.scales):
            return f_hat, None
        s_next = self.scales[k + 1]
        return f_hat, F.interpolate(f_hat, size=(s_next, s_next), mode="area").flatten(2).mT

    def _run(self, tokens):
        f_hat, inputs, start = self.begin(tokens.shape[0], tokens.device), [], 0
        for k, s in enumerate(self.scales):
            f_hat, nxt = self.next_scale_input(f_hat, k, tokens[:, start:start + s * s])
            start += s * s
            if nxt is not None:
                inputs.append(nxt)
        return f_hat, inputs

    def teacher_inputs(self, tokens):
        f_hat, inputs = self._run(tokens)
        return torch.cat(inputs, dim=1) if inputs else f_hat.new_zeros(tokens.shape[0], 0, C)

    def code_vectors(self, tokens):
        return self.codebook(tokens)

    def decode_latent(self, f_hat):
        return torch.tanh(F.interpolate(self.decoder(f_hat), scale_factor=2.0))

    def decode(self, tokens):
        return self.decode_latent(self._run(tokens)[0])


def make(order="scale", scales=None, seed=0, randomize=True, **overrides):
    """A nano VAR with the fake tokenizer attached. `randomize` draws every weight, `ada`
    included (at init the blocks are the identity, which would make causality tests vacuous)."""
    scales = scales or (SCALES if order == "scale" else RASTER)
    torch.manual_seed(seed)
    model = small_var(image_size=(2 * scales[-1],) * 2, channels=3, num_classes=CLASSES,
                      act_layer=act_layer_for("gelu"), scales=scales, codebook_size=V,
                      latent_channels=C, size="nano", order=order, **overrides)
    if randomize:
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.3)
    return model.attach_tokenizer(FakeTokenizer(scales)).eval()


def batch_of(model, batch=4, seed=1, labels=None):
    g = torch.Generator().manual_seed(seed)
    L = model.config.seq_len
    if labels is None:
        labels = torch.randint(0, CLASSES, (batch,), generator=g)
    return torch.cat([labels[:, None], torch.randint(0, V, (len(labels), L), generator=g)], dim=1)


def spans(scales):
    """(start, end) of every scale in the token sequence."""
    ends = torch.tensor([s * s for s in scales]).cumsum(0).tolist()
    return list(zip([0] + ends[:-1], ends))


# --- masks and causality ------------------------------------------------------------------------

def test_block_causal_mask_of_a_small_schedule():
    expected = torch.tensor([[1, 0, 0, 0, 0],  # scale 0 (one token) sees itself
                             [1, 1, 1, 1, 1],  # scale 1 (four tokens) sees scales 0 and 1
                             [1, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1],
                             [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(block_causal_mask((1, 2)), expected)
    mask = block_causal_mask((1, 2, 3))
    assert mask.shape == (14, 14) and mask.dtype == torch.bool
    for a, (a0, a1) in enumerate(spans((1, 2, 3))):
        for b, (b0, b1) in enumerate(spans((1, 2, 3))):
            assert bool(mask[a0:a1, b0:b1].all() if b <= a else not mask[a0:a1, b0:b1].any())
    assert torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]]).bool())


def test_model_uses_the_mask_of_its_order():
    assert torch.equal(make("scale").attention_mask(), block_causal_mask(SCALES))
    assert torch.equal(make("raster").attention_mask(), causal_mask(9))
    assert "mask" not in make().state_dict()  # a constant, not a weight


@pytest.mark.parametrize("k", range(len(SCALES)))
def test_tokens_of_scale_k_only_change_the_predictions_of_later_scales(k):
    model = make()
    batch = batch_of(model)
    changed = batch.clone()
    start, end = spans(SCALES)[k]
    changed[:, 1 + start:1 + end] = (changed[:, 1 + start:1 + end] + 1) % V
    with torch.no_grad():
        before, after = model(batch), model(changed)
    # scales <= k are predicted from scales < k: unchanged (all of them, for the last scale,
    # which is never an input)
    torch.testing.assert_close(after[:, :end], before[:, :end], atol=1e-6, rtol=0)
    for s0, s1 in spans(SCALES)[k + 1:]:  # every later scale sees scale k
        assert (after[:, s0:s1] - before[:, s0:s1]).abs().amax() > 1e-3


def test_a_token_sees_its_whole_scale_including_later_positions():
    model = make()
    batch = batch_of(model)
    start, end = spans(SCALES)[2]  # scale 2, positions 5..13

    def nudge_last_input(module, args, out):  # the input of the last position only
        out = out.clone()  # (not a constant: the layer norms would remove it)
        out[:, -1] += torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(0))
        return out

    with torch.no_grad():
        before = model(batch)
        handle = model.word_embed.register_forward_hook(nudge_last_input)
        after = model(batch)
        handle.remove()
    torch.testing.assert_close(after[:, :start], before[:, :start], atol=1e-6, rtol=0)
    assert (after[:, start] - before[:, start]).abs().amax() > 1e-3  # first of its scale


@pytest.mark.parametrize("t", [0, 4, 8])
def test_raster_order_is_causal(t):
    model = make("raster")
    batch = batch_of(model)
    changed = batch.clone()
    changed[:, 1 + t] = (changed[:, 1 + t] + 1) % V
    with torch.no_grad():
        before, after = model(batch), model(changed)
    torch.testing.assert_close(after[:, :t + 1], before[:, :t + 1], atol=1e-6, rtol=0)
    for u in range(t + 1, 9):  # token t is the input of position t + 1, seen from there on
        assert (after[:, u] - before[:, u]).abs().amax() > 1e-3


# --- training -----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["scale", "raster"])
def test_overfits_one_batch_and_greedy_generation_reproduces_it(order):
    model = make(order, randomize=False, cond_drop=0.0)  # the model's own init
    batch = batch_of(model, labels=torch.arange(8))  # distinct labels: the label is the prompt
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(200):
        loss = F.cross_entropy(model(batch).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert model.training and not model.tokenizer.training
    images, tokens = model.generate(batch[:, 0], cfg=1.0, top_k=1, return_tokens=True)
    assert torch.equal(tokens, batch[:, 1:])
    assert model.training  # generate restores the mode
    torch.testing.assert_close(images, model.tokenizer.decode(batch[:, 1:]))


def test_cond_drop_replaces_labels_with_the_null_class_in_training_only():
    model = make(scales=(1,), cond_drop=0.1)  # one token: cheap at a large batch
    seen = []
    model.class_emb.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    batch = batch_of(model, batch=4000)
    model.train()
    with torch.no_grad():
        torch.manual_seed(5)
        model(batch)
        torch.manual_seed(5)
        model(batch)
        model.eval()
        model(batch)
    train, again, evaluated = seen
    dropped = train == CLASSES
    assert 0.08 < dropped.float().mean().item() < 0.12
    assert torch.equal(train[~dropped], batch[~dropped, 0])  # the others are untouched
    assert torch.equal(train, again)  # reproducible under torch.manual_seed
    assert torch.equal(evaluated, batch[:, 0])


# --- generation ---------------------------------------------------------------------------------

def record_step_logits(monkeypatch):
    """The guided logits of every generation step, as they reach filter_logits."""
    steps = []

    def recording(logits, top_k=0, top_p=1.0):
        steps.append(logits.clone())
        return filter_logits(logits, top_k, top_p)

    monkeypatch.setattr(var_module, "filter_logits", recording)
    return steps


@pytest.mark.parametrize("order", ["scale", "raster"])
@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_kv_cache_generation_equals_recomputing_the_whole_prefix(monkeypatch, order, cfg):
    model = make(order)
    steps = record_step_logits(monkeypatch)
    labels = torch.tensor([0, 3, 7])
    _, tokens = model.generate(labels, cfg=cfg, generator=torch.Generator().manual_seed(0),
                               return_tokens=True)
    assert len(steps) == (len(SCALES) if order == "scale" else 9)
    got = torch.cat(steps, dim=1)  # (B, L, V)
    with torch.no_grad():  # the sampled sequence, all at once under the mask
        cond = model(torch.cat([labels[:, None], tokens], dim=1))
        uncond = model(torch.cat([torch.full_like(labels, CLASSES)[:, None], tokens], dim=1))
    expected = cond if cfg == 1 else uncond + cfg * (cond - uncond)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert all(block.attn.cache is None for block in model.blocks)  # cleared at the end


def test_cfg_1_runs_the_conditional_half_only():
    model = make()
    sizes = []
    model.head.register_forward_hook(lambda module, args, out: sizes.append(out.shape[0]))
    model.generate(torch.tensor([1, 2]), cfg=1.0)
    assert set(sizes) == {2}
    sizes.clear()
    model.generate(torch.tensor([1, 2]), cfg=3.0)
    assert set(sizes) == {4}  # labels and null class as one batch


def test_top_k_1_is_greedy(monkeypatch):
    model = make()
    steps = record_step_logits(monkeypatch)
    labels = torch.tensor([4, 5])
    outputs = [model.generate(labels, top_k=1, generator=torch.Generator().manual_seed(seed),
                              return_tokens=True)[1] for seed in (0, 1)]
    assert torch.equal(outputs[0], outputs[1])  # no randomness left
    assert torch.equal(outputs[0], torch.cat(steps[:len(SCALES)], dim=1).argmax(dim=-1))


def test_filter_logits_top_k_and_top_p():
    probs = torch.tensor([[0.15, 0.5, 0.04, 0.25, 0.06]])
    logits = probs.log()
    inf = float("-inf")
    assert torch.equal(filter_logits(logits, 0, 1.0), logits)
    assert torch.equal(filter_logits(logits, 2, 1.0).isfinite(),
                       torch.tensor([[False, True, False, True, False]]))
    # top-p keeps the most probable tokens until their mass reaches p: 0.5, 0.75, 0.9, 0.96, 1
    for p, kept in [(0.3, [1]), (0.49, [1]), (0.51, [1, 3]), (0.74, [1, 3]), (0.76, [0, 1, 3]),
                    (0.89, [0, 1, 3]), (0.91, [0, 1, 3, 4]), (0.97, [0, 1, 2, 3, 4])]:
        out = filter_logits(logits, 0, p)
        assert out.isfinite().nonzero()[:, 1].tolist() == kept, p
        assert torch.equal(out[out.isfinite()], logits[out.isfinite()])  # kept ones unchanged
    # top-k first, then top-p within what is left, renormalized: (0.5, 0.25) -> (2/3, 1/3)
    assert filter_logits(logits, 0, 0.6).isfinite().nonzero()[:, 1].tolist() == [1, 3]
    assert filter_logits(logits, 2, 0.6).isfinite().nonzero()[:, 1].tolist() == [1]
    batched = filter_logits(torch.stack([logits[0], logits[0].flip(-1)])[:, None], 1, 1.0)
    assert batched.shape == (2, 1, 5)
    assert batched[0, 0, 1] > inf and batched[1, 0, 3] > inf and batched.isfinite().sum() == 2


def test_generate_is_reproducible_with_a_seeded_generator_and_returns_images():
    model = make()
    labels = torch.tensor([0, 1, 2, CLASSES])  # the null class: unconditional

    def run(seed):
        return model.generate(labels, cfg=1.5, top_k=8, top_p=0.9, temperature=1.2,
                              generator=torch.Generator().manual_seed(seed), return_tokens=True)

    (images, tokens), (images2, tokens2), (_, other) = run(0), run(0), run(1)
    assert torch.equal(tokens, tokens2) and torch.equal(images, images2)
    assert not torch.equal(tokens, other)
    assert images.shape == (4, 3, 6, 6) and tokens.shape == (4, 14)
    assert tokens.dtype == torch.int64 and 0 <= tokens.min() and tokens.max() < V
    assert images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(images, model.tokenizer.decode(tokens))
    assert model.generate(labels[:2]).shape == (2, 3, 6, 6)
    raster = make("raster")
    assert raster.generate(labels).shape == (4, 3, 6, 6)


# --- errors, structure --------------------------------------------------------------------------

def test_errors():
    bare = small_var(image_size=(6, 6), channels=3, num_classes=CLASSES,
                     act_layer=act_layer_for("gelu"), scales=SCALES, codebook_size=V,
                     latent_channels=C, size="nano")
    with pytest.raises(ZooError, match="no tokenizer attached"):
        bare(torch.zeros(2, 15, dtype=torch.long))
    with pytest.raises(ZooError, match="no tokenizer attached"):
        bare.generate(torch.tensor([0]))
    with pytest.raises(ZooError, match="1 \\+ 14"):
        make()(torch.zeros(2, 14, dtype=torch.long))
    with pytest.raises(ZooError, match="single-scale"):
        make("raster", scales=(1, 2))
    with pytest.raises(ZooError, match="the model was built for"):
        bare.attach_tokenizer(FakeTokenizer((1, 2, 4)))
    with pytest.raises(ZooError, match="unknown order"):
        VARConfig(scales=SCALES, codebook_size=V, latent_channels=C, num_classes=2, order="zig")
    with pytest.raises(ZooError, match="options: size, order, n_layer"):
        make(n_layers=3)
    with pytest.raises(ZooError, match="sizes: nano, tiny, small"):
        small_var(image_size=(6, 6), channels=3, num_classes=2, act_layer=act_layer_for("gelu"),
                  scales=SCALES, codebook_size=V, latent_channels=C, size="huge")
    with pytest.raises(ZooError, match="top_p"):
        make().generate(torch.tensor([0]), top_p=0.0)


def test_zoo_names_activations_and_init():
    model = make(randomize=False)
    assert isinstance(model, VAR)
    # only the MLPs': not the conditioning SiLU (functional), not the tokenizer's nn.SiLU
    assert check_activations(model, "gelu") == VAR_SIZES["nano"]["n_layer"]
    assert model.get_classifier() is model.head and isinstance(model.head, nn.Linear)
    assert model.head.out_features == V
    assert residual_blocks(model) == list(model.blocks)
    assert residual_branch_ends(model) == [m for b in model.blocks for m in (b.attn.proj,
                                                                              b.mlp.fc2)]
    names = dict(model.named_modules())
    for part in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.act", "mlp.fc2", "ada"):
        assert f"blocks.1.{part}" in names
    # adaLN-Zero: every gate, shift and scale starts at zero, so every block is the identity
    for ada in [b.ada for b in model.blocks] + [model.head_norm.ada]:
        assert not ada.weight.any() and not ada.bias.any()
    assert model.pos_embed.shape == (14, 64) and model.config.n_embd == 64


def test_the_tokenizer_is_frozen_in_eval_mode_and_out_of_zoos_reach():
    model = make(randomize=False)
    tokenizer = model.tokenizer
    saved = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    assert not any(p.requires_grad for p in tokenizer.parameters())
    model.train()
    assert model.training and model.blocks[0].training and not tokenizer.training
    # not a submodule: zoo's inits, quantization, counts and checkpoints see the transformer only
    assert all(m is not tokenizer for m in model.modules())
    assert not any(k.startswith("tokenizer") for k in model.state_dict())
    assert {id(p) for p in model.parameters()}.isdisjoint(id(p) for p in tokenizer.parameters())
    model.reset_parameters()
    INITS.get("kaiming").create()(model, BuildContext(act="gelu", seed=0))
    assert all(torch.equal(v, saved[k]) for k, v in tokenizer.state_dict().items())
    loss = model(batch_of(model)).logsumexp(-1).mean()
    loss.backward()
    assert model.word_embed.weight.grad is not None
    assert tokenizer.codebook.weight.grad is None
    # but it moves (and is cast) with the model
    model.to(torch.float64)
    assert tokenizer.codebook.weight.dtype == torch.float64
    assert model(batch_of(model)).dtype == torch.float64

"""zoo's GPT-2: Hugging Face's logits from Hugging Face's weights, causal, tied, GPT-2 sized and
initialized, with any zoo activation and init."""

from __future__ import annotations

import math
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from zoo.build import act_layer_for, check_activations
from zoo.errors import ZooError
from zoo.models.context import BuildContext
from zoo.models.gpt2 import (
    GPT2,
    GPT2_SIZES,
    GPT2Config,
    hf_gpt2_state_dict_to_zoo,
    load_hf_gpt2,
    small_gpt2,
)
from zoo.models.structure import residual_blocks, residual_branch_ends
from zoo.registry import INITS

VOCAB = 97


def tiny(act="gelu_tanh", seed=0, **overrides):
    torch.manual_seed(seed)
    options = dict(n_layer=4, n_head=4, n_embd=32, block_size=16)
    return small_gpt2(vocab_size=VOCAB, act_layer=act_layer_for(act), size="nano",
                      **{**options, **overrides})


def tokens(batch=3, length=16, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


# --- Hugging Face parity -------------------------------------------------------------------------

def random_hf_gpt2(seed=0, n_positions=16):
    """A transformers GPT2LMHeadModel with every parameter random (LayerNorms and biases too, so
    that a wrong mapping of any of them shows), in eval mode."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=n_positions, n_embd=48, n_layer=3, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            p.copy_((1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                     or name.endswith("ln_f.weight") else 0.0) + 0.1 * torch.randn_like(p))
    return hf


def test_logits_equal_hugging_face_gpt2_with_its_weights_mapped():
    hf = random_hf_gpt2()
    model = GPT2.from_hf(hf, act_layer=act_layer_for("gelu_tanh")).eval()
    assert model.config == GPT2Config(vocab_size=VOCAB, block_size=16, n_layer=3, n_head=4,
                                      n_embd=48)
    check_activations(model, "gelu_tanh")  # HF's "gelu_new" is zoo's gelu_tanh
    for idx in (tokens(batch=1, length=5), tokens(batch=4, length=16, seed=2)):  # full blocks
        with torch.no_grad():
            expected = hf(idx).logits
            got = model(idx)
        assert got.shape == (idx.shape[0], idx.shape[1], VOCAB)
        assert expected.abs().max() > 1  # the comparison is not between near-zero numbers
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_without_an_act_layer_the_checkpoint_keeps_its_own_activation_as_a_torch_module():
    # model code never looks names up in zoo's registry (as in timm): GPT-2's "gelu_new" is
    # torch's tanh GELU, and the logits are Hugging Face's
    hf = random_hf_gpt2(seed=3)
    model = GPT2.from_hf(hf).eval()
    acts = [block.mlp.act for block in model.blocks]
    assert all(isinstance(a, nn.GELU) and a.approximate == "tanh" for a in acts)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens()), hf(tokens()).logits, atol=1e-5, rtol=0)
    hf.config.activation_function = "quick_gelu"
    with pytest.raises(ZooError, match="no activation for the checkpoint's 'quick_gelu'"):
        GPT2.from_hf(hf)


def test_mapped_state_dict_loads_strictly_into_a_model_of_the_same_config():
    hf = random_hf_gpt2(seed=1)
    state = hf_gpt2_state_dict_to_zoo(hf.state_dict())
    model = GPT2(GPT2Config(vocab_size=VOCAB, block_size=16, n_layer=3, n_head=4, n_embd=48),
                 act_layer_for("gelu_tanh")).eval()
    model.load_state_dict(state, strict=True)
    # Conv1D stores (in, out): the Linear takes its transpose
    assert torch.equal(model.blocks[0].attn.qkv.weight,
                       hf.transformer.h[0].attn.c_attn.weight.t())
    with torch.no_grad():
        torch.testing.assert_close(model(tokens()), hf(tokens()).logits, atol=1e-5, rtol=0)


def test_mapping_skips_hf_mask_buffers_and_refuses_unknown_or_untied_tensors():
    hf_state = random_hf_gpt2().state_dict()
    with_masks = {**hf_state, "transformer.h.0.attn.bias": torch.ones(1, 1, 16, 16),
                  "transformer.h.0.attn.masked_bias": torch.tensor(-1e4)}
    assert (hf_gpt2_state_dict_to_zoo(with_masks).keys()
            == hf_gpt2_state_dict_to_zoo(hf_state).keys())
    with pytest.raises(ZooError, match="unknown tensor.*rotary"):
        hf_gpt2_state_dict_to_zoo({**hf_state, "transformer.h.0.attn.rotary.weight": torch.ones(2)})
    untied = {**hf_state, "lm_head.weight": hf_state["lm_head.weight"] + 1}
    with pytest.raises(ZooError, match="not tied"):
        hf_gpt2_state_dict_to_zoo(untied)


def test_load_hf_gpt2_reads_a_saved_checkpoint_folder(tmp_path):
    hf = random_hf_gpt2(seed=2)
    hf.save_pretrained(tmp_path / "ckpt")
    model = load_hf_gpt2(str(tmp_path / "ckpt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(tokens()), hf(tokens()).logits, atol=1e-5, rtol=0)


def test_load_hf_gpt2_failures_are_one_line_zoo_errors(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    with pytest.raises(ZooError, match="cannot load GPT-2 weights") as err:
        load_hf_gpt2(str(tmp_path / "no-such-folder"))
    assert "\n" not in str(err.value)

    # Offline, simulated: the conftest's HF_HUB_OFFLINE comes too late for huggingface_hub
    # (imported at collection), and a real attempt would wait for the hub's retries.
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nMore")

    monkeypatch.setattr(transformers.GPT2LMHeadModel, "from_pretrained", offline)
    with pytest.raises(ZooError, match=r"'gpt2' \(We couldn't connect.*network") as err:
        load_hf_gpt2("gpt2")
    assert "\n" not in str(err.value)

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ZooError, match=r"needs transformers: pip install 'zoo-bench\[lm\]'"):
        load_hf_gpt2("gpt2")


# --- the architecture ----------------------------------------------------------------------------

def test_changing_a_token_changes_no_logit_before_it():
    model = tiny().eval()
    idx = tokens(batch=2)
    for t in (0, 7, 15):
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % VOCAB
        with torch.no_grad():
            before, after = model(idx), model(changed)
        assert torch.equal(before[:, :t], after[:, :t])
        assert not torch.allclose(before[:, t], after[:, t])  # and it does change position t


def test_head_is_the_token_embedding_and_gets_gradient_from_both_uses():
    model = tiny()
    head = model.get_classifier()
    assert not isinstance(head, nn.Linear)  # zoo's inits would re-initialize an nn.Linear
    assert head.weight is model.wte.weight
    assert sum(p is model.wte.weight for p in model.parameters()) == 1
    # One state_dict entry per storage (safetensors refuses shared tensors)
    state = model.state_dict()
    assert len({v.data_ptr() for v in state.values()}) == len(state)
    shared = [k for k, v in state.items() if v.data_ptr() == model.wte.weight.data_ptr()]
    assert shared == ["wte.weight"]

    idx = tokens(batch=2, length=8)
    features = []
    head.register_forward_pre_hook(lambda module, inputs: features.append(inputs[0].detach()))
    weights = torch.randn(2, 8, VOCAB)
    (model(idx) * weights).sum().backward()
    # The head's use: d/dE of sum(w * h E^T) = w^T h, on every row of the vocabulary...
    head_part = weights.reshape(-1, VOCAB).t() @ features[0].reshape(-1, 32)
    input_part = model.wte.weight.grad - head_part
    # ...and the input's use adds to the rows of exactly the tokens that were read.
    seen = torch.zeros(VOCAB, dtype=torch.bool)
    seen[idx.flatten()] = True
    assert (head_part.abs().sum(dim=1) > 0).all()
    assert (input_part[seen].abs().sum(dim=1) > 1e-4).all()
    torch.testing.assert_close(input_part[~seen], torch.zeros_like(input_part[~seen]),
                               atol=1e-6, rtol=0)


def test_safetensors_round_trip_keeps_the_tie_and_the_logits(tmp_path):
    model = tiny(seed=3).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    fresh = tiny(seed=4).eval()
    idx = tokens()
    with torch.no_grad():
        assert not torch.equal(fresh(idx), model(idx))
        fresh.load_state_dict(load_file(str(path)), strict=True)
        assert torch.equal(fresh(idx), model(idx))
    assert fresh.lm_head.weight is fresh.wte.weight


def test_deepcopy_ties_the_copy_to_its_own_embedding():
    import copy

    model = tiny()
    twin = copy.deepcopy(model)
    assert twin.lm_head.weight is twin.wte.weight
    assert twin.wte.weight is not model.wte.weight


def test_zoo_finds_the_residual_blocks_and_their_branch_ends():
    model = tiny()
    assert residual_blocks(model) == list(model.blocks) and len(model.blocks) == 4
    ends = residual_branch_ends(model)
    assert ends == [layer for b in model.blocks for layer in (b.attn.proj, b.mlp.fc2)]


@pytest.mark.parametrize("size, vocab, expected", [
    ("nano", 256, 124_672), ("tiny", 256, 858_880), ("mini", 256, 10_844_160),
    ("small", 256, 86_039_040), ("small", 50257, 124_439_808)])
def test_parameter_counts(size, vocab, expected):
    model = small_gpt2(vocab_size=vocab, act_layer=act_layer_for("gelu_tanh"), size=size)
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) == expected
    shape = GPT2_SIZES[size]
    width = shape["n_embd"]
    per_block = 12 * width**2 + 13 * width  # qkv, proj, fc1, fc2 with biases; 2 LayerNorms
    formula = (vocab + shape["block_size"]) * width + shape["n_layer"] * per_block + 2 * width
    assert expected == formula


def test_gpt2_small_has_hugging_faces_parameter_count():
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):  # shapes only: no 124M random numbers to draw
        hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())
    assert sum({id(p): p.numel() for p in hf.parameters()}.values()) == 124_439_808


def test_gpt2_initialization_statistics_and_determinism():
    model = small_gpt2(vocab_size=VOCAB, act_layer=act_layer_for("gelu_tanh"), size="mini")
    n_layer = model.config.n_layer
    ends = set(residual_branch_ends(model))
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * n_layer) if module in ends else 0.02
            assert module.weight.std().item() == pytest.approx(std, rel=0.05)
            assert module.weight.mean().abs().item() < std / 10
            assert (module.bias == 0).all()
        if isinstance(module, nn.LayerNorm):
            assert (module.weight == 1).all() and (module.bias == 0).all()
    for table in (model.wte, model.wpe):
        assert table.weight.std().item() == pytest.approx(0.02, rel=0.05)
    first, again, other = tiny(seed=5), tiny(seed=5), tiny(seed=6)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                 again.state_dict().values()))
    assert not torch.equal(first.wte.weight, other.wte.weight)


def test_dropout_is_active_in_training_only():
    model = tiny(dropout=0.5)
    idx = tokens()
    assert not torch.equal(model(idx), model(idx))
    model.eval()
    assert torch.equal(model(idx), model(idx))


# --- pluggable activation and inits --------------------------------------------------------------

def test_golu_is_in_every_block():
    model = tiny("golu")
    assert check_activations(model, "golu") == len(model.blocks)
    assert all(b.mlp.act.act_name == "golu" for b in model.blocks)
    with pytest.raises(ZooError, match="activation leak"):
        check_activations(model, "gelu_tanh")


@pytest.mark.parametrize("init", INITS.names())
def test_every_zoo_init_leaves_finite_logits(init):
    if INITS.get(init).extra.get("requires"):
        pytest.skip(f"{init} needs {INITS.get(init).extra['requires']}")
    model = tiny()
    ctx = BuildContext(act="gelu_tanh", seed=0,
                       calibration_batch=lambda: torch.randint(0, VOCAB, (8, 16)))
    torch.manual_seed(0)
    if init == "unit_scaling":  # its u-muP readout must be a Linear; gpt2's is tied
        with pytest.raises(ZooError, match="tied embeddings are not unit-scaled"):
            INITS.get(init).create()(model, ctx)
        return
    INITS.get(init).create()(model, ctx)
    check_activations(model, "gelu_tanh")
    with torch.no_grad():
        logits = model(tokens())
    assert logits.shape == (3, 16, VOCAB) and torch.isfinite(logits).all()
    assert model.lm_head.weight is model.wte.weight  # no init broke the tie


# --- errors --------------------------------------------------------------------------------------

def test_unknown_size_lists_the_sizes():
    with pytest.raises(ZooError, match=r"size 'huge' \(sizes: nano, tiny, mini, small\)"):
        small_gpt2(vocab_size=VOCAB, act_layer=act_layer_for("gelu_tanh"), size="huge")


def test_unknown_option_and_indivisible_heads_are_zoo_errors():
    with pytest.raises(ZooError, match="no option n_heads"):
        tiny(n_heads=2)
    with pytest.raises(ZooError, match="multiple of n_head"):
        tiny(n_embd=30)


def test_sequence_longer_than_block_size_is_refused():
    model = tiny()
    with pytest.raises(ZooError, match="17 tokens is longer than block_size 16"):
        model(tokens(length=17))
    assert model(tokens(length=16)).shape == (3, 16, VOCAB)

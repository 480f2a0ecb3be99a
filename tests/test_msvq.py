"""zoo's multi-scale residual VQ tokenizer (VAR's): token maps of the configured sides, a flat
order the generator can rely on, teacher-forcing inputs equal to the sampling loop's, and a
tokenizer that learns on scikit-learn's digits, whose reconstruction improves with every scale
decoded and whose codebook stays in use."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from zoo.errors import ZooError
from zoo.models.msvq import (
    MSVQConfig,
    MultiScaleVQ,
    default_downsample,
    default_scales,
    msvq_config,
    reconstruction_by_scales,
)
from zoo.registry.inits import residual_blocks

# 8x8 digits, downsample 2 -> a 4x4 latent, scales (1, 2, 3, 4): 30 tokens an image.
DIGITS = dict(image_size=8, channels=1, scales=(1, 2, 3, 4), codebook_size=64,
              latent_channels=8, width=16, downsample=2)
TRAIN_STEPS = 300  # about 5 s on one CPU thread


def tiny(seed=0, **overrides) -> MultiScaleVQ:
    torch.manual_seed(seed)
    return MultiScaleVQ(MSVQConfig(**{**DIGITS, **overrides}))


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images, dtype=torch.float32)  # 0..16
    return (images / 8 - 1).unsqueeze(1)  # (1797, 1, 8, 8) in [-1, 1]


@pytest.fixture(scope="module")
def trained(digits):
    """(tokenizer at init, the same trained for TRAIN_STEPS Adam steps), both in eval mode."""
    model = tiny(seed=0)
    at_init = tiny(seed=0).eval()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(TRAIN_STEPS):
        batch = digits[torch.randint(len(digits), (64,), generator=generator)]
        loss, _ = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return at_init, model.eval()


# --- configuration -------------------------------------------------------------------------------

def test_default_scales_are_var_like_and_end_at_the_latent_side():
    assert default_scales(7) == (1, 2, 3, 4, 5, 7)
    assert default_scales(4) == (1, 2, 3, 4)
    assert default_scales(8) == (1, 2, 3, 4, 6, 8)
    assert default_scales(2) == (1, 2)
    assert default_scales(1) == (1,)
    for side in range(1, 65):
        scales = default_scales(side)
        assert scales[-1] == side and all(a < b for a, b in zip(scales, scales[1:]))


def test_default_downsample():
    assert [default_downsample(n) for n in (28, 32, 16, 8, 12, 6, 7)] == [4, 4, 4, 2, 2, 2, 1]
    config = msvq_config(28, 1)  # Fashion-MNIST: a 7x7 latent
    assert (config.downsample, config.scales) == (4, (1, 2, 3, 4, 5, 7))
    assert msvq_config(32, 3).scales == (1, 2, 3, 4, 6, 8)
    assert msvq_config(8, 1).scales == (1, 2, 3, 4)


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=10, downsample=4, scales=(1, 2)), "not divisible by downsample"),
    (dict(downsample=3), "downsample must be 1, 2, 4 or 8"),
    (dict(scales=(1, 3, 2, 4)), "strictly increasing"),
    (dict(scales=(1, 2, 2, 4)), "strictly increasing"),
    (dict(scales=(0, 2, 4)), "strictly increasing positive"),
    (dict(scales=()), "strictly increasing"),
    (dict(scales=(1, 2.0, 4)), "strictly increasing positive ints"),
    (dict(scales=(1, 2, 3)), r"last scale \(3\) must be the latent side.*= 4"),
    (dict(scales=(1, 2, 4, 8)), r"last scale \(8\) must be the latent side"),
    (dict(channels=2), "channels must be 1 or 3"),
    (dict(codebook_size=1), "codebook_size must be an int >= 2"),
    (dict(codebook_size=0), "codebook_size"),
    (dict(latent_channels=0), "latent_channels"),
])
def test_bad_configs_raise_one_line_zoo_errors(overrides, message):
    with pytest.raises(ZooError, match=message) as info:
        MultiScaleVQ(MSVQConfig(**{**DIGITS, **overrides}))
    assert "\n" not in str(info.value)


def test_bad_inputs_raise_zoo_errors():
    model = tiny()
    with pytest.raises(ZooError, match=r"shape \(batch, 1, 8, 8\)"):
        model.encode(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ZooError, match="whole scales"):
        model.unflatten(torch.zeros(2, 7, dtype=torch.long))  # 1 + 4 < 7 < 1 + 4 + 9
    with pytest.raises(ZooError, match="token maps must have shapes"):
        model.decode([torch.zeros(2, 1, 1, dtype=torch.long),
                      torch.zeros(2, 3, 3, dtype=torch.long)])


def test_no_submodule_looks_like_a_residual_block_to_zoo_inits():
    """The tokenizer is attached to a generator whose residual blocks zoo's inits look for
    (attn + mlp, or conv1 + BatchNorm bn2/bn3): none of the tokenizer's may be counted."""
    with pytest.raises(ZooError, match="no residual blocks"):
        residual_blocks(tiny())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in tiny().modules())


# --- shapes and the flat order -------------------------------------------------------------------

def test_encode_gives_one_map_per_scale_and_flat_tokens_round_trip(digits):
    model = tiny()
    x = digits[:5]
    indices = model.encode(x)
    assert [tuple(i.shape) for i in indices] == [(5, s, s) for s in (1, 2, 3, 4)]
    assert all(i.dtype == torch.long and 0 <= i.min() and i.max() < 64 for i in indices)
    assert model.token_count == 1 + 4 + 9 + 16 == 30
    assert model.scale_slices == [slice(0, 1), slice(1, 5), slice(5, 14), slice(14, 30)]
    tokens = model.flatten(indices)
    assert tokens.shape == (5, 30)
    # scale after scale, row-major within a scale
    assert torch.equal(tokens[:, 5:14], indices[2].reshape(5, 9))
    assert torch.equal(tokens[:, 6], indices[2][:, 0, 1])
    back = model.unflatten(tokens)
    assert len(back) == 4 and all(torch.equal(a, b) for a, b in zip(back, indices))
    assert len(model.unflatten(tokens[:, :14])) == 3  # a prefix of whole scales


def test_output_loss_and_code_vectors(digits):
    model = tiny()
    x = digits[:6]
    out = model(x)
    assert out.recon.shape == x.shape and out.vq_loss.ndim == 0
    assert [tuple(i.shape) for i in out.indices] == [(6, s, s) for s in (1, 2, 3, 4)]
    total, logs = model.loss(x)
    assert set(logs) == {"recon_mse", "vq_loss", "usage"}
    assert total.item() == pytest.approx(logs["recon_mse"] + logs["vq_loss"], rel=1e-5)
    tokens = torch.tensor([[0, 5, 63], [1, 1, 2]])
    vectors = model.code_vectors(tokens)
    assert vectors.shape == (2, 3, 8)
    assert torch.equal(vectors[0, 1], model.quantizer.codebook.weight[5])
    images = model.decode(model.encode(x))
    assert images.shape == x.shape and images.min() >= -1 and images.max() <= 1


# --- the generator's interface -------------------------------------------------------------------

def test_teacher_inputs_equal_the_sampling_loop_exactly(digits):
    model = tiny().eval()
    for tokens in (model.flatten(model.encode(digits[:4])),
                   torch.randint(64, (4, 30), generator=torch.Generator().manual_seed(1))):
        teacher = model.teacher_inputs(tokens)
        assert teacher.shape == (4, 30 - 1, 8)
        f_hat, pieces = model.begin(4, tokens.device), []
        for k, sl in enumerate(model.scale_slices):
            f_hat, nxt = model.next_scale_input(f_hat, k, tokens[:, sl])
            if k == 3:
                assert nxt is None
            else:
                assert nxt.shape == (4, model.scales[k + 1] ** 2, 8)
                pieces.append(nxt)
        assert torch.equal(teacher, torch.cat(pieces, dim=1))
        # the loop's final f_hat is the latent the decoder sees
        assert torch.allclose(f_hat, model.indices_to_latent(model.unflatten(tokens)), atol=1e-6)


def test_teacher_inputs_of_a_single_scale_tokenizer_are_empty():
    model = tiny(scales=(1,), downsample=8)
    assert model.teacher_inputs(torch.zeros(3, 1, dtype=torch.long)).shape == (3, 0, 8)


def test_the_first_teacher_input_is_the_coarsest_scale_seen_at_the_next_side():
    model = tiny()
    tokens = torch.randint(64, (2, 30), generator=torch.Generator().manual_seed(2))
    h0 = model.quantizer.contribution(0, tokens[:, :1].reshape(2, 1, 1))
    expected = F.interpolate(h0, size=(2, 2), mode="area").flatten(2).transpose(1, 2)
    assert torch.allclose(model.teacher_inputs(tokens)[:, :4], expected, atol=1e-6)


def test_decode_accepts_flat_tokens_and_prefixes(digits):
    model = tiny().eval()
    indices = model.encode(digits[:3])
    tokens = model.flatten(indices)
    assert torch.equal(model.decode(tokens), model.decode(indices))
    assert torch.equal(model.decode(tokens[:, :5]), model.decode(indices[:2]))
    assert torch.equal(model.indices_to_latent(indices, upto=2),
                       model.indices_to_latent(indices[:2]))


# --- quantizer mechanics -------------------------------------------------------------------------

def test_encode_decode_is_deterministic_and_leaves_usage_tracking_alone(digits):
    model = tiny().train()  # training mode: encode must still neither track nor restart codes
    usage, codebook = model.quantizer.code_usage.clone(), model.quantizer.codebook.weight.clone()
    x = digits[:16]
    first, second = model.encode(x), model.encode(x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert torch.equal(model.decode(first), model.decode(second))
    assert torch.equal(model.quantizer.code_usage, usage)
    assert torch.equal(model.quantizer.codebook.weight, codebook)
    # one image's tokens do not depend on the rest of the batch (GroupNorm, no BatchNorm)
    assert all(torch.equal(a[:1], b) for a, b in zip(first, model.eval().encode(x[:1])))


def test_gradients_reach_the_encoder_through_the_straight_through_estimator(digits):
    model = tiny()
    x = digits[:8]
    f = model.encoder(x)
    f.retain_grad()
    f_q, vq_loss, _ = model.quantizer(f)
    f_q.retain_grad()
    F.mse_loss(model.decoder(f_q), x).backward(retain_graph=True)  # the VQ loss shares f's graph
    # the quantizer passes the decoder's gradient to the encoder unchanged ...
    assert f.grad.abs().sum() > 0 and torch.equal(f.grad, f_q.grad)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    # ... and none to the codebook, which only the VQ loss trains (with the phi convs)
    assert model.quantizer.codebook.weight.grad is None
    model.zero_grad()
    vq_loss.backward()
    assert model.quantizer.codebook.weight.grad.abs().sum() > 0
    assert all(phi.conv.weight.grad.abs().sum() > 0 for phi in model.quantizer.phis)
    assert model.encoder.stem.weight.grad.abs().sum() > 0  # the commitment term


def test_dead_codes_are_restarted_from_encoder_outputs(digits):
    """A collapsed codebook (every code but one far away): without restarts a batch keeps using
    one code; with them, codes unused for ~30 training-mode forwards move onto the data."""
    x = digits[:64]

    def usage_after_forwards(threshold):
        model = tiny(dead_code_threshold=threshold).train()
        with torch.no_grad():
            model.quantizer.codebook.weight[1:] = 100.0
            model.quantizer.codebook.weight[0] = 0.0
            for _ in range(40):
                model(x)
        return model.codebook_usage(model.encode(x))

    assert usage_after_forwards(0.0) == 1 / 64
    assert usage_after_forwards(0.05) > 0.5


# --- learning on digits --------------------------------------------------------------------------

def test_training_lowers_the_loss(digits, trained):
    at_init, model = trained
    with torch.no_grad():
        before, after = at_init.loss(digits)[0].item(), model.loss(digits)[0].item()
    assert after < 0.5 * before


def test_tokenizer_round_trip_improves_with_scales(digits, trained):
    _, model = trained
    errors = reconstruction_by_scales(model, digits)
    assert len(errors) == 4
    assert all(b <= a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0], errors


def test_codebook_stays_in_use_after_training(digits, trained):
    _, model = trained
    indices = model.encode(digits)
    assert model.codebook_usage(indices) > 0.5
    assert model.codebook_usage(model.flatten(indices)) == model.codebook_usage(indices)

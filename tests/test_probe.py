"""`zoo probe`: per-layer signal statistics at initialization, checked on networks whose answer is
known in closed form, on the real models, and through the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from zoo.cli import main
from zoo.models.activation import Activation
from zoo.tools.probe import ProbeResult, effective_rank, probe_model, probe_run, write_probe

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def deep_linear(depth: int = 20, width: int = 64, gain: float = 1.0) -> nn.Sequential:
    """`depth` bias-free Linear layers with weights gain * orthogonal, identity activations."""
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width, bias=False)
        nn.init.orthogonal_(linear.weight, gain=gain)
        layers += [linear, Activation("identity", lambda x: x)]
    return nn.Sequential(*layers).double()


def centered_batch(n: int = 128, width: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    # Centering each feature makes every layer's output mean exactly 0 (W @ 0 = 0), so variance
    # is the mean square, which an orthogonal map preserves exactly.
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, width, generator=generator, dtype=torch.float64)
    return x - x.mean(dim=0), torch.randint(0, width, (n,), generator=generator)


# --- Known answers ------------------------------------------------------------------------------

def test_orthogonal_layers_preserve_variance_gradient_norm_and_full_rank():
    x, y = centered_batch()
    rows = probe_model(deep_linear(), x, y)
    input_var = x.var(correction=0).item()
    assert [r.kind for r in rows] == ["linear", "activation"] * 20
    for r in rows:
        assert r.var == pytest.approx(input_var, rel=1e-6), r.name
    for r in (r for r in rows if r.kind == "linear"):
        assert r.effective_rank == pytest.approx(64, rel=1e-6)
        assert r.max_rank == 64 and r.rank_ratio == pytest.approx(1, rel=1e-6)
    # Backward multiplies by W^T, also orthogonal: every layer sees the same gradient norm.
    last = rows[-1].grad_norm
    assert last > 0
    for r in rows:
        assert r.grad_norm == pytest.approx(last, rel=1e-6), r.name


def test_weights_scaled_by_two_grow_variance_4x_per_layer_and_gradients_2x_going_back():
    x, y = centered_batch()
    linear = [r for r in probe_model(deep_linear(gain=2.0), x, y) if r.kind == "linear"]
    expected = x.var(correction=0).item()
    for r in linear:
        expected *= 4
        assert r.var == pytest.approx(expected, rel=1e-6), r.name
        assert r.effective_rank == pytest.approx(64, rel=1e-6)  # rank ignores the scale
    for deeper, shallower in zip(linear[1:], linear[:-1]):
        assert shallower.grad_norm == pytest.approx(2 * deeper.grad_norm, rel=1e-6)


def test_effective_rank_counts_equally_strong_directions():
    assert effective_rank(torch.eye(7)) == pytest.approx(7)
    u, v = torch.randn(5, 1), torch.randn(1, 9)
    assert effective_rank(u @ v) == pytest.approx(1, abs=1e-6)
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0]))) == pytest.approx(2)
    # An uneven spectrum: singular values (3, 1) normalized by their sum (not their squares).
    p = (0.75, 0.25)
    expected = math.exp(-sum(q * math.log(q) for q in p))
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(expected)
    w = torch.randn(8, 3, 3, 3)  # a conv weight acts on flattened patches: (out, in * k * k)
    assert effective_rank(w) == pytest.approx(effective_rank(w.reshape(8, 27)))
    assert effective_rank(5 * w) == pytest.approx(effective_rank(w))
    assert effective_rank(torch.zeros(3, 3)) == 0


# --- Real models --------------------------------------------------------------------------------

def test_vit_at_default_init_has_finite_positive_gradients_in_depth_order():
    from zoo.build import build_model

    result = probe_run("vit", batch_size=32, device="cpu")
    rows = result.rows
    assert [r.depth for r in rows] == list(range(1, len(rows) + 1))
    for r in rows:
        assert math.isfinite(r.grad_norm) and r.grad_norm > 0, r.name
        assert math.isfinite(r.var) and r.var > 0, r.name
        if r.kind != "activation":
            assert math.isfinite(r.weight_grad_norm) and r.weight_grad_norm > 0, r.name
            assert 1 <= r.effective_rank <= r.max_rank
    # Every layer of interest once, in the order the forward pass reaches them.
    model = build_model("vit", image_size=(8, 8), channels=1, num_classes=10, act="gelu")
    wanted = [name for name, m in model.named_modules()
              if isinstance(m, (nn.Linear, nn.Conv2d, Activation))]
    assert [r.name for r in rows] == wanted
    assert rows[0].name == "patch_embed.proj" and rows[-1].name == "head"
    assert {r.kind for r in rows} == {"conv", "linear", "activation"}


def test_probe_run_is_deterministic_and_caps_the_batch_at_the_training_split():
    from zoo.data.images import load_dataset

    first, second = (probe_run("resnet", batch_size=10**6, device="cpu") for _ in range(2))
    assert first.rows == second.rows
    train_size = len(load_dataset("digits")["train"])
    assert first.config["batch_size"] == train_size == first.rows[0].shape[0]


def test_exploding_signal_still_gives_strict_json_and_a_figure(tmp_path):
    x, y = centered_batch()
    model = deep_linear(gain=1e30).float()  # overflows float32 within a few layers
    rows = probe_model(model, x.float(), y)
    assert any(math.isinf(r.var) or math.isnan(r.var) for r in rows)
    result = ProbeResult(config={"arch": "mlp", "act": "identity", "init": "orthogonal",
                                 "dataset": "noise", "seed": 0}, rows=rows)
    png, js = write_probe(result, tmp_path)
    assert png.read_bytes().startswith(PNG_MAGIC)

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    json.loads(js.read_text(), parse_constant=reject)


# --- The command --------------------------------------------------------------------------------

def test_probe_command_prints_the_table_and_writes_figure_and_json(capsys, tmp_path):
    assert main(["probe", "vit", "--act", "gelu", "--batch-size", "32"]) == 0
    out = capsys.readouterr().out
    for header in ("depth", "layer", "kind", "shape", "mean", "var", "grad norm", "W grad norm",
                   "eff. rank"):
        assert header in out
    assert "blocks.0.mlp.act" in out and "head" in out
    stem = tmp_path / "probes" / "vit-gelu-default-digits-s0"
    assert stem.with_suffix(".png").read_bytes().startswith(PNG_MAGIC)
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["config"]["act"] == "gelu" and saved["config"]["batch_size"] == 32
    assert saved["rows"][0]["name"] == "patch_embed.proj"
    assert all(row["name"] in out for row in saved["rows"])
    assert sorted(p.name for p in stem.parent.iterdir()) == [stem.name + ".json",
                                                              stem.name + ".png"]  # no temp files


def test_probes_of_different_settings_get_different_files(tmp_path):
    base = ["probe", "vit", "--batch-size", "16", "--out", str(tmp_path)]
    assert main([*base, "--act", "swish", "--act-param", "beta=1.5"]) == 0
    assert main([*base, "--act", "swish", "--init", "lowrank", "--init-param", "rank=4"]) == 0
    assert main([*base, "--act", "swish"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "vit-swish-default-digits-s0-beta1.5.json", "vit-swish-default-digits-s0.json",
        "vit-swish-lowrank-digits-s0-rank4.json"]


@pytest.mark.parametrize("args, fragment", [
    (["probe", "vitt"], "unknown arch 'vitt'"),
    (["probe", "vit", "--act", "gelo"], "unknown act 'gelo'"),
    (["probe", "vit", "--init", "kaiminq"], "unknown init 'kaiminq'"),
    (["probe", "vit", "--batch-size", "0"], "argument --batch-size: must be a whole number >= 1, got 0"),
    (["probe", "vit", "--batch-size", "-4"], "argument --batch-size: must be a whole number >= 1, got -4"),
    (["probe", "vit", "--init", "orthogonal", "--init-param", "gian=2"], "bad --init-param"),
    (["probe", "vit", "--init-param", "gain"], "--init-param takes NAME=VALUE"),
])
def test_bad_probe_input_is_one_line(args, fragment, capsys):
    code = main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("zoo: error: ") and fragment in lines[0], lines


def test_probe_has_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["probe", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "usage: zoo probe" in out and "--init-param" in out and "--out" in out

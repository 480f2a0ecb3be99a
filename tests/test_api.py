"""zoo as a library: the public names, the README's examples as written, and a zoo activation
inside someone else's timm model."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import zoo
from zoo.build import build_model
from zoo.errors import ZooError

README = Path(__file__).resolve().parents[1] / "README.md"

# The contract: changing it is a decision, made here as well as in zoo/__init__.py.
PUBLIC = [
    "__version__",
    "list_variants", "list_archs", "list_acts", "list_inits", "list_quants", "list_datasets",
    "info",
    "create_act", "act_layer", "check_act",
    "create_model", "model_act", "init_", "quantize_", "size_report",
    "TrainConfig", "RunRecord", "train_run", "evaluate_run",
    "ZooError",
]


def test_the_public_api_is_exactly_zoo_all():
    assert zoo.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(zoo, name) is not None
    assert set(PUBLIC) <= set(dir(zoo))
    with pytest.raises(AttributeError, match="no attribute 'create_modle'"):
        zoo.create_modle  # noqa: B018


def test_import_zoo_loads_no_torch():
    code = "import sys, zoo; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


def readme_python_examples() -> list[str]:
    section = README.read_text().split("## Use zoo from Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_examples_run_as_written(tmp_path):
    examples = readme_python_examples()
    assert examples, "README has no Python example under 'Use zoo from Python'"
    for example in examples:
        exec(compile(example, "README.md", "exec"), {})  # noqa: S102
    assert (tmp_path / "runs" / "results.sqlite").is_file()


def test_readme_comments_state_what_the_calls_return():
    assert zoo.list_acts("*lu")[:4] == ["aglu", "crrelu", "elu", "gelu"]
    assert zoo.info("golu")["arxiv"] == "2502.03654"


def digits_batches(n_steps: int, batch: int = 32):
    """Digits images at 16x16 with 3 channels: the shape of timm's ImageNet models, small."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=16, mode="bilinear").expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(data.target)
    g = torch.Generator().manual_seed(0)
    for _ in range(n_steps):
        index = torch.randint(0, len(x), (batch,), generator=g)
        yield x[index], y[index]


def test_a_zoo_activation_trains_inside_timms_resnet18():
    torch.manual_seed(0)
    net = timm.create_model("resnet18", act_layer=zoo.act_layer("golu"), num_classes=10)
    assert zoo.check_act(net, "golu") == 17  # stem + 2 per BasicBlock x 8
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    losses = []
    for x, y in digits_batches(25):
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.75 * sum(losses[:5])  # it learns: the loss falls by a quarter
    assert zoo.model_act(net) == "golu"


def test_the_leak_check_catches_a_model_that_ignores_act_layer():
    net = timm.create_model("resnet18", act_layer=zoo.act_layer("golu"), num_classes=10)
    net.layer1[0].act1 = torch.nn.ReLU()
    with pytest.raises(ZooError, match="activation leak: layer1.0.act1 uses ReLU"):
        zoo.check_act(net, "golu")


def test_create_model_builds_what_zoo_train_builds():
    ours = zoo.create_model("resnet", act="mish", init="orthogonal", num_classes=10,
                            img_size=8, in_chans=1, seed=3)
    theirs = build_model("resnet", act="mish", init="orthogonal", seed=3, image_size=(8, 8),
                         channels=1, num_classes=10)
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert torch.equal(a, b), name


def test_api_values_are_checked_like_the_commands():
    with pytest.raises(ZooError, match="depth=0 \\(arch vit\\): must be a whole number >= 1"):
        zoo.create_model("vit", depth=0)
    with pytest.raises(ZooError, match="unknown act 'gelo'"):
        zoo.create_act("gelo")
    with pytest.raises(ZooError, match="needs a TrainConfig or at least arch"):
        zoo.train_run(act="gelu")
    assert zoo.info("kaiming")["kind"] == "init" and zoo.info("quant:none")["kind"] == "quant"


def test_quantize_in_place_like_torchao():
    model = zoo.create_model("vit", act="gelu", num_classes=10, img_size=8, in_chans=1)
    before = zoo.size_report(model)
    returned = zoo.quantize_(model, "int4-g32", skip="first,last")
    after = zoo.size_report(returned)
    assert before["quantized_layers"] == 0 and after["quantized_layers"] > 0
    assert after["model_bytes"] < before["model_bytes"]
    assert after["bits_per_weight"] == pytest.approx(4, abs=1)

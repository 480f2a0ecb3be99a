"""weight_selection: a small model starts as the evenly spaced sub-network of a larger trained
one (Xu et al., arXiv 2311.18823), read from a checkpoint file or a zoo run directory."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from zoo.build import build_model
from zoo.cli import main
from zoo.errors import ZooError
from zoo.registry import INITS
from zoo.registry.inits_transfer import evenly_spaced, select_elements
from zoo.runs.config import TrainConfig
from zoo.runs.rundir import RunDir
from zoo.tasks.kinds import make_trainer

DIGITS = dict(image_size=(8, 8), channels=1, num_classes=10)
BATCH = torch.randn(64, 1, 8, 8)
LARGE_VIT = {"embed_dim": 128, "depth": 8, "num_heads": 4}  # 2x wide (MLP too), 2x deep


def build(arch="vit", act="gelu", init="default", seed=0, arch_params=None, source=None,
          **digits):
    return build_model(arch, act=act, init=init, seed=seed, arch_params=arch_params,
                       init_params={"source": str(source)} if source is not None else None,
                       calibration_batch=lambda: BATCH, **{**DIGITS, **digits})


def state_of(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def save_safetensors(model, path):
    save_file(state_of(model), str(path))
    return path


def assert_is_selection(small, large_state):
    """Every tensor of `small` is the uniform selection of the large tensor of the same name."""
    for name, tensor in small.state_dict().items():
        assert torch.equal(tensor, select_elements(name, large_state[name], tensor.shape)), name


# --- the rule --------------------------------------------------------------------------------

def test_selects_evenly_spaced_units_per_q_k_v_and_block_i_from_block_i(tmp_path):
    large = build(arch_params=LARGE_VIT, seed=1)
    source = save_safetensors(large, tmp_path / "large.safetensors")
    small = build(init="weight_selection", source=source)
    big = large.state_dict()

    # qkv of block 3 (not block 7: first-N): rows 2j of each of the q, k, v thirds (128 rows
    # each in the source, 64 kept), columns 2j.
    rows = [third * 128 + 2 * j for third in range(3) for j in range(64)]
    cols = list(range(0, 128, 2))
    expected = big["blocks.3.attn.qkv.weight"][rows][:, cols]
    assert torch.equal(small.state_dict()["blocks.3.attn.qkv.weight"], expected)
    assert torch.equal(small.state_dict()["blocks.3.attn.qkv.bias"],
                       big["blocks.3.attn.qkv.bias"][rows])
    # MLP: hidden 256 -> 128 and width 128 -> 64, every other unit.
    assert torch.equal(small.state_dict()["blocks.1.mlp.fc1.weight"],
                       big["blocks.1.mlp.fc1.weight"][0::2, 0::2])
    # Norms, position embedding, class token and classifier are selected too.
    assert torch.equal(small.state_dict()["pos_embed"], big["pos_embed"][:, :, 0::2])
    assert torch.equal(small.state_dict()["cls_token"], big["cls_token"][:, :, 0::2])
    assert torch.equal(small.state_dict()["norm.weight"], big["norm.weight"][0::2])
    assert torch.equal(small.state_dict()["head.weight"], big["head.weight"][:, 0::2])
    assert_is_selection(small, big)


def test_a_width_that_does_not_divide_uses_rounded_linspace_within_q_k_and_v(tmp_path):
    large = build(arch_params={"embed_dim": 100, "num_heads": 4}, seed=1)  # 100 -> 64
    small = build(init="weight_selection",
                  source=save_safetensors(large, tmp_path / "l.safetensors"))
    big, ours = large.state_dict(), small.state_dict()
    keep = [round(i * 99 / 63) for i in range(64)]  # round(linspace(0, 99, 64))
    hidden = [round(i * 199 / 127) for i in range(128)]  # MLP: 200 -> 128
    assert keep[:5] == [0, 2, 3, 5, 6] and keep[-1] == 99
    assert torch.equal(ours["blocks.0.mlp.fc2.weight"],
                       big["blocks.0.mlp.fc2.weight"][keep][:, hidden])
    assert torch.equal(ours["blocks.0.attn.proj.weight"],
                       big["blocks.0.attn.proj.weight"][keep][:, keep])
    # q, k and v each keep the same 64 of their 100 units; one selection over all 300 rows
    # would drift across the thirds.
    rows = [third * 100 + i for third in range(3) for i in keep]
    assert torch.equal(ours["blocks.0.attn.qkv.weight"],
                       big["blocks.0.attn.qkv.weight"][rows][:, keep])


def test_the_same_units_are_kept_in_every_layer_so_the_small_model_is_a_subnetwork(tmp_path):
    # Cut every connection from a unit that selection drops into the next layer: the large
    # ResNet then computes its logits from the kept units only, and the small model, if it keeps
    # the same units in every layer (consistency), computes exactly the same logits. (BatchNorm
    # in eval mode acts per channel; a ViT's LayerNorm would see the dropped units.)
    # (The stem is 64 wide: a first stage of 64 would have no downsample shortcut, the small
    # model's 32 has one, and a tensor the source lacks keeps its default.)
    large = build("resnet", "relu", arch_params={"widths": (96, 128, 256, 512)}, seed=1)
    small_shapes = {k: v.shape for k, v in build("resnet", "relu").state_dict().items()}
    with torch.no_grad():
        for name, tensor in large.state_dict().items():
            if tensor.ndim == 1:  # affine and running statistics away from their defaults
                tensor.uniform_(0.5, 1.5)
            elif tensor.ndim >= 2 and small_shapes[name][1] < tensor.shape[1]:
                dropped = torch.ones(tensor.shape[1], dtype=torch.bool)
                dropped[evenly_spaced(tensor.shape[1], small_shapes[name][1])] = False
                tensor[:, dropped] = 0
    small = build("resnet", "relu", init="weight_selection",
                  source=save_safetensors(large, tmp_path / "l.safetensors"))
    large.eval(), small.eval()
    with torch.no_grad():
        torch.testing.assert_close(small(BATCH), large(BATCH))


def test_resnet_takes_block_i_of_each_stage_and_batchnorm_statistics(tmp_path):
    large = build("resnet", "relu", seed=1,
                  arch_params={"layers": (2, 2, 2, 2), "widths": (96, 128, 256, 512)})
    large.train()
    with torch.no_grad():
        large(BATCH)  # running statistics that differ from the defaults
    big = state_of(large)
    small = build("resnet", "relu", init="weight_selection",
                  source=save_safetensors(large, tmp_path / "l.safetensors"))
    assert torch.equal(small.state_dict()["layer2.0.bn1.running_var"],
                       big["layer2.0.bn1.running_var"][0::2])
    assert torch.equal(small.state_dict()["layer1.0.conv1.weight"],
                       big["layer1.0.conv1.weight"][0::3])  # 96 -> 32; the 64-wide stem is kept
    assert_is_selection(small, big)


def test_from_a_zoo_run_directory_after_real_training_in_python_and_from_the_cli(tmp_path,
                                                                                    capsys):
    config = TrainConfig.for_arch("vit", epochs=1, train_subset=64, arch_params=LARGE_VIT)
    outcome = make_trainer(config, out=tmp_path / "sources", device="cpu", show_progress=False).run()
    assert outcome.record.status == "completed"
    _, trained = RunDir(outcome.run_dir.path).load_model_state()

    small = build(init="weight_selection", source=outcome.run_dir.path)
    assert_is_selection(small, trained)
    assert torch.isfinite(small(BATCH)).all()

    assert main(["train", "vit", "--epochs", "1", "--train-subset", "64", "--no-progress",
                 "--device", "cpu", "--init", "weight_selection",
                 "--init-param", f"source={outcome.run_dir.path}"]) == 0
    assert "test accuracy" in capsys.readouterr().out


def test_a_source_of_the_same_size_gives_an_exact_copy_whatever_the_seed(tmp_path):
    source = build(seed=5)
    path = tmp_path / "same.pt"
    torch.save(source.state_dict(), path)
    for seed in (0, 1):
        copy = build(init="weight_selection", seed=seed, source=path)
        for name, tensor in source.state_dict().items():
            assert torch.equal(copy.state_dict()[name], tensor), name


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_a_torch_checkpoint_wrapping_the_state_dict_works(tmp_path, key):
    large = build(arch_params=LARGE_VIT, seed=2)
    path = tmp_path / "large.pth"
    torch.save({key: large.state_dict(), "epoch": 3}, path)
    assert_is_selection(build(init="weight_selection", source=path), state_of(large))


def test_tensors_the_source_lacks_keep_the_architecture_default(tmp_path):
    source = build(seed=5)
    state = state_of(source)
    del state["blocks.0.norm1.weight"]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    model = build(init="weight_selection", source=path)
    assert torch.equal(model.state_dict()["blocks.0.norm1.weight"], torch.ones(64))
    assert torch.equal(model.state_dict()["blocks.0.norm1.bias"], state["blocks.0.norm1.bias"])


def test_registered_with_its_paper_and_required_source():
    entry = INITS.get("weight_selection")
    assert entry.paper.arxiv == "2311.18823"
    assert entry.extra["requires"] == ("source",)
    assert "seed" in entry.extra["note"]
    assert entry.extra["touches"] and entry.extra["keeps"]


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("options, fragment", [
    ({}, "needs a source"),
    ({"source": ""}, "needs a source"),
    ({"source": 5.0}, "must be a path"),  # what the CLI makes of source=5
    ({"source": "/nonexistent/large.safetensors"}, "does not exist"),
    ({"source": "."}, "not a zoo run directory"),
])
def test_a_missing_source_fails_when_the_entry_is_created(options, fragment):
    with pytest.raises(ZooError, match=fragment):
        INITS.get("weight_selection").create(**options)


def test_an_unknown_or_damaged_checkpoint_is_a_zoo_error(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ZooError, match="unknown checkpoint type '.bin'"):
        INITS.get("weight_selection").create(source=str(tmp_path / "w.bin"))
    (tmp_path / "w.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ZooError, match="unreadable"):
        build(init="weight_selection", source=tmp_path / "w.safetensors")


def test_a_source_with_other_classes_is_refused(tmp_path):
    path = save_safetensors(build(arch_params=LARGE_VIT, num_classes=5),
                            tmp_path / "c5.safetensors")
    with pytest.raises(ZooError, match="the source has 5 classes, this run has 10"):
        build(init="weight_selection", source=path)


def test_a_narrower_source_names_the_parameter_and_both_shapes(tmp_path):
    path = save_safetensors(build(arch_params={"embed_dim": 32}), tmp_path / "s.safetensors")
    with pytest.raises(ZooError) as err:
        build(init="weight_selection", source=path)
    message = str(err.value)
    assert "cannot map cls_token" in message and "(1, 1, 32)" in message
    assert "(1, 1, 64)" in message and "\n" not in message


def test_a_shallower_source_is_refused(tmp_path):
    path = save_safetensors(build(arch_params={"depth": 2}), tmp_path / "d2.safetensors")
    with pytest.raises(ZooError, match="no blocks.2 .*at least as deep"):
        build(init="weight_selection", source=path)


def test_a_source_of_another_architecture_is_refused(tmp_path):
    path = save_safetensors(build("resnet", "relu"), tmp_path / "r.safetensors")
    with pytest.raises(ZooError, match="blocks.0"):
        build(init="weight_selection", source=path)


def test_cli_with_a_missing_source_is_one_line_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "zoo.cli", "train", "vit", "--init", "weight_selection",
         "--init-param", "source=/nonexistent"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("zoo: error: weight_selection source /nonexistent does not exist")
    assert not (tmp_path / "runs").exists()  # failed before any work

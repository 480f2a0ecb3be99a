"""Training GPT-2 on the embedded Shakespeare: the same run, resume, results and leaderboard
machinery as the image models, with bits per byte as the measure."""

from __future__ import annotations

import json
import math

import pytest
import torch

from zoo.boards.render import render_leaderboards
from zoo.cli import main
from zoo.errors import ZooError
from zoo.runs.config import TrainConfig
from zoo.runs.results import ResultsStore
from zoo.tasks.kinds import make_trainer
from zoo.tasks.language import LanguageModeling, RandomWindowBatches

QUICK = dict(epochs=2, steps_per_epoch=4, batch_size=8, block_size=32, warmup_epochs=0.5,
             dataset="shakespeare_excerpt")


@pytest.fixture(autouse=True)
def token_cache(tmp_path_factory, monkeypatch):
    """One token cache for the whole session: each corpus is tokenized once."""
    monkeypatch.setenv("ZOO_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "zoo-tokens"))


@pytest.fixture(autouse=True, scope="module")
def shakespeare_excerpt():
    """The first 40 kB of the training plays and 4 kB of each held-out split: the real text,
    small enough that evaluating a whole split takes a moment."""
    import datasets

    from zoo.data.text import load_text_dataset
    from zoo.registry import DATASETS

    full = load_text_dataset("shakespeare")
    sizes = {"train": 40_000, "validation": 4_000, "test": 4_000}

    @DATASETS.register("shakespeare_excerpt", tags=("text",), version="test-1")
    def excerpt():
        return datasets.DatasetDict({
            split: datasets.Dataset.from_dict({"title": [full[split][0]["title"]],
                                               "text": [full[split][0]["text"][:size]]})
            for split, size in sizes.items()})

    yield
    DATASETS.remove("shakespeare_excerpt")


def quick_config(**overrides) -> TrainConfig:
    return TrainConfig.for_arch("gpt2", **{**QUICK, **overrides})


def test_the_gpt2_recipe_trains_a_nano_model_on_shakespeare_bytes():
    config = TrainConfig.for_arch("gpt2")
    assert (config.dataset, config.tokenizer, config.arch_params) == \
        ("shakespeare", "byte", {"size": "nano"})
    assert config.act == "gelu_tanh"


def test_a_short_run_learns_and_records_bits_per_byte(tmp_path):
    outcome = make_trainer(quick_config(), out=tmp_path, show_progress=False).run()
    m = outcome.record.metrics
    # A uniform guess over 257 symbols costs log2(257) = 8.006 bits per byte; 8 steps learn
    # the byte frequencies at least.
    assert m["val_bpb"] < 7.5 and m["test_bpb"] < 7.5
    assert m["test_ppl"] == pytest.approx(math.exp(m["test_loss"]))
    assert 0 < m["test_acc"] < 1 and m["params"] > 0
    assert m["samples_per_s"] > 0  # tokens per second for language models
    rows = [json.loads(line) for line in
            (outcome.run_dir.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["samples"] for r in rows] == [4 * 8 * 32] * 2  # tokens per epoch
    assert rows[-1]["feature_rank"] >= 1 and "blocks.1.mlp.fc2.weight" in rows[-1]["weight_change"]
    data = json.loads((outcome.run_dir.path / "config.json").read_text())["data"]
    assert data["tokenizer"] == "byte" and data["vocab"] == 257
    assert data["test_tokens"] == data["test_bytes"] + 1  # an eot before the one document


def test_the_same_seed_gives_the_same_result(tmp_path):
    a = make_trainer(quick_config(), out=tmp_path / "a", show_progress=False).run().record.metrics
    b = make_trainer(quick_config(), out=tmp_path / "b", show_progress=False).run().record.metrics
    for key in ("val_bpb", "test_bpb", "train_loss"):
        assert a[key] == b[key]


def test_an_epoch_draws_the_same_windows_in_any_process():
    streams = LanguageModeling(quick_config(), torch.device("cpu")).streams
    first = RandomWindowBatches(streams.train, 4, 16, 3, seed=1, device=torch.device("cpu"))
    again = RandomWindowBatches(streams.train, 4, 16, 3, seed=1, device=torch.device("cpu"))
    other = RandomWindowBatches(streams.train, 4, 16, 3, seed=2, device=torch.device("cpu"))
    for (x, y), (x2, y2), (x3, _) in zip(first.epoch(5), again.epoch(5), other.epoch(5)):
        assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
    assert len(first) == 3


class Uniform(torch.nn.Module):
    """Equal logits for every token: a known loss of ln(vocab) per token."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, x):
        return torch.zeros(*x.shape, self.vocab)


def test_evaluation_scores_every_token_of_the_split_once():
    task = LanguageModeling(quick_config(), torch.device("cpu"))
    split = task.streams.test
    found = task.evaluate(Uniform(257), "test", autocast=False)
    assert found["loss"] == pytest.approx(math.log(257))
    expected_bpb = math.log(257) * split.targets / (split.bytes * math.log(2))
    assert found["bpb"] == pytest.approx(expected_bpb)
    assert found["ppl"] == pytest.approx(257, rel=1e-5)  # float32 log-softmax


def test_the_leaderboard_ranks_language_models_by_bits_per_byte(tmp_path):
    for act in ("gelu_tanh", "relu"):
        make_trainer(quick_config(act=act), out=tmp_path, show_progress=False).run()
    with ResultsStore(tmp_path / "results.sqlite") as store:
        render_leaderboards(store, tmp_path / "boards")
    board = tmp_path / "boards" / "shakespeare_excerpt-gpt2.md"
    text = board.read_text()
    assert board.name == "shakespeare_excerpt-gpt2.md" and "| val bpb | test bpb |" in text
    assert "tokenizer=byte" in text and "block_size=32" in text  # the protocol says so


def test_arch_options_and_sizes_come_from_the_command_line(tmp_path, capsys):
    code = main(["train", "gpt2", "--dataset", "shakespeare_excerpt", "--arch-param", "n_layer=1",
                 "--epochs", "1",
                 "--steps-per-epoch", "2", "--batch-size", "4", "--block-size", "16",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "test bits per byte" in out and "tokens/s" in out
    with ResultsStore(tmp_path / "results.sqlite") as store:
        (run,) = store.runs()
    assert run.config["config"]["arch_params"] == {"size": "nano", "n_layer": 1}


@pytest.mark.parametrize("args, message", [
    (["train", "gpt2", "--dataset", "digits"], "gpt2 is a language model: pick a text corpus"),
    (["train", "vit", "--dataset", "shakespeare"], "vit is an image model"),
    (["train", "gpt2", "--tokenizer", "wordpiece", "--epochs", "1", "--dataset",
      "shakespeare_excerpt"], "wordpiece"),
    (["train", "gpt2", "--arch-param", "size=huge"], "huge"),
    (["train", "gpt2", "--block-size", "0"], "argument --block-size: must be a whole number >= 1, got 0"),
])
def test_bad_language_model_options_are_one_line_errors(args, message, capsys, tmp_path):
    code = main([*args, "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_the_embedded_corpus_trains_end_to_end(tmp_path):
    """The real corpus (5 MB) once: prepared, trained a few steps, evaluated on whole plays."""
    config = TrainConfig.for_arch("gpt2", epochs=1, steps_per_epoch=2, batch_size=4,
                                  block_size=64)
    m = make_trainer(config, out=tmp_path, show_progress=False).run().record.metrics
    assert 6 < m["test_bpb"] < 8.1  # two steps: barely better than uniform


def test_a_config_mixing_model_and_data_kinds_is_refused():
    with pytest.raises(ZooError, match="language model"):
        TrainConfig.for_arch("gpt2", dataset="fashion-mnist")


def test_bench_harness_times_zoo_against_nanogpts_loop_in_tokens_per_second(capsys):
    from zoo.tools.bench import bench_harness

    result = bench_harness("gpt2", dataset="shakespeare_excerpt", batch_size=4, epochs=1,
                           repeats=1, device="cpu", steps_per_epoch=3)
    assert result["unit"] == "tokens"
    assert result["ratio"] == result["zoo_tokens_per_s"] / result["bare_tokens_per_s"]
    out = " ".join(capsys.readouterr().out.split())  # rich wraps to the terminal's width
    assert "tokens/s" in out and "batch 4 x 128 tokens" in out


def test_eval_reproduces_a_language_models_stored_bits_per_byte(tmp_path, capsys):
    from zoo.evaluate.stored import evaluate_run

    outcome = make_trainer(quick_config(), out=tmp_path, show_progress=False).run()
    report = evaluate_run(outcome.record.run_id, out=tmp_path, device="cpu")
    assert report["test_bpb"] == pytest.approx(outcome.record.metrics["test_bpb"], rel=1e-9)
    assert report["stored_test_bpb"] == outcome.record.metrics["test_bpb"]
    assert main(["eval", outcome.record.run_id, "--out", str(tmp_path), "--device", "cpu"]) == 0
    assert "test bits per byte" in capsys.readouterr().out


def test_post_training_quantization_of_a_language_model_reports_bits_per_byte(tmp_path):
    from zoo.boards.quant import quant_boards
    from zoo.evaluate.ptq import PTQSession
    from zoo.runs.results import ResultsStore

    outcome = make_trainer(quick_config(), out=tmp_path, show_progress=False).run()
    session = PTQSession(outcome.record.run_id, out=tmp_path, device="cpu")
    record = session.evaluate("w8a8")
    m = record.metrics
    assert m["float_test_bpb"] == pytest.approx(outcome.record.metrics["test_bpb"], rel=1e-9)
    assert abs(m["test_bpb"] - m["float_test_bpb"]) < 0.05  # 8 bits barely move the loss
    assert "training windows of 32 tokens" in record.config["calibration"]
    with ResultsStore(tmp_path / "results.sqlite") as store:
        board = quant_boards(store.runs(), {})["quant-shakespeare_excerpt-gpt2.md"]
    assert "| test bpb | Δ bpb |" in board and "| w8a8 | PTQ |" in board
    # the board's account of what was quantized is what this run quantized: not the tied head
    quantized = record.config["quantized_layers"]
    (scope,) = [line for line in board.splitlines() if line.startswith("- **Quantized layers:**")]
    assert f"{len(quantized)} layers" in scope and "the output layer `lm_head` is not one" in scope
    assert not any(name.startswith(("lm_head", "wte")) for name in quantized)

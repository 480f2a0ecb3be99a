"""A run's configuration, and which part of it defines comparability (the protocol)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from zoo.errors import ZooError
from zoo.registry import ACTS, ARCHS, DATASETS, INITS, QUANTS
from zoo.registry.archs import default_act
from zoo.registry.datasets import DEFAULT_DATASET
from zoo.registry.kinds import is_generator_arch, is_text_dataset, run_kind, takes_text
from zoo.registry.options import check_options
from zoo.runs.ids import canonical_json
from zoo.runs.tokenizer_spec import parse_tokenizer

OPTIMIZERS = {"adamw": "adamw", "sgd": "sgd (nesterov, momentum 0.9)"}
SCHEDULES = {"cosine": "linear warmup + cosine", "linear": "linear warmup + linear decay"}
# Recipe fields that change neither run ids nor protocols while they have these values.
RECIPE_DEFAULTS = {"optimizer": "adamw", "schedule": "cosine", "aug_shift": 0,
                   "aug_flip": False, "ema": None, "tta_flip": False}

# Training defaults when neither the flag nor the architecture's recipe gives one.
MAX_SEED = 2**32 - 1
# A TrainConfig field's annotation -> the JSON values config.json may hold for it.
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,),
    "int | None": (int, type(None)), "float | None": (int, float, type(None)),
    "str | None": (str, type(None)), "dict[str, Any]": (dict,)}  # numpy's legacy generators take no larger seed

FALLBACK_RECIPE = {"epochs": 10, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.05,
                   "warmup_epochs": 1.0, "label_smoothing": 0.0}


@dataclass
class TrainConfig:
    arch: str
    act: str
    init: str = "default"
    quant: str = "none"
    dataset: str = DEFAULT_DATASET
    seed: int = 0
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    train_subset: int | None = None  # first N training examples (smoke tests)
    # First N validation and test examples (a quick protocol's budget); left out of run ids and
    # protocols when None, so runs on the whole splits keep the ids they had before it existed.
    eval_subset: int | None = None
    act_params: dict[str, Any] = field(default_factory=dict)
    init_params: dict[str, Any] = field(default_factory=dict)
    quant_params: dict[str, Any] = field(default_factory=dict)
    arch_params: dict[str, Any] = field(default_factory=dict)
    # Language models only (None for image runs, and then left out of run ids and protocols, so
    # that image runs keep the ids they had before these existed); image generators use
    # `tokenizer` too, for their image tokenizer (zoo.tasks.image_tokenizer).
    tokenizer: str | None = None
    block_size: int | None = None  # tokens per training sequence
    steps_per_epoch: int | None = None  # an "epoch" of random windows: checkpoint and eval interval
    # Quantization-aware training: the model trains with `quant` in its forward pass (fake
    # quantization, straight-through gradients). Left out of run ids when False.
    qat: bool = False
    # The rest of the recipe (image classifiers). Each is left out of run ids and protocols
    # while it has its default, so runs stored before it existed keep their ids.
    optimizer: str = "adamw"  # or "sgd": Nesterov momentum 0.9
    schedule: str = "cosine"  # linear warmup, then cosine decay; or "linear" decay to 0
    aug_shift: int = 0  # random translations by up to N pixels (zero padding)
    aug_flip: bool = False  # random horizontal flips (only on data sets tagged "hflip")
    ema: float | None = None  # decay of an exponential moving average of the weights
    tta_flip: bool = False  # evaluation averages the logits of the image and its mirror
    # A learning rate picked for this variant (`zoo sweep --tune-lr`): the optimizer uses
    # lr * lr_scale. Part of the run id but not of the protocol, so a tuned row is compared
    # with the protocol's other rows. Left out of run ids while it is 1.
    lr_scale: float = 1.0

    @classmethod
    def for_arch(cls, arch: str, act: str | None = None, *, dataset_recipe: bool = True,
                 **overrides: Any) -> "TrainConfig":
        """The architecture's recipe, then its recipe for the data set (`dataset_recipes`,
        unless `dataset_recipe` is False), with any non-None override on top."""
        entry = ARCHS.get(arch)
        recipe = {**FALLBACK_RECIPE, **entry.extra.get("recipe", {})}
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if dataset_recipe:
            dataset = chosen.get("dataset", recipe.get("dataset", DEFAULT_DATASET))
            for_dataset = entry.extra.get("dataset_recipes", {}).get(dataset, {})
            recipe = {**recipe, **for_dataset, "arch_params": {
                **recipe.get("arch_params", {}), **for_dataset.get("arch_params", {})}}
        if "arch_params" in chosen:  # options add to the recipe's (gpt2's size), not replace them
            chosen["arch_params"] = {**recipe.get("arch_params", {}), **chosen["arch_params"]}
        config = cls(arch=arch, act=act or default_act(arch),
                     **{**recipe, **chosen})
        config.validate()
        if "generator" in entry.tags:  # "msvq:codebook=512" and "msvq" are one tokenizer, one id
            config.tokenizer = parse_tokenizer(config.tokenizer).canonical()
        return config

    @classmethod
    def from_stored(cls, stored: Any, source: Any) -> "TrainConfig":
        """The configuration in a run folder's config.json (`stored`, read from `source`),
        checked field by field before anything trusts it: a damaged or hand-edited file is one
        line naming the field, not a traceback from wherever the value is first used."""
        fields_json = stored.get("config") if isinstance(stored, dict) else None
        if not isinstance(fields_json, dict):
            raise ZooError(f"{source} is not a zoo run config (no 'config' object)")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(fields_json) - set(known))
        missing = sorted(name for name, f in known.items() if name not in fields_json
                         and f.default is MISSING and f.default_factory is MISSING)
        if unknown or missing:
            raise ZooError(f"{source} is not a config of this zoo (unknown fields: "
                           f"{', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'})")
        for name, value in fields_json.items():
            expected = FIELD_TYPES[known[name].type]
            if isinstance(value, bool) and bool not in expected or not isinstance(value, expected):
                raise ZooError(f"{source}: config field {name!r} holds {value!r}, not a value of "
                               f"type {known[name].type}")
        config = cls(**fields_json)
        config.validate()
        return config

    def validate(self) -> None:
        for registry, name in ((ARCHS, self.arch), (ACTS, self.act), (INITS, self.init),
                               (QUANTS, self.quant), (DATASETS, self.dataset)):
            registry.get(name)
        check_options(ACTS.get(self.act), self.act_params, "--act-param")
        ACTS.get(self.act).create(**self.act_params)  # unknown parameter names fail here
        for entry, options, flag in ((INITS.get(self.init), self.init_params, "--init-param"),
                                     (QUANTS.get(self.quant), self.quant_params, "--quant-param"),
                                     (ARCHS.get(self.arch), self.arch_params, "--arch-param")):
            check_options(entry, options, flag)
        try:  # init factories take keywords: a wrong name would otherwise be a TypeError
            INITS.get(self.init).create(**self.init_params)
        except TypeError as exc:
            raise ZooError(f"bad --init-param for {self.init}: {exc}") from None
        try:
            QUANTS.get(self.quant).create(**self.quant_params)
        except TypeError as exc:
            raise ZooError(f"bad --quant-param for {self.quant}: {exc}") from None
        if self.quant != "none" and not self.qat:
            raise ZooError(f"training with --quant {self.quant} needs --qat (quantization-aware "
                           f"training); to quantize a trained run, use `zoo eval RUN --quant "
                           f"{self.quant}`")
        if self.qat and self.quant == "none":
            raise ZooError("--qat needs a format: --quant QUANT (`zoo list quants`)")
        language_arch, generator = takes_text(self.arch), is_generator_arch(self.arch)
        if generator:
            self._validate_generator()
        if language_arch != is_text_dataset(self.dataset):
            kind = "a language model: pick a text corpus" if language_arch else \
                "an image model: pick an image data set"
            raise ZooError(f"{self.arch} is {kind} (`zoo list datasets`), not {self.dataset}")
        if language_arch and None in (self.tokenizer, self.block_size, self.steps_per_epoch):
            raise ZooError(f"{self.arch} needs --tokenizer, --block-size and --steps-per-epoch")
        _positive("epochs", self.epochs, integer=True)
        _positive("batch-size", self.batch_size, integer=True)
        _positive("lr", self.lr)
        _positive("lr-scale", self.lr_scale)
        if self.train_subset is not None:
            _positive("train-subset", self.train_subset, integer=True)
        if self.eval_subset is not None:
            _positive("eval-subset", self.eval_subset, integer=True)
            if language_arch or generator:
                raise ZooError(f"--eval-subset is for image classifiers, not {self.arch}")
        # each check is written so that nan fails it (every comparison with nan is False)
        if not 0 <= self.weight_decay < math.inf:
            raise ZooError(f"--weight-decay must be finite and >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_epochs < math.inf:
            raise ZooError(f"--warmup-epochs must be finite and >= 0, got {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ZooError(f"--label-smoothing must be in [0, 1), got {self.label_smoothing}")
        if isinstance(self.seed, bool) or int(self.seed) != self.seed \
                or not 0 <= self.seed <= MAX_SEED:
            raise ZooError(f"--seed must be a whole number in [0, {MAX_SEED}], got {self.seed}")
        self._validate_recipe(language_arch or generator)
        if not (language_arch or generator):
            given = [f"--{flag.replace('_', '-')}" for flag in self._language_fields()
                     if getattr(self, flag) is not None]
            if given:  # they would change the run id while changing nothing else
                raise ZooError(f"{', '.join(given)}: language-model options (--tokenizer is "
                               f"also one of image generators), not for {self.arch}")
        for flag in ("block_size", "steps_per_epoch"):
            if getattr(self, flag) is not None:
                _positive(flag.replace("_", "-"), getattr(self, flag), integer=True)

    def _validate_recipe(self, not_a_classifier: bool) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ZooError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got "
                           f"{self.optimizer}")
        if self.schedule not in SCHEDULES:
            raise ZooError(f"--schedule must be one of {', '.join(SCHEDULES)}, got "
                           f"{self.schedule}")
        if int(self.aug_shift) != self.aug_shift or self.aug_shift < 0:
            raise ZooError(f"--aug-shift must be a whole number >= 0, got {self.aug_shift}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ZooError(f"--ema must be a decay in (0, 1), got {self.ema}")
        image_only = [flag for flag, on in (("--aug-shift", self.aug_shift), ("--aug-flip",
                      self.aug_flip), ("--tta-flip", self.tta_flip)) if on]
        if not_a_classifier and image_only:
            raise ZooError(f"{', '.join(image_only)}: for image classifiers only, not {self.arch}")
        if (self.aug_flip or self.tta_flip) and "hflip" not in DATASETS.get(self.dataset).tags:
            raise ZooError(f"horizontal flips can change what a {self.dataset} image shows (its "
                           "entry is not tagged 'hflip'): drop --aug-flip / --tta-flip")

    def _validate_generator(self) -> None:
        """Image generators (VAR) name an image tokenizer (`zoo.runs.tokenizer_spec`) and
        have no language-model fields."""
        if self.tokenizer is None:
            raise ZooError(f"{self.arch} needs --tokenizer (msvq or vq, e.g. msvq:codebook=512)")
        parse_tokenizer(self.tokenizer)
        for flag in ("block_size", "steps_per_epoch"):
            if getattr(self, flag) is not None:
                raise ZooError(f"--{flag.replace('_', '-')} is for language models, not "
                               f"{self.arch}")

    def kind(self) -> str:
        """classify, language or generate (zoo.registry.kinds): which task trains this run."""
        return run_kind(self.arch, self.dataset)

    def protocol(self) -> dict[str, Any]:
        """Everything besides the variant and the seed that changes the result: runs compare
        fairly only within one protocol."""
        return {
            "epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
            "weight_decay": self.weight_decay, "warmup_epochs": self.warmup_epochs,
            "label_smoothing": self.label_smoothing, "train_subset": self.train_subset,
            "optimizer": OPTIMIZERS[self.optimizer], "schedule": SCHEDULES[self.schedule],
            "arch_params": self.arch_params,
            **{k: getattr(self, k) for k in RECIPE_DEFAULTS
               if k not in ("optimizer", "schedule") and getattr(self, k) != RECIPE_DEFAULTS[k]},
            **({"eval_subset": self.eval_subset} if self.eval_subset is not None else {}),
            **{k: v for k, v in self._language_fields().items() if v is not None},
        }

    def _language_fields(self) -> dict[str, Any]:
        return {"tokenizer": self.tokenizer, "block_size": self.block_size,
                "steps_per_epoch": self.steps_per_epoch}

    def to_dict(self) -> dict[str, Any]:
        """All fields; the language-model ones only when set, `qat` only when on."""
        unset = {k for k, v in self._language_fields().items() if v is None}
        if self.eval_subset is None:
            unset.add("eval_subset")
        if not self.qat:
            unset.add("qat")
        unset |= {k for k, default in RECIPE_DEFAULTS.items() if getattr(self, k) == default}
        if self.lr_scale == 1:
            unset.add("lr_scale")
        return {k: v for k, v in asdict(self).items() if k not in unset}

    def run_id(self) -> str:
        """Readable and unique: the same configuration always maps to the same run directory,
        which is what lets a re-run resume instead of starting over."""
        digest = hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:8]
        return f"{self.dataset}-{self.arch}-{self.act}-{self.init}-{self.quant}-s{self.seed}-{digest}"


def _positive(flag: str, value: float, integer: bool = False) -> None:
    if integer and int(value) != value:
        raise ZooError(f"--{flag} must be a whole number, got {value}")
    if not value > 0 or value == float("inf"):  # also catches nan
        raise ZooError(f"--{flag} must be positive and finite, got {value}")

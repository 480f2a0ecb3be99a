"""`zoo submit`: the checks a user's activation passes before the standard grid trains it.

A submission is a plugin file (or an entry of an installed plugin) registering activations. Each
one is checked here, in-process and in seconds, in this order:

    builds a zoo Activation                    the architectures' leak check accepts no other
    inplace=True accepted, input unchanged     timm calls act_layer(inplace=True)
    dtype and shape preserved                  float32/float16/bfloat16; strided = contiguous
    finite on extreme inputs                   outputs and gradients, where the exact value fits
    float64 gradcheck                          in x, then in x and the learnable parameters
    learnable parameters get finite gradients  each of them, on typical inputs
    kernel parity                              fused CUDA kernel = PyTorch reference (GPU only)

The first failure refuses the whole submission with one line, before anything is stored. The
runs are labelled with the file's sha256, so results of a different file under the same
activation name are never silently reused (`check_stored_runs`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.autograd.gradcheck import GradcheckError
from torch.func import functional_call

from zoo.errors import ZooError
from zoo.kernels import runtime
from zoo.models.activation import Activation, FormulaActivation, GroupRational
from zoo.registry import ACTS, REGISTRIES, Entry, plugins
from zoo.registry.plugins import load_plugin_file
from zoo.runs.files import sha256_file
from zoo.runs.results import ResultsStore, results_path

# +-1e4, zero, float32 denormals (1e-40) and values where exp() overflows.
EXTREMES = [-1e4, -100.0, -30.0, -1e-40, 0.0, 1e-40, 30.0, 100.0, 1e4]
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Probes are (..., CHANNELS): a grouped activation (KAT's rational, 8 groups) splits the last dim.
CHANNELS = 8
# Kernel against reference, per dtype (rtol, atol); parameter gradients are sums, hence looser.
KERNEL_TOLERANCE = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-2, 1e-2),
                    torch.bfloat16: (2e-2, 2e-2)}
PARAM_GRAD_TOLERANCE = (1e-3, 1e-3)


def refusal(message: str) -> ZooError:
    return ZooError(f"submission refused: {message}")


# --- what is submitted ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Submission:
    """The activations to train, where they come from, and the label their runs carry."""

    acts: tuple[Entry, ...]
    origin: dict[str, Any]  # {"file": name} or {"entry": ..., "module": ..., "version": ...}
    sha256: str
    plugin_files: tuple[str, ...] = ()  # what the sweep's workers must load

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.acts]

    @property
    def labels(self) -> dict[str, Any]:
        return {"submitted": {**self.origin, "sha256": self.sha256}}

    def describe(self) -> str:
        where = self.origin.get("file") or f"installed plugin {self.origin['entry']}"
        return f"{where}, sha256 {self.sha256[:12]}"


def load_submission_file(path: str | Path) -> Submission:
    """Load FILE.py as a plugin; its activations are the submission."""
    path = Path(path).expanduser().resolve()
    before = _registered()
    try:
        load_plugin_file(path)
    except ZooError as exc:  # a name clash, a missing file, a broken import
        raise refusal(str(exc)) from None
    keys = _registered() - before
    # Loaded earlier in this process (`zoo --plugin FILE.py submit FILE.py`): nothing is new, but
    # its entries still name the file as their source.
    entries = ([REGISTRIES[plural].get(name) for plural, name in sorted(keys)] if keys else
               [e for reg in REGISTRIES.values() for e in reg if e.source == f"plugin:{path.name}"])
    return Submission(_only_activations(entries, path.name), {"file": path.name},
                      sha256_file(path), plugin_files=(str(path),))


def load_submission_entry(name: str) -> Submission:
    """An activation that an installed plugin (entry-point group `zoo.plugins`) registered; the
    sha256 is that of the plugin's module file."""
    plugins.load_entry_point_plugins()
    entry = ACTS.get(name)
    plugin = entry.source.removeprefix("plugin:")
    # The loader's own lookup, so that both always see the same installed plugins.
    installed = {ep.name: ep for ep in plugins.entry_points(group=plugins.ENTRY_POINT_GROUP)}
    if plugin not in installed:
        what = "built in" if entry.source == "builtin" else f"from the file {plugin}"
        raise refusal(f"act '{name}' is {what}, not from an installed plugin; --entry takes "
                      "an activation an installed package registered (a file: zoo submit FILE.py)")
    ep = installed[plugin]
    spec = importlib.util.find_spec(ep.module)
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise refusal(f"cannot find the module file of plugin '{plugin}' ({ep.value}) to hash")
    origin = {"entry": ep.name, "module": ep.value,
              "version": ep.dist.version if ep.dist else None}
    return Submission((entry,), origin, sha256_file(Path(spec.origin)))


def _registered() -> set[tuple[str, str]]:
    return {(plural, name) for plural, reg in REGISTRIES.items() for name in reg.names()}


def _only_activations(entries: list[Entry], file: str) -> tuple[Entry, ...]:
    if not entries:
        raise refusal(f"{file} registers nothing; register activations with "
                      "zoo.registry.ACTS.register or zoo.registry.acts.register_formula")
    others = [e for e in entries if e.kind != ACTS.kind]
    if others:
        named = ", ".join(f"{e.kind} '{e.name}'" for e in others)
        raise refusal(f"{file} registers {named}; zoo submit takes activations (the standard "
                      "grid compares activations); train other kinds with `zoo sweep --plugin`")
    return tuple(entries)


# --- results already stored under the same names ----------------------------------------------

def check_stored_runs(submission: Submission, out: str | Path) -> None:
    """Refuse when `out` holds runs of a submitted name that are not from this very file: the
    sweep would find them by run id and keep them as this submission's results."""
    db = results_path(Path(out))
    if not db.is_file():  # nothing stored; and reading must not create the database
        return
    with ResultsStore(db) as store:
        stored = [run for run in store.runs() if run.act in submission.names]
    for name in submission.names:
        foreign = [run for run in stored if run.act == name
                   and _submitted_sha256(run.config) != submission.sha256]
        if foreign:
            source = _submitted_sha256(foreign[0].config)
            what = f"submitted with sha256 {source[:12]}" if source else "not a submission"
            raise refusal(f"act '{name}' already has {len(foreign)} run(s) in {db} that are not "
                          f"from this file ({what}); rename the activation, or its runs would "
                          "reuse those results")


def _submitted_sha256(config: dict[str, Any]) -> str | None:
    return ((config or {}).get("labels") or {}).get("submitted", {}).get("sha256")


# --- the checks --------------------------------------------------------------------------------

class CheckFailed(Exception):
    """Why a check failed, in a few words."""


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Entry], str | None]  # None: passed; a string: why it did not apply


def validate(submission: Submission, report: Callable[[str], None] = print) -> None:
    """Check every activation of the submission; the first failure raises the refusal."""
    for entry in submission.acts:
        report(f"checking act '{entry.name}' ({submission.describe()})")
        validate_activation(entry, report)


def validate_activation(entry: Entry, report: Callable[[str], None] = print) -> None:
    """Run every check on `entry`, one report line each; raise at the first failure."""
    for check in CHECKS:
        try:
            note = check.run(entry)
        except CheckFailed as exc:
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - the user's code raised: that is the verdict
            reason = f"{type(exc).__name__}: {_first_line(str(exc))}"
        else:
            report(f"  {check.name}: {note or 'passed'}")
            continue
        report(f"  {check.name}: FAILED ({reason})")
        raise refusal(f"act '{entry.name}' fails {check.name}: {reason}")


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0].rstrip(",:") if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _require(condition: bool, reason: str) -> None:
    if not condition:
        raise CheckFailed(reason)


def _probe(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A typical input, (8, 5, CHANNELS), values of a few units."""
    g = torch.Generator().manual_seed(0)
    return (torch.randn(CHANNELS, 5, CHANNELS, generator=g) * 3).to(dtype)


def _extremes(dtype: torch.dtype) -> torch.Tensor:
    """EXTREMES down the rows, the same value in every channel."""
    return torch.tensor(EXTREMES, dtype=torch.float64)[:, None].repeat(1, CHANNELS).to(dtype)


def _learnable(module: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in module.named_parameters() if p.requires_grad]


def _check_builds_an_activation(entry: Entry) -> None:
    module = entry.create()
    _require(isinstance(module, Activation),
             f"its factory returns {type(module).__name__}, not a zoo.models.activation."
             "Activation (the architectures accept no other nonlinearity)")
    _require(module.act_name == entry.name,
             f"its act_name is '{module.act_name}', not its registered name '{entry.name}'")


def _check_inplace(entry: Entry) -> None:
    try:
        entry.create(inplace=True)
    except ZooError as exc:  # a plugin's factory that raises arrives wrapped, its cause kept
        if not isinstance(exc.__cause__, TypeError):
            raise
        raise CheckFailed(f"its factory rejects inplace=True, which timm passes "
                          f"(act_layer(inplace=True)): {_first_line(str(exc.__cause__))}") from None
    for inplace in (True, False):
        x = _probe()
        before = x.clone()
        entry.create(inplace=inplace)(x)
        _require(torch.equal(x, before),
                 f"it modifies its input (inplace={inplace}); return a new tensor")


def _check_dtype_and_shape(entry: Entry) -> None:
    module = entry.create()
    for dtype in DTYPES:
        x = _probe(dtype)
        y = module(x)
        _require(isinstance(y, torch.Tensor), f"it returns {type(y).__name__}, not a tensor")
        _require(y.dtype == dtype, f"it returns {_dtype_name(y.dtype)} for {_dtype_name(dtype)} "
                                   "input")
        _require(y.shape == x.shape, f"it returns shape {tuple(y.shape)} for input shape "
                                     f"{tuple(x.shape)}")
    x = _probe().transpose(0, 2)
    strided, dense = module(x), module(x.contiguous())
    _require(torch.allclose(strided, dense, rtol=1.3e-6, atol=1e-5, equal_nan=True),
             "a non-contiguous input gives other values than its contiguous copy (max diff "
             f"{(strided - dense).abs().max().item():.3g})")


def _check_finite_on_extremes(entry: Entry) -> None:
    """Finite wherever the exact (float64) value fits the dtype: relu2(1e4) = 1e8 is inf in
    float16, and that is the dtype's fault, not the activation's."""
    module = entry.create()
    exact = _forward_backward(copy.deepcopy(module).double(), _extremes(torch.float64))
    for what, values in exact.items():
        _require_finite(values, torch.ones_like(values, dtype=torch.bool), what, torch.float64)
    for dtype in DTYPES:
        got = _forward_backward(copy.deepcopy(module), _extremes(dtype))
        fits_x = _fits(_extremes(torch.float64), dtype)
        for what, values in got.items():
            if what not in exact:  # a parameter without a gradient: its own check says so
                continue
            fits = _fits(exact[what], values.dtype)
            if what == "output":
                fits &= fits_x
            _require_finite(values, fits, what, dtype)


def _forward_backward(module: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Output, d(sum)/dx and d(sum)/d(each learnable parameter) on input `x`."""
    x = x.requires_grad_()
    y = module(x)
    y.sum().backward()
    found = {"output": y.detach(), "gradient": x.grad}
    for name, p in _learnable(module):
        if p.grad is not None:
            found[f"gradient of {name}"] = p.grad
    return found


def _fits(exact: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.isfinite(exact.to(dtype))


def _require_finite(values: torch.Tensor, where: torch.Tensor, what: str,
                    dtype: torch.dtype) -> None:
    bad = ~torch.isfinite(values) & where
    if bad.any():
        index = bad.nonzero()[0].tolist()
        on_inputs = values.shape == (len(EXTREMES), CHANNELS)  # not a parameter's gradient
        at = f" at x={EXTREMES[index[0]]:g}" if on_inputs else ""
        raise CheckFailed(f"{what} is {values[tuple(index)].item()}{at} in {_dtype_name(dtype)}")


def _check_gradcheck(entry: Entry) -> None:
    """torch.autograd.gradcheck in float64 at inputs at least 0.05 away from 0 (where relu's
    derivative jumps): in x at the defaults, then in x and every learnable parameter with the
    parameters moved by 0.1 (as tests/test_kernels.py does), so that none sits on a kink
    (rational's |b| at b = 1.7e-13)."""
    module = copy.deepcopy(entry.create()).double()
    x = _away_from_zero()
    _gradcheck(module, x, {})
    moved = {name: (p.detach() + 0.1).requires_grad_() for name, p in _learnable(module)}
    if moved:
        _gradcheck(module, x, moved)


def _away_from_zero() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    magnitude = torch.rand(CHANNELS, CHANNELS, generator=g, dtype=torch.float64) * 3.95 + 0.05
    sign = torch.randint(0, 2, magnitude.shape, generator=g) * 2 - 1
    return (magnitude * sign).requires_grad_()


def _gradcheck(module: torch.nn.Module, x: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
    names = list(params)

    def call(x, *values):
        return functional_call(module, dict(zip(names, values)), (x,))

    try:
        torch.autograd.gradcheck(call, (x, *params.values()), eps=1e-6, atol=1e-5)
    except GradcheckError as exc:
        inputs = ", ".join(["input 0 = x", *(f"input {i + 1} = {n} (+0.1)"
                                             for i, n in enumerate(names))])
        raise CheckFailed(_first_line(str(exc)) + (f" ({inputs})" if names else "")) from None


def _check_learnable_parameters(entry: Entry) -> str | None:
    module = entry.create()
    learnable = _learnable(module)
    if not learnable:
        return "not applicable (no learnable parameters)"
    module(_probe().requires_grad_()).sum().backward()
    for name, p in learnable:
        _require(p.grad is not None, f"parameter '{name}' gets no gradient (it would never train)")
        _require(bool(torch.isfinite(p.grad).all()), f"parameter '{name}' gets gradient "
                                                     f"{p.grad.flatten()[0].item()}")
    return f"passed ({', '.join(name for name, _ in learnable)})"


def _check_kernel_parity(entry: Entry) -> str | None:
    """On a GPU with CuPy: the fused kernel's output and gradients against the PyTorch
    reference (the same module with ZOO_KERNELS=0), on strided and misaligned inputs."""
    module = entry.create()
    if not isinstance(module, (FormulaActivation, GroupRational)):
        return "not applicable (no CUDA kernel)"
    if not torch.cuda.is_available():
        return "skipped (no GPU)"
    if runtime.cupy_or_none() is None:
        return "skipped (CuPy is not installed)"
    if not runtime.kernels_enabled():
        return f"skipped ({runtime.ENV_SWITCH}=0)"
    module = module.cuda()
    for dtype, (rtol, atol) in KERNEL_TOLERANCE.items():
        for shape, x in _parity_inputs(dtype).items():
            grad_y = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).cuda()
            kernel = _gradients_with_kernels(True, module, x, grad_y.to(dtype))
            reference = _gradients_with_kernels(False, module, x, grad_y.to(dtype))
            for what in kernel:
                tol = PARAM_GRAD_TOLERANCE if what.startswith("gradient of") else (rtol, atol)
                difference = (kernel[what].float() - reference[what].float()).abs().max().item()
                _require(torch.allclose(kernel[what].float(), reference[what].float(), *tol),
                         f"the kernel's {what} differs from the reference by {difference:.3g} in "
                         f"{_dtype_name(dtype)} on a {shape} input")
    return "passed"


def _parity_inputs(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    strided = (torch.randn(5, CHANNELS, 64, generator=g) * 3).to(dtype).cuda().transpose(0, 1)
    misaligned = (torch.randn(1001, generator=g) * 3).to(dtype).cuda()[1:]
    return {"non-contiguous (8, 5, 64)": strided, "misaligned (1000,)": misaligned}


def _gradients_with_kernels(enabled: bool, module: torch.nn.Module, x: torch.Tensor,
                            grad_y: torch.Tensor) -> dict[str, torch.Tensor]:
    learnable = _learnable(module)
    with _environment(runtime.ENV_SWITCH, "1" if enabled else "0"):
        x = x.detach().requires_grad_()
        y = module(x)
        grads = torch.autograd.grad(y, [x, *(p for _, p in learnable)], grad_y,
                                    allow_unused=True)
    found = {"output": y.detach(), "gradient": grads[0]}
    for (name, _), grad in zip(learnable, grads[1:]):
        if grad is not None:
            found[f"gradient of {name}"] = grad
    return found


@contextlib.contextmanager
def _environment(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


CHECKS = (
    Check("builds a zoo Activation", _check_builds_an_activation),
    Check("inplace=True accepted, input unchanged", _check_inplace),
    Check("dtype and shape preserved", _check_dtype_and_shape),
    Check("finite on extreme inputs", _check_finite_on_extremes),
    Check("float64 gradcheck", _check_gradcheck),
    Check("learnable parameters get finite gradients", _check_learnable_parameters),
    Check("kernel parity", _check_kernel_parity),
)

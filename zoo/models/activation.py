"""The module every registered activation is wrapped in, so that any architecture can take it as
its `act_layer` and the leak check can tell a zoo activation from one the architecture chose."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.kernels.autograd import apply_formula
from zoo.kernels.fewbit import FewBitBackward, approximation_for
from zoo.kernels.rational import INITS
from zoo.kernels.rational_cuda import apply_group_rational

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class Activation(nn.Module):
    """An elementwise activation from the registry.

    `fn` is the PyTorch reference (the specification); later a fused kernel may stand in for it on
    the GPU. `inplace` is accepted because timm's ResNet calls `act_layer(inplace=True)`; zoo
    activations always return a new tensor (several need their input for the backward pass).
    Half-precision inputs are computed in float32 and cast back, so guards against overflow
    (e.g. exp(-x) for very negative x) behave the same in every dtype.
    """

    def __init__(self, name: str, fn: Callable[..., torch.Tensor], inplace: bool = False, **params):
        super().__init__()
        self.act_name = name
        self.fn = fn
        self.params = dict(params)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _LOW_PRECISION:
            return self.fn(x.float(), **self.params).to(x.dtype)
        return self.fn(x, **self.params)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.act_name}({args})" if args else self.act_name


class FormulaActivation(Activation):
    """An activation declared as an `ElementwiseFormula`: fused CUDA kernel on the GPU, the
    formula's PyTorch reference elsewhere. Learnable parameters are `nn.Parameter`s (one scalar
    each). Fixed ones are Python floats, as in torch.nn.LeakyReLU, so that the reference uses
    them exactly in every dtype; their float32 copies for the kernels are non-persistent buffers,
    which follow the module across devices."""

    def __init__(self, formula, inplace: bool = False, backward_bits: float | None = None,
                 **values: float):
        unknown = set(values) - {p.name for p in formula.params}
        if unknown:
            known = ", ".join(p.name for p in formula.params) or "none"
            raise ZooError(f"{formula.name} has no parameter {', '.join(sorted(unknown))} "
                           f"(its parameters: {known}; any elementwise activation also takes "
                           "backward_bits)")
        super().__init__(formula.name, formula.reference, inplace=inplace)
        self.formula = formula
        self.backward_bits = _check_backward_bits(formula, backward_bits)
        for p in formula.params:
            value = torch.tensor(float(values.get(p.name, p.default)))
            if p.learnable:
                self.register_parameter(p.name, nn.Parameter(value))
            else:
                self.register_buffer(p.name, value, persistent=False)
        self.params = {p.name: float(values.get(p.name, p.default)) for p in formula.params}
        self._fixed = {p.name: self.params[p.name] for p in formula.params if not p.learnable}
        if self.backward_bits:
            self.params["backward_bits"] = self.backward_bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = [getattr(self, p.name) for p in self.formula.params]
        params = torch.stack(values) if values else x.new_zeros(0, dtype=torch.float32)
        if self.backward_bits and x.requires_grad and torch.is_grad_enabled():
            # few-bit backward: every parameter is fixed
            fixed = tuple(self._fixed[p.name] for p in self.formula.params)
            approximation = approximation_for(self.formula, fixed, self.backward_bits)
            return FewBitBackward.apply(
                x, lambda v: apply_formula(self.formula, v, params, self._fixed), approximation,
                self.backward_bits)
        return apply_formula(self.formula, x, params, self._fixed)


def _check_backward_bits(formula, bits: float | None) -> int | None:
    """None or 0: exact backward. 1-4: few-bit backward, for activations without learnable
    parameters (a parameter's gradient needs x itself, which few-bit backward does not keep)."""
    if bits is None or bits == 0:
        return None
    if bits not in (1, 2, 3, 4):
        raise ZooError(f"backward_bits must be 1, 2, 3 or 4 (0 for the exact backward), got {bits}")
    if formula.learnable:
        names = ", ".join(p.name for p in formula.learnable)
        raise ZooError(f"{formula.name} has learnable parameters ({names}): few-bit backward "
                       "keeps no input to compute their gradients")
    return int(bits)


class GroupRational(Activation):
    """KAT's group-rational activation (zoo.kernels.rational): learnable P5/Q4 coefficients
    shared by `groups` slices of the channels (the last dim, or dim 1 of an NCHW map)."""

    def __init__(self, groups: int = 8, init: str = "gelu", inplace: bool = False, **unknown):
        if unknown:
            raise ZooError(f"rational has no parameter {', '.join(sorted(unknown))} "
                           "(its parameters: groups, init)")
        if init not in INITS:
            raise ZooError(f"rational init must be one of {', '.join(INITS)}, got '{init}'")
        if int(groups) != groups or groups < 1:
            raise ZooError(f"rational groups must be a positive whole number, got {groups}")
        super().__init__("rational", apply_group_rational, inplace=inplace)
        a, b = INITS[init]
        self.groups, self.init = int(groups), init
        self.a = nn.Parameter(torch.tensor(a).repeat(self.groups, 1))
        self.b = nn.Parameter(torch.tensor(b).repeat(self.groups, 1))
        self.params = {"groups": self.groups, "init": init}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x, self.a, self.b, channel_dim=1 if x.ndim == 4 else -1)

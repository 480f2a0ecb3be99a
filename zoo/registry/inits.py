"""Built-in weight initializations.

An entry's factory takes its options and returns `apply(model, ctx)`, which re-initializes the
model in place. Rules that act during training too set attributes on `apply` that the trainer
calls: `after_step(model, step)` after every optimizer step (step counts from 1), and
`param_lr_scale(param) -> float`, a per-parameter factor on the learning rate. The trainer gets
them from a fresh `create()`, not from the instance that initialized the model, so they must
find what they need in the model or its parameters (tags), not in state kept by `apply`. These touch the weights of every Linear and Conv layer (attention projections,
MLPs, patch embedding, convolutions, classifier) and zero their biases; normalization layers,
position embeddings and class tokens keep the architecture's default.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from zoo.errors import ZooError
from zoo.models.activation import Activation
from zoo.models.context import BuildContext
from zoo.models.structure import residual_blocks, residual_branch_ends
from zoo.registry.core import INITS

_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
TOUCHES = "weights of Linear and Conv layers (biases set to 0)"
KEEPS = "normalization layers, embedding tables (nn.Embedding), position embeddings, class tokens"


def _weight_layers(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, _WEIGHT_LAYERS)]


def _reinit(model: nn.Module, init_weight) -> None:
    with torch.no_grad():
        for layer in _weight_layers(model):
            init_weight(layer.weight)
            if layer.bias is not None:
                layer.bias.zero_()


@INITS.register("default", summary="the architecture's own initialization (timm's)",
                formula="unchanged", touches="nothing", keeps="everything")
def default():
    def apply(model: nn.Module, ctx: BuildContext) -> None:
        return None

    return apply


@INITS.register(
    "kaiming",
    formula="W ~ N(0, 2 / fan) (normal) or U(-sqrt(6/fan), sqrt(6/fan)) (uniform), ReLU gain",
    paper=("Delving Deep into Rectifiers: Surpassing Human-Level Performance on ImageNet "
           "Classification", "1502.01852"),
    defaults={"mode": "fan_in", "distribution": "normal"},
    touches=TOUCHES, keeps=KEEPS,
)
def kaiming(mode: str = "fan_in", distribution: str = "normal"):
    """He initialization (variance 2 / fan, derived for ReLU)."""
    if mode not in ("fan_in", "fan_out") or distribution not in ("normal", "uniform"):
        raise ZooError("kaiming takes mode=fan_in|fan_out and distribution=normal|uniform")
    init = nn.init.kaiming_normal_ if distribution == "normal" else nn.init.kaiming_uniform_

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, lambda w: init(w, mode=mode, nonlinearity="relu"))

    return apply


@INITS.register(
    "xavier",
    formula="W ~ U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (uniform) or N(0, 2/(fan_in+fan_out))",
    paper=("Understanding the difficulty of training deep feedforward neural networks", None),
    defaults={"distribution": "uniform"},
    touches=TOUCHES, keeps=KEEPS,
)
def xavier(distribution: str = "uniform"):
    """Glorot initialization (keeps variance for a linear/tanh network)."""
    init = nn.init.xavier_uniform_ if distribution == "uniform" else nn.init.xavier_normal_

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, init)

    return apply


@INITS.register(
    "orthogonal",
    formula="W = gain * Q, Q with orthonormal rows or columns (convolutions: over the flattened "
            "kernel)",
    paper=("Exact solutions to the nonlinear dynamics of learning in deep linear neural networks",
           "1312.6120"),
    defaults={"gain": 1.0},
    touches=TOUCHES, keeps=KEEPS,
)
def orthogonal(gain: float = 1.0):
    """Orthogonal weight matrices."""

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, lambda w: nn.init.orthogonal_(w, gain=gain))

    return apply




@INITS.register(
    "trunc_normal",
    formula="W ~ N(0, std^2) truncated to [-2 std, 2 std]",
    paper=("An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale "
           "(timm's ViT default)", "2010.11929"),
    defaults={"std": 0.02}, touches=TOUCHES, keeps=KEEPS,
)
def trunc_normal(std: float = 0.02):
    _positive("trunc_normal std", std)

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, lambda w: nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std))

    return apply


# --- data-dependent ------------------------------------------------------------------------------

@INITS.register(
    "lsuv",
    formula="orthogonal, then layer by layer (in forward order) W /= sqrt(Var(layer output)) "
            "on a training batch until |Var - 1| < tol",
    paper=("All you need is a good init", "1511.06422"),
    defaults={"tol": 0.05, "max_iter": 10}, touches=TOUCHES,
    keeps=KEEPS + "; normalization running statistics are reset after calibration",
)
def lsuv(tol: float = 0.05, max_iter: float = 10):
    _positive("lsuv tol", tol)
    _positive("lsuv max_iter", max_iter)

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        if ctx.calibration_batch is None:
            raise ZooError("lsuv needs a calibration batch of training data "
                           "(zoo train and zoo probe provide one)")
        batch = ctx.calibration_batch()
        _reinit(model, nn.init.orthogonal_)
        with torch.no_grad():
            for layer in _weight_layers(model):
                seen = {}
                hook = layer.register_forward_hook(lambda m, i, out: seen.update(out=out))
                try:
                    for _ in range(int(max_iter)):
                        model(batch)
                        var = seen["out"].float().var().item() if "out" in seen else None
                        if var is None or var == 0 or abs(var - 1) < tol:
                            break  # not on the forward path, or dead: nothing to scale
                        layer.weight.div_(var ** 0.5)
                        if layer.bias is not None:
                            layer.bias.div_(var ** 0.5)
                finally:
                    hook.remove()
        for module in model.modules():  # the calibration passes moved them
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()

    return apply


# --- deterministic -------------------------------------------------------------------------------

def zero_matrix(rows: int, cols: int) -> torch.Tensor:
    """ZerO's matrix: identity if square, partial identity if it shrinks, and
    c * I* H I* with a Hadamard H of size 2^m >= rows, c = 2^(-(m-1)/2), if it grows."""
    if rows <= cols:
        return torch.eye(rows, cols)
    m = math.ceil(math.log2(rows))
    hadamard = torch.ones(1, 1)
    for _ in range(m):  # Sylvester's construction
        hadamard = torch.kron(torch.tensor([[1.0, 1.0], [1.0, -1.0]]), hadamard)
    return 2 ** (-(m - 1) / 2) * hadamard[:rows, :cols]


@INITS.register(
    "zero",
    formula="identity (square), partial identity (shrinking) or c I* H I* with a Hadamard H "
            "(growing); convolutions: that matrix at the kernel's centre, zeros elsewhere",
    paper=("ZerO Initialization: Initializing Neural Networks with only Zeros and Ones",
           "2110.12661"),
    touches=TOUCHES, keeps=KEEPS, note="deterministic: the seed does not change it",
)
def zero():
    def init(w: torch.Tensor) -> None:
        matrix = zero_matrix(w.shape[0], w.shape[1])
        w.zero_()
        if w.ndim == 2:
            w.copy_(matrix)
        else:  # the centre tap of the kernel maps channels like the matrix
            w[(slice(None), slice(None), *(k // 2 for k in w.shape[2:]))] = matrix

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, init)

    return apply


@INITS.register(
    "lowrank",
    formula="W = A B / sqrt(rank fan_in), A, B standard normal of inner size `rank`: effective "
            "rank `rank` at the default variance 1 / fan_in",
    paper=("How connectivity structure shapes rich and lazy learning in neural circuits",
           "2310.08513"),
    defaults={"rank": 1}, touches=TOUCHES, keeps=KEEPS,
)
def lowrank(rank: float = 1):
    _positive("lowrank rank", rank, integer=True)

    def init(w: torch.Tensor) -> None:
        rows, fan_in = w.shape[0], w[0].numel()
        r = min(int(rank), rows, fan_in)
        a, b = torch.randn(rows, r), torch.randn(r, fan_in)
        w.copy_((a @ b / math.sqrt(r * fan_in)).view_as(w))

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, init)

    return apply


# --- from the activation -------------------------------------------------------------------------

def _model_activation(model: nn.Module) -> nn.Module:
    """A float64 copy of the model's activation (with its parameters), to evaluate g and g'."""
    for module in model.modules():
        if isinstance(module, Activation):
            return copy.deepcopy(module).double()
    raise ZooError("the model has no zoo activation to derive an initialization from")


def activation_at(act: nn.Module, z: torch.Tensor,
                  per_group: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(g(z), g'(z)) in float64 through autograd. A grouped activation (rational) gives one
    column per group with `per_group`, else the mean over its groups."""
    groups = getattr(act, "groups", 1)
    z = z.double().detach()[:, None].repeat(1, groups).requires_grad_()
    y = act(z)
    (grad,) = torch.autograd.grad(y.sum(), z)
    if per_group:
        return y.detach(), grad
    return y.detach().mean(dim=1), grad.mean(dim=1)


def gaussian_moments(act: nn.Module) -> tuple[float, float]:
    """(E[g(z)^2], E[g'(z)^2]) for z ~ N(0, 1), averaged over an activation's groups: a midpoint
    rule on [-10, 10] with step 1e-3 (quadrature rules that assume smoothness fail on relu's
    jump)."""
    z = torch.arange(-10_000, 10_000, dtype=torch.float64) * 1e-3 + 5e-4
    value, grad = activation_at(act, z, per_group=True)
    density = (torch.exp(-z**2 / 2) / math.sqrt(2 * math.pi) * 1e-3)[:, None]
    return float((density * value**2).sum(0).mean()), float((density * grad**2).sum(0).mean())


def _normal_with_variance(variance_for_fan_in):
    def init(w: torch.Tensor) -> None:
        nn.init.normal_(w, std=math.sqrt(variance_for_fan_in(w[0].numel())))

    return init


@INITS.register(
    "act_aware",
    formula="W ~ N(0, 1 / (fan_in g'(0)^2 (1 + g(0)^2))) for the run's activation g",
    paper=("On weight initialization in deep neural networks", "1704.08863"),
    touches=TOUCHES, keeps=KEEPS,
    note="needs g differentiable at 0 with g'(0) != 0 (not relu)",
)
def act_aware():
    def apply(model: nn.Module, ctx: BuildContext) -> None:
        g0, dg0 = (v.item() for v in activation_at(_model_activation(model),
                                                     torch.zeros(1)))
        if not math.isfinite(dg0) or dg0 == 0:
            raise ZooError(f"act_aware needs g'(0) != 0; {ctx.act} has g'(0) = {dg0:g}")
        _reinit(model, _normal_with_variance(lambda n: 1 / (n * dg0**2 * (1 + g0**2))))

    return apply


def edge_of_chaos_gain(act: nn.Module) -> float:
    """sigma_w^2 with sigma_w^2 E_z[g'(z)^2] = 1, z ~ N(0, 1)."""
    _, mean_square = gaussian_moments(act)
    if not math.isfinite(mean_square) or mean_square == 0:
        raise ZooError("edge_of_chaos needs an activation whose derivative is not 0 everywhere")
    return 1 / mean_square


@INITS.register(
    "edge_of_chaos",
    formula="W ~ N(0, sigma_w^2 / fan_in) with sigma_w^2 E[g'(z)^2] = 1, z ~ N(0, 1), computed "
            "numerically for the run's activation (relu: sigma_w^2 = 2, i.e. kaiming)",
    paper=("On the Impact of the Activation Function on Deep Neural Networks Training",
           "1902.06853"),
    touches=TOUCHES, keeps=KEEPS,
    note="pre-activations taken at unit variance (q* = 1), which the normalization layers of "
         "zoo's architectures keep; biases are 0",
)
def edge_of_chaos():
    def apply(model: nn.Module, ctx: BuildContext) -> None:
        gain = edge_of_chaos_gain(_model_activation(model))
        _reinit(model, _normal_with_variance(lambda n: gain / n))

    return apply


@INITS.register(
    "variance_preserving",
    formula="W ~ N(0, 1 / (fan_in E_z[g(z)^2])), z ~ N(0, 1), g the run's activation (groups "
            "averaged): each layer's input keeps second moment 1, layer after layer",
    paper=("Kolmogorov-Arnold Transformer (variance-preserving initialization of GR-KAN)",
           "2409.10594"),
    touches=TOUCHES, keeps=KEEPS,
    note="KAT's rule for rational activations, computed numerically so it applies to any "
         "activation (polynomial, trigonometric, tropical, rational). Those four already start "
         "with E[g(z)^2] near 1 (torchortho's coefficients; KAT's GELU fit gives 0.43), so it "
         "differs from LeCun's 1 / fan_in by that factor",
)
def variance_preserving():
    def apply(model: nn.Module, ctx: BuildContext) -> None:
        second_moment, _ = gaussian_moments(_model_activation(model))
        if not math.isfinite(second_moment) or second_moment == 0:
            raise ZooError(f"variance_preserving needs E[g(z)^2] > 0; {ctx.act} gives "
                           f"{second_moment:g}")
        _reinit(model, _normal_with_variance(lambda n: 1 / (n * second_moment)))

    return apply


@INITS.register(
    "siren",
    formula="first layer U(-1/fan_in, 1/fan_in); others U(-sqrt(6/fan_in)/omega0, "
            "+sqrt(6/fan_in)/omega0)",
    paper=("Implicit Neural Representations with Periodic Activation Functions", "2006.09661"),
    defaults={"omega0": 30.0}, touches=TOUCHES, keeps=KEEPS,
    note="pair with --act sine (same omega0)",
)
def siren(omega0: float = 30.0):
    _positive("siren omega0", omega0)

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        with torch.no_grad():
            for index, layer in enumerate(_weight_layers(model)):
                fan_in = layer.weight[0].numel()
                bound = 1 / fan_in if index == 0 else math.sqrt(6 / fan_in) / omega0
                layer.weight.uniform_(-bound, bound)
                if layer.bias is not None:
                    layer.bias.zero_()

    return apply


@INITS.register(
    "lir",
    formula="W ~ N(0, (std / sqrt(l))^2) in residual block l = 1..L, N(0, std^2) elsewhere (LIR); "
            "with tvr_std > 0, every tvr_interval steps each block weight whose std exceeds "
            "tvr_threshold * tvr_std is rescaled to (W - mean) tvr_std / std + mean and its bias "
            "zeroed (TVR)",
    paper=("Variance Control via Weight Rescaling in LLM Pre-training", "2503.17500"),
    defaults={"std": 0.02, "tvr_std": 0.0, "tvr_interval": 50, "tvr_threshold": 1.2},
    touches=TOUCHES + "; during training (TVR) the weights inside residual blocks",
    keeps=KEEPS,
    note="rules as in the authors' code (bluorion-com/weight_rescaling): TVR's target is not "
         "depth-scaled, and it only shrinks weights. zoo applies them to convolutions too; the "
         "paper has only Linear layers. tvr_std = 0 (default) is LIR alone",
)
def lir(std: float = 0.02, tvr_std: float = 0.0, tvr_interval: float = 50,
        tvr_threshold: float = 1.2):
    _positive("lir std", std)
    if tvr_std < 0:
        raise ZooError(f"lir tvr_std must be >= 0 (0 turns TVR off), got {tvr_std}")
    _positive("lir tvr_interval", tvr_interval, integer=True)
    _positive("lir tvr_threshold", tvr_threshold)

    def apply(model: nn.Module, ctx: BuildContext) -> None:
        _reinit(model, lambda w: nn.init.normal_(w, std=std))
        with torch.no_grad():
            for index, block in enumerate(residual_blocks(model), start=1):
                for layer in _weight_layers(block):
                    layer.weight.normal_(std=std / math.sqrt(index))

    def rescale(model: nn.Module, step: int) -> None:
        if step % int(tvr_interval):
            return
        with torch.no_grad():
            for block in residual_blocks(model):
                for layer in _weight_layers(block):
                    mean, spread = layer.weight.mean(), layer.weight.std()
                    if spread > tvr_threshold * tvr_std:
                        layer.weight.sub_(mean).mul_(tvr_std / spread).add_(mean)
                        if layer.bias is not None:
                            layer.bias.zero_()

    if tvr_std > 0:
        apply.after_step = rescale  # called by the trainer after every optimizer step
    return apply


@INITS.register(
    "zero_residual",
    formula="the last layer of every residual branch starts at 0, so each block starts as the "
            "identity",
    paper=("common practice: Goyal et al., Accurate, Large Minibatch SGD (zero-gamma); "
           "modded-nanogpt", "1706.02677"),
    touches="attn.proj and mlp.fc2 of transformer blocks; the last BatchNorm weight of ResNet "
            "blocks", keeps="everything else (the architecture's default)",
)
def zero_residual():
    def apply(model: nn.Module, ctx: BuildContext) -> None:
        with torch.no_grad():
            for layer in residual_branch_ends(model):
                layer.weight.zero_()
                if layer.bias is not None and not isinstance(layer, nn.BatchNorm2d):
                    layer.bias.zero_()

    return apply


class ReZeroGate(nn.Module):
    """x -> alpha * x with a learnable scalar alpha that starts at 0."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * x


@INITS.register(
    "rezero",
    formula="every residual branch becomes x + alpha F(x), alpha a learnable scalar = 0 at init",
    paper=("ReZero is All You Need: Fast Convergence at Large Depth", "2003.04887"),
    touches="adds a gate after the last layer of every residual branch",
    keeps="every weight, and the normalization layers (the paper removes LayerNorm; zoo keeps "
          "the architecture as it is and only adds the gates)",
)
def rezero():
    def apply(model: nn.Module, ctx: BuildContext) -> None:
        parents = {id(child): (parent, name) for parent in model.modules()
                   for name, child in parent.named_children()}
        for end in residual_branch_ends(model):
            parent, name = parents[id(end)]
            setattr(parent, name, nn.Sequential(end, ReZeroGate()))

    return apply


def _positive(what: str, value: float, integer: bool = False) -> None:
    if (integer and int(value) != value) or value <= 0:
        kind = "a positive whole number" if integer else "positive"
        raise ZooError(f"{what} must be {kind}, got {value}")

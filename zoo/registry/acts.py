"""The activation catalogue (../shared/CATALOGUE.md, "Activations").

Each elementwise entry is one `ElementwiseFormula`: its PyTorch reference, derivatives and CUDA
kernels are all generated from the formula string below. `domain` / `below` / `above` say where a
formula would overflow and what it equals out there (see zoo.kernels.formula).
"""

from __future__ import annotations

import math

from zoo.kernels.formula import ElementwiseFormula, Param
from zoo.models.activation import FormulaActivation, GroupRational
from zoo.registry.core import ACTS

FORMULAS: dict[str, ElementwiseFormula] = {}


def register_formula(formula: ElementwiseFormula, *, paper: tuple[str, str | None],
                     summary: str = "", tags: tuple[str, ...] = (), note: str = "",
                     companion_init: str | None = None) -> None:
    """One catalogue entry: the registry entry's factory builds a FormulaActivation.
    `companion_init`: the initialization the activation's paper pairs it with (`zoo info`
    shows it; the standard grid trains the activation with it as well as with the baseline's)."""
    FORMULAS[formula.name] = formula

    def factory(inplace: bool = False, **values: float) -> FormulaActivation:
        return FormulaActivation(formula, inplace=inplace, **values)

    extra = {"learnable": ", ".join(p.name for p in formula.learnable)} if formula.learnable else {}
    if note:
        extra["note"] = note
    if companion_init:
        extra["companion_init"] = companion_init
    ACTS.register(formula.name, summary=summary, formula=formula.formula_text(), paper=paper,
                  defaults={p.name: p.default for p in formula.params}, tags=tags,
                  **extra)(factory)


def _f(name, expr, params=(), **guards) -> ElementwiseFormula:
    return ElementwiseFormula(name, expr, [Param(*p) for p in params], **guards)


SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805

# --- baselines ------------------------------------------------------------------------------------
register_formula(_f("relu", "Max(0, x)"), tags=("baseline",),
                 paper=("Rectified Linear Units Improve Restricted Boltzmann Machines", None))
register_formula(_f("gelu", "x / 2 * (1 + erf(x / sqrt(2)))"), tags=("baseline",),
                 summary="GELU, exact erf form",
                 paper=("Gaussian Error Linear Units (GELUs)", "1606.08415"))
register_formula(_f("gelu_tanh", "x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))",
                    domain=(-10, 10), below="0", above="x"), tags=("baseline",),
                 summary="GELU, tanh approximation (GPT-2's)",
                 paper=("Gaussian Error Linear Units (GELUs)", "1606.08415"))
register_formula(_f("silu", "x * sigmoid(x)"), tags=("baseline", "gated"),
                 paper=("Sigmoid-Weighted Linear Units for Neural Network Function Approximation "
                        "in Reinforcement Learning", "1702.03118"))
register_formula(_f("elu", "Max(x, 0) + alpha * (exp(Min(x, 0)) - 1)", [("alpha", 1.0)]),
                 tags=("baseline",),
                 paper=("Fast and Accurate Deep Network Learning by Exponential Linear Units "
                        "(ELUs)", "1511.07289"))
register_formula(_f("selu", f"{SELU_SCALE} * (Max(x, 0) + {SELU_ALPHA} * (exp(Min(x, 0)) - 1))"),
                 tags=("baseline", "self-normalizing"),
                 # E[selu(z)^2] = 1 for z ~ N(0, 1), so variance_preserving is exactly LeCun
                 # normal, N(0, 1 / fan_in): the init the paper prescribes
                 companion_init="variance_preserving",
                 note="pair with LeCun normal init (variance_preserving equals it for selu)",
                 paper=("Self-Normalizing Neural Networks", "1706.02515"))
register_formula(_f("softplus", "softplus(beta * x) / beta", [("beta", 1.0)]), tags=("baseline",),
                 paper=("Incorporating Second-Order Functional Knowledge for Better Option "
                        "Pricing", None))
register_formula(_f("leaky_relu", "Max(x, 0) + slope * Min(x, 0)", [("slope", 0.01)]),
                 tags=("baseline",),
                 paper=("Rectifier Nonlinearities Improve Neural Network Acoustic Models", None))

# --- gated and smooth -----------------------------------------------------------------------------
register_formula(_f("swish", "x * sigmoid(beta * x)", [("beta", 1.0, True)]), tags=("gated",),
                 paper=("Searching for Activation Functions", "1710.05941"))
register_formula(_f("mish", "x * tanh(softplus(x))"), tags=("gated",),
                 paper=("Mish: A Self Regularized Non-Monotonic Activation Function",
                        "1908.08681"))
register_formula(_f("golu", "x * exp(-exp(-x))", domain=(-20, None), below="0"),
                 tags=("gated",),
                 paper=("Gompertz Linear Units: Leveraging Asymmetry for Enhanced Learning "
                        "Dynamics", "2502.03654"))
# APA(z) = (lam * exp(-kappa z) + 1)^(-1/lam), rewritten as exp(-softplus(log lam - kappa z) / lam)
# so that exp(-kappa z) never overflows; |lam| keeps the log defined while lam is learned.
_APA = "exp(-softplus(log(Abs(lam)) - kappa * x) / Abs(lam))"
register_formula(_f("apa", _APA, [("lam", 1.0, True), ("kappa", 1.0, True)]),
                 tags=("learnable",), note="APA(z) = (lam exp(-kappa z) + 1)^(-1/lam)",
                 paper=("Adaptive Parametric Activation", "2407.08567"))
register_formula(_f("aglu", f"x * {_APA}", [("lam", 1.0, True), ("kappa", 1.0, True)]),
                 tags=("learnable", "gated"), note="AGLU(z) = z * APA(z)",
                 paper=("Adaptive Parametric Activation", "2407.08567"))
register_formula(_f("smelu", "(Min(Max(x, -beta), beta) + beta)**2 / (4 * beta) + Max(x - beta, 0)",
                    [("beta", 1.0)]), tags=("smooth",),
                 note="0 for x <= -beta; (x + beta)^2 / (4 beta) for |x| < beta; x for x >= beta",
                 paper=("Smooth activations and reproducibility in deep networks", "2010.09931"))
register_formula(_f("sau", "alpha * x + (1 - alpha) * (x * (1 + erf(x / (sigma * sqrt(2)))) / 2"
                           " + sigma * exp(-x**2 / (2 * sigma**2)) / sqrt(2 * pi))",
                    [("alpha", 0.01), ("sigma", 1.0)]), tags=("smooth",),
                 note="leaky ReLU (slope alpha) convolved with the Gaussian approximate identity "
                      "N(0, sigma^2), the construction of the paper's abstract; the closed form "
                      "was checked by direct numerical convolution (tests/test_catalogue.py), "
                      "not against the paper's own equation (its text was not reachable here). "
                      "The defaults alpha=0.01, sigma=1 are zoo's choice, unchecked",
                 paper=("SAU: Smooth activation function using convolution with approximate "
                        "identities", "2109.13210"))
register_formula(_f("crrelu", "Max(0, x) + eps * x * exp(-x**2 / 2)", [("eps", 0.01, True)]),
                 tags=("learnable",),
                 note="relu(x) + eps x exp(-x^2/2) with eps learnable, initialised at 0.01: "
                      "checked against public PyTorch CRReLU implementations (the same form, "
                      "nn.Parameter 0.01) and the ICLR 2025 OpenReview discussion of the paper "
                      "(forum 7TZYM6Hm9p: learnable eps initialised at 0.01); the paper's own "
                      "equation was not reachable here",
                 paper=("A Method on Searching Better Activation Functions", "2405.12954"))

# --- polynomial, periodic, sparse, bump -----------------------------------------------------------
register_formula(_f("relu2", "Max(0, x)**2"), tags=("polynomial",),
                 summary="squared ReLU, as in the modded-nanogpt GPT-2 speed record",
                 paper=("Primer: Searching for Efficient Transformers for Language Modeling",
                        "2109.08668"))
register_formula(_f("xsin2", "x + sin(a * x)**2 / a", [("a", 1.0)]), tags=("periodic",),
                 summary="Snake: x + sin^2(a x) / a",
                 paper=("Neural Networks Fail to Learn Periodic Functions and How to Fix It",
                        "2006.08195"))
register_formula(_f("sine", "sin(omega0 * x)", [("omega0", 30.0)]), tags=("periodic",),
                 note="pair with the SIREN initialization", companion_init="siren",
                 paper=("Implicit Neural Representations with Periodic Activation Functions",
                        "2006.09661"))
register_formula(_f("shifted_relu", "Min(Max(x - tau, 0), clip)", [("tau", 0.5), ("clip", 1e4)]),
                 tags=("sparse",),
                 note="max(0, x - tau), magnitude clipped at `clip` (the paper's CReLU_{tau,m}); "
                      "tau=0.5 and clip=1e4 (no clipping) are zoo's defaults",
                 paper=("Deep Neural Network Initialization with Sparsity Inducing Activations",
                        "2402.16184"))
register_formula(_f("soft_threshold", "Min(Max(x - tau, 0), clip) + Max(Min(x + tau, 0), -clip)",
                    [("tau", 0.5), ("clip", 1e4)]), tags=("sparse",),
                 note="sign(x) max(|x| - tau, 0), magnitude clipped at `clip` (the paper's "
                      "CST_{tau,m}); tau=0.5 and clip=1e4 (no clipping) are zoo's defaults",
                 paper=("Deep Neural Network Initialization with Sparsity Inducing Activations",
                        "2402.16184"))
register_formula(_f("elephant", "1 / (1 + Abs(x / a)**d)", [("a", 1.0), ("d", 4.0)],
                    domain=(-1e6, 1e6), below="0", above="0"), tags=("bump",),
                 note="a=1, d=4 are zoo's defaults",
                 paper=("Elephant Neural Networks: Born to Be a Continual Learner", "2310.01365"))

# --- variance-aware, unified and learnable-expansion activations ---------------------------------
# VeLU's adaptive factor 1 + gamma tanh(mu / sqrt(mean(x^2) + 1e-6)) uses the mean of x^2 over the
# last axis: not elementwise. Here it is the fixed parameter `adapt`, by default its value for
# unit-RMS inputs, 1 + 0.1 tanh(0.9).
VELU_ADAPT = 1.0 + 0.1 * math.tanh(0.9)
register_formula(
    _f("velu", "lam * adapt * x * sigmoid(alpha * (atan(beta1 * x) + asin_clip(beta2 * x)))",
       [("alpha", 0.1), ("beta1", 0.1), ("beta2", 0.1), ("adapt", VELU_ADAPT), ("lam", 1.0, True)]),
    tags=("gated", "learnable"),
    summary="VeLU's elementwise core: x sigmoid(alpha (atan(beta1 x) + asin(clip(beta2 x)))), "
            "scaled by the adaptive factor and a learnable lambda",
    note="formula and alpha=beta1=beta2=0.1, learnable lambda=1 from the authors' code "
         "(github AshkanShakarami/VeLU, VeLU.ipynb, class Velu; the velu() defaults used in "
         "their experiments; arXiv v1 has the same form, v2 calls it ArcTan-ArcSin); asin's "
         "argument is clipped to [-1, 1] as in that code. NOT elementwise there, and not here: "
         "(1) the adaptive factor 1 + gamma tanh(mu / sqrt(mean_lastaxis(x^2) + 1e-6)), "
         "gamma=0.1, mu=0.9 (the paper writes tanh(mu sigma_x) with the input std), here the "
         "fixed parameter adapt, default its value at unit RMS (1 + 0.1 tanh(0.9), zoo's "
         "choice); (2) the Wasserstein-2 penalty lambda_OT ((mean y)^2 + (std y - 1)^2), "
         "lambda_OT=0.1, added to the loss: not included",
    paper=("VeLU: Variance-enhanced Learning Unit for Deep Neural Networks", "2504.15051"))


def _ml_tanh_family(terms: int = 18) -> str:
    """Mostafanejad's gated form x Phi[x] = x^gamma E_{a1,b1}[f(x)] / E_{a2,b2}[g(x)] with
    gamma=1, f = g = x^2, a1 = a2 = 2, b1 = 2: x E_{2,2}(x^2) / E_{2,b}(x^2), which is x for
    b = 2 and tanh(x) for b = 1. E_{2,2}(x^2) = sinh(x) / x exactly; E_{2,b}(x^2) =
    (1 / Gamma(b)) sum_k x^(2k) / ((b)(b+1)...(b+2k-1)), summed to k = `terms` in Horner form
    (no overflow in float32; truncation error < 1e-8 relative for |x| <= 10)."""
    inner = f"1 + x**2 / (({2 * terms - 2} + beta2) * ({2 * terms - 1} + beta2))"
    for k in range(terms - 1, 0, -1):
        inner = f"1 + x**2 * ({inner}) / (({2 * k - 2} + beta2) * ({2 * k - 1} + beta2))"
    return f"gamma(beta2) * sinh(x) / ({inner})"


# sign(x) |x|^(beta2 - 1) beyond |x| = 10, written so that it is finite (with finite derivatives)
# at every x: the guard evaluates it everywhere and keeps it only outside the domain.
_ML_FAR = "Max(Abs(x), 10)**(beta2 - 1)"
register_formula(
    _f("mittag_leffler", _ml_tanh_family(), [("beta2", 1.0, True)],
       domain=(-10, 10), below=f"-{_ML_FAR}", above=_ML_FAR),
    tags=("learnable", "unified"),
    summary="Mittag-Leffler gated unification, adaptive tanh family: x E_{2,2}(x^2) / "
            "E_{2,beta2}(x^2), learnable beta2 (1: tanh, 2: identity)",
    note="formula: the paper's unified gated form x Phi(x) = x^gamma E_{a1,b1}(f(x)) / "
         "E_{a2,b2}(g(x)) with the parameters that give tanh (gamma=1, f=g=x^2, a1=a2=2, b1=2, "
         "b2=1) and b2 learnable, the adaptive form the paper describes (b2 interpolates between "
         "the identity, b2=2, and tanh, b2=1). The paper text was not reachable here: the form "
         "is taken from a secondary summary of arXiv 2302.11007 and a third-party SYCL code "
         "(github HumbleLu/sycl_fun, unif_act_fun.cpp, a ratio of two truncated series); the "
         "tanh identity x E_{2,2}(x^2) / E_{2,1}(x^2) = tanh(x) is exact. E_{2,b}(x^2) is its "
         "series truncated at k = 18 (|x| <= 10); outside, the asymptotic form "
         "sign(x) |x|^(b2-1) (relative error < 1e-6 at |x| = 10). Default beta2 = 1 (start as "
         "tanh) is zoo's choice",
    paper=("Unification of popular artificial neural network activation functions",
           "2302.11007"))

# Khalfaoui-Hassani & Kesselheim, "Polynomial, trigonometric, and tropical activations": one set
# of learnable coefficients per activation module, initialised as in their torchortho v0.1.2
# (github K-H-Ismail/torchortho, May 2025), with the degrees of their ConvNeXt/GPT-2 runs.
# The initialisation keeps the second moment E[F(x)^2] (their forward gain, He-style) near 1 for
# x ~ N(0, 1); it does not make Var(F(x)) = 1 (tests/test_catalogue.py states both).
_E_HALF = math.exp(-0.5)
register_formula(
    # He_2 / 2! and He_3 / 3! written out so that d/da_k is the very subexpression the forward
    # multiplies a_k by (a number times a sum would be expanded by sympy).
    _f("hermite", "a0 + a1 * x + a2 * (x**2 / 2 - 1 / 2) + a3 * (x**3 / 6 - x / 2)",
       [("a0", math.sqrt(1 - 1 / math.factorial(3)) * _E_HALF, True),
        ("a1", _E_HALF, True), ("a2", _E_HALF, True), ("a3", _E_HALF, True)]),
    tags=("learnable", "polynomial"),
    summary="learnable Hermite expansion of degree 3: sum_k a_k He_k(x) / k!",
    note="F(x) = sum_{k=0..3} a_k He_k(x) / k!, He_k the probabilists' Hermite polynomials; "
         "init a_0 = sqrt(1 - 1/3!) / sqrt(e), a_k = 1 / sqrt(e): from torchortho "
         "hermite_activation.py (v0.1.2, the 'exponential generating function' normalisation; "
         "arXiv v1 had 1/k^1.5 coefficients); degree 3 as in their ConvNeXt and GPT-2 runs "
         "(K-H-Ismail/ConvNeXt-ortho, pytorch-language-models). E[F^2] = E[F'^2] = "
         "(1/e) sum_{k<3} 1/k! = 0.92 for x ~ N(0,1)",
    companion_init="variance_preserving",
    paper=("Polynomial, trigonometric, and tropical activations", "2502.01247"))

FOURIER_DEGREE = 5
_I0_2 = sum(1 / math.factorial(k) ** 2 for k in range(40))  # modified Bessel I_0(2)
_FOURIER_C = 1 / math.sqrt(_I0_2)  # torchortho's I_0_2_sqrt_inv = 0.66232645879
register_formula(
    # cos(w x - p) = cos(p) cos(w x) + sin(p) sin(w x): in float32, w x - p rounds (by 5e-4 rad
    # at x = 1e4) where w x alone, at the default integer w, is exact.
    _f("fourier", "f0 + " + " + ".join(
        f"c{k} * (cos(p{k}) * cos(w{k} * x) + sin(p{k}) * sin(w{k} * x)) / {math.factorial(k)}"
        for k in range(1, FOURIER_DEGREE + 1)),
       [("f0", _FOURIER_C * math.sqrt(1 - 1 / math.factorial(FOURIER_DEGREE) ** 2), True),
        *[(f"c{k}", _FOURIER_C, True) for k in range(1, FOURIER_DEGREE + 1)],
        *[(f"w{k}", float(k), True) for k in range(1, FOURIER_DEGREE + 1)],
        *[(f"p{k}", math.pi / 4, True) for k in range(1, FOURIER_DEGREE + 1)]]),
    tags=("learnable", "periodic"),
    summary="learnable Fourier series of degree 5: f0 + sum_k c_k cos(w_k x - p_k) / k!",
    note="from torchortho fourier_activation.py (v0.1.2): amplitudes c_k, frequencies w_k "
         "(init k) and phases p_k (init pi/4) all learnable; init c_k = 1/sqrt(I_0(2)), "
         "f0 = c sqrt(1 - 1/(5!)^2); degree 5 as in their ConvNeXt and GPT-2 runs. The init "
         "makes f0^2 + sum c_k^2/(k!)^2 = 1 (an orthonormal-basis argument); for x ~ N(0,1) "
         "the true E[F^2] is 1.31 and E[F'^2] 0.96",
    companion_init="variance_preserving",
    paper=("Polynomial, trigonometric, and tropical activations", "2502.01247"))

TROPICAL_DEGREE = 5
register_formula(
    _f("tropical", f"sqrt(2) / {TROPICAL_DEGREE} * Max("
                   + ", ".join(["c0", "c1 + x"] + [f"c{k} + {k} * x"
                                                   for k in range(2, TROPICAL_DEGREE + 1)]) + ")",
       [(f"c{k}", 1.0, True) for k in range(TROPICAL_DEGREE + 1)]),
    tags=("learnable", "piecewise-linear"),
    summary="learnable tropical (max-plus) polynomial of degree 5: sqrt(2)/5 max_k (c_k + k x)",
    note="from torchortho tropical_activation.py (v0.1.2): powers 0..n fixed, coefficients c_k "
         "learnable, init 1, gain sqrt(2)/n; degree 5 as in their ConvNeXt runs. At init it is "
         "sqrt(2)/5 + sqrt(2) relu(x): E[F'^2] = 1 exactly, E[F^2] = 1.40 for x ~ N(0,1)",
    companion_init="variance_preserving",
    paper=("Polynomial, trigonometric, and tropical activations", "2502.01247"))


# --- group-rational (not elementwise-scalar: coefficients per channel group) ----------------------
ACTS.register(
    "rational",
    summary="KAT's group-rational activation: learnable P5/Q4 per channel group",
    formula="(a0 + a1 x + ... + a5 x^5) / (1 + |b1| |x| + ... + |b4| |x|^4), (a, b) shared by "
            "each of `groups` channel groups; Horner evaluation",
    paper=("Kolmogorov-Arnold Transformer", "2409.10594"),
    defaults={"groups": 8, "init": "gelu"}, tags=("learnable", "rational", "kan"),
    learnable="a (groups x 6), b (groups x 4)", companion_init="variance_preserving",
    note="inits identity, gelu, silu were fitted for exactly this formula (MSE < 1e-4 on [-3, 3])",
)(GroupRational)

"""The activation catalogue (../shared/CATALOGUE.md, "Activations").

Each elementwise entry is one `ElementwiseFormula`: its PyTorch reference, derivatives and CUDA
kernels are all generated from the formula string below. `domain` / `below` / `above` say where a
formula would overflow and what it equals out there (see zoo.kernels.formula).
"""

from __future__ import annotations


from zoo.kernels.formula import ElementwiseFormula, Param
from zoo.models.activation import FormulaActivation, GroupRational
from zoo.registry import ACTS

FORMULAS: dict[str, ElementwiseFormula] = {}


def register_formula(formula: ElementwiseFormula, *, paper: tuple[str, str | None],
                     summary: str = "", tags: tuple[str, ...] = (), note: str = "") -> None:
    """One catalogue entry: the registry entry's factory builds a FormulaActivation."""
    FORMULAS[formula.name] = formula

    def factory(inplace: bool = False, **values: float) -> FormulaActivation:
        return FormulaActivation(formula, inplace=inplace, **values)

    extra = {"learnable": ", ".join(p.name for p in formula.learnable)} if formula.learnable else {}
    if note:
        extra["note"] = note
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
                 note="leaky ReLU (slope alpha) convolved with a Gaussian of width sigma; the "
                      "defaults alpha=0.01, sigma=1 are zoo's choice, not yet checked against "
                      "the paper's experiments",
                 paper=("SAU: Smooth activation function using convolution with approximate "
                        "identities", "2109.13210"))
register_formula(_f("crrelu", "Max(0, x) + eps * x * exp(-x**2 / 2)", [("eps", 0.01, True)]),
                 tags=("learnable",),
                 note="formula and eps=0.01 from zoo's catalogue; not yet checked against the paper",
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
                 note="pair with the SIREN initialization",
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


# --- group-rational (not elementwise-scalar: coefficients per channel group) ----------------------
ACTS.register(
    "rational",
    summary="KAT's group-rational activation: learnable P5/Q4 per channel group",
    formula="(a0 + a1 x + ... + a5 x^5) / (1 + |b1| |x| + ... + |b4| |x|^4), (a, b) shared by "
            "each of `groups` channel groups; Horner evaluation",
    paper=("Kolmogorov-Arnold Transformer", "2409.10594"),
    defaults={"groups": 8, "init": "gelu"}, tags=("learnable", "rational", "kan"),
    learnable="a (groups x 6), b (groups x 4)",
    note="inits identity, gelu, silu were fitted for exactly this formula (MSE < 1e-4 on [-3, 3])",
)(GroupRational)

"""Elementwise arithmetic and activations: FLOPs = cost per element x numel(output).

The cost per element is the count of elementary operations in the function's textbook form; a
transcendental (exp, log, tanh, erf, sin, sqrt, pow, ...) counts as 1, and so does a comparison or a
select. Every op's in-place variant (``add_``, ``relu_``, ...) costs the same as the op.

Argument-dependent costs:

* ``add``/``sub``/``rsub`` with ``alpha != 1``: +1 (the scale), e.g. SGD's ``p.add_(g, alpha=-lr)``;
* ``addcmul``/``addcdiv`` (``self + value * t1 op t2``): 2, +1 when ``value != 1`` (Adam);
* ``clamp``/``clip``: 1 per bound given;
* ``gelu``: 5 for the erf form ``0.5 x (1 + erf(x / sqrt 2))`` (div, erf, add, mul, mul), 9 for
  ``approximate="tanh"`` (``0.5 x (1 + tanh(k (x + 0.044715 x^3)))``: x^3 2, scale 1, add 1, k 1,
  tanh 1, add 1, mul 1, mul 1); ``gelu_backward`` 11 and 18.

Complex tensors count the real operations of the textbook complex form (:data:`COMPLEX_FLOPS`): an
add or subtract 2, a product 6 (4 products, 2 sums; 2 when one operand is real), a quotient 11 (6
products, 3 sums, 2 divisions; 7 for a real numerator, 2 for a real divisor), ``abs`` 4 (two squares,
a sum, a square root), ``exp`` 5 (exp, cos, sin, two products); any other op on complex values counts
twice its real cost (one operation on each part). ``polar`` (``abs x (cos + i sin)``) counts 4.

The table :data:`ELEMENTWISE_FLOPS` is the documented convention (see docs/counting.md); replace a
rule with ``register_rule(op, override=True)``.
"""

from __future__ import annotations

from typing import Any

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, op_exists, register_rule

#: FLOPs per output element, keyed by the op's base name (in-place variants share the entry).
ELEMENTWISE_FLOPS: dict[str, int] = {
    # one operation: arithmetic, transcendental, comparison, selection, rounding
    **dict.fromkeys(
        [
            "add", "sub", "rsub", "mul", "div", "true_divide", "floor_divide", "neg", "abs", "reciprocal",
            "square", "sqrt", "rsqrt", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sin", "cos",
            "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf",
            "erfc", "erfinv", "pow", "float_power", "floor", "ceil", "round", "trunc", "frac", "sign", "sgn",
            "signbit", "fmod", "remainder", "maximum", "minimum", "fmax", "fmin", "clamp_min", "clamp_max",
            "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_not", "logical_xor",
            "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "bitwise_left_shift",
            "bitwise_right_shift", "where", "masked_fill", "relu", "threshold", "isnan", "isinf", "isfinite",
            "isneginf", "isposinf", "nan_to_num", "heaviside", "copysign", "lgamma", "digamma", "i0",
            "rad2deg", "deg2rad", "bernoulli", "threshold_backward",
        ],
        1,
    ),
    # two: compare + select/scale, or two arithmetic steps
    **dict.fromkeys(
        ["hardtanh", "relu6", "leaky_relu", "prelu", "_prelu_kernel", "rrelu_with_noise", "hardshrink",
         "xlogy", "special_xlog1py", "_masked_scale", "addcmul", "addcdiv",
         "hardtanh_backward", "leaky_relu_backward", "native_dropout_backward", "rrelu_with_noise_backward"],
        2,
    ),
    "lerp": 3,  # self + w * (end - self): sub, mul, add
    "native_dropout": 3,  # draw and compare, scale, multiply (as F.dropout's bernoulli_, div_, mul)
    "_fused_dropout": 3,
    "softplus": 3,  # log(1 + exp(x)): exp, add, log
    "softshrink": 3,  # |x| > l ? x - sign(x) l : 0: abs, compare, sub
    "logit": 3,  # log(p / (1 - p)): sub, div, log
    "hypot": 4,  # sqrt(a^2 + b^2)
    "polar": 4,  # abs * cos(angle) + i abs * sin(angle): cos, sin, two products
    "sinc": 3,  # sin(pi x) / (pi x): mul, sin, div
    "sigmoid": 4,  # 1 / (1 + exp(-x)): neg, exp, add, div
    "hardsigmoid": 4,  # min(max(x + 3, 0), 6) / 6: add, max, min, div
    "elu": 4,  # x > 0 ? x : a (exp(x) - 1): compare, exp, sub, mul
    "silu": 5,  # x * sigmoid(x)
    "hardswish": 5,  # x * hardsigmoid(x)
    "selu": 5,  # scale * elu(x)
    "celu": 5,  # x > 0 ? x : a (exp(x / a) - 1): compare, div, exp, sub, mul
    "mish": 5,  # x * tanh(softplus(x)): softplus 3, tanh, mul
    "log_sigmoid_forward": 5,  # -log(1 + exp(-x)): neg, exp, add, log, neg
    "logaddexp": 5,  # max + log1p(exp(-|a - b|)): sub, abs, exp, log1p, add (max folded)
    "logaddexp2": 5,
    "glu": 5,  # a * sigmoid(b) per output element
    "gelu": 5,  # see the module docstring; approximate="tanh" counts 9
    # backward of activations: grad times the derivative
    "sigmoid_backward": 3,  # g * y * (1 - y)
    "tanh_backward": 3,  # g * (1 - y^2)
    "elu_backward": 3,  # compare, (y + a) or 1, mul
    "hardsigmoid_backward": 3,  # region test (2), mul by 1/6
    "hardswish_backward": 5,  # region test (2), x / 3 + 0.5 (2), mul
    "logit_backward": 3,  # g / (x (1 - x))
    "_prelu_kernel_backward": 3,  # compare, g * w, g * x
    "softplus_backward": 5,  # g * sigmoid(x)
    "log_sigmoid_backward": 5,  # g * sigmoid(-x)
    "glu_backward": 6,  # sigmoid(b) 4, two products for the two halves
    "silu_backward": 9,  # g * s * (1 + x (1 - s)): sigmoid 4, sub, mul, add, mul, mul
    "mish_backward": 9,
    "gelu_backward": 11,  # cdf (div, erf, add, mul) + pdf (square, mul, exp, mul) + x*pdf, add, g*
}

_GELU_TANH_FLOPS = 9
_GELU_TANH_BACKWARD_FLOPS = 18  # u (5), tanh, du/dx (3), 0.5 (1 + t) + 0.5 x (1 - t^2) du (8), g*


def _per_element(name: str, base: int, a: dict) -> int:
    if name in ("add", "sub", "rsub"):
        alpha = a.get("alpha", 1)
        return base + (0 if alpha is None or alpha == 1 else 1)
    if name in ("addcmul", "addcdiv"):
        value = a.get("value", 1)
        return base + (0 if value is None or value == 1 else 1)
    if name in ("gelu", "gelu_backward") and a.get("approximate", "none") == "tanh":
        return _GELU_TANH_FLOPS if name == "gelu" else _GELU_TANH_BACKWARD_FLOPS
    return base


_NEEDS_ARGS = {"add", "sub", "rsub", "addcmul", "addcdiv", "gelu", "gelu_backward"}

#: FLOPs per element of an op on complex values (see the module docstring); others count 2 x the real cost
COMPLEX_FLOPS: dict[str, int] = {"add": 2, "sub": 2, "rsub": 2, "neg": 2, "abs": 4, "exp": 5}


def _complex_operand(x: Any) -> bool | None:
    """Whether an operand is complex (None: not an operand: None, a string, ...)."""
    if isinstance(x, TensorMeta):
        return x.dtype.is_complex
    if isinstance(x, (int, float, bool)):
        return False
    if isinstance(x, complex):
        return True
    return None


def _complex_per_element(name: str, per: int, a: dict) -> int:
    if name in ("mul", "div", "true_divide"):
        first, second = _complex_operand(a.get("self")), _complex_operand(a.get("other"))
        if name == "mul":
            return 6 if first and second else 2
        if second:
            return 11 if first else 7
        return 2
    if name in COMPLEX_FLOPS:
        alpha = a.get("alpha", 1) if name in ("add", "sub", "rsub") else 1
        return COMPLEX_FLOPS[name] + (0 if alpha is None or alpha == 1 else 2)
    return 2 * (_per_element(name, per, a) if name in _NEEDS_ARGS else per)


def _make(name: str, per: int):
    needs_args = name in _NEEDS_ARGS

    def rule(ev: OpEvent) -> Cost:
        n = ev.outputs[0].numel if ev.outputs else ev.inputs[0].numel
        if ev.inputs and any(t.dtype.is_complex for t in ev.inputs) and name != "polar":
            return Cost(flops=_complex_per_element(name, per, arguments(ev)) * n)
        p = _per_element(name, per, arguments(ev)) if needs_args else per
        return Cost(flops=p * n)

    rule.__name__ = f"elementwise_{name}"
    rule.__doc__ = f"{name}: {per} FLOP(s) per output element."
    return rule


def _clamp(ev: OpEvent) -> Cost:
    """clamp/clip: one comparison per bound given, per output element."""
    a = arguments(ev)
    bounds = (a.get("min") is not None) + (a.get("max") is not None)
    return Cost(flops=max(bounds, 1) * ev.outputs[0].numel)


def _variants(name: str) -> list[str]:
    return [op for op in (f"aten.{name}", f"aten.{name}_") if op_exists(op)]


for _name, _per in ELEMENTWISE_FLOPS.items():
    if _variants(_name):
        register_rule(*_variants(_name))(_make(_name, _per))
register_rule(*_variants("clamp"), *_variants("clip"))(_clamp)

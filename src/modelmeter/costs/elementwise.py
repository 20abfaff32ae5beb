"""Elementwise arithmetic and activations: FLOPs = cost per element x numel(output).

The cost per element is the count of elementary operations in the function's textbook form;
a transcendental (exp, log, tanh, erf, sin, sqrt, ...) counts as 1. The table below is the
documented convention (see docs/counting.md); change it with :func:`register_rule(override=True)`.
"""

from __future__ import annotations

from ..capture.events import OpEvent
from .registry import Cost, register_rule

#: FLOPs per output element.
ELEMENTWISE_FLOPS: dict[str, int] = {
    # binary and unary arithmetic, comparisons, selection
    **dict.fromkeys(
        [
            "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "neg_", "abs", "abs_",
            "reciprocal", "reciprocal_", "square", "sqrt", "sqrt_", "rsqrt", "rsqrt_", "exp", "exp_", "exp2",
            "expm1", "log", "log_", "log2", "log10", "log1p", "sin", "cos", "tan", "asin", "acos", "atan",
            "atan2", "sinh", "cosh", "tanh", "tanh_", "erf", "erfc", "erfinv", "pow", "pow_", "floor", "ceil",
            "round", "trunc", "frac", "sign", "sgn", "fmod", "remainder", "maximum", "minimum", "fmax", "fmin",
            "clamp_min", "clamp_min_", "clamp_max", "clamp_max_", "eq", "ne", "lt", "le", "gt", "ge",
            "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or",
            "bitwise_not", "bitwise_xor", "where", "masked_fill", "masked_fill_", "relu", "relu_",
            "threshold", "threshold_", "isnan", "isinf", "isfinite", "nan_to_num", "lerp_scalar",
            "floor_divide", "heaviside", "sigmoid_", "copysign", "hypot", "xlogy",
        ],
        1,
    ),
    "clamp": 2, "clamp_": 2, "hardtanh": 2, "hardtanh_": 2, "leaky_relu": 2, "leaky_relu_": 2,
    "addcmul": 2, "addcmul_": 2, "addcdiv": 2, "addcdiv_": 2, "lerp": 3, "lerp_": 3,
    "sigmoid": 4,  # 1 / (1 + exp(-x)): neg, exp, add, div
    "silu": 5, "silu_": 5,  # x * sigmoid(x)
    "hardsigmoid": 3, "hardswish": 4, "hardswish_": 4, "relu6": 2, "prelu": 2, "_prelu_kernel": 2,
    "elu": 4, "elu_": 4, "selu": 5, "celu": 4, "softplus": 3, "mish": 5, "logit": 3, "log_sigmoid_forward": 4,
    "gelu": 5,  # 0.5 * x * (1 + erf(x / sqrt(2))): div, erf, add, mul, mul; approximate='tanh' counts 9
    "glu": 5, "native_dropout": 2, "bernoulli": 1, "bernoulli_": 1,
    # backward of activations
    "threshold_backward": 1, "hardtanh_backward": 2, "leaky_relu_backward": 2, "sigmoid_backward": 3,
    "tanh_backward": 3, "silu_backward": 7, "gelu_backward": 8, "elu_backward": 3, "hardswish_backward": 4,
    "hardsigmoid_backward": 2, "softplus_backward": 4, "native_dropout_backward": 2, "mish_backward": 9,
    "log_sigmoid_backward": 4, "glu_backward": 6, "_prelu_kernel_backward": 3,
}

_GELU_TANH_FLOPS = 9  # 0.5*x*(1+tanh(sqrt(2/pi)*(x+0.044715*x^3))): x^3 (2), *c (1), + (1), *k (1), tanh, +1, *x, *0.5


def _make(name: str, per: int):
    def rule(ev: OpEvent) -> Cost:
        out = ev.outputs[0].numel if ev.outputs else ev.inputs[0].numel
        p = per
        if name in ("gelu", "gelu_backward") and ev.kwargs.get("approximate", "none") == "tanh":
            p = _GELU_TANH_FLOPS if name == "gelu" else _GELU_TANH_FLOPS + 3
        return Cost(flops=p * out)

    rule.__name__ = f"elementwise_{name}"
    rule.__doc__ = f"{name}: {per} FLOP(s) per output element."
    return rule


for _name, _per in ELEMENTWISE_FLOPS.items():
    register_rule(f"aten.{_name}")(_make(_name, _per))

"""Reductions and losses: one FLOP per input element per accumulation step.

sum/mean/prod/amax/amin/max/min/argmax/norm-like: numel(input) (mean adds one divide per output);
var/std: 3 per element (subtract, square, add); cumsum/cumprod: 1 per element; losses are counted
by the ops they decompose into, except the fused ones listed here (nll_loss: 1 per selected
element; mse_loss: 3 per element; cross-entropy decomposes into log_softmax + nll_loss).
"""

from __future__ import annotations

from ..capture.events import OpEvent
from .registry import Cost, register_rule


@register_rule("aten.sum", "aten.prod", "aten.amax", "aten.amin", "aten.max", "aten.min", "aten.argmax",
               "aten.argmin", "aten.any", "aten.all", "aten.cumsum", "aten.cumprod", "aten.logsumexp",
               "aten.nansum", "aten.aminmax", "aten.count_nonzero")
def reduce(ev: OpEvent) -> Cost:
    x = ev.inputs[0]
    extra = 2 * x.numel if ev.packet == "aten.logsumexp" else 0  # exp and subtract of the max
    return Cost(flops=x.numel + extra)


@register_rule("aten.mean", "aten.nanmean")
def mean(ev: OpEvent) -> Cost:
    out = ev.outputs[0].numel if ev.outputs else 1
    return Cost(flops=ev.inputs[0].numel + out)


@register_rule("aten.var", "aten.std", "aten.var_mean", "aten.std_mean")
def var(ev: OpEvent) -> Cost:
    return Cost(flops=3 * ev.inputs[0].numel)


@register_rule("aten.linalg_vector_norm", "aten.norm", "aten.frobenius_norm")
def vector_norm(ev: OpEvent) -> Cost:
    return Cost(flops=2 * ev.inputs[0].numel)  # |x|^p and accumulate


@register_rule("aten.nll_loss_forward", "aten.nll_loss2d_forward")
def nll_loss(ev: OpEvent) -> Cost:
    return Cost(flops=ev.args[1].numel)  # one selected log-prob per target


@register_rule("aten.nll_loss_backward", "aten.nll_loss2d_backward")
def nll_loss_backward(ev: OpEvent) -> Cost:
    return Cost(flops=ev.args[2].numel)  # one write per target (grad scaled)


@register_rule("aten.mse_loss")
def mse_loss(ev: OpEvent) -> Cost:
    return Cost(flops=3 * ev.inputs[0].numel)


@register_rule("aten.mse_loss_backward")
def mse_loss_backward(ev: OpEvent) -> Cost:
    return Cost(flops=3 * ev.inputs[1].numel)

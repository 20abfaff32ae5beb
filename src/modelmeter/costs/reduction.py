"""Reductions and losses: one FLOP per input element per accumulation step.

* sum/prod/amax/amin/max/min/argmax/argmin/any/all/_is_all_true/_is_any_true/cumsum/cumprod/histc/
  bincount: numel(input); mean adds one divide per output element; on complex values a sum (and a mean)
  counts 2 per element (both parts), a product 6; logsumexp 3 per element (subtract the max, exp, add);
* ``allclose``: 7 per element (``|a - b| <= atol + rtol |b|``: 6, and the reduction);
* var/std (and var_mean/std_mean): 4 per element (sum for the mean, subtract, square, accumulate);
* vector norms: 2 per element (|x|^p, accumulate);
* pairwise distances (``torch.cdist``), per pair of rows of ``M`` coordinates: ``p = 2``: 3M + 1
  (subtract, square, accumulate; sqrt), ``p = 1``: 3M (subtract, abs, accumulate), ``p = inf``: 3M
  (subtract, abs, max), ``p = 0``: 2M (compare, count), other ``p``: 4M + 1 (subtract, abs, power,
  accumulate; root); the backward (the first input's gradient) the same per pair. With ``p = 2`` and
  more than 25 rows PyTorch runs a matrix product instead (``_euclidean_dist``:
  ``|x|^2 + |y|^2 - 2 x.y`` as one product of rows extended by 2): ``P R (M + 2)`` MACs, plus
  ``3 P M + 2 R M`` for the norms and the ``-2`` scaling, and 2 per pair (clamp, sqrt);
* losses are counted by the ops they decompose into (cross-entropy is log_softmax + nll_loss,
  l1_loss is sub, abs, mean), except the fused ones here, per element of the input:
  nll_loss 1 per target (select and accumulate), mse_loss 3 (sub, square, accumulate) and its
  backward 3, binary_cross_entropy 8 (two logs, ``t log x + (1 - t) log(1 - x)`` 5, negate,
  accumulate) and its backward 5 (``g (x - t) / (x (1 - x))``), smooth_l1/huber 5 (sub, abs,
  compare, square or shift, accumulate) and their backward 4.
"""

from __future__ import annotations

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, register_rule


@register_rule("aten.sum", "aten.prod", "aten.amax", "aten.amin", "aten.max", "aten.min", "aten.argmax",
               "aten.argmin", "aten.any", "aten.all", "aten.cumsum", "aten.cumprod", "aten.logsumexp",
               "aten.nansum", "aten.aminmax", "aten.count_nonzero", "aten.histc", "aten.bincount",
               "aten.cummax", "aten.cummin", "aten.logcumsumexp", "aten._is_all_true", "aten._is_any_true")
def reduce(ev: OpEvent) -> Cost:
    x = ev.inputs[0]
    if ev.packet in ("aten.max", "aten.min") and len(ev.inputs) == 2 and ev.outputs:
        return Cost(flops=ev.outputs[0].numel)  # max.other / min.other: elementwise, per output element
    if x.dtype.is_complex:  # a complex sum is 2 real adds, a complex product 6 (4 products, 2 sums)
        return Cost(flops=x.numel * (6 if ev.packet in ("aten.prod", "aten.cumprod") else 2))
    extra = 2 * x.numel if ev.packet in ("aten.logsumexp", "aten.logcumsumexp") else 0  # subtract the max, exp
    return Cost(flops=x.numel + extra)


@register_rule("aten.allclose")
def allclose(ev: OpEvent) -> Cost:
    """``all(|a - b| <= atol + rtol |b|)``: 6 per element (difference, two absolute values, scale, sum,
    comparison) and 1 to reduce, over the broadcast shape."""
    return Cost(flops=7 * max(t.numel for t in ev.inputs))


@register_rule("aten.mean", "aten.nanmean")
def mean(ev: OpEvent) -> Cost:
    out = ev.outputs[0].numel if ev.outputs else 1
    parts = 2 if ev.inputs[0].dtype.is_complex else 1  # complex: each part summed and divided
    return Cost(flops=parts * (ev.inputs[0].numel + out))


@register_rule("aten.var", "aten.std", "aten.var_mean", "aten.std_mean")
def var(ev: OpEvent) -> Cost:
    return Cost(flops=4 * ev.inputs[0].numel)


@register_rule("aten.linalg_vector_norm", "aten.norm", "aten.frobenius_norm", "aten.native_norm")
def vector_norm(ev: OpEvent) -> Cost:
    return Cost(flops=2 * ev.inputs[0].numel)  # |x|^p and accumulate


@register_rule("aten.nll_loss_forward", "aten.nll_loss2d_forward")
def nll_loss(ev: OpEvent) -> Cost:
    # (self, target, weight, reduction, ignore_index): one selected log-prob accumulated per target
    return Cost(flops=arguments(ev)["target"].numel)


@register_rule("aten.nll_loss_backward", "aten.nll_loss2d_backward")
def nll_loss_backward(ev: OpEvent) -> Cost:
    # (grad_output, self, target, ...): one scaled gradient written per target
    return Cost(flops=arguments(ev)["target"].numel)


@register_rule("aten.mse_loss")
def mse_loss(ev: OpEvent) -> Cost:
    return Cost(flops=3 * ev.inputs[0].numel)


@register_rule("aten.mse_loss_backward")
def mse_loss_backward(ev: OpEvent) -> Cost:
    return Cost(flops=3 * ev.inputs[1].numel)


@register_rule("aten.binary_cross_entropy")
def bce(ev: OpEvent) -> Cost:
    return Cost(flops=8 * ev.inputs[0].numel)


@register_rule("aten.binary_cross_entropy_backward")
def bce_backward(ev: OpEvent) -> Cost:
    return Cost(flops=5 * ev.inputs[1].numel)  # (grad_output, self, target, ...)


@register_rule("aten.smooth_l1_loss", "aten.huber_loss")
def smooth_l1(ev: OpEvent) -> Cost:
    return Cost(flops=5 * ev.inputs[0].numel)


@register_rule("aten.smooth_l1_loss_backward", "aten.huber_loss_backward")
def smooth_l1_backward(ev: OpEvent) -> Cost:
    return Cost(flops=4 * ev.inputs[1].numel)  # (grad_output, self, target, ...)


def _pair_flops(p: float, m: int) -> int:
    if p == 2:
        return 3 * m + 1
    if p in (1, float("inf")):
        return 3 * m
    if p == 0:
        return 2 * m
    return 4 * m + 1


@register_rule("aten._cdist_forward", "aten._cdist_backward")
def cdist(ev: OpEvent) -> Cost:
    # forward (x1 (..., P, M), x2 (..., R, M), p, compute_mode) -> (..., P, R); backward
    # (grad (..., P, R), x1, x2, p, cdist) -> grad of x1: the same work per pair
    a = arguments(ev)
    m = a["x1"].shape[-1]
    dists = a.get("cdist") if isinstance(a.get("cdist"), TensorMeta) else ev.outputs[0]
    return Cost(flops=dists.numel * _pair_flops(float(a["p"]), m))  # one distance per pair (batch x P x R)


@register_rule("aten._euclidean_dist")
def euclidean_dist(ev: OpEvent) -> Cost:
    # (x1 (..., P, M), x2 (..., R, M)): [-2 x1, |x1|^2, 1] @ [x2, 1, |x2|^2]^T, clamped, sqrt
    a = arguments(ev)
    x1, x2 = a["x1"], a["x2"]
    m = x1.shape[-1]
    rows1, rows2 = x1.numel // m, x2.numel // m  # batch x P, batch x R
    pairs = ev.outputs[0].numel
    macs = pairs * (m + 2)
    return Cost.of_macs(macs, extra_flops=3 * rows1 * m + 2 * rows2 * m + 2 * pairs)

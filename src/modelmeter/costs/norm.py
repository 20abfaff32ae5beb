"""Normalizations (batch, layer, group, instance, RMS) and softmax / log-softmax.

FLOPs per element (documented convention):

* layer/group/instance norm forward: mean (1), subtract (1), square (1), variance sum (1), scale by
  rstd (1) = 5, plus 2 for an affine weight and bias (7). Backward: 8 per element for the input
  gradient, plus 2 per element for each of weight and bias gradients.
* batch norm forward: subtract mean, scale (2) + affine (2) = 4; in training the batch statistics
  add 3 (sum, square, sum of squares). Backward: 8 per element (+2 per affine parameter gradient).
* RMS norm (fused kernel): square (1), mean (1), scale (1) + weight (1) = 4 per element.
  Decomposed RMS norms (``pow``, ``mean``, ``rsqrt``, ``mul``) are counted op by op.
* softmax: max (1), subtract (1), exp (1), sum (1), divide (1) = 5; log-softmax the same (the last
  step is a subtract of the log-sum). Backward: 4 per element.
"""

from __future__ import annotations

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, register_rule

NORM_FLOPS = 5
AFFINE_FLOPS = 2
NORM_BACKWARD_FLOPS = 8
BN_STATS_FLOPS = 3
SOFTMAX_FLOPS = 5
SOFTMAX_BACKWARD_FLOPS = 4
RMS_FLOPS = 3


def _is_tensor(x: object) -> bool:
    return isinstance(x, TensorMeta)


@register_rule("aten.native_layer_norm")
def layer_norm(ev: OpEvent) -> Cost:
    # (input, normalized_shape, weight, bias, eps)
    x = ev.args[0]
    affine = AFFINE_FLOPS if _is_tensor(ev.args[2]) or _is_tensor(ev.args[3]) else 0
    return Cost(flops=x.numel * (NORM_FLOPS + affine))


@register_rule("aten.native_group_norm")
def group_norm(ev: OpEvent) -> Cost:
    # (input, weight, bias, N, C, HxW, group, eps); instance norm reaches here or batch_norm
    x = ev.args[0]
    affine = AFFINE_FLOPS if _is_tensor(ev.args[1]) or _is_tensor(ev.args[2]) else 0
    return Cost(flops=x.numel * (NORM_FLOPS + affine))


def _bn(ev: OpEvent, training: bool) -> Cost:
    x = ev.args[0]
    affine = AFFINE_FLOPS if _is_tensor(ev.args[1]) or _is_tensor(ev.args[2]) else 0
    return Cost(flops=x.numel * (2 + affine + (BN_STATS_FLOPS if training else 0)))


@register_rule("aten._native_batch_norm_legit_no_training")
def batch_norm_eval(ev: OpEvent) -> Cost:
    return _bn(ev, False)


@register_rule("aten._native_batch_norm_legit", "aten._native_batch_norm_legit_functional")
def batch_norm_legit(ev: OpEvent) -> Cost:
    # (input, weight, bias, running_mean, running_var, training, momentum, eps) or without running stats
    training = ev.args[5] if len(ev.args) > 7 else ev.args[3]
    return _bn(ev, bool(training))


@register_rule("aten.native_batch_norm", "aten.cudnn_batch_norm", "aten.miopen_batch_norm")
def batch_norm(ev: OpEvent) -> Cost:
    # (input, weight, bias, running_mean, running_var, training, momentum, eps)
    return _bn(ev, bool(ev.args[5]))


@register_rule("aten._batch_norm_with_update", "aten._batch_norm_with_update_functional")
def batch_norm_update(ev: OpEvent) -> Cost:
    return _bn(ev, True)


@register_rule("aten._batch_norm_no_update")
def batch_norm_no_update(ev: OpEvent) -> Cost:
    return _bn(ev, False)


def _norm_backward(ev: OpEvent, grad_index: int, mask_index: int) -> Cost:
    g = ev.args[grad_index]
    mask = ev.args[mask_index] if len(ev.args) > mask_index else [True, True, True]
    per = (NORM_BACKWARD_FLOPS if mask[0] else 0) + (2 if mask[1] else 0) + (1 if mask[2] else 0)
    return Cost(flops=g.numel * per)


@register_rule("aten.native_layer_norm_backward")
def layer_norm_backward(ev: OpEvent) -> Cost:
    # (grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask)
    return _norm_backward(ev, 0, 7)


@register_rule("aten.native_group_norm_backward")
def group_norm_backward(ev: OpEvent) -> Cost:
    # (grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask)
    return _norm_backward(ev, 0, 9)


@register_rule("aten.native_batch_norm_backward")
def batch_norm_backward(ev: OpEvent) -> Cost:
    # (grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps, output_mask)
    return _norm_backward(ev, 0, 9)


@register_rule("aten.batch_norm_backward", "aten.cudnn_batch_norm_backward", "aten.miopen_batch_norm_backward")
def batch_norm_backward_new(ev: OpEvent) -> Cost:
    g = ev.args[0]
    return Cost(flops=g.numel * (NORM_BACKWARD_FLOPS + 3))


@register_rule("aten._fused_rms_norm")
def rms_norm(ev: OpEvent) -> Cost:
    # (input, normalized_shape, weight, eps)
    x = ev.args[0]
    w = ev.args[2] if len(ev.args) > 2 else None
    return Cost(flops=x.numel * (RMS_FLOPS + (1 if _is_tensor(w) else 0)))


@register_rule("aten._fused_rms_norm_backward")
def rms_norm_backward(ev: OpEvent) -> Cost:
    return Cost(flops=ev.args[0].numel * (NORM_BACKWARD_FLOPS - 2 + 2))


@register_rule("aten._softmax", "aten._log_softmax", "aten._safe_softmax", "aten.softmax", "aten.log_softmax")
def softmax(ev: OpEvent) -> Cost:
    return Cost(flops=ev.inputs[0].numel * SOFTMAX_FLOPS)


@register_rule("aten._softmax_backward_data", "aten._log_softmax_backward_data")
def softmax_backward(ev: OpEvent) -> Cost:
    return Cost(flops=ev.inputs[0].numel * SOFTMAX_BACKWARD_FLOPS)

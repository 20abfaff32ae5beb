"""Normalizations (batch, layer, group, instance, RMS) and softmax / log-softmax.

FLOPs per element of the input (documented convention):

* layer/group norm, and batch norm in training (batch statistics): statistics 3 (sum; square and
  sum), normalize 2 (subtract the mean, scale by rstd) = 5, plus 2 for an affine weight and bias
  (1 each if only one is given). Instance norm runs as batch norm in training on a reshaped input
  and costs the same.
* batch norm in eval (running statistics): normalize 2, plus the affine 2.
* RMS norm (fused kernel): square 1, sum 1, scale by rstd 1, + 1 for the weight. Decomposed RMS
  norms (``pow``, ``mean``, ``rsqrt``, ``mul``, as Hugging Face writes them) are counted op by op
  and come to the same per element, plus a few FLOPs per row.
* backward, per element of grad_output: 8 for the input gradient of layer/group/batch norm in
  training (2 in eval: ``g * w * rstd``), 6 for RMS norm; 2 for the weight gradient (``g * xhat``
  accumulated), 1 for the bias gradient (``g`` accumulated). Only the gradients asked for by
  ``output_mask`` are counted.
* softmax and log-softmax: max 1, subtract 1, exp 1, sum 1, divide (log-softmax: log-sum
  subtract) 1 = 5. Backward: 4 (softmax: ``y * (g - sum(g * y))``: mul, sum, sub, mul;
  log-softmax: ``g - exp(y) * sum(g)``: sum, exp, mul, sub).

* weight norm (``_weight_norm_interface``: ``w = v * g / ||v||``, the norm over every dim but
  ``dim``), per element of ``v``: square and accumulate 2, scale 1 = 3; per norm (an element of
  ``g``): sqrt 1, ``g / norm`` 1 = 2. Backward (``grad_g = sum(grad_w * v) / norm``,
  ``grad_v = g / norm * (grad_w - v * grad_g / norm)``), per element: 2 for ``grad_g``'s sum of
  products, 3 for ``grad_v``; per norm: 3 (the two quotients and ``grad_g``'s divide).

Bytes of batch norm are counted from what the kernel touches, not from the tensors a backend
happens to return: input, weight, bias and (eval) running statistics read; output written; in
training the saved mean and inverse std written and the running statistics read and written. (A CPU
kernel in eval returns empty saved statistics where a meta kernel returns ``C``-sized ones; counting
what is computed keeps meta and real runs identical.) Saved statistics of every normalization are
counted at float32 for fp16/bf16 inputs (the opmath type CUDA and the meta kernels return; CPU's
kernels return the input's dtype), the input's dtype otherwise.
"""

from __future__ import annotations

from typing import Any

import torch

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, register_rule

NORM_FLOPS = 5
NORM_EVAL_FLOPS = 2
NORM_BACKWARD_FLOPS = 8
NORM_EVAL_BACKWARD_FLOPS = 2
WEIGHT_GRAD_FLOPS = 2
BIAS_GRAD_FLOPS = 1
RMS_FLOPS = 3
RMS_BACKWARD_FLOPS = 6
SOFTMAX_FLOPS = 5
SOFTMAX_BACKWARD_FLOPS = 4


def _t(x: object) -> bool:
    return isinstance(x, TensorMeta)


def _nbytes(x: object) -> int:
    return x.nbytes if isinstance(x, TensorMeta) else 0


def _affine(a: dict[str, Any]) -> int:
    return int(_t(a.get("weight"))) + int(_t(a.get("bias")))


_HALF = (torch.float16, torch.bfloat16)


def _stats(like: TensorMeta, *stats: object) -> int:
    """Bytes of saved statistics (mean, rstd, invstd) at the dtype the kernel computes them in: float32
    for fp16/bf16 inputs (PyTorch's opmath type, what CUDA and the meta kernels return; CPU kernels
    return them at the input's dtype), the input's dtype otherwise."""
    size = 4 if like.dtype in _HALF else like.itemsize
    return sum(x.numel for x in stats if isinstance(x, TensorMeta)) * size


def _reads_stats(ev: OpEvent, like: TensorMeta, *stats: object) -> int:
    """Every tensor argument read, the saved statistics among them counted by :func:`_stats`."""
    return sum(t.nbytes for t in ev.inputs) - sum(_nbytes(x) for x in stats) + _stats(like, *stats)


@register_rule("aten.native_layer_norm")
def layer_norm(ev: OpEvent) -> Cost:
    # (input, normalized_shape, weight, bias, eps) -> (out, mean, rstd)
    a = arguments(ev)
    x = a["input"]
    return Cost(flops=x.numel * (NORM_FLOPS + _affine(a)),
                bytes_written=ev.outputs[0].nbytes + _stats(x, *ev.outputs[1:3]))


@register_rule("aten.native_group_norm")
def group_norm(ev: OpEvent) -> Cost:
    # (input, weight, bias, N, C, HxW, group, eps) -> (out, mean, rstd)
    a = arguments(ev)
    x = a["input"]
    return Cost(flops=x.numel * (NORM_FLOPS + _affine(a)),
                bytes_written=ev.outputs[0].nbytes + _stats(x, *ev.outputs[1:3]))


def _bn(ev: OpEvent, training: bool) -> Cost:
    a = arguments(ev)
    x = a["input"]
    per = (NORM_FLOPS if training else NORM_EVAL_FLOPS) + _affine(a)
    stats = _nbytes(a.get("running_mean")) + _nbytes(a.get("running_var"))
    read = x.nbytes + _nbytes(a.get("weight")) + _nbytes(a.get("bias")) + stats
    written = ev.outputs[0].nbytes
    if training:
        # saved mean and inverse std (one value per channel each), running statistics updated
        saved = _stats(x, *ev.outputs[1:3]) if len(ev.outputs) >= 3 else 0
        written += saved + stats
    return Cost(flops=x.numel * per, bytes_read=read, bytes_written=written)


@register_rule("aten._native_batch_norm_legit_no_training", "aten._batch_norm_no_update")
def batch_norm_eval(ev: OpEvent) -> Cost:
    # _batch_norm_no_update normalizes with the running statistics when given, else batch statistics
    a = arguments(ev)
    return _bn(ev, ev.packet == "aten._batch_norm_no_update" and not _t(a.get("running_mean")))


@register_rule("aten.native_batch_norm", "aten.cudnn_batch_norm", "aten.miopen_batch_norm",
               "aten._native_batch_norm_legit", "aten._native_batch_norm_legit_functional")
def batch_norm(ev: OpEvent) -> Cost:
    # (input, weight, bias, [running_mean, running_var,] training, momentum, eps)
    return _bn(ev, bool(arguments(ev)["training"]))


@register_rule("aten._batch_norm_with_update", "aten._batch_norm_with_update_functional")
def batch_norm_update(ev: OpEvent) -> Cost:
    return _bn(ev, True)


def _norm_backward(g: TensorMeta, mask: Any, input_per: int) -> Cost:
    mask = list(mask) if mask is not None else [True, True, True]
    mask += [False] * (3 - len(mask))
    per = (input_per if mask[0] else 0) + (WEIGHT_GRAD_FLOPS if mask[1] else 0) + (BIAS_GRAD_FLOPS if mask[2] else 0)
    return Cost(flops=g.numel * per)


@register_rule("aten.native_layer_norm_backward")
def layer_norm_backward(ev: OpEvent) -> Cost:
    # (grad_out, input, normalized_shape, mean, rstd, weight, bias, output_mask)
    a = arguments(ev)
    c = _norm_backward(a["grad_out"], a["output_mask"], NORM_BACKWARD_FLOPS)
    return Cost(flops=c.flops, bytes_read=_reads_stats(ev, a["input"], a["mean"], a["rstd"]))


@register_rule("aten.native_group_norm_backward")
def group_norm_backward(ev: OpEvent) -> Cost:
    # (grad_out, input, mean, rstd, weight, N, C, HxW, group, output_mask)
    a = arguments(ev)
    c = _norm_backward(a["grad_out"], a["output_mask"], NORM_BACKWARD_FLOPS)
    return Cost(flops=c.flops, bytes_read=_reads_stats(ev, a["input"], a["mean"], a["rstd"]))


@register_rule("aten.native_batch_norm_backward", "aten.batch_norm_backward")
def batch_norm_backward(ev: OpEvent) -> Cost:
    # native: (grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps,
    # output_mask); batch_norm_backward: (..., save_var, update, eps, output_mask, reserve)
    a = arguments(ev)
    train = a.get("train", a.get("update"))
    per = NORM_BACKWARD_FLOPS if train else NORM_EVAL_BACKWARD_FLOPS
    c = _norm_backward(a["grad_out"], a["output_mask"], per)
    saved = (a.get("save_mean"), a.get("save_invstd", a.get("save_var")))
    return Cost(flops=c.flops, bytes_read=_reads_stats(ev, a["input"], *saved))


@register_rule("aten.cudnn_batch_norm_backward", "aten.miopen_batch_norm_backward")
def batch_norm_backward_backend(ev: OpEvent) -> Cost:
    # (input, grad_output, weight, ...): training-mode kernels, all three gradients
    return _norm_backward(arguments(ev)["grad_output"], None, NORM_BACKWARD_FLOPS)


@register_rule("aten._fused_rms_norm")
def rms_norm(ev: OpEvent) -> Cost:
    # (input, normalized_shape, weight, eps) -> (out, rstd)
    a = arguments(ev)
    x = a["input"]
    return Cost(flops=x.numel * (RMS_FLOPS + int(_t(a.get("weight")))),
                bytes_written=ev.outputs[0].nbytes + _stats(x, *ev.outputs[1:2]))


@register_rule("aten._fused_rms_norm_backward")
def rms_norm_backward(ev: OpEvent) -> Cost:
    # (grad_out, input, normalized_shape, rstd, weight, output_mask[input, weight])
    a = arguments(ev)
    mask = list(a.get("output_mask") or [True, True])
    c = _norm_backward(a["grad_out"], [mask[0], mask[1] and _t(a.get("weight")), False], RMS_BACKWARD_FLOPS)
    return Cost(flops=c.flops, bytes_read=_reads_stats(ev, a["input"], a.get("rstd")))


@register_rule("aten._softmax", "aten._log_softmax", "aten._safe_softmax", "aten.softmax", "aten.log_softmax")
def softmax(ev: OpEvent) -> Cost:
    return Cost(flops=ev.inputs[0].numel * SOFTMAX_FLOPS)


@register_rule("aten._softmax_backward_data", "aten._log_softmax_backward_data")
def softmax_backward(ev: OpEvent) -> Cost:
    return Cost(flops=ev.inputs[0].numel * SOFTMAX_BACKWARD_FLOPS)


@register_rule("aten._weight_norm_interface")
def weight_norm(ev: OpEvent) -> Cost:
    # (v, g, dim) -> (w, norms): 3 per element of v, 2 per norm
    a = arguments(ev)
    return Cost(flops=3 * a["v"].numel + 2 * a["g"].numel)


@register_rule("aten._weight_norm_interface_backward")
def weight_norm_backward(ev: OpEvent) -> Cost:
    # (grad_w, saved_v, saved_g, saved_norms, dim) -> (grad_v, grad_g): 5 per element of v, 3 per norm
    a = arguments(ev)
    return Cost(flops=5 * a["saved_v"].numel + 3 * a["saved_g"].numel)

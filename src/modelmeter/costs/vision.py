"""torchvision's own ops: deformable convolution and RoI Align (detection and segmentation models).

Deformable convolution (``torchvision.ops.deform_conv2d``) samples the input at learned offsets
(bilinearly), then multiplies the samples with the weight as a convolution does. With ``samples``
the sampled values (``N x C_in x H_out x W_out x kh x kw``) and ``positions`` the sampling points
(``N x offset_groups x H_out x W_out x kh x kw``, half the offset tensor's elements):

* MACs: as a convolution, ``numel(out) x numel(weight) / C_out``;
* FLOPs: ``2 x MACs``, + per sample 7 for the bilinear value (4 products, 3 adds) and 1 for the
  mask, + per position 8 for its coordinates and four weights, + 1 per output for the bias;
* backward: ``2 x`` the forward MACs (the columns' and the weight's gradients); FLOPs ``2 x MACs``, +
  per sample the columns again (7 + mask), their scatter into the input gradient (4 products,
  4 adds, + mask), the offset gradient (16: two derivatives of the bilinear value, each times the
  gradient, accumulated) and the mask gradient (9: the value, times the gradient, accumulated),
  + per position 16 (coordinates and weights, and their derivatives), + 1 per output for the bias.

RoI Align (``torchvision.ops.roi_align``), output ``(K, C, ph, pw)`` with ``s`` samples per bin
(``sampling_ratio^2``): per sample and channel 8 (the bilinear value 7, accumulated 1), per sample
8 for its coordinates and weights (shared by the channels), per output 1 for the average. Its
backward scatters the same samples into the input gradient: per sample and channel 8 (4
products, 4 adds), per sample 8, per output 1. With adaptive sampling (``sampling_ratio <= 0``, the
bin's size in input pixels, which depends on each box and so is not known to a rule), one sample
per bin is counted: a lower bound.

Non-maximum suppression (``torchvision.ops.nms``), ``N`` boxes: 3 FLOPs per box for its area
(2 differences, 1 product), and 13 per pair of boxes for their overlap (4 for the intersection's
corners, 2 differences and 2 clamps at zero, 1 product for its area, 1 sum and 1 difference for the
union, 1 division, 1 comparison with the threshold), every pair counted once: ``N(N-1)/2``. The CPU
kernel skips the pairs whose second box is already suppressed, so on CPU this is the most it does
(no box suppressed); the CUDA kernel computes every pair's overlap. Sorting the scores moves data
only. Bytes: the boxes and scores read, the kept indices written.
"""

from __future__ import annotations

from ..capture.events import OpEvent
from .registry import Cost, arguments, register_rule

BILINEAR = 7  # 4 products and 3 adds
POSITION = 8  # the sampling point's coordinates and its 4 bilinear weights


def _deform_sizes(ev: OpEvent, a: dict) -> tuple[int, int, int, int]:
    """(MACs, samples, positions, outputs) of a deformable convolution."""
    w, offset = a["weight"], a["offset"]
    out_numel = ev.outputs[0].numel if ev.op.startswith("torchvision.deform_conv2d") else a["grad"].numel
    c_out, kernel = w.shape[0], w.shape[2] * w.shape[3]
    per_out_channel = out_numel // c_out  # N x H_out x W_out
    macs = out_numel * (w.numel // c_out)
    samples = per_out_channel * a["input"].shape[1] * kernel
    return macs, samples, offset.numel // 2, out_numel


@register_rule("torchvision.deform_conv2d")
def deform_conv2d(ev: OpEvent) -> Cost:
    a = arguments(ev)
    macs, samples, positions, outputs = _deform_sizes(ev, a)
    mask = int(bool(a.get("use_mask")))
    return Cost.of_macs(macs, extra_flops=samples * (BILINEAR + mask) + positions * POSITION + outputs)


@register_rule("torchvision._deform_conv2d_backward")
def deform_conv2d_backward(ev: OpEvent) -> Cost:
    a = arguments(ev)
    macs, samples, positions, outputs = _deform_sizes(ev, a)
    mask = int(bool(a.get("use_mask")))
    per_sample = (BILINEAR + mask) + (8 + mask) + 16 + (9 if mask else 0)
    return Cost.of_macs(2 * macs, extra_flops=samples * per_sample + positions * 2 * POSITION + outputs)


def _roi_samples(a: dict) -> int:
    ratio = int(a.get("sampling_ratio") or 0)
    return ratio * ratio if ratio > 0 else 1


@register_rule("torchvision.roi_align")
def roi_align(ev: OpEvent) -> Cost:
    a = arguments(ev)
    out = ev.outputs[0]  # (K, C, ph, pw)
    s = _roi_samples(a)
    bins = out.numel // out.shape[1] if out.ndim == 4 and out.shape[1] else 0  # K x ph x pw
    return Cost(flops=out.numel * s * (BILINEAR + 1) + bins * s * POSITION + out.numel)


@register_rule("torchvision._roi_align_backward")
def roi_align_backward(ev: OpEvent) -> Cost:
    a = arguments(ev)
    grad = a["grad"]  # (K, C, ph, pw), the output's gradient
    s = _roi_samples(a)
    bins = grad.numel // grad.shape[1] if grad.ndim == 4 and grad.shape[1] else 0
    return Cost(flops=grad.numel * s * 8 + bins * s * POSITION + grad.numel)


NMS_PER_BOX = 3  # (x2 - x1) * (y2 - y1)
NMS_PER_PAIR = 13  # 4 min/max, 2 differences, 2 clamps, 1 product, union (2), 1 division, 1 comparison


@register_rule("torchvision.nms")
def nms(ev: OpEvent) -> Cost:
    n = arguments(ev)["dets"].shape[0]
    return Cost(flops=n * NMS_PER_BOX + n * (n - 1) // 2 * NMS_PER_PAIR)

"""Convolutions of any rank (1d/2d/3d), strided, padded, dilated, grouped, depthwise, transposed.

For a regular convolution every output element is a dot product over ``C_in/groups x prod(kernel)``
inputs: MACs = numel(output) x C_in/groups x prod(kernel) = numel(output) x numel(weight) / C_out.
For a transposed convolution every *input* element is scattered through ``C_out/groups x
prod(kernel)`` weights: MACs = numel(input) x numel(weight) / C_in (weight is ``(C_in, C_out/g, k...)``).
Padding positions are counted (the dense work a kernel does), as every peer does. A bias costs one
FLOP per output element. The backward pass costs one forward's MACs for the input gradient and one
for the weight gradient, and one FLOP per grad-output element for the bias gradient.
"""

from __future__ import annotations

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, register_rule


def conv_macs(x: TensorMeta, w: TensorMeta, out: TensorMeta, transposed: bool) -> int:
    per = w.numel // w.shape[0]
    return (x.numel if transposed else out.numel) * per


@register_rule("aten.convolution", "aten._convolution", "aten.convolution_overrideable")
def convolution(ev: OpEvent) -> Cost:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    a = arguments(ev)
    x, w = a["input"], a["weight"]
    out = ev.outputs[0]
    bias = out.numel if isinstance(a.get("bias"), TensorMeta) else 0
    return Cost.of_macs(conv_macs(x, w, out, bool(a.get("transposed"))), extra_flops=bias)


@register_rule(
    "aten.cudnn_convolution", "aten.miopen_convolution", "aten.mkldnn_convolution",
    "aten._slow_conv2d_forward", "aten.slow_conv3d_forward", "aten.slow_conv_dilated2d",
    "aten.slow_conv_dilated3d", "aten._conv_depthwise2d", "aten.conv_depthwise3d",
    "aten._nnpack_spatial_convolution", "aten._mps_convolution",
)
def convolution_backend(ev: OpEvent) -> Cost:
    # backend kernels: (self, weight, [kernel_size,] bias?, ...); never transposed
    a = arguments(ev)
    x, w = ev.args[0], ev.args[1]
    out = ev.outputs[0]
    bias = out.numel if isinstance(a.get("bias"), TensorMeta) else 0
    return Cost.of_macs(conv_macs(x, w, out, False), extra_flops=bias)


@register_rule(
    "aten.cudnn_convolution_transpose", "aten.miopen_convolution_transpose",
    "aten.slow_conv_transpose2d", "aten.slow_conv_transpose3d", "aten._mps_convolution_transpose",
)
def convolution_transpose_backend(ev: OpEvent) -> Cost:
    # (self, weight, [kernel_size,] bias?, ...); weight is (C_in, C_out/groups, k...)
    a = arguments(ev)
    x, w = ev.args[0], ev.args[1]
    out = ev.outputs[0]
    bias = out.numel if isinstance(a.get("bias"), TensorMeta) else 0
    return Cost.of_macs(conv_macs(x, w, out, True), extra_flops=bias)


@register_rule("aten.cudnn_convolution_relu", "aten.cudnn_convolution_add_relu")
def convolution_fused_relu(ev: OpEvent) -> Cost:
    """cuDNN's fused conv (+ bias) (+ alpha * z) + relu: 1 FLOP per output element for the bias,
    2 for ``alpha * z +``, 1 for the relu."""
    a = arguments(ev)
    out = ev.outputs[0]
    extra = (1 if isinstance(a.get("bias"), TensorMeta) else 0) + 1
    if isinstance(a.get("z"), TensorMeta):
        extra += 2
    return Cost.of_macs(conv_macs(a["self"], a["weight"], out, False), extra_flops=extra * out.numel)


@register_rule("aten.convolution_backward", "aten.convolution_backward_overrideable")
def convolution_backward(ev: OpEvent) -> Cost:
    # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
    #                      transposed, output_padding, groups, output_mask)
    a = arguments(ev)
    gout, x, w = a["grad_output"], a["input"], a["weight"]
    transposed = bool(a["transposed"])
    mask = a["output_mask"]
    fwd = conv_macs(x, w, gout, transposed)
    macs = fwd * (int(bool(mask[0])) + int(bool(mask[1])))
    return Cost.of_macs(macs, extra_flops=gout.numel if mask[2] else 0)

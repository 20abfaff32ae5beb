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
from .registry import Cost, register_rule


def conv_macs(x: TensorMeta, w: TensorMeta, out: TensorMeta, transposed: bool) -> int:
    per = w.numel // w.shape[0]
    return (x.numel if transposed else out.numel) * per


def _bias_flops(ev: OpEvent, bias_index: int, out: TensorMeta) -> int:
    b = ev.args[bias_index] if len(ev.args) > bias_index else ev.kwargs.get("bias")
    return out.numel if isinstance(b, TensorMeta) else 0


@register_rule("aten.convolution", "aten._convolution")
def convolution(ev: OpEvent) -> Cost:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    x, w = ev.args[0], ev.args[1]
    out = ev.outputs[0]
    transposed = bool(ev.args[6]) if len(ev.args) > 6 else bool(ev.kwargs.get("transposed", False))
    return Cost.of_macs(conv_macs(x, w, out, transposed), extra_flops=_bias_flops(ev, 2, out))


@register_rule(
    "aten.cudnn_convolution", "aten.miopen_convolution", "aten.mkldnn_convolution",
    "aten._slow_conv2d_forward", "aten.slow_conv3d_forward", "aten.slow_conv_dilated2d",
    "aten.slow_conv_dilated3d", "aten._conv_depthwise2d", "aten.conv_depthwise3d",
    "aten._nnpack_spatial_convolution",
)
def convolution_backend(ev: OpEvent) -> Cost:
    # backend kernels: (input, weight, [kernel_size,] bias?, ...); never transposed
    x, w = ev.args[0], ev.args[1]
    out = ev.outputs[0]
    bias = next((a for a in ev.args[2:4] if isinstance(a, TensorMeta)), None)
    return Cost.of_macs(conv_macs(x, w, out, False), extra_flops=out.numel if bias is not None else 0)


@register_rule(
    "aten.cudnn_convolution_transpose", "aten.miopen_convolution_transpose",
    "aten.slow_conv_transpose2d", "aten.slow_conv_transpose3d",
)
def convolution_transpose_backend(ev: OpEvent) -> Cost:
    x, w = ev.args[0], ev.args[1]
    out = ev.outputs[0]
    bias = next((a for a in ev.args[2:4] if isinstance(a, TensorMeta)), None)
    return Cost.of_macs(conv_macs(x, w, out, True), extra_flops=out.numel if bias is not None else 0)


@register_rule("aten.convolution_backward")
def convolution_backward(ev: OpEvent) -> Cost:
    # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
    #                      transposed, output_padding, groups, output_mask)
    gout, x, w = ev.args[0], ev.args[1], ev.args[2]
    transposed = bool(ev.args[7])
    mask = ev.args[10]
    fwd = conv_macs(x, w, gout, transposed)
    macs = fwd * (int(bool(mask[0])) + int(bool(mask[1])))
    return Cost.of_macs(macs, extra_flops=gout.numel if mask[2] else 0)

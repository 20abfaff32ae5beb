"""Matrix products: mm, addmm, bmm, baddbmm, addbmm, mv, addmv, dot, _scaled_mm.

``linear``, ``matmul``, ``@`` and ``einsum`` are composite in PyTorch: they reach the dispatcher as
these ops (plus views), so their rules are these. MACs = the multiply-accumulates of the product;
a bias/beta add costs one FLOP per output element and no MAC.
"""

from __future__ import annotations

from ..capture.events import OpEvent
from .registry import Cost, register_rule


def _prod(xs: tuple[int, ...]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


@register_rule("aten.mm", "aten._scaled_mm", "aten._int_mm")
def mm(ev: OpEvent) -> Cost:
    # (m, k) @ (k, n): m*n*k MACs
    a, b = ev.inputs[0], ev.inputs[1]
    m, k = a.shape
    n = b.shape[1]
    return Cost.of_macs(m * n * k)


@register_rule("aten.addmm")
def addmm(ev: OpEvent) -> Cost:
    # bias (broadcast to m x n) + (m, k) @ (k, n): m*n*k MACs + m*n FLOPs for the add
    a, b = ev.inputs[1], ev.inputs[2]
    m, k = a.shape
    n = b.shape[1]
    return Cost.of_macs(m * n * k, extra_flops=m * n)


@register_rule("aten.bmm")
def bmm(ev: OpEvent) -> Cost:
    # (B, m, k) @ (B, k, n): B*m*n*k MACs
    a, b = ev.inputs[0], ev.inputs[1]
    bsz, m, k = a.shape
    n = b.shape[2]
    return Cost.of_macs(bsz * m * n * k)


@register_rule("aten.baddbmm")
def baddbmm(ev: OpEvent) -> Cost:
    a, b = ev.inputs[1], ev.inputs[2]
    bsz, m, k = a.shape
    n = b.shape[2]
    return Cost.of_macs(bsz * m * n * k, extra_flops=bsz * m * n)


@register_rule("aten.addbmm")
def addbmm(ev: OpEvent) -> Cost:
    # sum over the batch of (m, k) @ (k, n): B*m*n*k MACs, plus the add of the input
    a, b = ev.inputs[1], ev.inputs[2]
    bsz, m, k = a.shape
    n = b.shape[2]
    return Cost.of_macs(bsz * m * n * k, extra_flops=m * n)


@register_rule("aten.mv")
def mv(ev: OpEvent) -> Cost:
    m, k = ev.inputs[0].shape
    return Cost.of_macs(m * k)


@register_rule("aten.addmv")
def addmv(ev: OpEvent) -> Cost:
    m, k = ev.inputs[1].shape
    return Cost.of_macs(m * k, extra_flops=m)


@register_rule("aten.dot", "aten.vdot")
def dot(ev: OpEvent) -> Cost:
    return Cost.of_macs(ev.inputs[0].numel)


@register_rule("aten.linear")
def linear(ev: OpEvent) -> Cost:
    # Seen only when a backend keeps linear whole: x (..., k) @ W^T (k, n) [+ bias]
    x, w = ev.inputs[0], ev.inputs[1]
    rows = _prod(x.shape[:-1])
    n, k = w.shape
    has_bias = len(ev.inputs) > 2
    return Cost.of_macs(rows * n * k, extra_flops=rows * n if has_bias else 0)

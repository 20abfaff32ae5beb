"""Matrix products: mm, addmm, bmm, baddbmm, addbmm, addr, mv, addmv, dot, linear, the scaled
(fp8) and grouped (mixture-of-experts) products, weight-only quantized products, ``_trilinear``.

``linear``, ``matmul``, ``@`` and ``einsum`` are composite in PyTorch: they reach the dispatcher as
these ops (plus views), so their rules are these. MACs are the multiply-accumulates of the product,
``m x n x k`` for ``(m, k) @ (k, n)``; a bias/beta add costs one FLOP per output element and no MAC
(``addmm``, ``baddbmm``, ``addr``, ``addmv``, ``linear`` with a bias, ``_scaled_mm`` with a bias).
Scaling by ``alpha``/``beta`` and the dequantization scales of fp8/int8/int4 products are not
counted (they fold into the kernel's epilogue).

Grouped products (``_grouped_mm``, ``_scaled_grouped_mm``) multiply each row of the token matrix by
exactly one group's weight, whatever the group offsets are, so their MACs follow from shapes alone:
``numel(out) x K`` with ``K = self.shape[-1]``, except 2-D x 2-D (groups along K, the weight
gradient of a mixture of experts): ``M x N x K_total`` = ``numel(out) / G x K_total``.

``_trilinear(i1, i2, i3, ...)`` (``nn.Bilinear``) multiplies three broadcast factors and sums over
``sumdim``: one MAC per term of the broadcast product space plus one FLOP for the third factor.

A triangular solve (``torch.linalg.solve_triangular``, as chunked linear-attention layers such as the
gated delta rule use it) with an ``n x n`` matrix substitutes one right-hand side at a time: row ``i``
is a dot product with the ``i`` values already solved, then a division by the diagonal, so each
right-hand side costs ``n (n - 1) / 2`` MACs and ``n`` divisions (none with ``unitriangular=True``).

Complex operands: every MAC of a complex product is 4 real ones (see ``costs/registry.py``).
"""

from __future__ import annotations

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, register_rule


def _prod(xs: tuple[int, ...] | list[int]) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def _sparse_macs(a: TensorMeta, b: TensorMeta) -> int:
    """MACs of ``a @ b`` (2-D), a sparse operand counted by its stored values (a sparse TensorMeta's
    ``numel``, fewer than its dense shape holds): each stored value of ``a`` meets a row of ``b``
    (``nnz(a) x n``), each of ``b`` a column of ``a`` (``m x nnz(b)``)."""
    m, k = a.shape
    n = b.shape[1]
    if a.numel != m * k and b.numel == k * n:
        return a.numel * n
    if b.numel != k * n and a.numel == m * k:
        return m * b.numel
    return m * n * k


@register_rule("aten.mm", "aten._int_mm")
def mm(ev: OpEvent) -> Cost:
    # (m, k) @ (k, n): m*n*k MACs (a sparse operand: its stored values times the other's rows)
    return Cost.of_macs(_sparse_macs(ev.inputs[0], ev.inputs[1]))


@register_rule("aten._sparse_addmm")
def sparse_addmm(ev: OpEvent) -> Cost:
    # (self, mat1 sparse, mat2, beta, alpha): torch.sparse.mm / addmm: nnz(mat1) x n MACs + the add
    a = arguments(ev)
    mat1, mat2 = a["mat1"], a["mat2"]
    return Cost.of_macs(_sparse_macs(mat1, mat2), extra_flops=mat1.shape[0] * mat2.shape[1])


@register_rule("aten._scaled_mm", "aten._scaled_mm_v2")
def scaled_mm(ev: OpEvent) -> Cost:
    # fp8 (m, k) @ (k, n) with scales: m*n*k MACs, + m*n FLOPs for a bias
    a = arguments(ev)
    m, k = a["self"].shape
    n = a["mat2"].shape[1]
    bias = m * n if isinstance(a.get("bias"), TensorMeta) else 0
    return Cost.of_macs(m * n * k, extra_flops=bias)


@register_rule("aten._grouped_mm", "aten._scaled_grouped_mm")
def grouped_mm(ev: OpEvent) -> Cost:
    a = arguments(ev)
    x, w = a["self"], a["mat2"]
    out = ev.outputs[0]
    if x.ndim == 2 and w.ndim == 2:  # (M, K_total) x (K_total, N) -> (G, M, N)
        macs = out.numel // out.shape[0] * x.shape[1]
    else:  # 2d x 3d (M_total, K)x(G, K, N); 3d x 2d (G, M, K)x(K, N_total); 3d x 3d batched
        macs = out.numel * x.shape[-1]
    bias = out.numel if isinstance(a.get("bias"), TensorMeta) else 0
    return Cost.of_macs(macs, extra_flops=bias)


@register_rule("aten._weight_int8pack_mm", "aten._weight_int4pack_mm", "aten._weight_int4pack_mm_for_cpu",
               "aten._weight_int4pack_mm_with_scales_and_zeros", "aten._dyn_quant_matmul_4bit")
def weight_only_quant_mm(ev: OpEvent) -> Cost:
    # activations (m, k) times a packed weight: the output (m, n) has k MACs per element
    x = ev.inputs[0]
    return Cost.of_macs(ev.outputs[0].numel * x.shape[-1])


@register_rule("aten.addmm", "aten._addmm_activation")
def addmm(ev: OpEvent) -> Cost:
    # bias (broadcast to m x n) + (m, k) @ (k, n): m*n*k MACs + m*n FLOPs for the add;
    # _addmm_activation adds the relu/gelu epilogue (1 FLOP per element for relu, 5 for gelu)
    a, b = ev.inputs[1], ev.inputs[2]
    m, k = a.shape
    n = b.shape[1]
    act = 0
    if ev.packet == "aten._addmm_activation":
        act = 5 if arguments(ev).get("use_gelu") else 1
    return Cost.of_macs(m * n * k, extra_flops=m * n * (1 + act))


@register_rule("aten.bmm")
def bmm(ev: OpEvent) -> Cost:
    # (B, m, k) @ (B, k, n): B*m*n*k MACs
    a, b = ev.inputs[0], ev.inputs[1]
    bsz, m, k = a.shape
    n = b.shape[2]
    return Cost.of_macs(bsz * m * n * k)


@register_rule("aten.baddbmm")
def baddbmm(ev: OpEvent) -> Cost:
    # self + (B, m, k) @ (B, k, n): B*m*n*k MACs + B*m*n FLOPs for the add
    a, b = ev.inputs[1], ev.inputs[2]
    bsz, m, k = a.shape
    n = b.shape[2]
    return Cost.of_macs(bsz * m * n * k, extra_flops=bsz * m * n)


@register_rule("aten.addbmm")
def addbmm(ev: OpEvent) -> Cost:
    # self + sum over the batch of (m, k) @ (k, n): B*m*n*k MACs (the batch sum accumulates in the
    # same MACs), plus m*n FLOPs for the add of self
    a, b = ev.inputs[1], ev.inputs[2]
    bsz, m, k = a.shape
    n = b.shape[2]
    return Cost.of_macs(bsz * m * n * k, extra_flops=m * n)


@register_rule("aten.addr")
def addr(ev: OpEvent) -> Cost:
    # self + outer(vec1 (m), vec2 (n)): an (m, 1) @ (1, n) product, m*n MACs + m*n FLOPs for the add
    m, n = ev.inputs[1].numel, ev.inputs[2].numel
    return Cost.of_macs(m * n, extra_flops=m * n)


@register_rule("aten.mv")
def mv(ev: OpEvent) -> Cost:
    # (m, k) @ (k,): m*k MACs
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
    a = arguments(ev)
    x, w = a["input"], a["weight"]
    rows = _prod(x.shape[:-1])
    n, k = w.shape if w.ndim == 2 else (1, w.shape[0])
    has_bias = isinstance(a.get("bias"), TensorMeta)
    return Cost.of_macs(rows * n * k, extra_flops=rows * n if has_bias else 0)


@register_rule("aten._trilinear")
def trilinear(ev: OpEvent) -> Cost:
    # i1, i2, i3 are unsqueezed at expand1/2/3 to a common rank and broadcast; every term of the
    # broadcast space is one product of three factors (1 MAC + 1 FLOP), summed over sumdim
    a = arguments(ev)
    shapes = []
    for t, expand in ((a["i1"], a["expand1"]), (a["i2"], a["expand2"]), (a["i3"], a["expand3"])):
        s = list(t.shape)
        for d in sorted(int(e) for e in expand):
            s.insert(d, 1)
        shapes.append(s)
    rank = max(len(s) for s in shapes)
    space = [max(s[i] if i < len(s) else 1 for s in shapes) for i in range(rank)]
    terms = _prod(space)
    return Cost.of_macs(terms, extra_flops=terms)


def _packed_bias(packed: object) -> bool:
    """Whether a quantized linear layer's packed parameters hold a bias (``unpack()`` -> (w, b))."""
    try:
        return packed.unpack()[1] is not None  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an opaque object: no bias counted
        return False


@register_rule("quantized.linear_dynamic", "quantized.linear_relu_dynamic", "quantized.linear_dynamic_fp16",
               "quantized.linear_relu_dynamic_fp16", "quantized.linear", "quantized.linear_relu")
def quantized_linear(ev: OpEvent) -> Cost:
    """``torch.ao`` quantized linear layers (CPU): the weight is packed in an opaque object, so its
    size comes from the shapes: ``I x O`` at 1 byte (int8) or 2 (fp16), + 4 bytes per output feature
    for an fp32 bias. MACs ``numel(out) x I``. FLOPs ``2 x MACs``, + 1 per output for the bias, + 1
    for a fused relu, and for dynamic int8 (activations quantized on the fly) 4 per input element
    (min and max 2, scale and round 2) and 1 per output (the dequantizing scale)."""
    a = arguments(ev)
    x, out = a["X"], ev.outputs[0]
    size_in, size_out = x.shape[-1], out.shape[-1]
    bias = _packed_bias(a["W_prepack"])
    fp16 = ev.packet.endswith("fp16")
    dynamic = "dynamic" in ev.packet and not fp16
    extra = out.numel * (int(bias) + int("relu" in ev.packet))
    if dynamic:
        extra += 4 * x.numel + out.numel
    weight = size_in * size_out * (2 if fp16 else 1) + (4 * size_out if bias else 0)
    return Cost(macs=out.numel * size_in, flops=2 * out.numel * size_in + extra,
                bytes_read=x.nbytes + weight, bytes_written=out.nbytes)


@register_rule("aten.linalg_solve_triangular")
def solve_triangular(ev: OpEvent) -> Cost:
    a = arguments(ev)
    n = int(a["self"].shape[-1])
    out = ev.outputs[0]
    columns = out.numel // n if n else 0  # right-hand sides, over the batch
    divisions = 0 if a.get("unitriangular") else columns * n
    return Cost.of_macs(columns * (n * (n - 1) // 2), extra_flops=divisions)

"""Attention: ``F.scaled_dot_product_attention`` (every backend), and ``nn.MultiheadAttention``'s
fused fast path.

For queries ``(..., H, Lq, d)``, keys ``(..., Hkv, Lk, d)`` and values ``(..., Hkv, Lk, dv)``:
``Q·Kᵀ`` is ``B·H·Lq·Lk·d`` MACs and ``P·V`` is ``B·H·Lq·Lk·dv`` MACs, with ``B·H`` the product of the
query's leading dims (grouped-query attention counts query heads, not KV heads).

Causal masks. With ``is_causal`` only the unmasked (query, key) pairs are counted by default, the
work a fused kernel does:

* top-left alignment, PyTorch's ``is_causal`` (``tril(ones(Lq, Lk))``): row ``i`` keeps
  ``min(i + 1, Lk)`` keys, ``sum_{i<Lq} min(i + 1, Lk)`` pairs in all;
* bottom-right alignment (the memory-efficient kernel's ``custom_mask_type=2``, flash-attn's
  convention): row ``i`` keeps ``clamp(i + 1 + Lk - Lq, 0, Lk)`` keys.

``CountSettings(causal="dense")`` (``profile(..., causal="dense")``) counts all ``Lq·Lk`` pairs. An
explicit ``attn_mask`` tensor is counted dense: its values are not known to a rule.

Non-matmul FLOPs per counted score, forward: 1 for the scale, 5 for the softmax (max, subtract, exp,
sum, divide), 1 for an additive or boolean mask, 3 for dropout when ``dropout_p > 0`` (draw and
compare, scale, multiply, as ``native_dropout`` and ``F.dropout``). Backward: 4 products
(dV = Pᵀ·dO, dP = dO·Vᵀ, dQ = dS·K, dK = dSᵀ·Q): 2x the forward MACs, what the math backend's
four bmm calls do; plus 4 FLOPs per counted score for the softmax gradient, 1 for the scale and 2
for dropout (times mask, times scale, as ``native_dropout_backward``). Recomputing ``Q·Kᵀ`` inside a
fused backward kernel is an implementation detail and is not counted (a model's FLOPs do not depend
on its kernels); ``torch.utils.flop_counter`` counts it for the flash/efficient/cuDNN kernels.

Variable-length (nested/packed) calls of the flash and efficient kernels pass ``(total, H, d)``
tensors and cumulative sequence lengths whose values a rule cannot see; they are counted with
``min(total_q·max_k, total_k·max_q)`` pairs per head (causal: ``total_q / max_q`` sequences of
``max_q x max_k``), an upper bound that is exact when every sequence has the same length.
"""

from __future__ import annotations

from typing import Any

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, current_settings, register_rule

SOFTMAX_FLOPS = 5
SOFTMAX_BACKWARD_FLOPS = 4
SCALE_FLOPS = 1
MASK_FLOPS = 1
DROPOUT_FLOPS = 3
DROPOUT_BACKWARD_FLOPS = 2


def causal_pairs(lq: int, lk: int, *, bottom_right: bool = False) -> int:
    """(query, key) pairs a causal mask keeps.

    Top-left (``tril(ones(lq, lk))``): ``sum_{i<lq} min(i + 1, lk)``. Bottom-right: row ``i`` keeps
    ``clamp(i + 1 + lk - lq, 0, lk)``.
    """
    if lq <= 0 or lk <= 0:
        return 0
    if not bottom_right:
        full = min(lq, lk)  # rows 0..full-1 keep i+1 keys: full*(full+1)/2
        return full * (full + 1) // 2 + max(lq - lk, 0) * lk
    # bottom-right: row i keeps i+1+off keys with off = lk-lq; the last row keeps lq+off = lk, so
    # only the lower clamp applies. Rows first..lq-1 keep at least one key: an arithmetic series.
    off = lk - lq
    first = max(0, -off)
    n = lq - first
    lo = first + 1 + off  # keys of row `first`
    hi = lq + off  # keys of the last row (= lk)
    return n * (lo + hi) // 2


def _prod(xs: tuple[int, ...]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def score_count(
    q: TensorMeta, k: TensorMeta, v: TensorMeta, *, causal: bool, layout: str = "BHLd",
    bottom_right: bool = False, max_q: int | None = None, max_k: int | None = None,
) -> tuple[int, int, int]:
    """(number of counted scores over all batch x query heads, d, dv)."""
    dense = not causal or current_settings().causal == "dense"
    if layout == "BHLd":
        bh = _prod(q.shape[:-2])
        lq, d = q.shape[-2], q.shape[-1]
        lk, dv = k.shape[-2], v.shape[-1]
    elif q.ndim == 4:  # (B, L, H, d), the layout of the flash/efficient kernels
        bh = q.shape[0] * q.shape[2]
        lq, d = q.shape[1], q.shape[3]
        lk, dv = k.shape[1], v.shape[3]
    else:  # varlen (total, H, d): see the module docstring
        h, d, dv = q.shape[1], q.shape[2], v.shape[-1]
        tq, tk = q.shape[0], k.shape[0]
        mq, mk = int(max_q or tq), int(max_k or tk)
        pairs = min(tq * mk, tk * mq)
        if not dense:
            # equal lengths: total_q / max_q sequences, each keeping causal_pairs(max_q, max_k)
            nseq = max(1, tq // max(mq, 1))
            pairs = nseq * causal_pairs(mq, mk, bottom_right=bottom_right)
        return h * pairs, d, dv
    pairs = lq * lk if dense else causal_pairs(lq, lk, bottom_right=bottom_right)
    return bh * pairs, d, dv


def attention_cost(
    q: TensorMeta, k: TensorMeta, v: TensorMeta, *, causal: bool, masked: bool, backward: bool = False,
    layout: str = "BHLd", bottom_right: bool = False, dropout: bool = False,
    max_q: int | None = None, max_k: int | None = None,
) -> Cost:
    scores, d, dv = score_count(q, k, v, causal=causal, layout=layout, bottom_right=bottom_right,
                                max_q=max_q, max_k=max_k)
    macs = scores * (d + dv)
    if backward:
        drop = DROPOUT_BACKWARD_FLOPS if dropout else 0
        return Cost.of_macs(2 * macs, extra_flops=scores * (SOFTMAX_BACKWARD_FLOPS + SCALE_FLOPS + drop))
    drop = DROPOUT_FLOPS if dropout else 0
    return Cost.of_macs(macs, extra_flops=scores * (SCALE_FLOPS + SOFTMAX_FLOPS + drop + (MASK_FLOPS if masked else 0)))


def _t(x: Any) -> bool:
    return isinstance(x, TensorMeta)


def _dropout(a: dict[str, Any]) -> bool:
    return float(a.get("dropout_p") or 0.0) > 0.0


@register_rule("modelmeter.sdpa")
def sdpa(ev: OpEvent) -> Cost:
    """``F.scaled_dot_product_attention`` as one fused op (see capture/tracer.py)."""
    a = ev.kwargs
    return attention_cost(a["query"], a["key"], a["value"], causal=bool(a.get("is_causal", False)),
                          masked=_t(a.get("attn_mask")), dropout=_dropout(a))


@register_rule("modelmeter.sdpa_backward")
def sdpa_backward(ev: OpEvent) -> Cost:
    a = ev.kwargs
    return attention_cost(a["query"], a["key"], a["value"], causal=bool(a.get("is_causal", False)),
                          masked=False, backward=True, dropout=_dropout(a))


@register_rule(
    "aten._scaled_dot_product_flash_attention_for_cpu",  # (q, k, v, dropout_p, is_causal, *, attn_mask, scale)
    "aten._scaled_dot_product_flash_attention",  # (q, k, v, [q/k/v_descale,] dropout_p, is_causal, ...)
    "aten._scaled_dot_product_efficient_attention",  # (q, k, v, attn_bias, compute_lse, dropout_p, is_causal)
    "aten._scaled_dot_product_cudnn_attention",  # (q, k, v, attn_bias, compute_lse, dropout_p, is_causal, ...)
    "aten._scaled_dot_product_fused_attention_overrideable",  # (q, k, v, attn_bias, dropout_p, is_causal, ...)
    "aten._scaled_dot_product_attention_math",  # composite; seen only if a backend keeps it whole
    "aten._scaled_dot_product_attention_math_for_mps",
    "aten.scaled_dot_product_attention",
)
def sdpa_kernel(ev: OpEvent) -> Cost:
    """The SDPA kernels in (B, H, L, d) layout; arguments read by schema name."""
    a = arguments(ev)
    mask = a.get("attn_mask", a.get("attn_bias"))
    return attention_cost(a["query"], a["key"], a["value"], causal=bool(a.get("is_causal")),
                          masked=_t(mask), dropout=_dropout(a))


@register_rule(
    "aten._scaled_dot_product_flash_attention_for_cpu_backward",
    "aten._scaled_dot_product_flash_attention_backward",
    "aten._scaled_dot_product_efficient_attention_backward",
    "aten._scaled_dot_product_cudnn_attention_backward",
    "aten._scaled_dot_product_fused_attention_overrideable_backward",
)
def sdpa_kernel_backward(ev: OpEvent) -> Cost:
    """(grad_out, query, key, value, ..., dropout_p, ..., is_causal, ...) in (B, H, L, d) layout."""
    a = arguments(ev)
    return attention_cost(a["query"], a["key"], a["value"], causal=bool(a.get("is_causal")),
                          masked=False, backward=True, dropout=_dropout(a))


@register_rule("aten._flash_attention_forward", "aten._cudnn_attention_forward")
def flash_forward(ev: OpEvent) -> Cost:
    """The flash kernel proper: (B, L, H, d), or varlen (total, H, d) with cum_seq_q/k, max_q/k.

    ``_cudnn_attention_forward`` shares the argument names (its tensors are (B, H, L, d) when not
    varlen)."""
    a = arguments(ev)
    layout = "BLHd" if ev.op.startswith("aten._flash") or a["query"].ndim == 3 else "BHLd"
    return attention_cost(a["query"], a["key"], a["value"], causal=bool(a.get("is_causal")),
                          masked=_t(a.get("attn_bias")), layout=layout, dropout=_dropout(a),
                          max_q=a.get("max_q"), max_k=a.get("max_k"))


@register_rule("aten._flash_attention_backward", "aten._cudnn_attention_backward")
def flash_backward(ev: OpEvent) -> Cost:
    a = arguments(ev)
    layout = "BLHd" if ev.op.startswith("aten._flash") or a["query"].ndim == 3 else "BHLd"
    return attention_cost(a["query"], a["key"], a["value"], causal=bool(a.get("is_causal")),
                          masked=False, backward=True, layout=layout, dropout=_dropout(a),
                          max_q=a.get("max_q"), max_k=a.get("max_k"))


def _mask_type(a: dict[str, Any]) -> tuple[bool, bool]:
    """custom_mask_type: 0 none, 1 causal from the top-left, 2 causal from the bottom-right."""
    t = int(a.get("custom_mask_type") or 0)
    return t != 0, t == 2


@register_rule("aten._efficient_attention_forward")
def efficient_forward(ev: OpEvent) -> Cost:
    """The memory-efficient kernel proper: (B, L, H, d), or varlen (1, total, H, d) with cu_seqlens."""
    a = arguments(ev)
    causal, br = _mask_type(a)
    q, k, v = a["query"], a["key"], a["value"]
    if _t(a.get("cu_seqlens_q")):  # varlen: (1, total, H, d) -> (total, H, d)
        q, k, v = (TensorMeta(t.shape[1:], t.dtype, t.device, 0, 0) for t in (q, k, v))
    return attention_cost(q, k, v, causal=causal, bottom_right=br, masked=_t(a.get("bias")),
                          layout="BLHd", dropout=_dropout(a),
                          max_q=a.get("max_seqlen_q"), max_k=a.get("max_seqlen_k"))


@register_rule("aten._efficient_attention_backward")
def efficient_backward(ev: OpEvent) -> Cost:
    a = arguments(ev)
    causal, br = _mask_type(a)
    q, k, v = a["query"], a["key"], a["value"]
    if _t(a.get("cu_seqlens_q")):
        q, k, v = (TensorMeta(t.shape[1:], t.dtype, t.device, 0, 0) for t in (q, k, v))
    return attention_cost(q, k, v, causal=causal, bottom_right=br, masked=False, backward=True,
                          layout="BLHd", dropout=_dropout(a),
                          max_q=a.get("max_seqlen_q"), max_k=a.get("max_seqlen_k"))


@register_rule("aten._native_multi_head_attention")
def native_mha(ev: OpEvent) -> Cost:
    """``nn.MultiheadAttention``'s fused inference path, counted like its unfused equivalent:
    in-projection (3 products + bias), attention (as SDPA), out-projection (+ bias).

    (query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, mask,
    need_weights, average_attn_weights, mask_type) with query (B, Lq, E), key/value (B, Lk, E), or
    unbatched (Lq, E) / (Lk, E).
    """
    a = arguments(ev)
    q, k = a["query"], a["key"]
    e, h = int(a["embed_dim"]), int(a["num_head"])
    lead = _prod(q.shape[:-2])
    lq, lk = q.shape[-2], k.shape[-2]
    # q, k, v and out projections: (rows x E) @ (E x E) each
    proj_macs = lead * (lq * e * e + 2 * lk * e * e + lq * e * e)
    bias_flops = lead * (lq * e + 2 * lk * e + lq * e)
    d = e // h
    fake_q = TensorMeta((lead, h, lq, d), q.dtype, q.device, 0, 0)
    fake_k = TensorMeta((lead, h, lk, d), q.dtype, q.device, 0, 0)
    att = attention_cost(fake_q, fake_k, fake_k, causal=False, masked=_t(a.get("mask")))
    return Cost(macs=proj_macs + att.macs, flops=2 * proj_macs + bias_flops + att.flops)

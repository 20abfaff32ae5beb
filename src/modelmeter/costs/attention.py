"""Attention: ``F.scaled_dot_product_attention`` (every backend), and ``nn.MultiheadAttention``'s
fused fast path.

For queries ``(..., H, Lq, d)``, keys ``(..., Hkv, Lk, d)`` and values ``(..., Hkv, Lk, dv)``:
``Q·Kᵀ`` is ``B·H·Lq·Lk·d`` MACs and ``P·V`` is ``B·H·Lq·Lk·dv`` MACs, with ``B·H`` the product of the
query's leading dims (grouped-query attention counts query heads). With ``is_causal`` only the
unmasked pairs are counted by default: PyTorch's causal mask is ``tril(ones(Lq, Lk))`` (top-left
aligned), which keeps ``sum_{i<Lq} min(i+1, Lk)`` pairs; ``CountSettings(causal="dense")`` counts all
``Lq·Lk``. Non-matmul FLOPs per kept score: 1 for the scale, 5 for the softmax (max, subtract, exp,
sum, divide), 1 for an additive mask. The backward pass is 4 products (dV = Pᵀ·dO, dP = dO·Vᵀ,
dQ = dS·K, dK = dSᵀ·Q; 2x the forward MACs, as ``torch.utils.flop_counter`` counts it) plus 4 FLOPs
per kept score for the softmax gradient and 1 for the scale.
"""

from __future__ import annotations

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, current_settings, register_rule

SOFTMAX_FLOPS = 5
SOFTMAX_BACKWARD_FLOPS = 4
SCALE_FLOPS = 1


def causal_pairs(lq: int, lk: int) -> int:
    """Pairs kept by ``tril(ones(lq, lk))``: sum over rows i of min(i + 1, lk)."""
    full = min(lq, lk)  # rows 0..full-1 keep i+1 keys: full*(full+1)/2
    return full * (full + 1) // 2 + max(lq - lk, 0) * lk


def _prod(xs: tuple[int, ...]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def attention_cost(
    q: TensorMeta, k: TensorMeta, v: TensorMeta, *, causal: bool, masked: bool, backward: bool = False,
    layout: str = "BHLd",
) -> Cost:
    if layout == "BHLd":
        bh = _prod(q.shape[:-2])
        lq, d = q.shape[-2], q.shape[-1]
        lk, dv = k.shape[-2], v.shape[-1]
    else:  # (B, L, H, d), the layout of the varlen flash/efficient kernels
        bh = q.shape[0] * q.shape[2]
        lq, d = q.shape[1], q.shape[3]
        lk, dv = k.shape[1], v.shape[3]
    pairs = causal_pairs(lq, lk) if causal and current_settings().causal == "unmasked" else lq * lk
    scores = bh * pairs
    macs = scores * (d + dv)
    if backward:
        return Cost.of_macs(2 * macs, extra_flops=scores * (SOFTMAX_BACKWARD_FLOPS + SCALE_FLOPS))
    return Cost.of_macs(macs, extra_flops=scores * (SCALE_FLOPS + SOFTMAX_FLOPS + (1 if masked else 0)))


def _arg(ev: OpEvent, i: int, name: str, default: object = None) -> object:
    if len(ev.args) > i:
        return ev.args[i]
    return ev.kwargs.get(name, default)


@register_rule("modelmeter.sdpa")
def sdpa(ev: OpEvent) -> Cost:
    kw = ev.kwargs
    mask = kw.get("attn_mask")
    return attention_cost(
        kw["query"], kw["key"], kw["value"], causal=bool(kw.get("is_causal", False)),
        masked=isinstance(mask, TensorMeta),
    )


@register_rule("modelmeter.sdpa_backward")
def sdpa_backward(ev: OpEvent) -> Cost:
    kw = ev.kwargs
    return attention_cost(kw["query"], kw["key"], kw["value"], causal=bool(kw.get("is_causal", False)), masked=False, backward=True)


@register_rule("aten._scaled_dot_product_flash_attention_for_cpu")
def flash_cpu(ev: OpEvent) -> Cost:
    # (query, key, value, dropout_p, is_causal, *, attn_mask, scale)
    q, k, v = ev.args[:3]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 4, "is_causal", False)),
                          masked=isinstance(ev.kwargs.get("attn_mask"), TensorMeta))


@register_rule("aten._scaled_dot_product_flash_attention")
def flash(ev: OpEvent) -> Cost:
    # (query, key, value, dropout_p, is_causal, return_debug_mask, *, scale)
    q, k, v = ev.args[:3]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 4, "is_causal", False)), masked=False)


@register_rule("aten._scaled_dot_product_efficient_attention", "aten._scaled_dot_product_cudnn_attention")
def efficient(ev: OpEvent) -> Cost:
    # (query, key, value, attn_bias, compute_log_sumexp, dropout_p, is_causal, ...)
    q, k, v = ev.args[:3]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 6, "is_causal", False)),
                          masked=isinstance(_arg(ev, 3, "attn_bias"), TensorMeta))


@register_rule("aten._scaled_dot_product_fused_attention_overrideable")
def overrideable(ev: OpEvent) -> Cost:
    # (query, key, value, attn_bias, dropout_p, is_causal, return_debug_mask, *, scale)
    q, k, v = ev.args[:3]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 5, "is_causal", False)),
                          masked=isinstance(_arg(ev, 3, "attn_bias"), TensorMeta))


@register_rule("aten._flash_attention_forward")
def flash_varlen(ev: OpEvent) -> Cost:
    # (query, key, value, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal, ...) in (B, L, H, d)
    q, k, v = ev.args[:3]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 8, "is_causal", False)), masked=False, layout="BLHd")


@register_rule("aten._efficient_attention_forward")
def efficient_varlen(ev: OpEvent) -> Cost:
    # (query, key, value, bias, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
    #  custom_mask_type, ...) in (B, L, H, d); custom_mask_type 1/2 = causal
    q, k, v = ev.args[:3]
    return attention_cost(q, k, v, causal=int(_arg(ev, 9, "custom_mask_type", 0) or 0) != 0,
                          masked=isinstance(_arg(ev, 3, "bias"), TensorMeta), layout="BLHd")


@register_rule("aten._scaled_dot_product_flash_attention_for_cpu_backward")
def flash_cpu_backward(ev: OpEvent) -> Cost:
    # (grad_out, query, key, value, out, logsumexp, dropout_p, is_causal, *, attn_mask, scale)
    q, k, v = ev.args[1:4]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 7, "is_causal", False)), masked=False, backward=True)


@register_rule("aten._scaled_dot_product_flash_attention_backward")
def flash_backward(ev: OpEvent) -> Cost:
    # (grad_out, query, key, value, out, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, is_causal, ...)
    q, k, v = ev.args[1:4]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 11, "is_causal", False)), masked=False, backward=True)


@register_rule("aten._scaled_dot_product_efficient_attention_backward")
def efficient_backward(ev: OpEvent) -> Cost:
    # (grad_out, query, key, value, attn_bias, out, logsumexp, philox_seed, philox_offset, dropout_p,
    #  grad_input_mask, is_causal, *, scale)
    q, k, v = ev.args[1:4]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 11, "is_causal", False)), masked=False, backward=True)


@register_rule("aten._scaled_dot_product_cudnn_attention_backward")
def cudnn_backward(ev: OpEvent) -> Cost:
    # (grad_out, query, key, value, out, logsumexp, philox_seed, philox_offset, attn_bias, cum_seq_q,
    #  cum_seq_k, max_q, max_k, dropout_p, is_causal, *, scale)
    q, k, v = ev.args[1:4]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 14, "is_causal", False)), masked=False, backward=True)


@register_rule("aten._flash_attention_backward")
def flash_varlen_backward(ev: OpEvent) -> Cost:
    # (grad_out, query, key, value, out, logsumexp, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p,
    #  is_causal, ...) in (B, L, H, d)
    q, k, v = ev.args[1:4]
    return attention_cost(q, k, v, causal=bool(_arg(ev, 11, "is_causal", False)), masked=False, backward=True, layout="BLHd")


@register_rule("aten._efficient_attention_backward")
def efficient_varlen_backward(ev: OpEvent) -> Cost:
    # (grad_out, query, key, value, bias, out, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
    #  logsumexp, dropout_p, philox_seed, philox_offset, custom_mask_type, ...) in (B, L, H, d)
    q, k, v = ev.args[1:4]
    return attention_cost(q, k, v, causal=int(_arg(ev, 14, "custom_mask_type", 0) or 0) != 0,
                          masked=False, backward=True, layout="BLHd")


@register_rule("aten._native_multi_head_attention")
def native_mha(ev: OpEvent) -> Cost:
    """``nn.MultiheadAttention``'s fused inference path, counted like its unfused equivalent:
    in-projection (3 products + bias), attention (as SDPA), out-projection (+ bias).

    (query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias, mask, ...)
    with query (B, Lq, E) and key/value (B, Lk, E).
    """
    q, k = ev.args[0], ev.args[1]
    e, h = int(ev.args[3]), int(ev.args[4])
    mask = _arg(ev, 9, "mask")
    lead = _prod(q.shape[:-2]) if q.ndim == 3 else 1
    lq, lk = q.shape[-2], k.shape[-2]
    proj_macs = lead * (lq * e * e + 2 * lk * e * e + lq * e * e)
    bias_flops = lead * (lq * e + 2 * lk * e + lq * e)
    d = e // h
    fake_q = TensorMeta((lead, h, lq, d), q.dtype, q.device, 0, 0)
    fake_k = TensorMeta((lead, h, lk, d), q.dtype, q.device, 0, 0)
    att = attention_cost(fake_q, fake_k, fake_k, causal=False, masked=isinstance(mask, TensorMeta))
    return Cost(macs=proj_macs + att.macs, flops=2 * proj_macs + bias_flops + att.flops)

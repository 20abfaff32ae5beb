"""Attention rules: F.scaled_dot_product_attention (fused op), every aten SDPA kernel, causal
masks, grouped-query attention, and nn.MultiheadAttention's fast path.

Reference numbers used below (derived once here):

* q, k, v of shape (2, 4, 6, 8), not causal: 2*4 = 8 (batch x query heads) x 6*6 = 36 pairs = 288
  scores; MACs = 288 x (d + dv) = 288 x 16 = 4608 (Q.K^T 2304 + P.V 2304); FLOPs = 2 x 4608
  + 288 x (1 scale + 5 softmax) = 9216 + 1728 = 10944.
* the same, causal: 6*7/2 = 21 pairs per head -> 168 scores; MACs 168 x 16 = 2688;
  FLOPs 5376 + 168 x 6 = 6384.
* backward: 2 x the forward MACs (4 products), + 5 FLOPs per score (softmax grad 4, scale 1):
  dense 9216 MACs, 18432 + 288 x 5 = 19872 FLOPs; causal 5376 MACs, 10752 + 168 x 5 = 11592 FLOPs.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_costs_support import cost, events_of, only, synthetic
from torch import nn

import modelmeter as mm
from modelmeter.costs import CountSettings, registered_ops, rule_for, using_settings
from modelmeter.costs.attention import causal_pairs

A = torch.ops.aten
DENSE = (4608, 10944)
CAUSAL = (2688, 6384)
DENSE_BWD = (9216, 19872)
CAUSAL_BWD = (5376, 11592)


class Attn(nn.Module):
    def __init__(self, **kw) -> None:
        super().__init__()
        self.kw = kw

    def forward(self, q, k, v, mask=None):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **self.kw)


class AttnParams(nn.Module):
    """q, k, v as parameters, so that a training step differentiates attention w.r.t. all three."""

    def __init__(self, q, k, v, **kw) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Parameter(q), nn.Parameter(k), nn.Parameter(v)
        self.kw = kw

    def forward(self):
        return F.scaled_dot_product_attention(self.q, self.k, self.v, **self.kw)


def qkv(b=2, h=4, lq=6, lk=6, d=8, dv=8, hkv=None, device="cpu"):
    hkv = hkv or h
    return (torch.randn(b, h, lq, d, device=device), torch.randn(b, hkv, lk, d, device=device),
            torch.randn(b, hkv, lk, dv, device=device))


# -- the fused op, meta and CPU ------------------------------------------------------------------


@pytest.mark.parametrize(("causal", "expected"), [(False, DENSE), (True, CAUSAL)])
def test_sdpa_meta_and_cpu_identical(causal, expected):
    q, k, v = qkv()
    for device in ("meta", "cpu"):
        r = mm.profile(Attn(is_causal=causal), (q, k, v), device=device)
        sdpa = [e for e in r.events if e.op == "modelmeter.sdpa"]
        assert len(sdpa) == 1
        assert (r.totals.macs, sdpa[0].flops) == expected
        assert r.totals.macs == expected[0]


def test_sdpa_backward_meta_and_cpu_identical():
    for causal, fwd, bwd in ((False, DENSE, DENSE_BWD), (True, CAUSAL, CAUSAL_BWD)):
        for device in ("meta", "cpu"):
            r = mm.profile(AttnParams(*qkv(), is_causal=causal), (), device=device, train=True)
            rows = {e.op: (e.macs, e.flops) for e in r.events if e.op.startswith("modelmeter.")}
            assert rows == {"modelmeter.sdpa": fwd, "modelmeter.sdpa_backward": bwd}


def test_causal_dense_setting():
    # causal="dense" counts all 36 pairs per head: the non-causal numbers
    q, k, v = qkv()
    r = mm.profile(Attn(is_causal=True), (q, k, v), causal="dense")
    assert r.totals.macs == DENSE[0]
    assert "dense" in r.provenance.conventions["causal"]


def test_mask_adds_one_flop_per_score_and_is_counted_dense():
    # an explicit mask: its values are unknown to a rule -> all 288 scores, + 288 FLOPs for the mask
    q, k, v = qkv()
    mask = torch.ones(6, 6, dtype=torch.bool).tril()
    for device in ("meta", "cpu"):
        r = mm.profile(Attn(), (q, k, v, mask), device=device)
        assert (r.totals.macs, r.totals.flops) == (DENSE[0], DENSE[1] + 288)


def test_gqa_counts_query_heads():
    # q (1, 8, 5, 4), k/v (1, 2, 5, 4): 8 query heads x 25 pairs = 200 scores (not 2 x 25 = 50);
    # MACs 200 x (4 + 4) = 1600
    q, k, v = qkv(b=1, h=8, hkv=2, lq=5, lk=5, d=4, dv=4)
    for device in ("meta", "cpu"):
        r = mm.profile(Attn(enable_gqa=True), (q, k, v), device=device)
        assert r.totals.macs == 1600
    # Independent: the same attention with k/v repeated to 8 heads costs the same
    r2 = mm.profile(Attn(), (q, k.repeat_interleave(4, 1), v.repeat_interleave(4, 1)))
    assert r2.totals.macs == 1600


def test_lq_ne_lk_and_dv_ne_d():
    # q (1, 2, 3, 4), k (1, 2, 5, 4), v (1, 2, 5, 6): dense 2 x 15 = 30 scores x (4 + 6) = 300 MACs;
    # causal (top-left) keeps 1 + 2 + 3 = 6 pairs per head: 12 scores x 10 = 120 MACs
    q, k, v = qkv(b=1, h=2, lq=3, lk=5, d=4, dv=6)
    assert mm.profile(Attn(), (q, k, v)).totals.macs == 300
    for device in ("meta", "cpu"):
        assert mm.profile(Attn(is_causal=True), (q, k, v), device=device).totals.macs == 120
    # Lq > Lk: q 5, k 3: rows keep 1, 2, 3, 3, 3 = 12 pairs per head -> 24 scores x 10 = 240 MACs
    q, k, v = qkv(b=1, h=2, lq=5, lk=3, d=4, dv=6)
    assert mm.profile(Attn(is_causal=True), (q, k, v)).totals.macs == 240


def test_dropout_adds_two_flops_per_score():
    # dropout_p > 0 in training: + 3 FLOPs per score forward (288 scores: + 864), + 2 backward (+ 576)
    r = mm.profile(AttnParams(*qkv(), dropout_p=0.1), (), train=True)
    rows = {e.op: (e.macs, e.flops) for e in r.events if e.op.startswith("modelmeter.")}
    assert rows == {"modelmeter.sdpa": (DENSE[0], DENSE[1] + 864),
                    "modelmeter.sdpa_backward": (DENSE_BWD[0], DENSE_BWD[1] + 576)}


# -- closed form of the causal mask --------------------------------------------------------------


def _kept(lq, lk, diagonal):
    """Pairs kept by tril(ones(lq, lk), diagonal): key j visible to query i iff j - i <= diagonal."""
    i = torch.arange(lq).unsqueeze(1)
    j = torch.arange(lk).unsqueeze(0)
    return int((j - i <= diagonal).sum())


def test_causal_pairs_closed_form_against_the_mask():
    for lq, lk in ((1, 1), (5, 12), (12, 5), (7, 7)):  # the comparison above is tril's definition
        assert _kept(lq, lk, 0) == int(torch.ones(lq, lk).tril().sum())
        assert _kept(lq, lk, lk - lq) == int(torch.ones(lq, lk).tril(lk - lq).sum())
    for lq in range(1, 13):
        for lk in range(1, 13):
            top_left = _kept(lq, lk, 0)  # PyTorch's is_causal: tril(ones(Lq, Lk))
            bottom_right = _kept(lq, lk, lk - lq)
            assert causal_pairs(lq, lk) == top_left == sum(min(i + 1, lk) for i in range(lq))
            assert causal_pairs(lq, lk, bottom_right=True) == bottom_right


def test_causal_pairs_by_hand():
    assert causal_pairs(6, 6) == 21  # 6*7/2
    assert causal_pairs(6, 4) == 18  # 1+2+3+4+4+4
    assert causal_pairs(3, 5) == 6  # 1+2+3
    assert causal_pairs(3, 5, bottom_right=True) == 12  # 3+4+5
    assert causal_pairs(5, 3, bottom_right=True) == 6  # 0+0+1+2+3


# -- every aten kernel, on events built from the real schemas ------------------------------------


def _m(*shape):
    return torch.empty(*shape, device="meta")


def _bhld():
    return _m(2, 4, 6, 8), _m(2, 4, 6, 8), _m(2, 4, 6, 8)


def _blhd():
    return _m(2, 6, 4, 8), _m(2, 6, 4, 8), _m(2, 6, 4, 8)


FORWARD_KERNELS = {
    "aten._scaled_dot_product_flash_attention_for_cpu": lambda q, k, v, c: A._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, c),
    "aten._scaled_dot_product_flash_attention": lambda q, k, v, c: A._scaled_dot_product_flash_attention(q, k, v, 0.0, c),
    "aten._scaled_dot_product_efficient_attention": lambda q, k, v, c: A._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, c),
    "aten._scaled_dot_product_cudnn_attention": lambda q, k, v, c: A._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, c),
    "aten._scaled_dot_product_fused_attention_overrideable": lambda q, k, v, c: A._scaled_dot_product_fused_attention_overrideable(q, k, v, None, 0.0, c),
}


@pytest.mark.parametrize("op", sorted(FORWARD_KERNELS))
@pytest.mark.parametrize(("causal", "expected"), [(False, DENSE), (True, CAUSAL)])
def test_sdpa_kernels_forward(op, causal, expected):
    ev = only(events_of(FORWARD_KERNELS[op], *_bhld(), causal), op)
    c = cost(ev)
    assert (c.macs, c.flops) == expected


BACKWARD_KERNELS = {
    "aten._scaled_dot_product_flash_attention_for_cpu_backward": "aten._scaled_dot_product_flash_attention_for_cpu",
    "aten._scaled_dot_product_flash_attention_backward": "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_efficient_attention_backward": "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention_backward": "aten._scaled_dot_product_cudnn_attention",
    "aten._scaled_dot_product_fused_attention_overrideable_backward": "aten._scaled_dot_product_fused_attention_overrideable",
}


@pytest.mark.parametrize("op", sorted(BACKWARD_KERNELS))
@pytest.mark.parametrize(("causal", "expected"), [(False, DENSE_BWD), (True, CAUSAL_BWD)])
def test_sdpa_kernels_backward(op, causal, expected):
    q, k, v = (t.requires_grad_() for t in _bhld())
    fwd = FORWARD_KERNELS[BACKWARD_KERNELS[op]]
    ev = only(events_of(lambda: fwd(q, k, v, causal)[0].sum().backward()), op)
    c = cost(ev)
    assert (c.macs, c.flops) == expected


@pytest.mark.parametrize(("causal", "expected"), [(False, DENSE), (True, CAUSAL)])
def test_flash_and_efficient_kernels_proper(causal, expected):
    # the (B, L, H, d) kernels under the SDPA wrappers
    q, k, v = _blhd()
    ev = only(events_of(lambda: A._flash_attention_forward(q, k, v, None, None, 6, 6, 0.0, causal, False)),
              "aten._flash_attention_forward")
    assert (cost(ev).macs, cost(ev).flops) == expected
    ev = only(events_of(lambda: A._efficient_attention_forward(q, k, v, None, None, None, 6, 6, 0.0, int(causal))),
              "aten._efficient_attention_forward")
    assert (cost(ev).macs, cost(ev).flops) == expected
    # backward kernels (CUDA only): events from the schema
    for overload, args in (
        (A._flash_attention_backward.default, (q, q, k, v, q, _m(2, 4, 6), None, None, 6, 6, 0.0, causal, _m(2), _m(0))),
        (A._efficient_attention_backward.default,
         (q, q, k, v, None, q, None, None, 6, 6, _m(2, 4, 6), 0.0, _m(()), _m(()), int(causal), False)),
    ):
        c = cost(synthetic(overload, *args))
        assert (c.macs, c.flops) == (2 * expected[0], {False: DENSE_BWD, True: CAUSAL_BWD}[causal][1])


def test_efficient_bottom_right_mask():
    # custom_mask_type=2 (bottom-right) with Lq=3, Lk=5 keeps 3+4+5 = 12 pairs per head;
    # (1, 3, 2, 4) layout: 2 heads -> 24 scores x (4 + 4) = 192 MACs
    q, k = _m(1, 3, 2, 4), _m(1, 5, 2, 4)
    ev = only(events_of(lambda: A._efficient_attention_forward(q, k, k, None, None, None, 3, 5, 0.0, 2)),
              "aten._efficient_attention_forward")
    assert cost(ev).macs == 192
    # custom_mask_type=1 (top-left): 1+2+3 = 6 pairs -> 12 scores x 8 = 96
    ev = only(events_of(lambda: A._efficient_attention_forward(q, k, k, None, None, None, 3, 5, 0.0, 1)),
              "aten._efficient_attention_forward")
    assert cost(ev).macs == 96


def test_varlen_flash():
    # two packed sequences of 6 tokens: q/k/v (12, 2, 4), cum_seq [0, 6, 12], max 6.
    # dense: 2 sequences x 36 pairs x 2 heads = 144 scores x 8 = 1152 MACs
    # causal: 2 x 21 x 2 = 84 scores x 8 = 672 MACs
    q = _m(12, 2, 4)
    cu = torch.tensor([0, 6, 12], dtype=torch.int32, device="meta")
    for causal, macs in ((False, 1152), (True, 672)):
        c = cost(synthetic(A._flash_attention_forward.default, q, q, q, cu, cu, 6, 6, 0.0, causal, False))
        assert c.macs == macs


def test_quantized_flash_overload_reads_is_causal_by_name():
    # _scaled_dot_product_flash_attention.quantized has q/k/v_descale before dropout_p: is_causal is
    # argument 7, not 4. Reading by schema name gives the causal count.
    q, k, v = _bhld()
    d = _m(1)
    ev = synthetic(A._scaled_dot_product_flash_attention.quantized, q, k, v, d, d, d, 0.0, True)
    assert (cost(ev).macs, cost(ev).flops) == CAUSAL


def test_cudnn_attention_kernel_proper():
    q, k, v = _bhld()
    for causal, expected in ((False, DENSE), (True, CAUSAL)):
        ev = synthetic(A._cudnn_attention_forward.default, q, k, v, None, None, None, 6, 6, True, 0.0, causal)
        assert (cost(ev).macs, cost(ev).flops) == expected
        ev = synthetic(A._cudnn_attention_backward.default, q, q, k, v, q, _m(2, 4, 6), _m(()), _m(()), _m(0),
                       _m(0), _m(0), 6, 6, 0.0, causal)
        assert cost(ev).macs == 2 * expected[0]


def test_every_attention_rule_reads_arguments_that_exist():
    # Guard against argument-position drift: every aten attention op with a rule has the names the
    # rules read in its current schema.
    for op in registered_ops():
        if not op.startswith("aten.") or "attention" not in op:
            continue
        packet = getattr(torch.ops.aten, op.split(".")[1])
        for name in packet.overloads():
            args = {a.name for a in getattr(packet, name)._schema.arguments}
            if "out" in name:
                continue
            assert {"query", "key", "value"} <= args, (op, name)
            if "multi_head" not in op:
                assert "is_causal" in args or "custom_mask_type" in args, (op, name)
                assert "dropout_p" in args, (op, name)


def test_sdpa_rule_under_dense_settings():
    q, k, v = _bhld()
    ev = only(events_of(FORWARD_KERNELS["aten._scaled_dot_product_flash_attention_for_cpu"], q, k, v, True),
              "aten._scaled_dot_product_flash_attention_for_cpu")
    with using_settings(CountSettings(causal="dense")):
        assert cost(ev).macs == DENSE[0]
    assert cost(ev).macs == CAUSAL[0]


# -- nn.MultiheadAttention -----------------------------------------------------------------------


class MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)

    def forward(self, x):
        return self.mha(x, x, x, need_weights=False)[0]


# E = 16, 4 heads of 4, batch 2, length 5: in-projection 3 x 10 rows x 16 x 16 = 7680; scores
# 2 x 4 x 25 = 200, x (4 + 4) = 1600; out-projection 10 x 16 x 16 = 2560. Total 11840 MACs.
MHA_MACS = 11840


@pytest.mark.parametrize("need_weights", [False, True])
def test_mha_fast_path_counted_like_slow_path(need_weights):
    m = MHA().eval()
    x = torch.randn(2, 5, 16)
    # fast path: the capture turns it off (torch.backends.mha), so record it with a bare capture
    with torch.inference_mode():
        evs = events_of(lambda: m.mha(x, x, x, need_weights=need_weights))
    fast = only(evs, "aten._native_multi_head_attention")
    assert cost(fast).macs == MHA_MACS
    # slow path, through the full capture (meta and CPU)
    for device in ("meta", "cpu"):
        assert mm.profile(m, x, device=device).totals.macs == MHA_MACS
    # and the slow path with need_weights=True (explicit bmm + softmax instead of SDPA)
    with torch.no_grad():
        slow = events_of(lambda: torch.nn.functional.multi_head_attention_forward(
            x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), 16, 4, m.mha.in_proj_weight,
            m.mha.in_proj_bias, None, None, False, 0.0, m.mha.out_proj.weight, m.mha.out_proj.bias,
            training=False, need_weights=True))
    assert sum(cost(e).macs for e in slow) == MHA_MACS


def test_mha_fast_path_unbatched():
    # unbatched (5, 16): half the batched count, 11840 / 2 = 5920
    m = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    x = torch.randn(5, 16)
    with torch.inference_mode():
        evs = events_of(lambda: m(x, x, x, need_weights=False))
    ops = [e.op for e in evs]
    if any(o.startswith("aten._native_multi_head_attention") for o in ops):
        assert cost(only(evs, "aten._native_multi_head_attention")).macs == MHA_MACS // 2
    else:  # PyTorch takes the slow path for unbatched inputs
        assert sum(cost(e).macs for e in evs) == MHA_MACS // 2


# -- brute force over random shapes --------------------------------------------------------------


def brute_force_pairs(b, h, lq, lk, causal):
    count = 0
    for _b in range(b):
        for _h in range(h):  # query heads
            for i in range(lq):
                for j in range(lk):
                    if not causal or j <= i:  # tril(ones(lq, lk)): key j visible to query i
                        count += 1
    return count


@settings(max_examples=30, deadline=None)
@given(
    b=st.integers(1, 2), hkv=st.integers(1, 3), group=st.integers(1, 3), lq=st.integers(1, 7),
    lk=st.integers(1, 7), d=st.integers(1, 5), dv=st.integers(1, 5), causal=st.booleans(),
    dense=st.booleans(),
)
def test_attention_property(b, hkv, group, lq, lk, d, dv, causal, dense):
    h = hkv * group
    q, k, v = qkv(b=b, h=h, hkv=hkv, lq=lq, lk=lk, d=d, dv=dv)
    r = mm.profile(Attn(is_causal=causal, enable_gqa=group > 1), (q, k, v), causal="dense" if dense else "unmasked")
    scores = brute_force_pairs(b, h, lq, lk, causal and not dense)
    assert r.totals.macs == scores * (d + dv)
    assert r.totals.flops == 2 * scores * (d + dv) + 6 * scores


def test_rules_exist_for_every_sdpa_variant():
    for op in [*FORWARD_KERNELS, *BACKWARD_KERNELS, "aten._flash_attention_forward", "aten._flash_attention_backward",
               "aten._efficient_attention_forward", "aten._efficient_attention_backward",
               "aten._cudnn_attention_forward", "aten._cudnn_attention_backward", "aten._native_multi_head_attention",
               "modelmeter.sdpa", "modelmeter.sdpa_backward"]:
        assert rule_for(op + ".default") is not None or rule_for(op) is not None, op

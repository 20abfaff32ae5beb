"""Cross-checks against PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` (FCM).

FCM counts only matrix products (mm, addmm, bmm, baddbmm, convolution and its backward, the fused
SDPA kernels of CUDA), 2 FLOPs per MAC and no bias. So our ``matmul_flops`` (2 x MACs) must equal
FCM's total, phase by phase, where the two conventions meet. Where they differ by design (see
docs/counting.md, "Comparison with FlopCounterMode"):

* causal attention: FCM counts every pair (the math backend multiplies the full matrices); we count
  the unmasked pairs unless ``causal="dense"``;
* FCM's formula for the fused backward kernels (flash/efficient/cuDNN) adds the recomputation of
  ``Q.K^T`` (5 products instead of 4); we count the 4 products of the backward pass whatever the
  kernel does;
* FCM (torch 2.14) counts the weight gradient of a grouped convolution ``groups`` times (fixed
  upstream in pytorch/pytorch#183405);
* FCM has no formula for the CPU flash kernel (``_scaled_dot_product_flash_attention_for_cpu`` and
  its backward), so on CPU it misses attention unless the math backend is forced, as done here.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from test_costs_support import cost, events_of, only
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

import modelmeter as mm


def _main_output(out):
    for name in ("logits", "last_hidden_state"):
        if hasattr(out, name):
            return getattr(out, name)
    return out


def fcm_forward_backward(model, inputs):
    """FCM totals of one forward and of the backward of sum(output), math SDPA forced."""
    model.train()
    with sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fwd:
            out = model(**inputs) if isinstance(inputs, dict) else model(*inputs)
        loss = _main_output(out).sum()
        with FlopCounterMode(display=False) as bwd:
            loss.backward()
    return fwd.get_total_flops(), bwd.get_total_flops()


def ours(model, inputs, **kw):
    r = mm.profile(model, inputs, train=True, **kw)
    return 2 * r.totals.phases["forward"].macs, 2 * r.totals.phases["backward"].macs


def test_resnet18_forward_and_backward():
    # convolutions, their backward (no input gradient for the first one), and the fc addmm
    m = torchvision.models.resnet18()
    x = torch.randn(1, 3, 64, 64)
    expected = fcm_forward_backward(m, (x,))
    assert ours(m, x) == expected
    assert ours(m, x, device="cpu") == expected


def test_transposed_and_dilated_convs():
    m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=2, dilation=2), nn.ReLU(),
                      nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
                      nn.ConvTranspose2d(4, 2, 3, output_padding=1, stride=2))
    x = torch.randn(2, 4, 6, 6)
    assert ours(m, x) == fcm_forward_backward(m, (x,))


def test_grouped_conv_weight_gradient():
    # FCM (torch 2.14) counts the weight gradient of a grouped convolution as if groups were 1: its
    # channel-transposed formula loses the group division (fixed upstream in pytorch/pytorch#183405).
    # Each forward product has exactly one weight-gradient product, so ours is the forward's MACs.
    m = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=8))
    x = torch.randn(2, 4, 6, 6)
    fwd, bwd = ours(m, x)
    # conv 1: out (2, 8, 6, 6) = 576 x (4/2 x 9) = 10368 MACs; conv 2 (depthwise): out (2, 8, 4, 4)
    # = 256 x 9 = 2304 MACs. Forward 12672 MACs = 25344 FLOPs.
    assert fwd == 25344
    # backward: weight grads 10368 + 2304, input grad of conv 2 2304 (conv 1's input needs none)
    assert bwd == 2 * (10368 + 2304 + 2304)
    fcm_fwd, fcm_bwd = fcm_forward_backward(m, (x,))
    assert fcm_fwd == fwd
    # FCM: weight grads x groups: 10368 x 2 + 2304 x 8 -> (10368 + 7 x 2304) MACs more
    assert fcm_bwd - bwd == 2 * (10368 + 7 * 2304)


def test_encoder_layer_non_causal_attention():
    # nn.TransformerEncoderLayer: linear layers (addmm) and non-causal SDPA (math: bmm)
    m = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, batch_first=True, dropout=0.0)
    x = torch.randn(2, 7, 32)
    assert ours(m, x) == fcm_forward_backward(m, (x,))


def _gpt2():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg), {"input_ids": torch.randint(0, 1000, (2, 16))}


def test_gpt2_dense_equal_and_causal_discount():
    m, inputs = _gpt2()
    fcm = fcm_forward_backward(m, inputs)
    # FCM multiplies the full causal matrices: equal to our dense count
    assert ours(m, inputs, causal="dense") == fcm
    # unmasked (default): per layer, batch 2 x 4 heads x (16*16 - 16*17/2 = 120) masked pairs x
    # (d + dv = 32) = 30720 MACs, 2 layers -> 61440 MACs = 122880 FLOPs less forward, twice that backward
    fwd, bwd = ours(m, inputs)
    assert (fcm[0] - fwd, fcm[1] - bwd) == (122880, 245760)


def test_bert_non_causal_equal():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                                  vocab_size=1000, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)
    m = transformers.BertModel(cfg)
    inputs = {"input_ids": torch.randint(0, 1000, (2, 16))}
    assert ours(m, inputs) == fcm_forward_backward(m, inputs)


def test_llama_gqa_dense_equal():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=128, vocab_size=1000)
    m = transformers.LlamaForCausalLM(cfg)
    inputs = {"input_ids": torch.randint(0, 1000, (2, 16))}
    assert ours(m, inputs, causal="dense") == fcm_forward_backward(m, inputs)


# -- the fused-kernel formulas, shape by shape ---------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 2), hkv=st.integers(1, 2), group=st.integers(1, 3), lq=st.integers(1, 9),
       lk=st.integers(1, 9), d=st.integers(1, 8), dv=st.integers(1, 8))
def test_sdpa_kernel_formulas_against_fcm(b, hkv, group, lq, lk, d, dv):
    h = hkv * group
    q = torch.empty(b, h, lq, d, device="meta")
    k = torch.empty(b, hkv, lk, d, device="meta")
    v = torch.empty(b, hkv, lk, dv, device="meta")
    ev = only(events_of(torch.ops.aten._scaled_dot_product_efficient_attention, q, k, v, None, False),
              "aten._scaled_dot_product_efficient_attention")
    macs = cost(ev).macs
    assert 2 * macs == flop_counter.sdpa_flop_count(q.shape, k.shape, v.shape)
    # FCM's backward recomputes Q.K^T (b*h*lq*lk*d MACs) on top of our 4 products (2 x forward)
    recompute = b * h * lq * lk * d
    fcm_bwd = flop_counter.sdpa_backward_flop_count((b, h, lq, dv), q.shape, k.shape, v.shape)
    assert fcm_bwd == 2 * (2 * macs + recompute)


@settings(max_examples=25, deadline=None)
@given(cin=st.integers(1, 4), cout=st.integers(1, 4), k=st.integers(1, 3), side=st.integers(3, 7),
       stride=st.integers(1, 2), transposed=st.booleans())
def test_conv_formula_against_fcm(cin, cout, k, side, stride, transposed):
    x = torch.randn(1, cin, side, side)
    if transposed:
        m = nn.ConvTranspose2d(cin, cout, k, stride=stride, bias=False)
    else:
        m = nn.Conv2d(cin, cout, k, stride=stride, bias=False)
    ev = only(events_of(m, x), "aten.convolution")
    out = m(x)
    w = m.weight
    assert 2 * cost(ev).macs == flop_counter.conv_flop_count(x.shape, w.shape, out.shape, transposed=transposed)

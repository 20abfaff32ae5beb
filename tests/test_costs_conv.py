"""Convolution rules: hand-derived counts, and a brute-force reference over random shapes.

The reference is a naive convolution written as explicit loops over output positions (input
positions for a transposed convolution), channels and kernel taps. It computes the output values
(checked against PyTorch, so the loops really are the operation) and counts one MAC per product it
computes, padding taps included (the dense convention, see docs/counting.md).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_costs_support import cost_of_call, events_of
from torch import nn

import modelmeter as mm

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@pytest.mark.parametrize(
    ("module", "shape", "macs"),
    [
        # out (1, 8, 8, 8) = 512 elements x (3 in-channels x 9 taps) = 13824
        (nn.Conv2d(3, 8, 3, padding=1), (1, 3, 8, 8), 13824),
        # stride 2: out side floor((8 + 2 - 3) / 2) + 1 = 4: 8*4*4 = 128 x 27 = 3456
        (nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 8, 8), 3456),
        # dilation 2, padding 2: out side 8 + 4 - 2*2 = 8: same as the first, 13824
        (nn.Conv2d(3, 8, 3, dilation=2, padding=2), (1, 3, 8, 8), 13824),
        # groups 2: out (1, 8, 6, 6) = 288 x (4/2 in-channels x 9) = 5184
        (nn.Conv2d(4, 8, 3, groups=2, padding=1), (1, 4, 6, 6), 5184),
        # depthwise: out (1, 4, 6, 6) = 144 x (1 x 9) = 1296
        (nn.Conv2d(4, 4, 3, groups=4, padding=1), (1, 4, 6, 6), 1296),
        # 1d: out (2, 3, 8) = 48 x (2 x 3) = 288
        (nn.Conv1d(2, 3, 3), (2, 2, 10), 288),
        # 3d: out (1, 4, 3, 5, 5) = 300 x (2 x 1*3*3) = 5400
        (nn.Conv3d(2, 4, (1, 3, 3), padding=(0, 1, 1)), (1, 2, 3, 5, 5), 5400),
        # transposed: every input element (100) through C_out/g (2) x 9 taps = 1800
        (nn.ConvTranspose2d(4, 2, 3, stride=2), (1, 4, 5, 5), 1800),
        # transposed, grouped: 2*3*7 = 42 inputs x (6/3 = 2) x 4 taps = 336
        (nn.ConvTranspose1d(3, 6, 4, stride=2, padding=1, groups=3), (2, 3, 7), 336),
    ],
)
def test_conv_forward_by_hand(module, shape, macs):
    x = torch.randn(*shape)
    out_numel = module(x).numel()
    for device in ("meta", "cpu"):
        r = mm.profile(module, x, device=device)
        assert r.totals.macs == macs
        # + one FLOP per output element for the bias
        assert r.totals.flops == 2 * macs + out_numel


def test_conv_backward_by_hand():
    # Conv2d(3, 8, 3, padding=1) on (1, 3, 8, 8): forward 13824 MACs, output 512 elements.
    # convolution_backward with every gradient: input grad 13824 + weight grad 13824 = 27648 MACs,
    # FLOPs 2 * 27648 + 512 (bias grad: one add per grad-output element) = 55808
    x, w = torch.randn(1, 3, 8, 8), torch.randn(8, 3, 3, 3)
    g = torch.randn(1, 8, 8, 8)
    c = cost_of_call("aten.convolution_backward", torch.ops.aten.convolution_backward, g, x, w, [8], [1, 1],
                     [1, 1], [1, 1], False, [0, 0], 1, [True, True, True])
    assert (c.macs, c.flops) == (27648, 55808)
    # weight gradient only (the first layer of a network: the input needs no gradient): 13824
    c = cost_of_call("aten.convolution_backward", torch.ops.aten.convolution_backward, g, x, w, None, [1, 1],
                     [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])
    assert (c.macs, c.flops) == (13824, 27648)


def test_conv_training_step_phases():
    # In a training step the input needs no gradient: backward = weight grad (13824 MACs)
    # + bias grad (512 FLOPs); forward 13824 MACs + 512 bias FLOPs.
    r = mm.profile(nn.Conv2d(3, 8, 3, padding=1), torch.randn(1, 3, 8, 8), train=True)
    assert r.totals.phases["forward"].macs == 13824
    assert r.totals.phases["backward"].macs == 13824
    conv_bwd = [e for e in r.events if e.op.startswith("aten.convolution_backward")]
    assert [(e.macs, e.flops) for e in conv_bwd] == [(13824, 2 * 13824 + 512)]


def test_transposed_conv_backward():
    # ConvTranspose2d(4, 2, 3, stride=2) on (1, 4, 5, 5): forward 1800 MACs; the backward of a
    # transposed conv costs the same per gradient: input + weight = 3600 MACs
    m = nn.ConvTranspose2d(4, 2, 3, stride=2, bias=False)
    x = torch.randn(1, 4, 5, 5, requires_grad=True)
    y = m(x)
    evs = events_of(lambda: y.backward(torch.ones_like(y)))
    macs = sum(mm_cost.macs for mm_cost in (_c(e) for e in evs if e.op.startswith("aten.convolution_backward")))
    assert macs == 3600


def _c(ev):
    from modelmeter.costs import cost_of

    return cost_of(ev)[0]


# -- brute force ---------------------------------------------------------------------------------


def naive_conv(x, w, b, stride, padding, dilation, groups):
    """Direct convolution; returns (output, MACs counted one per product, padding taps included)."""
    n, cin = x.shape[:2]
    cout = w.shape[0]
    ks = w.shape[2:]
    rank = len(ks)
    ins = x.shape[2:]
    outs = [(ins[i] + 2 * padding[i] - dilation[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in range(rank)]
    out = np.zeros((n, cout, *outs))
    cpg, opg = cin // groups, cout // groups
    macs = 0
    for bi, co in itertools.product(range(n), range(cout)):
        g = co // opg
        for o in itertools.product(*[range(s) for s in outs]):
            acc = b[co] if b is not None else 0.0
            for ci in range(cpg):
                for k in itertools.product(*[range(s) for s in ks]):
                    macs += 1
                    pos = [o[i] * stride[i] - padding[i] + k[i] * dilation[i] for i in range(rank)]
                    if all(0 <= pos[i] < ins[i] for i in range(rank)):
                        acc += x[(bi, g * cpg + ci, *pos)] * w[(co, ci, *k)]
            out[(bi, co, *o)] = acc
    return out, macs


def naive_conv_transpose(x, w, b, stride, padding, dilation, groups, output_padding):
    """Scatter form: every input element times every tap, added where it lands in the output."""
    n, cin = x.shape[:2]
    opg = w.shape[1]
    cout = opg * groups
    ks = w.shape[2:]
    rank = len(ks)
    ins = x.shape[2:]
    outs = [(ins[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (ks[i] - 1) + output_padding[i] + 1
            for i in range(rank)]
    out = np.zeros((n, cout, *outs))
    if b is not None:
        out += np.asarray(b).reshape((1, cout) + (1,) * rank)
    ipg = cin // groups
    macs = 0
    for bi, ci in itertools.product(range(n), range(cin)):
        g = ci // ipg
        for i_pos in itertools.product(*[range(s) for s in ins]):
            for co in range(opg):
                for k in itertools.product(*[range(s) for s in ks]):
                    macs += 1
                    pos = [i_pos[d] * stride[d] - padding[d] + k[d] * dilation[d] for d in range(rank)]
                    if all(0 <= pos[d] < outs[d] for d in range(rank)):
                        out[(bi, g * opg + co, *pos)] += x[(bi, ci, *i_pos)] * w[(ci, co, *k)]
    return out, macs


@st.composite
def conv_cases(draw):
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    transposed = draw(st.booleans())
    side = 5 if rank < 3 else 3
    k = [draw(st.integers(1, 3 if rank < 3 else 2)) for _ in range(rank)]
    stride = [draw(st.integers(1, 2)) for _ in range(rank)]
    dilation = [draw(st.integers(1, 2)) for _ in range(rank)]
    ins = [draw(st.integers(1, side)) for _ in range(rank)]
    padding = [draw(st.integers(0, 1)) for _ in range(rank)]
    if transposed:
        # output_padding must be smaller than stride or dilation
        output_padding = [draw(st.integers(0, max(stride[i], dilation[i]) - 1)) for i in range(rank)]
        outs = [(ins[i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (k[i] - 1) + output_padding[i] + 1
                for i in range(rank)]
    else:
        output_padding = [0] * rank
        outs = [(ins[i] + 2 * padding[i] - dilation[i] * (k[i] - 1) - 1) // stride[i] + 1 for i in range(rank)]
    if min(outs) < 1:  # shapes PyTorch rejects
        padding = [0] * rank
        ins = [dilation[i] * (k[i] - 1) + 1 for i in range(rank)]
    return dict(rank=rank, groups=groups, cin=cin, cout=cout, transposed=transposed, k=k, stride=stride,
                dilation=dilation, ins=ins, padding=padding, output_padding=output_padding,
                batch=draw(st.integers(1, 2)), bias=draw(st.booleans()))


@settings(max_examples=30, deadline=None)
@given(conv_cases())
def test_conv_property_against_naive_loops(case):
    rank = case["rank"]
    common = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                  groups=case["groups"], bias=case["bias"])
    if case["transposed"]:
        m = CONVT[rank](case["cin"], case["cout"], case["k"], output_padding=case["output_padding"], **common)
    else:
        m = CONV[rank](case["cin"], case["cout"], case["k"], **common)
    m = m.double()
    x = torch.randn(case["batch"], case["cin"], *case["ins"], dtype=torch.float64)
    with torch.no_grad():
        ref = m(x).numpy()
    b = m.bias.detach().numpy() if m.bias is not None else None
    args = (x.numpy(), m.weight.detach().numpy(), b, case["stride"], case["padding"], case["dilation"], case["groups"])
    if case["transposed"]:
        out, macs = naive_conv_transpose(*args, case["output_padding"])
    else:
        out, macs = naive_conv(*args)
    np.testing.assert_allclose(out, ref, rtol=1e-9, atol=1e-9)  # the loops are the operation

    r = mm.profile(m, x)
    assert r.totals.macs == macs
    assert r.totals.flops == 2 * macs + (ref.size if case["bias"] else 0)

    # backward: the input of a training step needs no gradient -> weight gradient only = forward MACs
    rt = mm.profile(m, x, train=True)
    assert rt.totals.phases["backward"].macs == macs

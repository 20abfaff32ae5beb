"""Elementwise arithmetic, activations (forward and backward), reductions and losses.

Each count is (FLOPs per element from the table in costs/elementwise.py, docs/counting.md) x
(elements of the output); the per-element figure is restated in the comment of each case.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_costs_support import cost, cost_of_call, events_of, only, synthetic
from torch import nn

import modelmeter as mm
from modelmeter.costs import rule_for
from modelmeter.costs.elementwise import ELEMENTWISE_FLOPS
from modelmeter.costs.registry import op_exists

X = torch.randn(3, 4)  # 12 elements
Y = torch.randn(3, 4)


def flops(fn, *args, **kwargs):
    evs = events_of(fn, *args, **kwargs)
    return sum(cost(e).flops for e in evs), evs


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda: X + Y, 12),  # add: 1 x 12
        (lambda: torch.add(X, Y, alpha=2.0), 24),  # alpha != 1: multiply and add, 2 x 12
        (lambda: X - Y, 12),
        (lambda: X * Y, 12),
        (lambda: X / Y, 12),
        (lambda: X + torch.ones(4), 12),  # broadcast: counted per output element
        (lambda: torch.relu(X), 12),
        (lambda: torch.sigmoid(X), 48),  # 1 / (1 + exp(-x)): 4 x 12
        (lambda: torch.tanh(X), 12),
        (lambda: F.gelu(X), 60),  # erf form: 5 x 12
        (lambda: F.gelu(X, approximate="tanh"), 108),  # tanh form: 9 x 12
        (lambda: F.silu(X), 60),  # x * sigmoid(x): 5 x 12
        (lambda: F.hardswish(X), 60),  # x * hardsigmoid(x): 5 x 12
        (lambda: F.hardsigmoid(X), 48),  # add, max, min, div: 4 x 12
        (lambda: F.relu6(X), 24),  # hardtanh(0, 6): 2 x 12
        (lambda: F.leaky_relu(X), 24),  # compare, multiply
        (lambda: F.elu(X), 48),
        (lambda: F.softplus(X), 36),
        (lambda: F.mish(X), 60),
        (lambda: torch.clamp(X, 0, 1), 24),  # two bounds: 2 x 12
        (lambda: torch.clamp(X, min=0), 12),  # one bound
        (lambda: torch.where(X > 0, X, Y), 24),  # gt 12 + where 12
        (lambda: X.masked_fill(X > 0, 0.0), 24),  # gt 12 + masked_fill 12
        (lambda: torch.addcmul(X, X, Y), 24),  # self + t1 * t2: 2 x 12
        (lambda: torch.addcmul(X, X, Y, value=0.5), 36),  # + the scale: 3 x 12
        (lambda: torch.lerp(X, Y, 0.3), 36),  # sub, mul, add
        (lambda: X.pow(2), 12),
        (lambda: torch.rsqrt(X.abs()), 24),  # abs 12 + rsqrt 12
    ],
)
def test_elementwise_forward(fn, expected):
    assert flops(fn)[0] == expected


def test_inplace_variants_cost_the_same_and_move_read_plus_write():
    # relu_ on 12 float32 elements: 12 FLOPs, reads 48 B and writes 48 B
    x = torch.randn(3, 4)
    ev = only(events_of(torch.relu_, x), "aten.relu_")
    c = cost(ev)
    assert (c.flops, c.bytes_read, c.bytes_written) == (12, 48, 48)
    # sigmoid_ costs what sigmoid costs: 4 per element
    assert cost(only(events_of(torch.sigmoid_, x), "aten.sigmoid_")).flops == 48
    # every op in the table has its in-place variant registered with the same rule where it exists
    for name in ELEMENTWISE_FLOPS:
        if op_exists(f"aten.{name}_"):
            assert rule_for(f"aten.{name}_.default") is not None or rule_for(f"aten.{name}_") is not None, name


def test_binary_bytes():
    # (3, 4) + (4,): reads (12 + 4) x 4 = 64 B, writes 48 B
    x, b = torch.randn(3, 4), torch.randn(4)
    c = cost(only(events_of(torch.add, x, b), "aten.add"))
    assert (c.flops, c.bytes_read, c.bytes_written) == (12, 64, 48)


@pytest.mark.parametrize(
    ("act", "op", "per"),
    [
        (torch.relu, "aten.threshold_backward", 1),
        (torch.sigmoid, "aten.sigmoid_backward", 3),  # g * y * (1 - y)
        (torch.tanh, "aten.tanh_backward", 3),  # g * (1 - y^2)
        (F.silu, "aten.silu_backward", 9),
        (F.gelu, "aten.gelu_backward", 11),
        (lambda t: F.gelu(t, approximate="tanh"), "aten.gelu_backward", 18),
        (F.hardswish, "aten.hardswish_backward", 5),
        (F.leaky_relu, "aten.leaky_relu_backward", 2),
    ],
)
def test_activation_backward(act, op, per):
    x = torch.randn(3, 4, requires_grad=True)
    y = act(x)
    evs = events_of(lambda: y.backward(torch.ones_like(y)))
    assert cost(only(evs, op)).flops == per * 12


def test_dropout_decomposed_and_fused_agree():
    # F.dropout on CPU: bernoulli_ 1 + div_ 1 + mul 1 = 3 per element; native_dropout: 3 per element
    x = torch.randn(3, 4)
    assert flops(F.dropout, x, 0.5, training=True)[0] == 36
    ev = synthetic(torch.ops.aten.native_dropout.default, x, 0.5, True, outputs=(x, x > 0))
    assert cost(ev).flops == 36


# -- reductions and losses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (lambda: X.sum(), 12),
        (lambda: X.mean(dim=1), 15),  # 12 adds + 3 divides
        (lambda: X.var(dim=1), 48),  # 4 per element
        (lambda: X.amax(dim=0), 12),
        (lambda: X.argmax(), 12),
        (lambda: X.cumsum(0), 12),
        (lambda: torch.logsumexp(X, 1), 36),  # 3 per element
        (lambda: torch.linalg.vector_norm(X), 24),  # |x|^2 and accumulate
        (lambda: F.mse_loss(X, Y), 36),  # sub, square, accumulate
        (lambda: F.l1_loss(X, Y), 37),  # sub 12 + abs 12 + mean 13
        (lambda: F.binary_cross_entropy(torch.sigmoid(X), torch.rand(3, 4)), 48 + 96),  # sigmoid + 8 per element
        (lambda: F.smooth_l1_loss(X, Y), 60),  # 5 per element
    ],
)
def test_reductions_and_losses(fn, expected):
    assert flops(fn)[0] == expected


def test_cross_entropy():
    # logits (4, 5): log_softmax 20 x 5 = 100, nll_loss one per target = 4 -> 104
    logits, target = torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    assert flops(F.cross_entropy, logits, target)[0] == 104
    # backward: nll_loss_backward 4 + log_softmax backward 4 x 20 = 80 -> 84
    logits.requires_grad_()
    loss = F.cross_entropy(logits, target)
    evs = events_of(loss.backward)
    assert cost(only(evs, "aten.nll_loss_backward")).flops == 4
    assert cost(only(evs, "aten._log_softmax_backward_data")).flops == 80


def test_every_table_entry_is_a_real_op():
    for name in ELEMENTWISE_FLOPS:
        assert op_exists(f"aten.{name}"), name


def test_elementwise_model_meta_equals_cpu():
    m = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Dropout(0.1), nn.SiLU(), nn.Hardswish())
    x = torch.randn(4, 8)
    for train in (False, True):
        a = mm.profile(m, x, device="meta", train=train)
        b = mm.profile(m, x, device="cpu", train=train)
        assert (a.totals.macs, a.totals.flops, a.totals.bytes_read, a.totals.bytes_written) == (
            b.totals.macs, b.totals.flops, b.totals.bytes_read, b.totals.bytes_written)


def test_complex_arithmetic_counts_real_operations():
    # 4 complex64 values each: add 2, product 6 (complex x real 2), quotient 11 (complex / real 2),
    # abs 4 (two squares, a sum, a sqrt), exp 5; any other op twice its real cost (sigmoid 2 x 4 = 8);
    # a sum 2 per element; polar 4 (cos, sin, two products)
    a = torch.randn(4, dtype=torch.complex64)
    b = torch.randn(4, dtype=torch.complex64)
    r = torch.randn(4)
    assert cost_of_call("aten.add", torch.add, a, b).flops == 4 * 2
    assert cost_of_call("aten.sub", torch.sub, a, b, alpha=2).flops == 4 * (2 + 2)  # alpha scales both parts
    assert cost_of_call("aten.mul", torch.mul, a, b).flops == 4 * 6
    assert cost_of_call("aten.mul", torch.mul, a, r).flops == 4 * 2
    assert cost_of_call("aten.mul", torch.mul, a, 2.0).flops == 4 * 2
    assert cost_of_call("aten.div", torch.div, a, b).flops == 4 * 11
    assert cost_of_call("aten.div", torch.div, a, r).flops == 4 * 2
    assert cost_of_call("aten.div", torch.div, r, a).flops == 4 * 7
    assert cost_of_call("aten.abs", torch.abs, a).flops == 4 * 4
    assert cost_of_call("aten.exp", torch.exp, a).flops == 4 * 5
    assert cost_of_call("aten.sigmoid", torch.sigmoid, a).flops == 4 * 8
    assert cost_of_call("aten.sum", torch.sum, a).flops == 4 * 2
    assert cost_of_call("aten.polar", torch.polar, r.abs(), r).flops == 4 * 4
    # real tensors are unchanged: 1 per element
    assert cost_of_call("aten.mul", torch.mul, r, r).flops == 4


def test_is_all_true_is_a_reduction():
    # torch._is_all_true (what `torch._assert` and some masks use): one FLOP per element, as all()
    assert cost_of_call("aten._is_all_true", torch._is_all_true, torch.ones(6, dtype=torch.bool)).flops == 6

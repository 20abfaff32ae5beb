"""Optimizer steps: per-tensor (foreach=False), multi-tensor (_foreach_*) and fused kernels cost the
same, and the counts are derived by hand.

Parameters: p1 (3, 4) and p2 (5,): 17 elements, 2 tensors, float32.
"""

from __future__ import annotations

import pytest
import torch
from test_costs_support import cost, events_of, synthetic
from torch import nn

import modelmeter as mm

MODES = [dict(foreach=False), dict(foreach=True), dict(fused=True)]


def params():
    torch.manual_seed(0)
    ps = [torch.randn(3, 4, requires_grad=True), torch.randn(5, requires_grad=True)]
    for p in ps:
        p.grad = torch.randn_like(p)
    return ps


def step_flops(opt) -> int:
    evs = events_of(opt.step)
    for e in evs:
        cost(e)  # every op of a step is counted (asserts inside)
    return sum(cost(e).flops for e in evs)


@pytest.mark.parametrize("mode", MODES, ids=["single", "foreach", "fused"])
def test_adamw(mode):
    # per element: weight decay p * (1 - lr wd) 1, exp_avg lerp 3, exp_avg_sq mul 1 + addcmul with
    # value 3, sqrt 1, divide by bias correction 1, + eps 1, addcdiv with step 3 = 14 -> 14 x 17 = 238;
    # + the step counter of each tensor, 1 each -> 240
    assert step_flops(torch.optim.AdamW(params(), lr=1e-3, **mode)) == 240


@pytest.mark.parametrize("mode", MODES, ids=["single", "foreach", "fused"])
def test_adam_with_weight_decay(mode):
    # Adam adds weight decay to the gradient: g + wd * p, 2 per element: 13 + 2 = 15 x 17 + 2 = 257
    assert step_flops(torch.optim.Adam(params(), lr=1e-3, weight_decay=0.1, **mode)) == 257


@pytest.mark.parametrize("mode", MODES, ids=["single", "foreach", "fused"])
def test_sgd_momentum_two_steps(mode):
    ps = params()
    opt = torch.optim.SGD(ps, lr=0.1, momentum=0.9, **mode)
    # first step: the momentum buffer is a copy of the gradient; p.add_(buf, alpha=-lr) 2 x 17 = 34
    assert step_flops(opt) == 34
    # next steps: buf.mul_(0.9).add_(g) 2 + p.add_(buf, alpha=-lr) 2 = 4 x 17 = 68
    assert step_flops(opt) == 68


@pytest.mark.parametrize("mode", MODES, ids=["single", "foreach", "fused"])
def test_adagrad(mode):
    # sum.addcmul_(g, g) 2, sqrt(sum) + eps 2, p.addcdiv_(g, std, value=-clr) 3 = 7 x 17 = 119
    # + step counters 2 = 121
    assert step_flops(torch.optim.Adagrad(params(), lr=0.1, **mode)) == 121


def test_fused_adamw_bytes():
    # reads params, grads, exp_avgs, exp_avg_sqs (4 x 17 x 4 B = 272) + two 4-B steps = 280 B;
    # writes params, exp_avgs, exp_avg_sqs: 3 x 68 = 204 B (the gradients only with a grad_scale)
    ps = params()
    opt = torch.optim.AdamW(ps, lr=1e-3, fused=True)
    fused = [e for e in events_of(opt.step) if e.op.startswith("aten._fused_adamw_")]
    assert len(fused) == 1
    c = cost(fused[0])
    assert (c.flops, c.bytes_read, c.bytes_written) == (238, 280, 204)


def test_foreach_inplace_writes_self():
    # _foreach_add_(self, other, alpha=2): 2 x 17 FLOPs; reads self + other 136 B, writes self 68 B
    a, b = [p.detach() for p in params()], [p.detach() for p in params()]
    ev = [e for e in events_of(lambda: torch._foreach_add_(a, b, alpha=2.0)) if e.op.startswith("aten._foreach_add_")]
    c = cost(ev[0])
    assert (c.flops, c.bytes_read, c.bytes_written) == (34, 136, 68)


def test_foreach_norm_and_mm():
    ps = params()
    assert cost(synthetic(torch.ops.aten._foreach_norm.Scalar, ps, 2)).flops == 34  # 2 per element
    a, b = [torch.randn(2, 3), torch.randn(4, 5)], [torch.randn(3, 6), torch.randn(5, 1)]
    # 2*6*3 + 4*1*5 = 36 + 20 = 56 MACs
    assert cost(synthetic(torch.ops.aten._foreach_mm.default, a, b)).macs == 56


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-momentum", "adam", "adamw"])
def test_training_step_has_no_uncounted_ops(optimizer):
    # the profiler markers torch.optim wraps a step in (record_function's enter/exit ops) are annotations,
    # not recorded (the native recorder never sees them either); the step's own ops all have rules
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    r = mm.profile(m, torch.randn(5, 4), train=True, optimizer=optimizer)
    assert r.uncounted_ops == []
    assert not [e for e in r.events if e.op.startswith("profiler.")]
    assert any(e.phase == "optimizer" for e in r.events)


def test_adamw_through_profile():
    # Linear(4, 3) + Linear(3, 2): 15 + 8 = 23 parameters in 4 tensors:
    # 14 x 23 + 4 step counters = 326 optimizer FLOPs
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    r = mm.profile(m, torch.randn(5, 4), train=True, optimizer="adamw")
    assert r.totals.phases["optimizer"].flops == 326

"""Normalizations, softmax, pooling and interpolation rules, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_costs_support import cost, events_of, only, synthetic
from torch import nn

import modelmeter as mm
from modelmeter.costs.pool import _window_sum


def total_flops(evs):
    return sum(cost(e).flops for e in evs)


# -- normalizations ------------------------------------------------------------------------------


def test_layer_norm():
    # LayerNorm(8) on (2, 3, 8) = 48 elements: 5 (statistics and normalize) + 2 (affine) = 7 -> 336
    x = torch.randn(2, 3, 8)
    assert cost(only(events_of(nn.LayerNorm(8), x), "aten.native_layer_norm")).flops == 336
    # without affine: 5 x 48 = 240
    assert cost(only(events_of(nn.LayerNorm(8, elementwise_affine=False), x), "aten.native_layer_norm")).flops == 240
    # backward, all three gradients: (8 input + 2 weight + 1 bias) x 48 = 528
    ln = nn.LayerNorm(8)
    xg = x.clone().requires_grad_()
    y = ln(xg)
    assert cost(only(events_of(y.sum().backward), "aten.native_layer_norm_backward")).flops == 528


def test_batch_norm_eval_and_train():
    # BatchNorm2d(3) on (2, 3, 4, 4) = 96 elements
    x = torch.randn(2, 3, 4, 4)
    bn = nn.BatchNorm2d(3)
    # eval: normalize 2 + affine 2 = 4 -> 384 FLOPs; reads x 384 B + weight, bias, running mean,
    # running var 4 x 12 B = 432 B; writes the output 384 B
    bn.eval()
    c = cost(only(events_of(bn, x), "aten.native_batch_norm"))
    assert (c.flops, c.bytes_read, c.bytes_written) == (384, 432, 384)
    # train: statistics 3 + normalize 2 + affine 2 = 7 -> 672; writes output 384 + saved mean and
    # inverse std 24 + running mean and var 24 = 432 B
    bn.train()
    c = cost(only(events_of(bn, x), "aten.native_batch_norm"))
    assert (c.flops, c.bytes_read, c.bytes_written) == (672, 432, 432)


def test_batch_norm_backward():
    # training backward, all gradients: (8 + 2 + 1) x 96 = 1056
    bn = nn.BatchNorm2d(3)
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = bn(x)
    assert cost(only(events_of(y.sum().backward), "aten.native_batch_norm_backward")).flops == 1056
    # input does not need a gradient: weight 2 + bias 1 = 3 x 96 = 288
    y = bn(torch.randn(2, 3, 4, 4))
    assert cost(only(events_of(y.sum().backward), "aten.native_batch_norm_backward")).flops == 288


def test_batch_norm_bytes_meta_equals_cpu():
    # CPU returns empty saved statistics in eval where meta returns C-sized ones; counted the same
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    x = torch.randn(2, 3, 8, 8)
    for train in (False, True):
        a, b = (mm.profile(m, x, device=d, train=train) for d in ("meta", "cpu"))
        assert (a.totals.flops, a.totals.bytes_read, a.totals.bytes_written) == (
            b.totals.flops, b.totals.bytes_read, b.totals.bytes_written)


def test_group_and_instance_norm():
    # GroupNorm(2, 4) on (2, 4, 3, 3) = 72 elements x 7 = 504
    assert cost(only(events_of(nn.GroupNorm(2, 4), torch.randn(2, 4, 3, 3)), "aten.native_group_norm")).flops == 504
    # InstanceNorm2d(3) (no affine) on (2, 3, 4, 4): batch norm in training on (1, 6, 4, 4): 96 x 5 = 480
    assert total_flops(events_of(nn.InstanceNorm2d(3), torch.randn(2, 3, 4, 4))) == 480
    # with affine: 96 x 7 = 672
    assert total_flops(events_of(nn.InstanceNorm2d(3, affine=True), torch.randn(2, 3, 4, 4))) == 672


def test_rms_norm():
    # nn.RMSNorm(8) on (2, 3, 8) decomposes on CPU: pow 48, mean 48 + 6, add eps 6, rsqrt 6,
    # mul 48, mul weight 48 = 210 = 4 per element (192) + 3 per row (18)
    x = torch.randn(2, 3, 8)
    assert total_flops(events_of(nn.RMSNorm(8), x)) == 210
    # the fused kernel (CUDA): 4 per element, the same per-element cost -> 192
    ev = synthetic(torch.ops.aten._fused_rms_norm.default, x, [8], torch.ones(8), 1e-5,
                   outputs=(x, torch.empty(2, 3, 1)))
    assert cost(ev).flops == 192
    # fused backward, input and weight gradients: (6 + 2) x 48 = 384
    ev = synthetic(torch.ops.aten._fused_rms_norm_backward.default, x, x, [8], torch.empty(2, 3, 1),
                   torch.ones(8), [True, True], outputs=(x, torch.empty(8)))
    assert cost(ev).flops == 384
    # meta and CPU agree on a model with RMSNorm, forward and training step
    m = nn.Sequential(nn.Linear(8, 8), nn.RMSNorm(8))
    for train in (False, True):
        a, b = (mm.profile(m, x, device=d, train=train) for d in ("meta", "cpu"))
        assert (a.totals.flops, a.totals.bytes_read) == (b.totals.flops, b.totals.bytes_read)


def test_softmax_and_log_softmax():
    # (3, 5): 15 x 5 = 75 each; backward 4 x 15 = 60
    x = torch.randn(3, 5, requires_grad=True)
    assert cost(only(events_of(torch.softmax, x, -1), "aten._softmax")).flops == 75
    assert cost(only(events_of(torch.log_softmax, x, -1), "aten._log_softmax")).flops == 75
    y = torch.softmax(x, -1)
    assert cost(only(events_of(y.sum().backward), "aten._softmax_backward_data")).flops == 60


# -- pooling -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "shape", "expected"),
    [
        (lambda t: F.max_pool2d(t, 2), (1, 2, 4, 4), 32),  # out 8 x 4 taps
        (lambda t: F.avg_pool2d(t, 2), (1, 2, 4, 4), 40),  # out 8 x (4 adds + 1 divide)
        # kernel 3, stride 2, padding 1 on 5x5: out side (5 + 2 - 3) // 2 + 1 = 3 -> 9 x 9 taps
        (lambda t: F.max_pool2d(t, 3, stride=2, padding=1), (1, 1, 5, 5), 81),
        (lambda t: F.max_pool1d(t, 2), (1, 2, 8), 16),  # out 8 x 2
        (lambda t: F.avg_pool1d(t, 2), (1, 2, 8), 24),  # out 8 x 3
        (lambda t: F.max_pool3d(t, 2), (1, 1, 4, 4, 4), 64),  # out 8 x 8
        (lambda t: F.avg_pool3d(t, 2), (1, 1, 4, 4, 4), 72),  # out 8 x 9
        (lambda t: F.adaptive_avg_pool2d(t, 1), (1, 3, 5, 5), 78),  # 3 windows of 25 + 3 divides
        # 5 -> 2 rows: windows [0,3) [2,5) = 6; 7 -> 3 cols: [0,3) [2,5) [4,7) = 9: 54 (+ 6 divides)
        (lambda t: F.adaptive_avg_pool2d(t, (2, 3)), (1, 1, 5, 7), 60),
        (lambda t: F.adaptive_max_pool2d(t, (2, 3)), (1, 1, 5, 7), 54),
        # 8 -> 3: windows [0,3) [2,6) [5,8) = 10, 2 channels: 20 (+ 6 divides for avg)
        (lambda t: F.adaptive_max_pool1d(t, 3), (1, 2, 8), 20),
        (lambda t: F.adaptive_avg_pool1d(t, 3), (1, 2, 8), 26),
    ],
)
def test_pooling_forward(fn, shape, expected):
    assert total_flops(events_of(fn, torch.randn(*shape))) == expected


def test_adaptive_window_sum_matches_explicit_windows():
    for n in range(1, 12):
        for m in range(1, 12):
            explicit = sum(((i + 1) * n + m - 1) // m - (i * n) // m for i in range(m))
            assert _window_sum(n, m) == explicit
    # and matches PyTorch: adaptive avg pooling of ones with the window sums as divisors
    x = torch.ones(1, 1, 7)
    sizes = [((i + 1) * 7 + 2) // 3 - (i * 7) // 3 for i in range(3)]
    assert sum(sizes) == _window_sum(7, 3) == 9
    assert torch.allclose(F.adaptive_avg_pool1d(x, 3), torch.ones(1, 1, 3))


@pytest.mark.parametrize(
    ("fn", "op", "expected"),
    [
        (lambda t: F.max_pool2d(t, 2), "aten.max_pool2d_with_indices_backward", 8),  # one add per grad-out
        (lambda t: F.avg_pool2d(t, 2), "aten.avg_pool2d_backward", 32),  # 8 grad-out x 4 taps
        # 4 -> 3 per dim: windows [0,2) [1,3) [2,4) = 6; 6 x 6 x 2 channels = 72 + 18 divides
        (lambda t: F.adaptive_avg_pool2d(t, 3), "aten._adaptive_avg_pool2d_backward", 90),
        (lambda t: F.adaptive_max_pool2d(t, 1), "aten.adaptive_max_pool2d_backward", 2),
    ],
)
def test_pooling_backward(fn, op, expected):
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    y = fn(x)
    assert cost(only(events_of(y.sum().backward), op)).flops == expected


# -- interpolation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "shape", "size", "per"),
    [
        ("nearest", (1, 1, 2, 2), (4, 4), 0),
        ("bilinear", (1, 1, 2, 2), (4, 4), 7),  # 4 neighbours: 4 mul + 3 add
        ("bicubic", (1, 1, 2, 2), (4, 4), 31),  # 16 neighbours: 16 mul + 15 add
        ("linear", (1, 1, 3), (6,), 3),  # 2 neighbours
        ("trilinear", (1, 1, 2, 2, 2), (4, 4, 4), 15),  # 8 neighbours
    ],
)
def test_interpolation(mode, shape, size, per):
    x = torch.randn(*shape)
    kw = {} if mode == "nearest" else {"align_corners": False}
    evs = events_of(F.interpolate, x, size=size, mode=mode, **kw)
    out = 1
    for s in size:
        out *= s
    assert total_flops(evs) == per * out
    if mode == "nearest":  # bytes only: reads 4 x 4 B, writes 16 x 4 B
        c = cost(evs[-1])
        assert (c.bytes_read, c.bytes_written) == (16, 64)


def test_interpolation_backward_and_grid_sample():
    # bilinear backward: 7 per grad-output element, 16 -> 112
    x = torch.randn(1, 1, 2, 2, requires_grad=True)
    y = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
    assert cost(only(events_of(y.sum().backward), "aten.upsample_bilinear2d_backward")).flops == 112
    # grid_sample bilinear: out (1, 2, 3, 3) = 18 elements x 7 + 9 locations x 2 coords x 2 = 126 + 36 = 162
    inp, grid = torch.randn(1, 2, 4, 4), torch.rand(1, 3, 3, 2) * 2 - 1
    assert total_flops(events_of(F.grid_sample, inp, grid, align_corners=False)) == 162


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_weight_norm_forward_and_backward(device: str) -> None:
    # weight_norm(Linear(8, 4)): v is 4x8 (32 elements), g is 4x1 (4 norms, over dim 1)
    # forward: 3 * 32 + 2 * 4 = 104 FLOPs; reads v and g (128 + 16 B), writes w and the norms (128 + 16 B)
    # backward: 5 * 32 + 3 * 4 = 172 FLOPs
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(0)
    r = mm.profile(weight_norm(nn.Linear(8, 4)), torch.randn(3, 8), device=device, train=True)
    got = [(e.op, e.flops, e.bytes_read, e.bytes_written) for e in r.events if "weight_norm" in e.op]
    assert got[0] == ("aten._weight_norm_interface.default", 104, 144, 144)
    assert got[1][:2] == ("aten._weight_norm_interface_backward.default", 172)
    assert r.uncounted_ops == []

"""torchvision's own ops: deformable convolution and RoI Align, counted by hand."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import modelmeter as mm


class Deformable(nn.Module):
    def __init__(self, mask: bool) -> None:
        super().__init__()
        self.conv = torchvision.ops.DeformConv2d(4, 8, 3, padding=1)
        self.offset = nn.Conv2d(4, 2 * 9, 3, padding=1)
        self.mask = nn.Conv2d(4, 9, 3, padding=1) if mask else None

    def forward(self, x):
        return self.conv(x, self.offset(x), None if self.mask is None else self.mask(x).sigmoid())


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("mask", [False, True])
def test_deform_conv2d_forward_and_backward(device: str, mask: bool) -> None:
    # input 1x4x8x8, weight 8x4x3x3, output 1x8x8x8 (512 values):
    #   MACs 512 x 4*3*3 = 18,432; samples 64 positions x 4 channels x 9 taps = 2,304;
    #   sampling points: the offset's 18 x 64 values / 2 = 576
    # forward FLOPs: 2 x 18,432 + 2,304 x (7 + mask) + 576 x 8 + 512 (bias)
    #   = 36,864 + 16,128 (+ 2,304) + 4,608 + 512 = 58,112 (60,416 with the mask)
    # backward: 36,864 MACs; FLOPs 73,728 + 2,304 x per-sample + 576 x 16 + 512, per sample
    #   7 + 8 + 16 = 31 (no mask): 154,880; (7+1) + (8+1) + 16 + 9 = 42 (mask): 180,224
    torch.manual_seed(0)
    r = mm.profile(Deformable(mask), torch.randn(1, 4, 8, 8, requires_grad=True), device=device, train=True)
    got = [(e.op, e.macs, e.flops) for e in r.events if "deform" in e.op]
    assert got == [
        ("torchvision.deform_conv2d.default", 18_432, 60_416 if mask else 58_112),
        ("torchvision._deform_conv2d_backward.default", 36_864, 180_224 if mask else 154_880),
    ]
    assert r.uncounted_ops == []


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_roi_align_forward_and_backward(device: str) -> None:
    # 2 boxes, 4 channels, 2x2 bins, sampling_ratio 2 (4 samples per bin): 32 outputs;
    # 32 x 4 x 8 = 1,024 + (2 x 2 x 2 bins) x 4 samples x 8 = 256 + 32 averages = 1,312;
    # the backward the same 1,312
    class Pool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 6.0, 6.0]], device=x.device)
            return torchvision.ops.roi_align(self.conv(x), [boxes], output_size=2, sampling_ratio=2)

    r = mm.profile(Pool(), torch.randn(1, 4, 8, 8), device=device, train=True)
    assert [(e.op, e.flops) for e in r.events if "roi" in e.op] == [
        ("torchvision.roi_align.default", 1_312), ("torchvision._roi_align_backward.default", 1_312)]
    assert r.uncounted_ops == []

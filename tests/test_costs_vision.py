"""torchvision's own ops: deformable convolution and RoI Align, counted by hand."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import modelmeter as mm
from modelmeter.errors import ModelRunError


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


class _Suppress(nn.Module):
    """NMS of 4 fixed boxes whose scores come from the input."""

    def forward(self, scores):
        boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0], [0.5, 0.5, 4.0, 4.0], [10.0, 10.0, 12.0, 12.0],
                              [0.0, 0.0, 4.2, 4.0]], device=scores.device)
        return torchvision.ops.nms(boxes, scores, 0.5)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_nms(device: str) -> None:
    # 4 boxes: areas 4 x 3 = 12 FLOPs; pairs 4 x 3 / 2 = 6, x 13 = 78; total 90.
    # Bytes: boxes 4 x 4 x 4 B = 64 + scores 4 x 4 B = 16 read; the kept indices written, 8 B each:
    # boxes 0, 1 and 3 overlap (IoU 0.77, 0.95, 0.73 > 0.5), box 2 is apart: 2 kept, 16 B. On meta the
    # boxes and the scores (the input) have known values, so the kept count is the real one.
    r = mm.profile(_Suppress(), torch.tensor([0.9, 0.8, 0.7, 0.6]), device=device)
    [ev] = [e for e in r.events if e.op == "torchvision.nms.default"]
    assert (ev.macs, ev.flops, ev.bytes_read, ev.bytes_written) == (0, 90, 80, 16)
    assert r.uncounted_ops == [] and r.notes == []


def test_nms_of_unknown_boxes_on_meta_names_the_fix() -> None:
    class Detect(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 5)

        def forward(self, x):  # boxes and scores made by a layer: no values on meta
            out = self.head(x)
            return torchvision.ops.nms(out[:, :4], out[:, 4], 0.5)

    with pytest.raises(ModelRunError, match=r"^the forward pass failed in the model \(Detect\): "
                       r"torchvision::nms returns a number of elements that depends on tensor values.*--device cpu"):
        mm.profile(Detect(), torch.randn(6, 4))

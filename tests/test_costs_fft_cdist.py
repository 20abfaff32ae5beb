"""FFTs (5 N log2 N FLOPs per complex transform, 2.5 N log2 N per real one: FFTW's convention) and
pairwise distances (torch.cdist: a per-pair loop, or a matrix product for many rows)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modelmeter as mm


class SpectralFilter(nn.Module):
    """A Fourier-layer filter (as in FNO / FNet-style blocks): rfft, multiply, irfft."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 9, dtype=torch.cfloat))

    def forward(self, x):  # x: 2x8x16
        return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * self.w, n=16, dim=-1)


def _fft(r):
    return [(e.op, e.phase, e.macs, e.flops) for e in r.events if e.op.startswith("aten._fft")]


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_rfft_irfft_and_backward_by_hand(device: str) -> None:
    # rfft of 16 signals of N = 16 points: 16 x 2.5 x 16 x log2(16) = 16 x 160 = 2,560 FLOPs, unscaled
    # irfft back to 16 points: 2,560 + its 1/N scaling, 1 per real output value (2*8*16 = 256): 2,816
    # backward of irfft (an rfft scaled by 1/N): 2,560 + 2 per complex output (2*8*9 = 144): 2,848
    # (the input needs no gradient: the rfft's backward is not run)
    r = mm.profile(SpectralFilter(), torch.randn(2, 8, 16), device=device, train=True)
    assert _fft(r) == [
        ("aten._fft_r2c.default", "forward", 0, 2_560),
        ("aten._fft_c2r.default", "forward", 0, 2_816),
        ("aten._fft_r2c.default", "backward", 0, 2_848),
    ]
    assert r.uncounted_ops == []


def test_complex_2d_fft_orthonormal() -> None:
    # fft2 of a 3x4x8 complex tensor: 3 transforms of N = 4*8 = 32 points: 3 x 5 x 32 x 5 = 2,400,
    # + "ortho" scaling, 2 per complex output (96): 192 -> 2,592
    class F2(nn.Module):
        def forward(self, x):
            return torch.fft.fft2(x.to(torch.cfloat), norm="ortho").real

    r = mm.profile(F2(), torch.randn(3, 4, 8), device="cpu")
    assert _fft(r) == [("aten._fft_c2c.default", "forward", 0, 2_592)]
    assert _fft(mm.profile(F2(), torch.randn(3, 4, 8))) == _fft(r)


class Distances(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x, y):
        return torch.cdist(x, y, p=self.p)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_cdist_pairwise_and_as_a_matrix_product(device: str) -> None:
    y = torch.randn(2, 6, 4)
    # p=2, 5 rows: the pairwise kernel: 2 x 5 x 6 = 60 pairs x (3*4 + 1) = 780 FLOPs; its backward
    # (x needs a gradient) the same 780
    r = mm.profile(Distances(2.0), (torch.randn(2, 5, 4, requires_grad=True), y), device=device, train=True)
    got = [(e.op, e.macs, e.flops) for e in r.events if "cdist" in e.op]
    assert got == [("aten._cdist_forward.default", 0, 780), ("aten._cdist_backward.default", 0, 780)]
    # p=1: 60 x 3*4 = 720
    r = mm.profile(Distances(1.0), (torch.randn(2, 5, 4), y), device=device)
    assert [(e.op, e.flops) for e in r.events if "cdist" in e.op] == [("aten._cdist_forward.default", 720)]
    # p=2, 30 rows: a matrix product of rows extended by 2: 2 x 30 x 6 = 360 pairs x (4 + 2) = 2,160 MACs;
    # FLOPs 4,320 + norms and scaling 3 x 60 x 4 + 2 x 12 x 4 = 720 + 96 + clamp and sqrt 2 x 360 = 720:
    # 5,856
    r = mm.profile(Distances(2.0), (torch.randn(2, 30, 4), y), device=device)
    assert [(e.op, e.macs, e.flops) for e in r.events if "dist" in e.op] == [
        ("aten._euclidean_dist.default", 2_160, 5_856)]
    assert r.uncounted_ops == []

"""Fast Fourier transforms (``torch.fft``), counted by the convention of FFTW's benchmarks.

A complex transform of ``N`` points counts ``5 N log2(N)`` FLOPs, a real-input or real-output one
half of that, ``2.5 N log2(N)`` (FFTW, "benchFFT methodology": http://www.fftw.org/speed/method.html;
the radix-2 Cooley-Tukey count, used for every size). ``N`` is the product of the transformed
sizes (the real signal's for ``rfft``/``irfft``), and every other dimension is a batch of
independent transforms. A normalized transform (``norm="ortho"``, or the 1/N of the direction that
scales) adds one FLOP per real output value (two per complex one). No MACs: the transform is not a
matrix product. Results are rounded to the nearest integer. Bytes: the input read, the output
written (the default).

    torch.fft.rfft(x, dim=-1) on x of 2x8x16: 16 transforms of N = 16: 16 x 2.5 x 16 x 4 = 2,560 FLOPs.
"""

from __future__ import annotations

import math

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, register_rule


def _points(x: TensorMeta, dims: object) -> int:
    n = 1
    for d in dims if isinstance(dims, (list, tuple)) else [dims]:
        n *= int(x.shape[int(d) % x.ndim])
    return n


def _fft_flops(signal: TensorMeta, dims: object, per_point: float) -> int:
    n = _points(signal, dims)
    if n <= 1:
        return 0
    return round(per_point * n * math.log2(n) * (signal.numel // n))


def _scale(out: TensorMeta, normalization: object) -> int:
    if not normalization:
        return 0
    return out.numel * (2 if out.dtype.is_complex else 1)


@register_rule("aten._fft_r2c")
def fft_r2c(ev: OpEvent) -> Cost:
    # (self real, dim, normalization, onesided) -> complex
    a = arguments(ev)
    out = ev.outputs[0]
    return Cost(flops=_fft_flops(a["self"], a["dim"], 2.5) + _scale(out, a["normalization"]))


@register_rule("aten._fft_c2r")
def fft_c2r(ev: OpEvent) -> Cost:
    # (self complex, dim, normalization, last_dim_size) -> real; N from the real output's sizes
    a = arguments(ev)
    out = ev.outputs[0]
    return Cost(flops=_fft_flops(out, a["dim"], 2.5) + _scale(out, a["normalization"]))


@register_rule("aten._fft_c2c")
def fft_c2c(ev: OpEvent) -> Cost:
    # (self complex, dim, normalization, forward) -> complex
    a = arguments(ev)
    out = ev.outputs[0]
    return Cost(flops=_fft_flops(a["self"], a["dim"], 5.0) + _scale(out, a["normalization"]))

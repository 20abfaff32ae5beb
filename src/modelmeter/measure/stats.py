"""Statistics of timing samples: percentiles, spread, and the precision of the median.

Definitions (stated once, used everywhere):

* **Percentile** ``q`` of ``n`` sorted samples ``x[0..n-1]``: linear interpolation between closest
  ranks at position ``h = (n - 1) * q`` (numpy's default ``method="linear"``, also ``torch.quantile``):
  ``x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])``.
* **IQR** = p75 - p25; **relative IQR** = IQR / median (torch.utils.benchmark's ``meets_confidence``).
* **std** is the sample standard deviation (``n - 1`` in the denominator), 0 for a single sample.
* **Confidence interval of the median** (distribution-free, from order statistics): with
  ``w = z * sqrt(n) / 2`` (z = 1.959964 for 95%), the 1-based ranks ``r = floor(n/2 - w)`` and
  ``s = ceil(1 + n/2 + w)`` bound the median with about 95% coverage (normal approximation of the
  Binomial(n, 1/2) counts; Conover, *Practical Nonparametric Statistics*, 3rd ed., sec. 3.2). Defined
  when ``r >= 1`` and ``s <= n`` (n >= 8 at 95%); its exact binomial coverage is >= 95% for
  every n from 8 to 399 (checked in the tests).
* **Relative precision of the median** = half-width of that interval / median.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..report.benchmark import LatencyStats

Z95 = 1.959963984540054

#: relative IQR above which the spread is called wide (torch.utils.benchmark.utils.common
#: ``_IQR_WARN_THRESHOLD`` and ``_IQR_GROSS_WARN_THRESHOLD``)
IQR_WARN = 0.10
IQR_GROSS_WARN = 0.25


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Percentile ``q`` in [0, 1] of already sorted samples, linear interpolation (see module doc)."""
    n = len(sorted_samples)
    if n == 0:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], not {q}")
    h = (n - 1) * q
    lo = math.floor(h)
    if lo >= n - 1:
        return float(sorted_samples[-1])
    frac = h - lo
    a, b = float(sorted_samples[lo]), float(sorted_samples[lo + 1])
    return a + frac * (b - a)


def median_ci(sorted_samples: Sequence[float], z: float = Z95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median, or None when n is too small."""
    n = len(sorted_samples)
    if n == 0:
        return None
    w = z * math.sqrt(n) / 2.0
    r = math.floor(n / 2.0 - w)
    s = math.ceil(1.0 + n / 2.0 + w)
    if r < 1 or s > n:
        return None
    return float(sorted_samples[r - 1]), float(sorted_samples[s - 1])


def relative_precision(sorted_samples: Sequence[float], z: float = Z95) -> float | None:
    """Half-width of the median's confidence interval divided by the median (None if undefined)."""
    ci = median_ci(sorted_samples, z)
    if ci is None:
        return None
    med = percentile(sorted_samples, 0.5)
    if med <= 0:
        return math.inf
    return (ci[1] - ci[0]) / 2.0 / med


def summarize(samples_s: Sequence[float]) -> LatencyStats:
    """Mean, std, min, max, p25/p50/p75/p90/p99, IQR and the median's 95% interval of samples (seconds)."""
    xs = sorted(float(x) for x in samples_s)
    n = len(xs)
    if n == 0:
        raise ValueError("no samples to summarize")
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    p25, p50, p75 = percentile(xs, 0.25), percentile(xs, 0.5), percentile(xs, 0.75)
    ci = median_ci(xs)
    iqr = p75 - p25
    return LatencyStats(
        n=n,
        mean_s=mean,
        std_s=std,
        min_s=xs[0],
        max_s=xs[-1],
        p25_s=p25,
        p50_s=p50,
        p75_s=p75,
        p90_s=percentile(xs, 0.90),
        p99_s=percentile(xs, 0.99),
        iqr_s=iqr,
        rel_iqr=iqr / p50 if p50 > 0 else math.inf,
        median_ci95_low_s=ci[0] if ci else None,
        median_ci95_high_s=ci[1] if ci else None,
        rel_precision=((ci[1] - ci[0]) / 2.0 / p50 if p50 > 0 else math.inf) if ci else None,
    )


def spread_warnings(stats: LatencyStats) -> list[str]:
    """Warnings (data, never printed here) about a wide spread or too few samples for p99."""
    out: list[str] = []
    pct = stats.rel_iqr * 100
    if stats.n >= 4 and stats.rel_iqr >= IQR_GROSS_WARN:
        out.append(f"wide spread: IQR is {pct:.1f}% of the median; this suggests significant environmental "
                   f"influence (other load, frequency scaling, thermal throttling); rerun on a quiet machine")
    elif stats.n >= 4 and stats.rel_iqr >= IQR_WARN:
        out.append(f"wide spread: IQR is {pct:.1f}% of the median; this could indicate system fluctuation")
    if stats.n < 100:
        out.append(f"p99 from {stats.n} samples lies among the slowest few; it needs >> 100 samples "
                   f"(raise the time budget)")
    return out


__all__ = ["IQR_GROSS_WARN", "IQR_WARN", "Z95", "median_ci", "percentile", "relative_precision", "spread_warnings",
           "summarize"]

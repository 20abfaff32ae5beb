"""Statistics of timing samples: exact percentiles, spread, the median's confidence interval."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from modelmeter.measure.stats import median_ci, percentile, relative_precision, spread_warnings, summarize


def test_percentile_linear_interpolation_exact():
    xs = [10.0, 20.0, 30.0, 40.0]
    # h = (n - 1) q = 3 q
    assert percentile(xs, 0.0) == 10.0
    assert percentile(xs, 1.0) == 40.0
    assert percentile(xs, 0.25) == pytest.approx(17.5)  # h = 0.75: 10 + 0.75 * 10
    assert percentile(xs, 0.5) == pytest.approx(25.0)  # h = 1.5: 20 + 0.5 * 10
    assert percentile(xs, 0.9) == pytest.approx(37.0)  # h = 2.7: 30 + 0.7 * 10
    assert percentile(xs, 0.99) == pytest.approx(39.7)  # h = 2.97: 30 + 0.97 * 10
    assert percentile([5.0], 0.99) == 5.0


@pytest.mark.parametrize("n", [1, 2, 5, 17, 100])
def test_percentile_matches_torch_quantile_and_statistics(n):
    g = torch.Generator().manual_seed(n)
    xs = sorted(torch.rand(n, generator=g, dtype=torch.float64).tolist())
    t = torch.tensor(xs, dtype=torch.float64)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
        assert percentile(xs, q) == pytest.approx(torch.quantile(t, q).item(), rel=1e-12)
    if n >= 2:  # statistics' "inclusive" method is the same linear rule
        qs = statistics.quantiles(xs, n=4, method="inclusive")
        assert [percentile(xs, q) for q in (0.25, 0.5, 0.75)] == pytest.approx(qs, rel=1e-12)


def test_percentile_rejects_bad_arguments():
    with pytest.raises(ValueError):
        percentile([], 0.5)
    with pytest.raises(ValueError):
        percentile([1.0], 1.5)


def test_summarize_known_samples():
    s = summarize([3.0, 1.0, 100.0, 2.0, 4.0])  # order does not matter
    # sorted 1 2 3 4 100; mean = 110 / 5 = 22
    assert s.n == 5
    assert s.mean_s == pytest.approx(22.0)
    # squared deviations 441 + 400 + 361 + 324 + 6084 = 7610; / (n - 1) = 1902.5
    assert s.std_s == pytest.approx(math.sqrt(1902.5))
    assert (s.min_s, s.max_s) == (1.0, 100.0)
    assert (s.p25_s, s.p50_s, s.p75_s) == (2.0, 3.0, 4.0)  # h = 1, 2, 3 exactly
    assert s.p90_s == pytest.approx(61.6)  # h = 3.6: 4 + 0.6 * 96
    assert s.p99_s == pytest.approx(96.16)  # h = 3.96: 4 + 0.96 * 96
    assert s.iqr_s == pytest.approx(2.0)
    assert s.rel_iqr == pytest.approx(2.0 / 3.0)
    assert s.median_ci95_low_s is None and s.rel_precision is None  # n < 8


def test_summarize_single_sample_has_zero_std():
    s = summarize([0.5])
    assert s.std_s == 0.0 and s.p99_s == 0.5 and s.iqr_s == 0.0


def test_median_ci_ranks():
    # n = 100: w = 1.959964 * 10 / 2 = 9.80; r = floor(50 - 9.80) = 40, s = ceil(1 + 50 + 9.80) = 61
    xs = [float(i) for i in range(1, 101)]
    assert median_ci(xs) == (40.0, 61.0)
    # n = 9: w = 1.959964 * 3 / 2 = 2.94; r = floor(4.5 - 2.94) = 1, s = ceil(8.44) = 9
    assert median_ci([float(i) for i in range(1, 10)]) == (1.0, 9.0)
    # n = 8: w = 2.77; r = floor(1.23) = 1, s = ceil(7.77) = 8 -> defined; n = 7: r = floor(0.91) = 0 -> None
    assert median_ci([float(i) for i in range(1, 9)]) == (1.0, 8.0)
    assert median_ci([float(i) for i in range(1, 8)]) is None
    # relative precision, n = 100 of 1..100: half-width (61 - 40) / 2 = 10.5 over the median 50.5
    assert relative_precision(xs) == pytest.approx(10.5 / 50.5)


def test_median_ci_exact_binomial_coverage_is_at_least_95_percent():
    # independent check: P(x_(r) <= median <= x_(s)) = P(r <= K <= s - 1), K ~ Binomial(n, 1/2)
    for n in range(8, 400):
        lo, hi = median_ci([float(i) for i in range(1, n + 1)])
        cover = sum(math.comb(n, k) for k in range(int(lo), int(hi))) / 2**n
        assert cover >= 0.95, n


def test_spread_warnings_thresholds():
    tight = summarize([1.0] * 50 + [1.01] * 49)  # 99 samples, IQR 1% of the median
    assert not any("wide spread" in w for w in spread_warnings(tight))
    assert any("p99 from 99 samples" in w for w in spread_warnings(tight))
    # 40 copies each of 0.8 0.9 1.0 1.1 1.2 (n = 200): p25 at h = 49.75 -> 0.9, p75 at h = 149.25 -> 1.1;
    # IQR 0.2 = 20% of the median 1.0: above 10% (fluctuation), below 25% (gross)
    mid = summarize([0.8, 0.9, 1.0, 1.1, 1.2] * 40)
    assert mid.rel_iqr == pytest.approx(0.2)
    ws = spread_warnings(mid)
    assert any("system fluctuation" in w for w in ws) and not any("environmental" in w for w in ws)
    wide = summarize([0.5, 1.0, 1.5] * 100)  # IQR 1.0 = 100% of the median
    assert any("significant environmental influence" in w for w in spread_warnings(wide))
    assert spread_warnings(summarize([1.0] * 200)) == []

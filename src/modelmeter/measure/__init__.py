"""Real runs: the timing harness, throughput sweeps, training-step timing, MFU/HFU, energy meters and
the energy estimate. Results are the frozen dataclasses of :mod:`modelmeter.report.benchmark`.

Typical use::

    from modelmeter.measure import benchmark
    b = benchmark(model, x, batches=[1, 8, 32], device="cpu", energy=True)
    b.runs[0].timing.stats.p50_s, b.sweep.best_batch, b.runs[0].utilization.mfu
"""

from __future__ import annotations

from .bench import EnergySettings, benchmark, scale_batch, time_model
from .energy import EnergyMeter, NullMeter, NvmlEnergyMeter, NvmlPowerSampler, RaplMeter, detect_meter
from .estimate import carbon, estimate_energy
from .mfu import PeakSource, resolve_peak, utilization
from .stats import median_ci, percentile, summarize
from .timer import HarnessSettings, Progress, measure, num_threads

__all__ = [
    "EnergyMeter", "EnergySettings", "HarnessSettings", "NullMeter", "NvmlEnergyMeter", "NvmlPowerSampler",
    "PeakSource", "Progress", "RaplMeter", "benchmark", "carbon", "detect_meter", "estimate_energy", "measure",
    "median_ci", "num_threads", "percentile", "resolve_peak", "scale_batch", "summarize", "time_model",
    "utilization",
]

"""Roofline-predicted latency of a counted run, for the measured-vs-predicted table.

The prediction itself belongs to :mod:`modelmeter.analysis.roofline` (one source of truth for the
roofline formula); this module only adapts its result, and says why when it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..report.benchmark import PeakInfo


@dataclass(frozen=True)
class Prediction:
    unfused_s: float | None
    fused_s: float | None
    device: str | None
    note: str


def predict_latency(report: Any, peak: PeakInfo | None, entry: Any = None) -> Prediction:
    """Roofline time of ``report`` on the device ``entry`` (or the peak's figures) at the peak's dtype."""
    if peak is None or peak.flops_per_s is None:
        return Prediction(None, None, None, "no device peak known: no roofline prediction")
    try:
        from ..analysis import roofline  # noqa: F401
    except ImportError:
        return Prediction(None, None, None, "roofline analysis not available in this build")
    return Prediction(None, None, None, "roofline analysis not wired in yet")


__all__ = ["Prediction", "predict_latency"]

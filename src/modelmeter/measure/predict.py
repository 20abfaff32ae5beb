"""Roofline-predicted latency of a counted run, for the measured-vs-predicted table.

The prediction belongs to :func:`modelmeter.analysis.roofline.roofline` (one source of truth for the
roofline formula): pure roofline (efficiency 1.0, no per-kernel launch overhead), summed over the
ops of every phase of the run, plus the fused lower bound. This module adapts its result and says
why when it cannot make one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Prediction:
    unfused_s: float | None
    fused_s: float | None
    device: str | None
    note: str


def predict_latency(report: Any, entry: Any, dtype: str) -> Prediction:
    """Roofline time of ``report`` on the device entry ``entry`` at ``dtype`` (a catalog dtype key)."""
    if entry is None:
        return Prediction(None, None, None, "no device entry for a roofline (pass --hardware NAME, or calibrate)")
    try:
        from ..analysis.roofline import roofline
        from ..hardware.spec import DeviceSpec
    except ImportError:  # pragma: no cover - every full build has both
        return Prediction(None, None, None, "roofline analysis not available in this build")
    if not isinstance(entry, DeviceSpec):
        return Prediction(None, None, None, f"{getattr(entry, 'name', 'device')} is not a catalog entry: no roofline")
    from ..errors import ModelmeterError

    try:
        r = roofline(report, entry, dtype=dtype)
    except ModelmeterError as exc:
        return Prediction(None, None, entry.name, f"no roofline on {entry.name}: {exc}")
    return Prediction(r.predicted_s, r.fused_lower_bound_s, entry.name, "; ".join(r.notes))


__all__ = ["Prediction", "predict_latency"]

"""Capture: run a model once under a dispatch mode and record every aten op as an :class:`OpEvent`."""

from .events import OpEvent, TensorMeta, Trace
from .tracer import capture

__all__ = ["OpEvent", "TensorMeta", "Trace", "capture"]

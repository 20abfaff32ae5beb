"""modelmeter: every efficiency metric of a PyTorch model, counted, predicted and measured.

The public names are imported lazily (PEP 562) so that ``modelmeter --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "Benchmark", "Cost", "CountSettings", "ModelmeterError", "Report", "__version__", "bench", "profile", "register_rule",
]

_LAZY = {
    "profile": ("modelmeter.api", "profile"),
    "Cost": ("modelmeter.costs", "Cost"),
    "CountSettings": ("modelmeter.costs", "CountSettings"),
    "register_rule": ("modelmeter.costs", "register_rule"),
    "ModelmeterError": ("modelmeter.errors", "ModelmeterError"),
    "Report": ("modelmeter.report.model", "Report"),
    "bench": ("modelmeter.measure", "benchmark"),
    "Benchmark": ("modelmeter.report.benchmark", "Benchmark"),
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import profile
    from .costs import Cost, CountSettings, register_rule
    from .errors import ModelmeterError
    from .measure import benchmark as bench
    from .report.benchmark import Benchmark
    from .report.model import Report


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modelmeter' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

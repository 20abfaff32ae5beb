"""modelmeter: every efficiency metric of a PyTorch model, counted, predicted and measured."""

from __future__ import annotations

__version__ = "0.1.0"

from .api import profile
from .costs import Cost, CountSettings, register_rule
from .errors import ModelmeterError
from .report.model import Report

__all__ = ["Cost", "CountSettings", "ModelmeterError", "Report", "__version__", "profile", "register_rule"]

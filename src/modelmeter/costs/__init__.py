"""Cost rules: one file per op family, registered in :mod:`.registry`."""

from . import attention, conv, data, elementwise, fft, matmul, norm, optim, pool, reduction, rnn, vision  # noqa: F401 - register rules
from .registry import (
    Cost,
    CountSettings,
    cost_of,
    current_settings,
    default_bytes,
    register_no_arithmetic,
    register_rule,
    registered_ops,
    rule_for,
    unregister_rule,
    using_settings,
)

__all__ = [
    "Cost",
    "CountSettings",
    "cost_of",
    "current_settings",
    "default_bytes",
    "register_no_arithmetic",
    "register_rule",
    "registered_ops",
    "rule_for",
    "unregister_rule",
    "using_settings",
]

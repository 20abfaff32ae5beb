"""Report values to plain JSON data: one converter for every report type."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any


def plain(v: Any, skip: Sequence[str] = ()) -> Any:
    """``v`` as dicts, lists, numbers and strings. Dataclasses and named tuples become dicts (``skip``:
    fields of the top-level dataclass to leave out), non-finite floats become None (JSON has no
    inf/nan), objects with a ``to_dict`` give theirs."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.name not in skip}
    if isinstance(v, tuple) and hasattr(v, "_asdict"):  # a named tuple (EventRow)
        return {k: plain(x) for k, x in v._asdict().items()}
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "to_dict"):
        return v.to_dict()
    return v

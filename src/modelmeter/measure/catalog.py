"""The seam between measurement and the hardware catalog (:mod:`modelmeter.hardware`).

Measurement needs two things from the catalog: an entry by name, and the entry for the local device
(its calibrated entry when ``modelmeter hardware calibrate`` saved one, else the datasheet entry).
An entry only has to satisfy :class:`modelmeter.measure.mfu.PeakSource`: a ``name`` and
``peak_flops_per_s(dtype)``, optionally ``bandwidth_bytes_per_s``, ``tdp_w`` and ``source``.
:class:`Catalog` is that seam; tests pass their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import HardwareError


@dataclass
class StaticEntry:
    """A device entry given as numbers (tests, or a user's own figures). Units: FLOP/s, bytes/s, W."""

    name: str
    flops_per_s: dict[str, float] = field(default_factory=dict)
    bandwidth_bytes_per_s: float | None = None
    tdp_w: float | None = None
    source: str = ""

    def peak_flops_per_s(self, dtype: str) -> float | None:
        return self.flops_per_s.get(dtype)


class Catalog:
    """Entries by name plus the local device; ``local`` returns ``(entry or None, kind)``."""

    def __init__(self, entries: dict[str, Any] | None = None, local: dict[str, tuple[Any, str]] | None = None) -> None:
        self.entries = {k.lower(): v for k, v in (entries or {}).items()}
        self._local = local or {}

    def get(self, name: str) -> Any:
        try:
            return self.entries[name.lower()]
        except KeyError:
            known = ", ".join(sorted(self.entries)) or "none"
            raise HardwareError(f"unknown device {name!r}: known devices are {known}") from None

    def local(self, device: str) -> tuple[Any, str]:
        return self._local.get(str(device).split(":")[0], (None, "catalog"))


class PackageCatalog(Catalog):
    """Adapter over :mod:`modelmeter.hardware` (the package's data files, user files, calibrated entries).

    The catalog files are read once, when the adapter is built. ``get`` accepts every name
    ``modelmeter.hardware.resolve_devices`` does, ``local`` included.
    """

    def __init__(self, hw: Any) -> None:
        super().__init__()
        self.hw = hw
        self.cat = hw.load_catalog()

    def get(self, name: str) -> Any:
        if hasattr(self.hw, "resolve_devices"):
            return self.hw.resolve_devices(name, self.cat)[0]
        return self.cat.get(name)

    def local(self, device: str) -> tuple[Any, str]:
        entry = self.hw.local_device(device, self.cat)
        if entry is None:
            return None, "catalog"
        kind = "calibrated" if getattr(entry, "calibrated", False) else "catalog"
        return entry, kind


def default_catalog() -> Catalog | None:
    """The package's hardware catalog, or None when this build has none."""
    try:
        from .. import hardware as hw
    except ImportError:  # pragma: no cover - the subpackage always exists in a full build
        return None
    if not (hasattr(hw, "load_catalog") and hasattr(hw, "local_device")):
        return None
    return PackageCatalog(hw)


__all__ = ["Catalog", "PackageCatalog", "StaticEntry", "default_catalog"]

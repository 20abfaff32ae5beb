"""Hardware: device entries as data (peaks per dtype, dense and sparse apart, bandwidth, memory, caches,
power, each with sources and confidence), user override files, local detection and calibration.

>>> from modelmeter.hardware import get_device
>>> h100 = get_device("h100-sxm")
>>> h100.matrix_peak("bf16"), h100.memory_bandwidth_bytes_per_s, round(h100.ridge_flop_per_byte("bf16"))
(989400000000000.0, 3350000000000.0, 295)

Torch is imported only by detection of CUDA devices and by calibration.
"""

from __future__ import annotations

from .catalog import (
    ENV_VAR,
    HardwareCatalog,
    get_device,
    list_devices,
    load_catalog,
    read_hardware_file,
    save_entry,
    user_hardware_file,
)
from .spec import DTYPES, DeviceSpec, Source, dtype_key


def local_device(device: str = "cpu", catalog: HardwareCatalog | None = None) -> DeviceSpec | None:
    """The entry for a local torch device: its calibrated entry, else its datasheet entry, else None."""
    from .detect import local_device as _local

    return _local(device, catalog)


def resolve_devices(text: str | list[str], catalog: HardwareCatalog | None = None) -> list[DeviceSpec]:
    """'h100-sxm,a100-80gb,local' -> devices (``local`` = this machine, calibrated if it was)."""
    from .detect import resolve_devices as _resolve

    return _resolve(text, catalog)


__all__ = [
    "DTYPES",
    "ENV_VAR",
    "DeviceSpec",
    "HardwareCatalog",
    "Source",
    "dtype_key",
    "get_device",
    "list_devices",
    "load_catalog",
    "local_device",
    "read_hardware_file",
    "resolve_devices",
    "save_entry",
    "user_hardware_file",
]

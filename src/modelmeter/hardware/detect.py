"""Which devices this machine has, and which catalog entry (or calibrated entry) describes each.

The CPU is read from ``/proc/cpuinfo`` (model name, flags) and the scheduler affinity (usable cores);
CUDA GPUs from ``torch.cuda.get_device_properties``. A catalog entry is matched by its ``match``
patterns (case-insensitive regular expressions searched in the device name). An entry saved by
``modelmeter hardware calibrate`` for the same device name wins over the datasheet entry.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HardwareError
from .catalog import HardwareCatalog, load_catalog
from .spec import DeviceSpec

#: CPU flags that decide which fast paths exist for matrix products
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16", "amx_int8",
             "amx_tile", "neon", "asimd", "sve")


@dataclass(frozen=True)
class LocalDevice:
    """A device found on this machine. ``cores``: usable CPU cores, or the GPU's multiprocessors."""

    kind: str  # "cpu" or "cuda"
    index: int | None
    name: str
    cores: int | None
    memory_bytes: int | None
    flags: tuple[str, ...] = ()
    cache_bytes: dict[str, int] = field(default_factory=dict)
    catalog_name: str | None = None  # datasheet entry matched by name
    calibrated_name: str | None = None  # entry saved by calibrate for this device

    @property
    def torch_device(self) -> str:
        return "cpu" if self.kind == "cpu" else f"cuda:{self.index or 0}"

    @property
    def entry_name(self) -> str | None:
        """The entry predictions for this device should use: calibrated first, else the datasheet."""
        return self.calibrated_name or self.catalog_name


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _cache_size(text: str) -> int | None:
    m = re.match(r"\s*(\d+)\s*([KMG]?)", text)
    if not m:
        return None
    return int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)]


def cpu_model_name() -> str:
    """The CPU model name: ``/proc/cpuinfo`` 'model name' (x86) or 'Model'/'Hardware' (ARM), else platform."""
    info = _read("/proc/cpuinfo")
    for key in ("model name", "Model", "Hardware", "cpu model"):
        m = re.search(rf"^{key}\s*:\s*(.+)$", info, re.MULTILINE)
        if m and m.group(1).strip():
            return " ".join(m.group(1).split())
    return platform.processor() or platform.machine() or "unknown CPU"


def detect_cpu(catalog: HardwareCatalog | None = None) -> LocalDevice:
    info = _read("/proc/cpuinfo")
    flags_line = re.search(r"^(flags|Features)\s*:\s*(.+)$", info, re.MULTILINE)
    have = set(flags_line.group(2).split()) if flags_line else set()
    try:
        cores: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count()
    mem = None
    m = re.search(r"^MemTotal:\s*(\d+)\s*kB", _read("/proc/meminfo"), re.MULTILINE)
    if m:
        mem = int(m.group(1)) * 1024
    caches: dict[str, int] = {}
    for idx in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        level = _read(str(idx / "level")).strip()
        ctype = _read(str(idx / "type")).strip()
        size = _cache_size(_read(str(idx / "size")))
        if level and size and ctype != "Instruction":
            caches[f"L{level}{'d' if level == '1' else ''} per {'core' if level in ('1', '2') else 'complex'}"] = size
    name = cpu_model_name()
    cat = catalog if catalog is not None else load_catalog()
    dev = LocalDevice("cpu", None, name, cores, mem, tuple(f for f in CPU_FLAGS if f in have), caches)
    return _with_entries(dev, cat)


def detect_cuda(catalog: HardwareCatalog | None = None) -> list[LocalDevice]:
    """Every visible CUDA GPU (none without torch CUDA support)."""
    import torch

    if not torch.cuda.is_available():
        return []
    cat = catalog if catalog is not None else load_catalog()
    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        caches = {"L2": int(p.L2_cache_size)} if getattr(p, "L2_cache_size", 0) else {}
        dev = LocalDevice("cuda", i, str(p.name), int(p.multi_processor_count), int(p.total_memory), (), caches)
        out.append(_with_entries(dev, cat))
    return out


def detect_local(catalog: HardwareCatalog | None = None) -> list[LocalDevice]:
    """The CPU first, then each CUDA GPU."""
    cat = catalog if catalog is not None else load_catalog()
    return [detect_cpu(cat), *detect_cuda(cat)]


def match_catalog(name: str, catalog: HardwareCatalog) -> DeviceSpec | None:
    """The datasheet entry whose ``match`` pattern is found in ``name`` (longest pattern wins)."""
    best: tuple[int, DeviceSpec] | None = None
    for spec in catalog:
        if spec.calibrated:
            continue
        for pat in spec.match:
            if re.search(pat, name, re.IGNORECASE) and (best is None or len(pat) > best[0]):
                best = (len(pat), spec)
    return best[1] if best else None


def calibrated_entry(kind: str, name: str, catalog: HardwareCatalog) -> DeviceSpec | None:
    """The newest calibrated entry measured on a device of this kind and name."""
    found = [s for s in catalog if s.measured.get("device_kind") == kind and s.measured.get("device_name") == name]
    if not found:
        return None
    return max(found, key=lambda s: str(s.measured.get("date", "")))


def _with_entries(dev: LocalDevice, cat: HardwareCatalog) -> LocalDevice:
    spec = match_catalog(dev.name, cat)
    cal = calibrated_entry(dev.kind, dev.name, cat)
    return LocalDevice(dev.kind, dev.index, dev.name, dev.cores, dev.memory_bytes, dev.flags, dev.cache_bytes,
                       spec.name if spec else None, cal.name if cal else None)


def local_device(device: Any = "cpu", catalog: HardwareCatalog | None = None) -> DeviceSpec | None:
    """The entry for a local torch device ('cpu', 'cuda', 'cuda:1'): calibrated, else datasheet, else None."""
    cat = catalog if catalog is not None else load_catalog()
    text = str(device)
    kind = text.split(":")[0]
    if kind == "cpu":
        dev = detect_cpu(cat)
    elif kind == "cuda":
        index = int(text.split(":")[1]) if ":" in text else 0
        gpus = detect_cuda(cat)
        if index >= len(gpus):
            raise HardwareError(f"no CUDA device {text!r} on this machine ({len(gpus)} visible)")
        dev = gpus[index]
    else:
        return None
    return cat.get(dev.entry_name) if dev.entry_name else None


def describe(dev: LocalDevice) -> dict[str, Any]:
    return {
        "kind": dev.kind, "index": dev.index, "name": dev.name, "cores": dev.cores, "memory_bytes": dev.memory_bytes,
        "flags": list(dev.flags), "cache_bytes": dict(dev.cache_bytes), "catalog_name": dev.catalog_name,
        "calibrated_name": dev.calibrated_name,
    }


__all__ = ["LOCAL_NAMES", "LocalDevice", "cpu_model_name", "detect_cpu", "detect_cuda", "detect_local", "local_device",
           "match_catalog", "resolve_devices"]


LOCAL_NAMES = ("local", "local-cpu", "this-machine")


def resolve_devices(text: str | list[str], catalog: HardwareCatalog | None = None) -> list[DeviceSpec]:
    """Comma-separated names -> devices. ``local`` / ``local-cpu`` mean this machine's CPU and
    ``local-cuda[:i]`` its GPU: the calibrated entry if one was saved, else the matched datasheet entry."""
    cat = catalog if catalog is not None else load_catalog()

    def resolve(item: str) -> DeviceSpec:
        low = item.lower()
        if low in cat:
            return cat.get(low)
        if low in LOCAL_NAMES or low.startswith("local-cuda"):
            dev = "cpu" if low in LOCAL_NAMES else low.replace("local-", "", 1)
            found = local_device(dev, cat)
            if found is None:
                raise HardwareError(
                    f"this machine's {dev} is not in the catalog and has not been calibrated: run "
                    f"'modelmeter hardware calibrate' first"
                )
            return found
        return cat.get(item)

    return cat.parse_list(text, resolve)

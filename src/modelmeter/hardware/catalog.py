"""The hardware catalog: the package's data files, then the user's own files, merged by device name.

Load order (later wins):

1. the package data files ``modelmeter/hardware/data/*.json`` (every entry with its sources);
2. the user's file written by ``modelmeter hardware calibrate``: ``$XDG_CONFIG_HOME/modelmeter/hardware.json``
   (default ``~/.config/modelmeter/hardware.json``; ``hardware.toml`` is read too);
3. the files named in the environment variable ``MODELMETER_HARDWARE_FILE`` (several: separated by
   ``os.pathsep``);
4. the files passed explicitly (``--hardware-file``).

A user entry whose name (or alias) matches an existing device is merged onto it field by field (peak
tables key by key), so ``{"name": "h100-sxm", "memory_bandwidth_bytes_per_s": 3.0e12}`` changes one
figure. ``"replace": true`` replaces the entry wholesale; ``"extends": "h100-sxm"`` starts a new device
from a copy of another one.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import HardwareError
from .spec import SCHEMA, DeviceSpec, merge_entry

ENV_VAR = "MODELMETER_HARDWARE_FILE"


def user_config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "modelmeter"


def user_hardware_file() -> Path:
    """Where ``calibrate`` saves by default: ``~/.config/modelmeter/hardware.json``."""
    return user_config_dir() / "hardware.json"


def read_hardware_file(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The raw device entries and the source table of a JSON or TOML hardware file.

    Accepted forms: ``{"devices": [...], "sources": {...}}``, a bare list of entries, or one entry.
    """
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HardwareError(f"hardware file {str(p)!r} does not exist; check --hardware-file / ${ENV_VAR}") from None
    except OSError as exc:
        raise HardwareError(f"cannot read hardware file {str(p)!r}: {exc.strerror}") from None
    if p.suffix.lower() == ".toml":
        import tomllib

        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise HardwareError(f"hardware file {str(p)!r} is not valid TOML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise HardwareError(f"hardware file {str(p)!r} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    if isinstance(data, list):
        entries, sources = data, {}
    elif isinstance(data, Mapping) and "devices" in data:
        schema = data.get("schema", SCHEMA)
        if not str(schema).startswith("modelmeter.hardware/"):
            raise HardwareError(f"hardware file {str(p)!r} has schema {schema!r}, expected {SCHEMA!r}")
        entries, sources = data["devices"], dict(data.get("sources") or {})
    elif isinstance(data, Mapping) and "name" in data:
        entries, sources = [data], {}
    else:
        raise HardwareError(
            f"hardware file {str(p)!r} holds no devices: write {{\"devices\": [{{\"name\": ..., ...}}]}} (see docs/hardware.md)"
        )
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise HardwareError(f"hardware file {str(p)!r}: 'devices' must be a list of objects")
    return [dict(e) for e in entries], {str(k): str(v) for k, v in sources.items()}


@lru_cache(maxsize=1)
def _package_entries() -> tuple[tuple[str, dict[str, Any], tuple[tuple[str, str], ...]], ...]:
    out = []
    root = resources.files("modelmeter.hardware") / "data"
    for item in sorted(root.iterdir(), key=lambda x: x.name):
        if not item.name.endswith(".json"):
            continue
        data = json.loads(item.read_text(encoding="utf-8"))
        srcs = tuple((str(k), str(v)) for k, v in (data.get("sources") or {}).items())
        for e in data["devices"]:
            out.append((f"catalog:{item.name}", e, srcs))
    return tuple(out)


class HardwareCatalog:
    """Devices by name, with aliases. Build with :func:`load_catalog`."""

    def __init__(self) -> None:
        self._raw: dict[str, dict[str, Any]] = {}
        self._srcs: dict[str, dict[str, str]] = {}
        self._origin: dict[str, str] = {}
        self._specs: dict[str, DeviceSpec] = {}
        self.files: list[str] = []

    # -- building ---------------------------------------------------------------------------------
    def add(self, entry: Mapping[str, Any], *, sources: Mapping[str, str] | None = None, origin: str = "") -> DeviceSpec:
        """Add or merge one raw entry; returns the resulting device (validated)."""
        name = str(entry.get("name", "")).strip().lower()
        if not name:
            raise HardwareError(f"a device in {origin or 'a hardware file'} has no 'name'")
        existing = self.resolve_name(name, missing_ok=True)
        srcs = dict(sources or {})
        if entry.get("extends"):
            base_name = self.resolve_name(str(entry["extends"]))
            raw = merge_entry(self._raw[base_name], entry)
            raw["name"] = name
            # a derived device does not inherit the base's aliases or detection patterns
            raw["aliases"] = list(entry.get("aliases") or [])
            raw["match"] = list(entry.get("match") or [])
            srcs = {**self._srcs[base_name], **srcs}
            key = existing or name
        elif existing and not entry.get("replace"):
            raw = merge_entry(self._raw[existing], entry)
            raw["name"] = existing
            srcs = {**self._srcs[existing], **srcs}
            key = existing
        else:
            raw = {k: v for k, v in entry.items() if k != "replace"}
            key = existing or name
            raw["name"] = key
        spec = DeviceSpec.from_dict(raw, sources=srcs, origin=origin)
        self._raw[key] = raw
        self._srcs[key] = srcs
        self._origin[key] = origin
        self._specs[key] = spec
        return spec

    def add_file(self, path: str | os.PathLike[str]) -> list[DeviceSpec]:
        entries, sources = read_hardware_file(path)
        origin = f"user:{Path(path).expanduser()}"
        self.files.append(str(Path(path).expanduser()))
        return [self.add(e, sources=sources, origin=origin) for e in entries]

    # -- lookup -------------------------------------------------------------------------------------
    def resolve_name(self, name: str, *, missing_ok: bool = False) -> str:
        key = str(name).strip().lower()
        if key in self._specs:
            return key
        for k, spec in self._specs.items():
            if key in spec.aliases:
                return k
        if missing_ok:
            return ""
        close = difflib.get_close_matches(key, [*self._specs, *(a for s in self._specs.values() for a in s.aliases)], n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise HardwareError(
            f"unknown device {name!r}{hint}: see 'modelmeter hardware list', or add it in a hardware file "
            f"(--hardware-file or ${ENV_VAR})"
        )

    def get(self, name: str | DeviceSpec) -> DeviceSpec:
        if isinstance(name, DeviceSpec):
            return name
        return self._specs[self.resolve_name(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.resolve_name(name, missing_ok=True))

    def __iter__(self) -> Iterator[DeviceSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def names(self) -> list[str]:
        return list(self._specs)

    def raw(self, name: str) -> dict[str, Any]:
        return dict(self._raw[self.resolve_name(name)])

    def parse_list(self, text: str | Sequence[str],
                   resolve: Callable[[str], DeviceSpec] | None = None) -> list[DeviceSpec]:
        """'h100-sxm,a100-80gb' (or a list) -> devices, in order, without duplicates. ``resolve``
        turns one name into a device (default :meth:`get`)."""
        resolve = resolve or self.get
        items = text.split(",") if isinstance(text, str) else list(text)
        out: list[DeviceSpec] = []
        for item in items:
            item = str(item).strip()
            if not item:
                continue
            spec = resolve(item)
            if spec not in out:
                out.append(spec)
        if not out:
            raise HardwareError("no device named: pass --hardware NAME[,NAME...] (see 'modelmeter hardware list')")
        return out


def env_files() -> list[str]:
    raw = os.environ.get(ENV_VAR, "")
    return [p for p in raw.split(os.pathsep) if p.strip()]


def load_catalog(
    files: Iterable[str | os.PathLike[str]] = (),
    *,
    package: bool = True,
    user: bool = True,
    env: bool = True,
) -> HardwareCatalog:
    """The package catalog, then the user's calibrated file, then ``$MODELMETER_HARDWARE_FILE``, then ``files``."""
    cat = HardwareCatalog()
    if package:
        for origin, entry, srcs in _package_entries():
            cat.add(entry, sources=dict(srcs), origin=origin)
    if user:
        for name in ("hardware.json", "hardware.toml"):
            p = user_config_dir() / name
            if p.is_file():
                cat.add_file(p)
    if env:
        for f in env_files():
            cat.add_file(f)
    for f in files:
        cat.add_file(f)
    return cat


def get_device(name: str | DeviceSpec, files: Iterable[str | os.PathLike[str]] = ()) -> DeviceSpec:
    """One device by name or alias, from :func:`load_catalog` (package + user files)."""
    if isinstance(name, DeviceSpec):
        return name
    return load_catalog(files).get(name)


def list_devices(files: Iterable[str | os.PathLike[str]] = ()) -> list[DeviceSpec]:
    return list(load_catalog(files))


def save_entry(entry: Mapping[str, Any], path: str | os.PathLike[str] | None = None) -> Path:
    """Add or replace ``entry`` (by name) in a user hardware JSON file, keeping its other devices."""
    p = Path(path).expanduser() if path is not None else user_hardware_file()
    if p.suffix.lower() == ".toml":
        raise HardwareError(f"cannot write TOML ({p}): save calibrations to a .json file")
    devices: list[dict[str, Any]] = []
    sources: dict[str, str] = {}
    if p.is_file():
        devices, sources = read_hardware_file(p)
    name = str(entry["name"]).lower()
    devices = [d for d in devices if str(d.get("name", "")).lower() != name]
    devices.append(dict(entry))
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        payload = {"schema": SCHEMA, "sources": sources, "devices": devices}
        p.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise HardwareError(f"cannot write hardware file {str(p)!r}: {exc.strerror}; pass --output PATH") from None
    return p


__all__ = [
    "ENV_VAR",
    "HardwareCatalog",
    "get_device",
    "list_devices",
    "load_catalog",
    "read_hardware_file",
    "save_entry",
    "user_hardware_file",
]

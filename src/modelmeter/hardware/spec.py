"""The device entry: peak FLOP/s per dtype (dense and sparse apart), memory bandwidth and capacity,
caches and power, with the sources and the confidence of every figure.

Units are SI and carried by the field names: ``_flop_per_s`` (FLOP/s; integer dtypes: op/s),
``_bytes_per_s``, ``_bytes``, ``_w``, ``_s``. Three peak tables per device:

* ``matrix_flop_per_s``: dense peak of the matrix units (NVIDIA Tensor Cores, AMD Matrix Cores, TPU
  MXUs, Intel AMX) per dtype. Dense means without 2:4 structured sparsity.
* ``sparse_matrix_flop_per_s``: the vendor's "with sparsity" figure, stored apart and used only when
  sparsity is asked for.
* ``vector_flop_per_s``: the general-purpose units (CUDA cores, SIMD lanes, AVX-512), which run
  elementwise work and, where a dtype has no matrix path (fp32 on A100: TF32 is a separate choice), the
  matrix products too.

Dtype keys: fp64, fp32, tf32, fp16, bf16, fp8, fp6, fp4, int8, int4, plus ``fp16-acc16`` and
``fp8-acc16`` for GeForce parts, whose headline fp16 rate needs fp16 accumulation; their plain
``fp16``/``bf16``/``fp8`` keys hold the fp32-accumulate rate that PyTorch GEMMs use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import HardwareError

SCHEMA = "modelmeter.hardware/1"

DTYPES = ("fp64", "fp32", "tf32", "fp16", "bf16", "fp8", "fp6", "fp4", "int8", "int4", "fp16-acc16", "fp8-acc16")
KINDS = ("gpu", "tpu", "cpu", "npu", "other")
CONFIDENCE = ("vendor", "3p", "derived", "recalled", "measured", "user")
PEAK_TABLES = ("matrix_flop_per_s", "sparse_matrix_flop_per_s", "vector_flop_per_s")

_DTYPE_ALIASES = {
    "float64": "fp64", "double": "fp64", "fp64": "fp64",
    "float32": "fp32", "float": "fp32", "fp32": "fp32",
    "tf32": "tf32", "tensorfloat32": "tf32",
    "float16": "fp16", "half": "fp16", "fp16": "fp16",
    "bfloat16": "bf16", "bf16": "bf16",
    "fp8": "fp8", "float8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8", "float8_e4m3fnuz": "fp8",
    "float8_e5m2fnuz": "fp8", "fp6": "fp6", "fp4": "fp4", "float4_e2m1fn_x2": "fp4",
    "int8": "int8", "uint8": "int8", "int4": "int4", "uint4": "int4",
    "fp16-acc16": "fp16-acc16", "fp8-acc16": "fp8-acc16",
}

#: bytes per element of each dtype key (tf32 is stored as fp32)
ITEMSIZE = {"fp64": 8, "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "fp6": 0.75, "fp4": 0.5,
            "int8": 1, "int4": 0.5, "fp16-acc16": 2, "fp8-acc16": 1}


def dtype_key(dtype: Any) -> str:
    """'torch.bfloat16' / 'bfloat16' / 'bf16' -> 'bf16' (the catalog's names)."""
    key = str(dtype).lower().replace("torch.", "").strip()
    if key not in _DTYPE_ALIASES:
        raise HardwareError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES[:10])}")
    return _DTYPE_ALIASES[key]


@dataclass(frozen=True)
class Source:
    """Where figures come from: a short tag (e.g. 'H3') and the citation."""

    tag: str
    citation: str

    def __str__(self) -> str:
        return f"[{self.tag}] {self.citation}" if self.tag else self.citation


@dataclass(frozen=True)
class DeviceSpec:
    """One device. Every figure is SI; ``None`` or a missing dtype means unknown or unsupported."""

    name: str  # catalog key, lower-case, e.g. "h100-sxm"
    display_name: str
    vendor: str
    kind: str  # gpu | tpu | cpu | npu | other
    matrix_flop_per_s: dict[str, float]
    sparse_matrix_flop_per_s: dict[str, float]
    vector_flop_per_s: dict[str, float]
    memory_bandwidth_bytes_per_s: float
    memory_bytes: int | None = None
    memory_type: str | None = None
    cache_bytes: dict[str, int] = field(default_factory=dict)  # level -> bytes, e.g. {"L2": 52428800}
    tdp_w: float | None = None
    measured_power_w: dict[str, float] = field(default_factory=dict)  # e.g. TPU v4 min/mean/max
    launch_overhead_s: float | None = None  # per-kernel overhead, measured by calibrate
    aliases: tuple[str, ...] = ()
    match: tuple[str, ...] = ()  # case-insensitive substrings of a CUDA device name / CPU model name
    sources: tuple[Source, ...] = ()
    confidence: dict[str, str] = field(default_factory=dict)  # figure key ('*' = default) -> level
    caveats: tuple[str, ...] = ()
    origin: str = ""  # where the entry was read from
    measured: dict[str, Any] = field(default_factory=dict)  # calibration details

    # -- peaks ------------------------------------------------------------------------------------
    def matrix_peak(self, dtype: Any, *, sparse: bool = False) -> float:
        """FLOP/s of matrix products at ``dtype``: the matrix units, else the vector units.

        ``sparse=True`` takes the "with sparsity" figure where the vendor gives one (else the dense one).
        Raises :class:`HardwareError` when the device has no figure for the dtype.
        """
        key = dtype_key(dtype)
        if sparse and key in self.sparse_matrix_flop_per_s:
            return self.sparse_matrix_flop_per_s[key]
        if key in self.matrix_flop_per_s:
            return self.matrix_flop_per_s[key]
        if key in self.vector_flop_per_s:
            return self.vector_flop_per_s[key]
        raise HardwareError(
            f"{self.name} has no {key} peak (known: {', '.join(self.dtypes()) or 'none'}); choose another "
            f"--dtype or add the figure in a hardware file (--hardware-file)"
        )

    def vector_peak(self, dtype: Any) -> float:
        """FLOP/s of non-matrix (elementwise, reduction, normalization) work at ``dtype``.

        The vector units' figure for the dtype; else their fp32 figure (16-bit vector rates are not in
        the datasheets we cite, and are at least the fp32 rate on every GPU listed, so this ceiling is
        conservative); else the matrix figure (TPUs publish no vector rate: optimistic).
        """
        key = dtype_key(dtype)
        for k in (key, "fp32"):
            if k in self.vector_flop_per_s:
                return self.vector_flop_per_s[k]
        return self.matrix_peak(key)

    def peak_flops_per_s(self, dtype: Any) -> float | None:
        """Dense matrix peak at ``dtype`` or None (the interface :mod:`modelmeter.measure` reads)."""
        try:
            return self.matrix_peak(dtype)
        except HardwareError:
            return None

    def ridge_flop_per_byte(self, dtype: Any, *, sparse: bool = False) -> float:
        """Arithmetic intensity where the roofline turns: matrix peak / memory bandwidth."""
        return self.matrix_peak(dtype, sparse=sparse) / self.memory_bandwidth_bytes_per_s

    def dtypes(self) -> list[str]:
        have = set(self.matrix_flop_per_s) | set(self.vector_flop_per_s)
        return [d for d in DTYPES if d in have]

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.memory_bandwidth_bytes_per_s

    @property
    def calibrated(self) -> bool:
        return bool(self.measured)

    @property
    def source(self) -> str:
        return "; ".join(str(s) for s in self.sources)

    def confidence_of(self, figure: str) -> str:
        """Confidence of a figure key such as ``matrix_flop_per_s.bf16`` or ``memory_bytes``."""
        if figure in self.confidence:
            return self.confidence[figure]
        head = figure.split(".", 1)[0]
        return self.confidence.get(head, self.confidence.get("*", "vendor"))

    def figures(self) -> list[tuple[str, float]]:
        """Every numeric figure as (key, value), keys as used in ``confidence``."""
        out: list[tuple[str, float]] = []
        for table in PEAK_TABLES:
            for d in DTYPES:
                v = getattr(self, table).get(d)
                if v is not None:
                    out.append((f"{table}.{d}", v))
        out.append(("memory_bandwidth_bytes_per_s", self.memory_bandwidth_bytes_per_s))
        for name in ("memory_bytes", "tdp_w", "launch_overhead_s"):
            v = getattr(self, name)
            if v is not None:
                out.append((name, v))
        for level, v in self.cache_bytes.items():
            out.append((f"cache_bytes.{level}", v))
        for k, v in self.measured_power_w.items():
            out.append((f"measured_power_w.{k}", v))
        return out

    # -- serialization ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "sources":
                v = [{"tag": s.tag, "citation": s.citation} for s in v]
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = dict(v)
            d[f.name] = v
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, sources: Mapping[str, str] | None = None, origin: str = "") -> DeviceSpec:
        """Build and validate an entry from its JSON/TOML form (see ``docs/hardware.md``).

        ``sources`` maps the tags of a data file to citations; an entry's ``sources`` list may hold tags,
        plain citation strings or ``{"tag", "citation"}`` objects.
        """
        where = f"device {d.get('name', '?')!r}" + (f" in {origin}" if origin else "")
        known = {f.name for f in dataclasses.fields(cls)} | {"extends", "replace"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HardwareError(f"{where}: unknown field(s) {', '.join(unknown)}; see docs/hardware.md for the fields")
        name = d.get("name")
        if not isinstance(name, str) or not name.strip():
            raise HardwareError(f"{where}: every device needs a 'name'")
        tables = {}
        for table in PEAK_TABLES:
            raw = d.get(table) or {}
            if not isinstance(raw, Mapping):
                raise HardwareError(f"{where}: '{table}' must map dtypes to FLOP/s, e.g. {{\"bf16\": 989.4e12}}")
            tables[table] = {dtype_key(k): _positive(v, f"{where}: {table}.{k}") for k, v in raw.items() if v is not None}
        if not (tables["matrix_flop_per_s"] or tables["vector_flop_per_s"]):
            raise HardwareError(f"{where}: give at least one peak in matrix_flop_per_s or vector_flop_per_s")
        bw = d.get("memory_bandwidth_bytes_per_s")
        if bw is None:
            raise HardwareError(f"{where}: 'memory_bandwidth_bytes_per_s' is required (bytes/s, e.g. 3.35e12)")
        kind = str(d.get("kind", "other"))
        if kind not in KINDS:
            raise HardwareError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
        conf = {str(k): str(v) for k, v in (d.get("confidence") or {}).items()}
        for k, v in conf.items():
            if v not in CONFIDENCE:
                raise HardwareError(f"{where}: confidence {k}={v!r} is not one of {', '.join(CONFIDENCE)}")
        srcs = []
        for s in d.get("sources") or []:
            if isinstance(s, Mapping):
                srcs.append(Source(str(s.get("tag", "")), str(s.get("citation", ""))))
            elif sources and s in sources:
                srcs.append(Source(str(s), sources[s]))
            else:
                srcs.append(Source("", str(s)))
        caches = {str(k): int(_positive(v, f"{where}: cache_bytes.{k}")) for k, v in (d.get("cache_bytes") or {}).items()
                  if v is not None}
        power = {str(k): _positive(v, f"{where}: measured_power_w.{k}") for k, v in (d.get("measured_power_w") or {}).items()}
        mem = d.get("memory_bytes")
        return cls(
            name=name.strip().lower(),
            display_name=str(d.get("display_name") or name),
            vendor=str(d.get("vendor", "")),
            kind=kind,
            matrix_flop_per_s=tables["matrix_flop_per_s"],
            sparse_matrix_flop_per_s=tables["sparse_matrix_flop_per_s"],
            vector_flop_per_s=tables["vector_flop_per_s"],
            memory_bandwidth_bytes_per_s=_positive(bw, f"{where}: memory_bandwidth_bytes_per_s"),
            memory_bytes=None if mem is None else int(_positive(mem, f"{where}: memory_bytes")),
            memory_type=d.get("memory_type"),
            cache_bytes=caches,
            tdp_w=None if d.get("tdp_w") is None else _positive(d["tdp_w"], f"{where}: tdp_w"),
            measured_power_w=power,
            launch_overhead_s=None if d.get("launch_overhead_s") is None
            else _nonnegative(d["launch_overhead_s"], f"{where}: launch_overhead_s"),
            aliases=tuple(str(a).lower() for a in d.get("aliases") or ()),
            match=tuple(str(m) for m in d.get("match") or ()),
            sources=tuple(srcs),
            confidence=conf,
            caveats=tuple(str(c) for c in d.get("caveats") or ()),
            origin=origin or str(d.get("origin", "")),
            measured=dict(d.get("measured") or {}),
        )


def format_memory(nbytes: float | None) -> str:
    """Capacity as published: '80 GB' for decimal sizes, '192 GiB' for binary ones."""
    if not nbytes:
        return "-"
    if nbytes % (1 << 30) == 0:
        return f"{nbytes / (1 << 30):g} GiB"
    if nbytes >= 1e9:
        return f"{nbytes / 1e9:.3g} GB"
    return f"{nbytes / 1e6:.3g} MB"


def _positive(v: Any, what: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise HardwareError(f"{what} must be a number in SI units, not {v!r}") from None
    if not x > 0 or x != x or x == float("inf"):
        raise HardwareError(f"{what} must be a positive number, not {v!r}")
    return x


def _nonnegative(v: Any, what: str) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise HardwareError(f"{what} must be a number in SI units, not {v!r}") from None
    if not x >= 0 or x == float("inf"):
        raise HardwareError(f"{what} must be a number >= 0, not {v!r}")
    return x


def merge_entry(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """An override's fields replace the base's; its peak, cache and confidence tables merge key by key."""
    out = dict(base)
    for k, v in override.items():
        if k in ("extends", "replace"):
            continue
        if k in (*PEAK_TABLES, "cache_bytes", "confidence", "measured_power_w") and isinstance(v, Mapping) \
                and isinstance(out.get(k), Mapping):
            merged = dict(out[k])
            merged.update(v)
            out[k] = {kk: vv for kk, vv in merged.items() if vv is not None}
        else:
            out[k] = v
    return out


def spec_names(specs: Iterable[DeviceSpec]) -> list[str]:
    return [s.name for s in specs]


__all__ = ["CONFIDENCE", "DTYPES", "ITEMSIZE", "KINDS", "SCHEMA", "DeviceSpec", "Source", "dtype_key", "format_memory",
           "merge_entry"]

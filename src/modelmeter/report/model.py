"""The Report value: frozen dataclasses, schema-versioned, JSON/CSV derived from it losslessly."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .jsonable import plain

SCHEMA = "modelmeter.report/1"


def rows(cls: type, values: list[tuple[Any, ...]]) -> list[Any]:
    """``[cls(*v) for v in values]`` for a frozen dataclass without slots, twice as fast.

    The generated ``__init__`` of a frozen dataclass sets each field with ``object.__setattr__``; a
    report builds one row per module and per event, so this fills each new instance's ``__dict__`` in
    one call instead. The instances are the same (``tests/test_report.py`` checks equality with the
    constructor and that they stay frozen).
    """
    names = tuple(cls.__dataclass_fields__)
    new = object.__new__
    out = []
    append = out.append
    for v in values:
        row = new(cls)
        row.__dict__.update(zip(names, v))
        append(row)
    return out


@dataclass(frozen=True)
class Provenance:
    modelmeter_version: str
    torch_version: str
    python_version: str
    model: str
    mode: str  # "meta" (no weights) or "real"
    device: str
    dtype: str
    train: bool
    optimizer: str | None
    input_shapes: list[list[int]]
    input_dtypes: list[str]
    conventions: dict[str, str]
    # how the ops were recorded: "dispatch-mode" (a Python TorchDispatchMode) or "native" (the C++
    # recorder of a real-tensor inference run on CPU); the same events either way
    capture: str = "dispatch-mode"


@dataclass(frozen=True)
class ParamSizes:
    """Bytes of the parameters at their own dtype and what-if at other precisions.

    int8/int4 add one fp16 scale per group of ``group_size`` weights of each tensor (symmetric
    quantization, no zero point); int4 packs two weights per byte.
    """

    own_bytes: int
    fp32_bytes: int
    fp16_bytes: int
    bf16_bytes: int
    fp8_bytes: int
    int8_bytes: int
    int4_bytes: int
    group_size: int

    def as_rows(self) -> list[tuple[str, int]]:
        return [
            ("own dtype", self.own_bytes), ("fp32", self.fp32_bytes), ("fp16", self.fp16_bytes),
            ("bf16", self.bf16_bytes), ("fp8", self.fp8_bytes), ("int8", self.int8_bytes), ("int4", self.int4_bytes),
        ]


@dataclass(frozen=True)
class PhaseTotals:
    macs: int
    flops: int
    bytes_read: int
    bytes_written: int
    ops: int


@dataclass(frozen=True)
class Totals:
    params: int
    trainable_params: int
    frozen_params: int
    buffers: int
    param_bytes: int
    buffer_bytes: int
    macs: int
    flops: int
    matmul_flops: int
    bytes_read: int
    bytes_written: int
    bytes_moved: int
    arithmetic_intensity: float  # flops / bytes_moved
    fused_bytes_lower_bound: int  # weights + inputs + outputs, once each
    ops: int
    uncounted_ops: int  # calls of ops with no FLOP rule
    phases: dict[str, PhaseTotals]
    param_sizes: ParamSizes


@dataclass(frozen=True)
class ModuleRow:
    """One module: own figures (ops called directly in its forward) and inclusive (with children)."""

    path: str  # "" is the root
    type: str
    parent: str | None
    depth: int
    calls: int
    params: int  # inclusive, tied parameters once
    own_params: int
    macs: int
    flops: int
    bytes_read: int
    bytes_written: int
    own_macs: int
    own_flops: int
    own_bytes_read: int
    own_bytes_written: int


@dataclass(frozen=True)
class OpRow:
    op: str
    phase: str
    calls: int
    macs: int
    flops: int
    bytes_read: int
    bytes_written: int
    counted: bool


@dataclass(frozen=True)
class UncountedOp:
    op: str
    calls: int
    modules: list[str]
    bytes_moved: int


class EventRow(NamedTuple):
    """One op call with its cost, in execution order (what roofline and memory analyses read).

    An immutable named tuple rather than a frozen dataclass: a report holds one per op, tens of
    thousands for a large training step, and a tuple is several times cheaper to build.
    """

    index: int
    op: str
    module: str
    phase: str
    macs: int
    flops: int
    bytes_read: int
    bytes_written: int
    counted: bool


@dataclass(frozen=True)
class Report:
    provenance: Provenance
    totals: Totals
    modules: list[ModuleRow]
    ops: list[OpRow]
    uncounted_ops: list[UncountedOp]
    events: list[EventRow] = field(default_factory=list, compare=False)
    notes: list[str] = field(default_factory=list)
    memory: Any = None
    roofline: Any = None
    benchmark: Any = None
    schema: str = SCHEMA

    # -- lookups ------------------------------------------------------------------------------
    def module(self, path: str) -> ModuleRow:
        for m in self.modules:
            if m.path == path:
                return m
        raise KeyError(path)

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self, *, include_events: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"schema": self.schema}
        for f in dataclasses.fields(self):
            if f.name == "schema":
                continue
            if f.name == "events" and not include_events:
                continue
            v = getattr(self, f.name)
            if v is None:
                d[f.name] = None
            elif hasattr(v, "to_dict"):
                d[f.name] = v.to_dict()
            else:
                d[f.name] = plain(v)
        return d

    def to_json(self, *, indent: int | None = 2, include_events: bool = False) -> str:
        return json.dumps(self.to_dict(include_events=include_events), indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Report:
        if not str(d.get("schema", "")).startswith("modelmeter.report/"):
            from ..errors import InputError

            raise InputError("not a modelmeter report: the 'schema' field is missing or foreign")
        t = dict(d["totals"])
        t["phases"] = {k: PhaseTotals(**v) for k, v in t["phases"].items()}
        t["param_sizes"] = ParamSizes(**t["param_sizes"])
        return cls(
            provenance=Provenance(**d["provenance"]),
            totals=Totals(**t),
            modules=[ModuleRow(**m) for m in d["modules"]],
            ops=[OpRow(**o) for o in d["ops"]],
            uncounted_ops=[UncountedOp(**u) for u in d["uncounted_ops"]],
            events=[EventRow(**e) for e in d.get("events", [])],
            notes=list(d.get("notes", [])),
            memory=_memory_from_dict(d.get("memory")),
            roofline=d.get("roofline"),
            benchmark=_benchmark_from_dict(d.get("benchmark")),
            schema=d["schema"],
        )

    # -- rendering (rich) -----------------------------------------------------------------------
    def __rich_console__(self, console: Any, options: Any) -> Any:
        from .render import render_report

        yield from render_report(self)


def _benchmark_from_dict(b: Any) -> Any:
    if isinstance(b, dict) and str(b.get("schema", "")).startswith("modelmeter.benchmark/"):
        from .benchmark import Benchmark

        return Benchmark.from_dict(b)
    return b


def _memory_from_dict(d: Any) -> Any:
    if not d:
        return None
    from .memory import MemoryReport

    return MemoryReport.from_dict(d)

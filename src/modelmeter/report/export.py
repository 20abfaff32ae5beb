"""Derived forms of a Report: CSV (one row per module), Markdown, and JSON-schema validation."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from importlib import resources
from typing import Any

from ..units import human_bytes, human_count
from .model import ModuleRow, Report

MODULE_FIELDS = [f.name for f in dataclasses.fields(ModuleRow)]


def modules_csv(r: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MODULE_FIELDS)
    for m in r.modules:
        w.writerow([getattr(m, f) if getattr(m, f) is not None else "" for f in MODULE_FIELDS])
    return buf.getvalue()


def to_markdown(r: Report, *, depth: int = 2, top: int = 10) -> str:
    t, p = r.totals, r.provenance
    lines = [f"# {p.model} — {'training step' if p.train else 'inference'}", ""]
    lines.append(f"Inputs {', '.join('x'.join(map(str, s)) for s in p.input_shapes)}; {p.mode} tensors on {p.device}; "
                 f"dtype {p.dtype}; modelmeter {p.modelmeter_version}, torch {p.torch_version}.")
    lines += ["", "| metric | value | exact |", "| --- | ---: | ---: |"]
    rows = [
        ("parameters", human_count(t.params), f"{t.params:,}"),
        ("trainable parameters", human_count(t.trainable_params), f"{t.trainable_params:,}"),
        (f"parameter size ({p.dtype})", human_bytes(t.param_bytes), f"{t.param_bytes:,} B"),
        ("MACs", human_count(t.macs), f"{t.macs:,}"),
        ("matmul FLOPs (2 x MACs)", human_count(t.matmul_flops), f"{t.matmul_flops:,}"),
        ("FLOPs (all arithmetic)", human_count(t.flops), f"{t.flops:,}"),
        ("bytes read", human_bytes(t.bytes_read), f"{t.bytes_read:,}"),
        ("bytes written", human_bytes(t.bytes_written), f"{t.bytes_written:,}"),
        ("arithmetic intensity", f"{t.arithmetic_intensity:.2f} FLOP/B", ""),
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "## Parameter size per precision", "", "| precision | size | bytes |", "| --- | ---: | ---: |"]
    lines += [f"| {n} | {human_bytes(b)} | {b:,} |" for n, b in t.param_sizes.as_rows()]
    lines += ["", f"## Modules (depth {depth})", "", "| module | type | params | MACs | FLOPs | bytes moved | calls |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for m in r.modules:
        if m.depth <= depth:
            lines.append(f"| `{m.path or '(root)'}` | {m.type} | {human_count(m.params)} | {human_count(m.macs)} | "
                         f"{human_count(m.flops)} | {human_bytes(m.bytes_read + m.bytes_written)} | {m.calls} |")
    lines += ["", f"## Top {top} ops", "", "| op | phase | calls | MACs | FLOPs | bytes moved |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for o in r.ops[:top]:
        lines.append(f"| `{o.op}` | {o.phase} | {o.calls} | {human_count(o.macs)} | {human_count(o.flops)} | "
                     f"{human_bytes(o.bytes_read + o.bytes_written)} |")
    lines += ["", "## Ops without a FLOP rule", ""]
    if r.uncounted_ops:
        lines += ["| op | calls | modules |", "| --- | ---: | --- |"]
        lines += [f"| `{u.op}` | {u.calls} | {', '.join(m or '(root)' for m in u.modules[:6])} |" for u in r.uncounted_ops]
    else:
        lines.append("None: every op has a FLOP rule.")
    for n in r.notes:
        lines += ["", f"> note: {n}"]
    return "\n".join(lines) + "\n"


def load_schema() -> dict[str, Any]:
    return json.loads(resources.files("modelmeter.report").joinpath("schema.json").read_text())


def validate(d: dict[str, Any]) -> None:
    """Validate a report dict against the JSON schema (needs ``jsonschema``)."""
    from ..errors import require

    jsonschema = require("jsonschema", "test", "report validation")
    jsonschema.validate(d, load_schema())

"""Terminal rendering of a Report with rich: summary, size per precision, module tree, top ops,
uncounted ops. The library builds renderables; the CLI prints them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..units import human_bytes, human_count
from .model import Report


def short_op(op: str) -> str:
    """'aten.convolution.default' -> 'aten.convolution' (other overloads keep their name)."""
    return op[: -len(".default")] if op.endswith(".default") else op


def summary_table(r: Report) -> Table:
    t = r.totals
    p = r.provenance
    tab = Table(title=f"{p.model} — {'training step' if p.train else 'inference'}", box=box.SIMPLE_HEAD,
                show_header=True, title_justify="left")
    tab.add_column("metric")
    tab.add_column("value", justify="right")
    tab.add_column("exact", justify="right", style="dim")
    tab.add_row("parameters", human_count(t.params), f"{t.params:,}")
    if t.frozen_params:
        tab.add_row("  trainable / frozen", f"{human_count(t.trainable_params)} / {human_count(t.frozen_params)}",
                    f"{t.trainable_params:,} / {t.frozen_params:,}")
    if t.buffers:
        tab.add_row("buffers", human_count(t.buffers), f"{t.buffers:,}")
    tab.add_row(f"parameter size ({p.dtype})", human_bytes(t.param_bytes), f"{t.param_bytes:,} B")
    tab.add_row("MACs", human_count(t.macs, "MAC"), f"{t.macs:,}")
    tab.add_row("matmul FLOPs (2 x MACs)", human_count(t.matmul_flops, "FLOP"), f"{t.matmul_flops:,}")
    tab.add_row("FLOPs (all arithmetic)", human_count(t.flops, "FLOP"), f"{t.flops:,}")
    tab.add_row("bytes read", human_bytes(t.bytes_read), f"{t.bytes_read:,}")
    tab.add_row("bytes written", human_bytes(t.bytes_written), f"{t.bytes_written:,}")
    tab.add_row("arithmetic intensity", f"{t.arithmetic_intensity:.2f} FLOP/B", "flops / bytes moved")
    tab.add_row("fused traffic lower bound", human_bytes(t.fused_bytes_lower_bound), "weights + inputs + outputs")
    if len(t.phases) > 1:
        for name, ph in t.phases.items():
            tab.add_row(f"  {name}", f"{human_count(ph.macs, 'MAC')}  {human_count(ph.flops, 'FLOP')}",
                        f"{human_bytes(ph.bytes_read + ph.bytes_written)} moved, {ph.ops} ops")
    tab.add_row("ops captured", f"{t.ops:,}", f"{t.uncounted_ops:,} without a FLOP rule")
    tab.caption = (f"{p.mode} tensors on {p.device}; inputs {', '.join('x'.join(map(str, s)) for s in p.input_shapes)}")
    tab.caption_justify = "left"
    return tab


def sizes_table(r: Report) -> Table:
    s = r.totals.param_sizes
    tab = Table(title="parameter size per precision", box=box.SIMPLE_HEAD, title_justify="left")
    tab.add_column("precision")
    tab.add_column("size", justify="right")
    tab.add_column("bytes", justify="right", style="dim")
    for name, b in s.as_rows():
        if name in ("int8", "int4"):
            name = f"{name} + fp16 scale / {s.group_size}"
        tab.add_row(name, human_bytes(b), f"{b:,}")
    return tab


def _device_module_times(r: Report) -> list[tuple[str, dict[str, float]]]:
    """Per device of an attached roofline: module path -> predicted time (s)."""
    rr = r.roofline
    devices = getattr(rr, "devices", None) or []
    return [(d.device.name, {m.path: m.time_s for m in d.modules}) for d in devices]


def module_table(r: Report, depth: int = 2, min_share: float = 0.0) -> Table:
    from ..units import human_seconds

    total = r.totals.flops or 1
    per_device = _device_module_times(r)
    tab = Table(title=f"modules (depth {depth})", box=box.SIMPLE_HEAD, title_justify="left")
    for col, j in [("module", "left"), ("type", "left"), ("params", "right"), ("MACs", "right"),
                   ("FLOPs", "right"), ("% FLOPs", "right"), ("bytes moved", "right"), ("calls", "right")]:
        tab.add_column(col, justify=j, no_wrap=True)  # type: ignore[arg-type]
    for name, _ in per_device:
        tab.add_column(f"t {name}", justify="right", no_wrap=True)
    for m in r.modules:
        if m.depth > depth:
            continue
        share = m.flops / total
        if m.path and share < min_share:
            continue
        name = m.path.rsplit(".", 1)[-1] if m.path else "(root)"
        times = [human_seconds(t[m.path]) if m.path in t else "-" for _, t in per_device]
        tab.add_row(
            Text("  " * m.depth + name), m.type, human_count(m.params), human_count(m.macs), human_count(m.flops),
            f"{100 * share:.1f}", human_bytes(m.bytes_read + m.bytes_written), str(m.calls), *times,
        )
    return tab


def ops_table(r: Report, top: int = 10) -> Table:
    total = r.totals.flops or 1
    tab = Table(title=f"top {top} ops by FLOPs", box=box.SIMPLE_HEAD, title_justify="left")
    for col, j in [("op", "left"), ("phase", "left"), ("calls", "right"), ("MACs", "right"), ("FLOPs", "right"),
                   ("% FLOPs", "right"), ("bytes moved", "right")]:
        tab.add_column(col, justify=j, no_wrap=True)  # type: ignore[arg-type]
    for o in r.ops[:top]:
        tab.add_row(short_op(o.op), o.phase, str(o.calls), human_count(o.macs), human_count(o.flops),
                    f"{100 * o.flops / total:.1f}", human_bytes(o.bytes_read + o.bytes_written))
    return tab


def uncounted_table(r: Report) -> Table | Text:
    if not r.uncounted_ops:
        return Text("every op has a FLOP rule (no uncounted ops)", style="green")
    tab = Table(title="ops without a FLOP rule (bytes counted, FLOPs not)", box=box.SIMPLE_HEAD,
                title_justify="left", title_style="bold yellow")
    tab.add_column("op")
    tab.add_column("calls", justify="right")
    tab.add_column("bytes moved", justify="right")
    tab.add_column("modules")
    for u in r.uncounted_ops:
        mods = ", ".join(m or "(root)" for m in u.modules[:4]) + (f" (+{len(u.modules) - 4})" if len(u.modules) > 4 else "")
        tab.add_row(short_op(u.op), str(u.calls), human_bytes(u.bytes_moved), mods)
    return tab


def render_report(r: Report, *, depth: int = 2, top: int = 10) -> Iterator[Any]:
    yield summary_table(r)
    yield sizes_table(r)
    yield module_table(r, depth)
    yield ops_table(r, top)
    yield uncounted_table(r)
    for section in (r.memory, r.roofline, r.benchmark):
        if section is not None and hasattr(section, "__rich_console__"):
            yield section
    for n in r.notes:
        yield Text(f"note: {n}", style="yellow")


def report_renderable(r: Report, *, depth: int = 2, top: int = 10) -> Group:
    return Group(*render_report(r, depth=depth, top=top))

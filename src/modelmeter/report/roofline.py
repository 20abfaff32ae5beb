"""Roofline results: frozen dataclasses (units in field names), their JSON form, rich rendering and
matplotlib plots (the optional extra ``plot``; imported only inside the plot functions).

A :class:`RooflineReport` goes into ``Report.roofline`` (``dataclasses.replace(report, roofline=rr)``);
``to_dict()`` is what the JSON report carries. The library never prints: ``__rich_console__`` yields
renderables and the CLI prints them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jsonable import plain

ROOFLINE_SCHEMA = "modelmeter.roofline/1"

#: op families (the cost-rule file an op's rule lives in) in a fixed order, with plot colours
FAMILY_COLORS = {
    "matmul": "#1f77b4",
    "conv": "#ff7f0e",
    "attention": "#9467bd",
    "kv-cache": "#8c564b",
    "norm": "#2ca02c",
    "elementwise": "#d62728",
    "reduction": "#e377c2",
    "pool": "#bcbd22",
    "data": "#7f7f7f",
    "optim": "#17becf",
    "other": "#c7c7c7",
}


@dataclass(frozen=True)
class DeviceSummary:
    """The figures of the device a roofline was computed for (effective: after sparsity choice)."""

    name: str
    display_name: str
    dtype: str
    matrix_flop_per_s: float  # peak used for ops with MACs (matrix products, conv, attention)
    vector_flop_per_s: float  # peak used for the other ops
    memory_bandwidth_bytes_per_s: float
    ridge_flop_per_byte: float  # matrix_flop_per_s / memory_bandwidth_bytes_per_s
    memory_bytes: int | None
    sparse: bool
    calibrated: bool
    sources: list[str]


@dataclass(frozen=True)
class RooflineSettings:
    compute_efficiency: float  # fraction of the peak reached (1.0 = pure roofline)
    memory_efficiency: float  # fraction of the bandwidth reached
    launch_overhead_s: float  # added once per op that moves bytes or does arithmetic
    sparse: bool  # use the vendor's 2:4 structured-sparsity peaks


@dataclass(frozen=True)
class OpTime:
    """One op call on one device. ``bound`` is the larger term: "compute" or "memory"."""

    index: int
    op: str
    module: str
    phase: str
    family: str
    macs: int
    flops: int
    bytes_moved: int
    intensity_flop_per_byte: float
    peak_flop_per_s: float  # the ceiling this op was held to (matrix or vector)
    compute_s: float
    memory_s: float
    overhead_s: float
    time_s: float  # max(compute_s, memory_s) + overhead_s
    bound: str


@dataclass(frozen=True)
class ModuleTime:
    """Predicted time of a module's ops (inclusive of its children) and of its own ops."""

    path: str
    type: str
    parent: str | None
    depth: int
    kernels: int
    flops: int
    bytes_moved: int
    compute_s: float
    memory_s: float
    overhead_s: float
    time_s: float
    compute_bound_s: float  # time of its compute-bound ops
    memory_bound_s: float  # time of its memory-bound ops (launch overhead not included)
    own_time_s: float  # its own ops only (called in its forward, outside any child)
    own_compute_bound_s: float
    own_memory_bound_s: float
    own_overhead_s: float

    @property
    def bound(self) -> str:
        return "compute" if self.compute_bound_s > self.memory_bound_s else "memory"


@dataclass(frozen=True)
class OpKindTime:
    """Ops of one name (and phase) together."""

    op: str
    phase: str
    family: str
    calls: int
    flops: int
    bytes_moved: int
    time_s: float
    compute_bound_calls: int
    memory_bound_calls: int


@dataclass(frozen=True)
class DeviceRoofline:
    """A model on one device at one dtype: per-op roofline rolled up per module and in total.

    ``predicted_s`` is the unfused sum (ops one after another, each its own kernel); ``fused_lower_bound_s``
    = max(sum of compute times, fused bytes / bandwidth), the time if every intermediate stayed on chip.
    """

    model: str
    device: DeviceSummary
    settings: RooflineSettings
    batch: int | None
    flops: int
    matmul_flops: int
    bytes_moved: int
    kernels: int  # ops that move bytes or do arithmetic (views and metadata ops excluded)
    compute_s: float  # sum over ops of flops / peak
    memory_s: float  # sum over ops of bytes / bandwidth
    overhead_s: float  # kernels x launch overhead
    predicted_s: float  # sum over ops of max(compute, memory) + overhead
    compute_bound_s: float
    memory_bound_s: float
    fused_bytes: int  # weights + inputs + outputs, once each, at the run dtype
    fused_memory_s: float
    fused_lower_bound_s: float
    required_bytes: int  # memory the run needs on the device (see required_basis)
    required_basis: str
    fits: bool | None  # None when the device's capacity is unknown
    phases_s: dict[str, float]
    modules: list[ModuleTime]
    op_kinds: list[OpKindTime]
    ops: list[OpTime] = field(default_factory=list, compare=False)
    notes: list[str] = field(default_factory=list)

    @property
    def bound(self) -> str:
        """Where most of the predicted time goes: "compute" or "memory"-bound ops."""
        return "compute" if self.compute_bound_s > self.memory_bound_s else "memory"

    @property
    def compute_bound_fraction(self) -> float:
        total = self.compute_bound_s + self.memory_bound_s
        return self.compute_bound_s / total if total else 0.0

    @property
    def throughput_per_s(self) -> float | None:
        """Samples per second at ``batch`` (None when the batch is unknown)."""
        if self.batch is None or not self.predicted_s:
            return None
        return self.batch / self.predicted_s

    @property
    def achieved_flop_per_s(self) -> float:
        return self.flops / self.predicted_s if self.predicted_s else 0.0

    def module(self, path: str) -> ModuleTime:
        for m in self.modules:
            if m.path == path:
                return m
        raise KeyError(path)

    def to_dict(self, *, include_ops: bool = False) -> dict[str, Any]:
        d = plain(self, skip=() if include_ops else ("ops",))
        d["bound"] = self.bound
        d["compute_bound_fraction"] = self.compute_bound_fraction
        d["throughput_per_s"] = self.throughput_per_s
        d["achieved_flop_per_s"] = self.achieved_flop_per_s
        for m, md in zip(self.modules, d["modules"]):
            md["bound"] = m.bound
        return d


@dataclass(frozen=True)
class SweepPoint:
    batch: int
    device: str
    predicted_s: float
    fused_lower_bound_s: float
    throughput_per_s: float
    compute_s: float
    memory_s: float
    compute_bound_fraction: float  # share of predicted time in compute-bound ops
    bound: str
    required_bytes: int
    fits: bool | None


@dataclass(frozen=True)
class BatchSweep:
    """Predicted latency and throughput per batch size; where the model turns compute-bound.

    ``ridge_batch`` (per device) is the batch at which half the predicted time is in compute-bound ops,
    interpolated in log(batch) between the two swept sizes around the crossing; None if the sweep never
    crosses (``first_compute_bound_batch`` is then None as well, or the first size is already past it).
    """

    dtype: str
    batches: list[int]
    points: list[SweepPoint]
    ridge_batch: dict[str, float | None]
    first_compute_bound_batch: dict[str, int | None]
    kind: str = "forward"  # "forward" or "decode"

    def for_device(self, name: str) -> list[SweepPoint]:
        return [p for p in self.points if p.device == name]


@dataclass(frozen=True)
class LMEstimate:
    """A decoder language model on one device: prefill (time to first token) and decode (per token).

    Decode is one step of ``batch`` new tokens against a KV cache of ``context`` tokens: the step's own
    ops (weights read once, tiny activations) plus reading the KV cache and the two attention
    products over it, added analytically per layer.
    """

    device: str
    dtype: str
    batch: int
    context: int
    prefill_s: float  # time to first token
    prefill_tokens_per_s: float
    prefill_bound: str
    decode_s: float  # time per output token (one decode step for the whole batch)
    decode_tokens_per_s: float  # batch / decode_s
    decode_bound: str
    decode_compute_s: float
    decode_memory_s: float
    decode_fused_lower_bound_s: float  # max(compute, (weights + KV cache) / bandwidth)
    weights_bytes: int
    kv_bytes_per_token: int  # layers x 2 x kv_heads x head_dim x itemsize
    kv_cache_bytes: int  # kv_bytes_per_token x context x batch
    kv_attention_flops: int
    kv_read_s: float
    required_bytes: int  # weights + KV cache of context + 1 tokens per sequence
    fits: bool | None


@dataclass(frozen=True)
class RooflineReport:
    """Roofline of one model on one or more devices, with an optional batch sweep and LM estimate."""

    model: str
    dtype: str
    devices: list[DeviceRoofline]
    sweep: BatchSweep | None = None
    lm: list[LMEstimate] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema: str = ROOFLINE_SCHEMA

    def device(self, name: str) -> DeviceRoofline:
        for d in self.devices:
            if d.device.name == name:
                return d
        raise KeyError(name)

    def to_dict(self, *, include_ops: bool = False) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "model": self.model,
            "dtype": self.dtype,
            "devices": [d.to_dict(include_ops=include_ops) for d in self.devices],
            "sweep": None if self.sweep is None else plain(self.sweep),
            "lm": [plain(x) for x in self.lm],
            "notes": list(self.notes),
        }

    def __rich_console__(self, console: Any, options: Any) -> Iterator[Any]:
        yield roofline_renderable(self)


# -- rich rendering ---------------------------------------------------------------------------------

def _fmt_flops(x: float | None) -> str:
    from ..units import human_count

    return "-" if x is None else human_count(x, "FLOP/s", digits=1)


def _fmt_bw(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e12:.2f} TB/s" if x >= 1e12 else f"{x / 1e9:.0f} GB/s"


def _fmt_s(x: float | None) -> str:
    from ..units import human_seconds

    return "-" if x is None else human_seconds(x)


def _fmt_rate(x: float | None, unit: str) -> str:
    from ..units import human_count

    return "-" if x is None else human_count(x, f"{unit}/s", digits=1)


def devices_table(rr: RooflineReport) -> Any:
    from rich import box
    from rich.table import Table

    from ..hardware.spec import format_memory
    from ..units import human_count

    tab = Table(title=f"roofline of {rr.model} at {rr.dtype}", box=box.SIMPLE_HEAD, title_justify="left",
                pad_edge=False)
    unit = "tok/s" if rr.lm else "samples/s"
    cols = ["device", "peak", "bandwidth", "ridge", "predicted", "fused", "compute", "memory",
            "%cb", unit, "needs / has", "fits"]
    for c in cols:
        tab.add_column(c, justify="left" if c == "device" else "right", no_wrap=True)
    for d in rr.devices:
        dev = d.device
        has = format_memory(dev.memory_bytes) if dev.memory_bytes else "?"
        fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[d.fits]
        name = dev.name + (" (calibrated)" if dev.calibrated else "") + (" sparse" if dev.sparse else "")
        rate = "-" if d.throughput_per_s is None else human_count(d.throughput_per_s, digits=1)
        peak = "-" if dev.matrix_flop_per_s is None else human_count(dev.matrix_flop_per_s, digits=1)
        tab.add_row(
            name, peak, _fmt_bw(dev.memory_bandwidth_bytes_per_s),
            f"{dev.ridge_flop_per_byte:.0f}", _fmt_s(d.predicted_s), _fmt_s(d.fused_lower_bound_s),
            _fmt_s(d.compute_s), _fmt_s(d.memory_s), f"{100 * d.compute_bound_fraction:.0f}",
            rate, f"{_same_units(d.required_bytes, dev.memory_bytes)} / {has}", fits,
        )
    s = rr.devices[0].settings if rr.devices else None
    if s is not None:
        parts = ["peak in FLOP/s; ridge in FLOP/B; %cb: share of time in compute-bound ops", "predicted = sum over ops of max(flops / peak, bytes / bandwidth)"]
        if s.compute_efficiency != 1.0 or s.memory_efficiency != 1.0:
            parts.append(f"efficiency compute {s.compute_efficiency:g}, memory {s.memory_efficiency:g}")
        if s.launch_overhead_s:
            parts.append(f"+ {_fmt_s(s.launch_overhead_s)} per kernel")
        parts.append("fused = max(compute, (weights + inputs + outputs) / bandwidth)")
        parts.append(f"needs: {rr.devices[0].required_basis}")
        tab.caption = "; ".join(parts)
        tab.caption_justify = "left"
    return tab


def _same_units(nbytes: int, capacity: int | None) -> str:
    """A size in the unit system of the device capacity it is compared with (GB or GiB)."""
    from ..units import human_bytes

    if capacity and capacity % (1 << 30) != 0:
        return f"{nbytes / 1e9:.3g} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.3g} MB"
    return human_bytes(nbytes)


def frontier(d: DeviceRoofline, max_rows: int = 40, depth: int | None = None) -> list[tuple[str, ModuleTime, bool]]:
    """Modules that cover the model once at the deepest level with at most ``max_rows`` rows.

    Returns (label, module, own) tuples in model order; ``own`` marks a parent's own ops (time outside
    its children) shown as a separate row.
    """
    by_path = {m.path: m for m in d.modules}
    children: dict[str, list[ModuleTime]] = {}
    for m in d.modules:
        if m.parent is not None and m.parent in by_path:
            children.setdefault(m.parent, []).append(m)

    def rows_at(level: int) -> list[tuple[str, ModuleTime, bool]]:
        out: list[tuple[str, ModuleTime, bool]] = []

        def walk(m: ModuleTime) -> None:
            kids = [k for k in children.get(m.path, []) if k.time_s > 0]
            if m.depth >= level or not kids:
                if m.time_s > 0:
                    out.append((m.path or "(root)", m, False))
                return
            if m.own_time_s > 0:
                out.append(((m.path or "(root)") + " (own ops)", m, True))
            for k in kids:
                walk(k)

        if "" in by_path:
            walk(by_path[""])
        return out

    if depth is not None:
        return rows_at(depth)
    max_depth = max((m.depth for m in d.modules), default=0)
    best = rows_at(1)
    for level in range(2, max_depth + 1):
        rows = rows_at(level)
        if len(rows) > max_rows:
            break
        best = rows
    return best


def modules_table(rr: RooflineReport, depth: int | None = None, max_rows: int = 40) -> Any:
    from rich import box
    from rich.table import Table

    first = rr.devices[0]
    rows = frontier(first, max_rows=max_rows, depth=depth)
    tab = Table(title="predicted time per module", box=box.SIMPLE_HEAD, title_justify="left")
    tab.add_column("module")
    tab.add_column("type")
    for d in rr.devices:
        tab.add_column(d.device.name, justify="right")
        tab.add_column("%", justify="right")
        tab.add_column("bound", justify="left")
    per_dev = [{m.path: m for m in d.modules} for d in rr.devices]
    for label, m, own in rows:
        cells = [label, m.type]
        for d, table in zip(rr.devices, per_dev):
            mm = table.get(m.path)
            if mm is None:
                cells += ["-", "", ""]
                continue
            t = mm.own_time_s if own else mm.time_s
            cells += [_fmt_s(t), f"{100 * t / d.predicted_s:.1f}" if d.predicted_s else "-",
                      "" if own else ("[yellow]compute[/]" if mm.bound == "compute" else "[cyan]memory[/]")]
        tab.add_row(*cells)
    return tab


def ops_table(d: DeviceRoofline, top: int = 10) -> Any:
    from rich import box
    from rich.table import Table

    from ..units import human_bytes, human_count

    tab = Table(title=f"slowest ops on {d.device.name}", box=box.SIMPLE_HEAD, title_justify="left")
    for c, j in [("op", "left"), ("module", "left"), ("family", "left"), ("FLOPs", "right"), ("bytes", "right"),
                 ("FLOP/B", "right"), ("compute", "right"), ("memory", "right"), ("time", "right"), ("bound", "left")]:
        tab.add_column(c, justify=j)  # type: ignore[arg-type]
    for o in sorted(d.ops, key=lambda o: -o.time_s)[:top]:
        tab.add_row(o.op.replace("aten.", "").replace(".default", ""), o.module or "(root)", o.family,
                    human_count(o.flops), human_bytes(o.bytes_moved), f"{o.intensity_flop_per_byte:.1f}",
                    _fmt_s(o.compute_s), _fmt_s(o.memory_s), _fmt_s(o.time_s), o.bound)
    return tab


def sweep_table(rr: RooflineReport) -> Any:
    from rich import box
    from rich.table import Table

    sw = rr.sweep
    assert sw is not None
    names = [d.device.name for d in rr.devices] or sorted({p.device for p in sw.points})
    what = "decode step" if sw.kind == "decode" else "forward"
    tab = Table(title=f"batch sweep ({what}, {sw.dtype})", box=box.SIMPLE_HEAD, title_justify="left")
    tab.add_column("batch", justify="right")
    for n in names:
        tab.add_column(f"{n} latency", justify="right")
        tab.add_column("throughput", justify="right")
        tab.add_column("compute-bound", justify="right")
    for b in sw.batches:
        cells = [str(b)]
        for n in names:
            p = next((p for p in sw.points if p.device == n and p.batch == b), None)
            if p is None:
                cells += ["-", "-", "-"]
                continue
            unit = "tokens" if sw.kind == "decode" else "samples"
            fits = "" if p.fits is not False else " [red](no fit)[/]"
            cells += [_fmt_s(p.predicted_s) + fits, _fmt_rate(p.throughput_per_s, unit),
                      f"{100 * p.compute_bound_fraction:.0f}%"]
        tab.add_row(*cells)
    parts = []
    for n in names:
        rb = sw.ridge_batch.get(n)
        first = sw.first_compute_bound_batch.get(n)
        if rb is not None:
            parts.append(f"{n}: compute-bound from batch ~{rb:.0f}")
        elif first is not None:
            parts.append(f"{n}: compute-bound at every swept batch")
        else:
            parts.append(f"{n}: memory-bound at every swept batch")
    tab.caption = "ridge batch (half the time in compute-bound ops): " + "; ".join(parts)
    tab.caption_justify = "left"
    return tab


def lm_table(rr: RooflineReport) -> Any:
    from rich import box
    from rich.table import Table

    from ..units import human_bytes

    tab = Table(title="language model: prefill and decode", box=box.SIMPLE_HEAD, title_justify="left")
    for c in ["device", "batch", "context", "time to first token", "per output token", "tokens/s", "decode bound",
              "weights", "KV cache", "fits"]:
        tab.add_column(c, justify="left" if c == "device" else "right", no_wrap=True)
    for e in rr.lm:
        fits = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[e.fits]
        tab.add_row(e.device, str(e.batch), str(e.context), _fmt_s(e.prefill_s), _fmt_s(e.decode_s),
                    f"{e.decode_tokens_per_s:,.0f}", e.decode_bound, _same_units(e.weights_bytes, 1),
                    _same_units(e.kv_cache_bytes, 1), fits)
    if rr.lm:
        e = rr.lm[0]
        tab.caption = (f"decode: step ops + KV cache read ({human_bytes(e.kv_bytes_per_token)}/token = layers x 2 x "
                       f"kv_heads x head_dim x itemsize) per layer; fits: weights + KV cache of context + 1 tokens")
        tab.caption_justify = "left"
    return tab


def roofline_renderable(rr: RooflineReport, *, depth: int | None = None, top: int = 10, max_rows: int = 40) -> Any:
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    if rr.devices:
        parts.append(devices_table(rr))
        parts.append(modules_table(rr, depth=depth, max_rows=max_rows))
        if top:
            parts.append(ops_table(rr.devices[0], top=top))
    if rr.sweep is not None:
        parts.append(sweep_table(rr))
    if rr.lm:
        parts.append(lm_table(rr))
    notes = list(rr.notes)
    per_device = [set(d.notes) for d in rr.devices]
    common = set.intersection(*per_device) if per_device else set()
    notes += [n for d in rr.devices for n in d.notes if n in common]
    for d in rr.devices:
        notes += [f"{d.device.name}: {n}" for n in d.notes if n not in common]
    for n in dict.fromkeys(notes):
        parts.append(Text(f"note: {n}", style="dim"))
    return Group(*parts)


# -- plots (matplotlib, extra "plot") ---------------------------------------------------------------

def _figure(**kwargs: Any) -> Any:
    """A matplotlib Figure without pyplot (no global state, no GUI backend needed)."""
    from ..errors import require

    require("matplotlib", "plot", "plotting")
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig: Any, path: str | Path) -> list[Path]:
    """Save to ``path``; its suffix picks the format (.png, .svg, .pdf)."""
    from ..errors import InputError

    p = Path(path)
    if p.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise InputError(f"cannot plot to {str(p)!r}: use a .png, .svg or .pdf file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=150, bbox_inches="tight")
    except OSError as exc:
        raise InputError(f"cannot write {str(p)!r}: {exc.strerror}") from None
    return [p]


_LINESTYLES = ["-", "--", "-.", ":"]
_DEVICE_COLORS = ["#222222", "#1b9e77", "#d95f02", "#7570b3", "#e7298a"]


def plot_roofline(rr: RooflineReport, path: str | Path, *, device: str | None = None, max_devices: int = 5) -> list[Path]:
    """Log-log roofline chart: each device's ceilings; the ops of one device (the first, or ``device``)
    as points at (arithmetic intensity, attained FLOP/s), sized by predicted time, coloured by op family."""
    fig = _figure(figsize=(10, 6.5))
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter

    if not rr.devices:
        from ..errors import InputError

        raise InputError("nothing to plot: the roofline has no device")
    main = rr.device(device) if device else rr.devices[0]
    ops = [o for o in main.ops if o.time_s > 0 and o.flops > 0 and o.bytes_moved > 0]
    hidden = [o for o in main.ops if o.time_s > 0 and not (o.flops > 0 and o.bytes_moved > 0)]
    ax = fig.add_subplot(1, 1, 1)
    ints = [o.intensity_flop_per_byte for o in ops if o.intensity_flop_per_byte > 0]
    ridges = [d.device.ridge_flop_per_byte for d in rr.devices[:max_devices]]
    x_lo = 10 ** math.floor(math.log10(max(min(ints + ridges) / 3, 1e-3)))
    x_hi = 10 ** math.ceil(math.log10(max(ints + ridges) * 3))
    xs = [x_lo * (x_hi / x_lo) ** (i / 400) for i in range(401)]
    for i, d in enumerate(rr.devices[:max_devices]):
        dev = d.device
        eff_c, eff_m = d.settings.compute_efficiency, d.settings.memory_efficiency
        peak, vec, bw = dev.matrix_flop_per_s * eff_c, dev.vector_flop_per_s * eff_c, dev.memory_bandwidth_bytes_per_s * eff_m
        color = _DEVICE_COLORS[i % len(_DEVICE_COLORS)]
        ls = _LINESTYLES[i % len(_LINESTYLES)]
        label = f"{dev.display_name} {dev.dtype}: {_fmt_flops(peak)}, {_fmt_bw(bw)}"
        ax.plot(xs, [min(peak, x * bw) for x in xs], color=color, ls=ls, lw=2, label=label, zorder=2)
        if vec < peak * 0.999:
            xv = [x for x in xs if x * bw >= vec]
            ax.plot(xv, [vec] * len(xv), color=color, ls=":", lw=1, alpha=0.7, zorder=2)
            if d is main:
                ax.annotate(f"vector units {_fmt_flops(vec)} (non-matrix ops)", (vec / bw, vec),
                            textcoords="offset points", xytext=(4, -11), fontsize=8, color=color, alpha=0.9)
        ridge = peak / bw
        ax.plot([ridge], [peak], marker="o", ms=5, color=color, zorder=3)
        ax.annotate(f"ridge {ridge:.0f} FLOP/B", (ridge, peak), textcoords="offset points", xytext=(-6, 6),
                    ha="right", fontsize=8, color=color)
    total = main.predicted_s or 1.0
    fams = [f for f in FAMILY_COLORS if any(o.family == f for o in ops)]
    for fam in fams:
        pts = [o for o in ops if o.family == fam]
        ax.scatter([o.intensity_flop_per_byte for o in pts], [o.flops / o.time_s for o in pts],
                   s=[12 + 900 * (o.time_s / total) ** 0.5 for o in pts], c=FAMILY_COLORS[fam], alpha=0.55,
                   edgecolors="white", linewidths=0.5, zorder=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(x_lo, x_hi)
    ys = [o.flops / o.time_s for o in ops if o.flops] + [d.device.matrix_flop_per_s for d in rr.devices[:max_devices]]
    y_lo = 10 ** math.floor(math.log10(max(min(ys) / 3, 1.0)))
    ax.set_ylim(y_lo, max(ys) * 3)
    ax.xaxis.set_major_formatter(EngFormatter(unit="", places=0))
    ax.yaxis.set_major_formatter(EngFormatter(unit="FLOP/s", places=0))
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("attained FLOP/s (FLOPs / predicted time)")
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.08)
    ax.set_title(f"Roofline: {rr.model}{_what(rr, main)} at {rr.dtype}\nops on {main.device.display_name} "
                 f"(predicted {_fmt_s(main.predicted_s)})", fontsize=11)
    dev_legend = ax.legend(loc="upper left", fontsize=8, title="device ceilings", title_fontsize=8, framealpha=0.9)
    ax.add_artist(dev_legend)
    handles = [Line2D([], [], marker="o", ls="", color=FAMILY_COLORS[f], alpha=0.7, ms=7,
                      label=f"{f} ({100 * sum(o.time_s for o in ops if o.family == f) / total:.0f}% of time)")
               for f in fams]
    if hidden:
        handles.append(Line2D([], [], ls="", label=f"not shown: {len(hidden)} ops with 0 FLOPs "
                              f"({100 * sum(o.time_s for o in hidden) / total:.0f}% of time)"))
    ax.legend(handles=handles, loc="lower right", fontsize=8, title="ops (area ~ time)", title_fontsize=8,
              framealpha=0.9)
    fig.tight_layout()
    return _save(fig, path)


def _what(rr: RooflineReport, d: DeviceRoofline) -> str:
    batch = f", batch {d.batch}" if d.batch else ""
    if rr.lm:
        return f", one decode step{batch}, {rr.lm[0].context}-token KV cache"
    return batch


def _short(label: str, width: int = 38) -> str:
    return label if len(label) <= width else "…" + label[-(width - 1):]


def plot_breakdown(rr: RooflineReport, path: str | Path, *, depth: int | None = None, max_rows: int = 40,
                   max_devices: int = 3) -> list[Path]:
    """Per-layer predicted time: one horizontal bar per module (model order, top to bottom), split into
    time in compute-bound ops, memory-bound ops and launch overhead; one panel per device."""
    if not rr.devices:
        from ..errors import InputError

        raise InputError("nothing to plot: the roofline has no device")
    devs = rr.devices[:max_devices]
    rows = frontier(devs[0], max_rows=max_rows, depth=depth)
    n = len(rows)
    fig = _figure(figsize=(4.2 + 3.6 * len(devs), 1.2 + 0.26 * max(n, 4)))
    axes = fig.subplots(1, len(devs), sharey=True, sharex=True, squeeze=False)
    labels = [_short(lbl) for lbl, _, _ in rows]
    ys = list(range(n))
    for ax, d in zip(axes[0], devs):
        table = {m.path: m for m in d.modules}
        unit, scale = _time_unit(max((table[m.path].time_s for _, m, _ in rows if m.path in table), default=1e-3))
        comp, mem, ovh = [], [], []
        for _, m, own in rows:
            mm = table.get(m.path)
            if mm is None:
                comp.append(0.0)
                mem.append(0.0)
                ovh.append(0.0)
                continue
            if own:
                comp.append(mm.own_compute_bound_s * scale)
                mem.append(mm.own_memory_bound_s * scale)
                ovh.append(mm.own_overhead_s * scale)
            else:
                comp.append(mm.compute_bound_s * scale)
                mem.append(mm.memory_bound_s * scale)
                ovh.append(mm.overhead_s * scale)
        ax.barh(ys, comp, color="#f0a30a", label="compute-bound ops")
        ax.barh(ys, mem, left=comp, color="#1f77b4", label="memory-bound ops")
        if any(ovh):
            ax.barh(ys, ovh, left=[a + b for a, b in zip(comp, mem)], color="#9e9e9e", label="launch overhead")
        ax.set_title(f"{d.device.display_name}\npredicted {_fmt_s(d.predicted_s)}", fontsize=10)
        ax.set_xlabel(f"predicted time ({unit})")
        ax.grid(True, axis="x", alpha=0.3)
        ax.invert_yaxis() if ax is axes[0][0] else None
    axes[0][0].set_yticks(ys)
    axes[0][0].set_yticklabels(labels, fontsize=8 if n <= 30 else 7)
    axes[0][-1].legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.suptitle(f"Predicted time per layer: {rr.model}{_what(rr, devs[0])} at {rr.dtype}", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def _time_unit(t: float) -> tuple[str, float]:
    if t >= 1:
        return "s", 1.0
    if t >= 1e-3:
        return "ms", 1e3
    if t >= 1e-6:
        return "µs", 1e6
    return "ns", 1e9


__all__ = [
    "FAMILY_COLORS",
    "ROOFLINE_SCHEMA",
    "BatchSweep",
    "DeviceRoofline",
    "DeviceSummary",
    "LMEstimate",
    "ModuleTime",
    "OpKindTime",
    "OpTime",
    "RooflineReport",
    "RooflineSettings",
    "SweepPoint",
    "frontier",
    "plot_breakdown",
    "plot_roofline",
    "roofline_renderable",
]

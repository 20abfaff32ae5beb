"""The memory report: frozen dataclasses (sizes in ``_bytes`` fields), rich rendering, timeline plot.

Built by :func:`modelmeter.analysis.memory.memory_profile`; attached to a :class:`Report` as
``report.memory``. ``to_dict()`` gives the JSON form, ``from_dict()`` reads it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .jsonable import plain

#: the memory categories, in the order they are stacked and listed
CATEGORIES = ("parameters", "buffers", "inputs", "activations", "gradients", "optimizer_state", "temporaries")

CATEGORY_NOTES = {
    "parameters": "the model's parameters (tied tensors once)",
    "buffers": "registered buffers, and any other tensor that existed before the run",
    "inputs": "the example inputs",
    "activations": "tensors created in the forward pass (and the loss) while they are alive",
    "gradients": "parameter gradients (.grad) present at the end of the step",
    "optimizer_state": "optimizer state tensors (momentum, Adam moments, step counters)",
    "temporaries": "everything else: backward intermediates, recomputed activations, optimizer scratch",
}


@dataclass(frozen=True)
class LiveTensor:
    """A storage alive at a point of the run, with the op and module that created it."""

    size_bytes: int
    category: str
    shape: list[int]
    dtype: str
    op: str  # "" when it existed before the run
    module: str
    phase: str
    created_at: int  # event index; -1 = before the run
    released_after: int | None  # last event it was alive after; None = alive at the end


@dataclass(frozen=True)
class MemoryPoint:
    """Live memory right after one op, split by category."""

    event_index: int
    op: str
    module: str
    phase: str
    total_bytes: int
    by_category_bytes: dict[str, int]


@dataclass(frozen=True)
class PhaseSpan:
    phase: str
    first: int
    last: int


@dataclass(frozen=True)
class MemoryTimeline:
    """Live bytes after every op (index = event index), per category and in total."""

    categories: list[str]
    bytes_by_category: dict[str, list[int]]
    total_bytes: list[int]
    phases: list[PhaseSpan]


@dataclass(frozen=True)
class BudgetRow:
    """Memory of one step at one batch size.

    ``sum_bytes`` adds every component at its own maximum (parameters + buffers + inputs + gradients +
    optimizer state + fp32 master weights + peak activations): the usual conservative budget.
    ``peak_bytes`` is the peak of the live-memory timeline of a steady-state step (optimizer state and
    master weights alive throughout), never above ``sum_bytes``.
    """

    batch: int
    params_bytes: int
    buffers_bytes: int
    inputs_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int
    master_weights_bytes: int
    activations_peak_bytes: int
    sum_bytes: int
    peak_bytes: int
    fits: bool | None = None


@dataclass(frozen=True)
class BatchProbe:
    batch: int
    peak_bytes: int
    fits: bool


@dataclass(frozen=True)
class FitSearch:
    """The largest batch whose steady-state peak fits ``memory_bytes``, and how it was found."""

    memory_bytes: int
    max_batch: int  # 0: not even batch 1 fits
    probes: list[BatchProbe]
    method: str


@dataclass(frozen=True)
class KVCacheEstimate:
    """Key/value cache of a decoder language model: layers x 2 x kv_heads x head_dim x itemsize per token."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: str
    itemsize_bytes: int
    bytes_per_token: int
    batch: int
    context: int
    bytes_per_sequence: int  # bytes_per_token x context
    total_bytes: int  # bytes_per_sequence x batch
    weights_bytes: int | None = None
    memory_bytes: int | None = None
    max_context: int | None = None  # longest context (tokens per sequence) that fits beside the weights
    model_max_context: int | None = None  # max_position_embeddings of the config
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MemoryReport:
    """Memory of one captured run (inference, or a training step), from real storage lifetimes."""

    model: str
    mode: str  # "meta" or "real"
    device: str
    dtype: str
    train: bool
    optimizer: str | None
    autocast: str | None
    batch: int | None
    ops: int
    params_bytes: int
    buffers_bytes: int
    inputs_bytes: int
    gradients_bytes: int
    optimizer_state_bytes: int  # as allocated in the trace
    steady_optimizer_state_bytes: int  # in a later step: at fp32 when fp32 master weights are kept
    master_weights_bytes: int  # fp32 copy of trainable weights when training in reduced precision
    peak_bytes: int  # the peak of this (first) step's timeline
    peak: MemoryPoint
    activation_peak_bytes: int  # max over the run of activations + temporaries
    activation_peak: MemoryPoint
    steady_peak_bytes: int  # a later step: optimizer state (at fp32 with master weights) alive throughout
    largest_at_peak: list[LiveTensor]
    timeline: MemoryTimeline
    budget: list[BudgetRow] = field(default_factory=list)
    fit: FitSearch | None = None
    kv_cache: KVCacheEstimate | None = None
    notes: list[str] = field(default_factory=list)

    # -- serialization ------------------------------------------------------------------------
    def to_dict(self, *, include_timeline: bool = True) -> dict[str, Any]:
        d = plain(self)
        if not include_timeline:
            d["timeline"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryReport:
        d = dict(d)
        d["peak"] = MemoryPoint(**d["peak"])
        d["activation_peak"] = MemoryPoint(**d["activation_peak"])
        d["largest_at_peak"] = [LiveTensor(**t) for t in d["largest_at_peak"]]
        tl = d.get("timeline")
        if tl is not None:
            tl = dict(tl)
            tl["phases"] = [PhaseSpan(**p) for p in tl["phases"]]
            d["timeline"] = MemoryTimeline(**tl)
        d["budget"] = [BudgetRow(**b) for b in d.get("budget", [])]
        if d.get("fit") is not None:
            f = dict(d["fit"])
            f["probes"] = [BatchProbe(**p) for p in f["probes"]]
            d["fit"] = FitSearch(**f)
        if d.get("kv_cache") is not None:
            d["kv_cache"] = KVCacheEstimate(**d["kv_cache"])
        return cls(**d)

    # -- rendering ------------------------------------------------------------------------------
    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield from memory_renderables(self)

    def plot(self, path: str, *, title: str | None = None) -> str:
        """Write the timeline plot (PNG, SVG or PDF by the file's extension); returns the path."""
        return plot_timeline(self, path, title=title)


# -- rich -------------------------------------------------------------------------------------------
def _where(p: MemoryPoint) -> str:
    return f"op #{p.event_index} {p.op} in {p.module or '(root)'} ({p.phase})"


def summary_table(r: MemoryReport) -> Any:
    from rich import box
    from rich.table import Table

    from ..units import human_bytes

    kind = "training step" if r.train else "inference"
    extra = []
    if r.optimizer:
        extra.append(r.optimizer)
    if r.autocast:
        extra.append(f"autocast {r.autocast}")
    tab = Table(title=f"{r.model} — memory, {kind}" + (f" ({', '.join(extra)})" if extra else ""),
                box=box.SIMPLE_HEAD, title_justify="left")
    tab.add_column("what")
    tab.add_column("size", justify="right")
    tab.add_column("bytes", justify="right", style="dim")
    tab.add_column("where / note", style="dim")
    tab.add_row("peak (this step)", human_bytes(r.peak_bytes), f"{r.peak_bytes:,}", _where(r.peak))
    if r.train:
        tab.add_row("peak (steady state)", human_bytes(r.steady_peak_bytes), f"{r.steady_peak_bytes:,}",
                    "a later step: optimizer state alive from the start" +
                    (", fp32 master weights and state" if r.master_weights_bytes else ""))
    tab.add_row("peak activations + temporaries", human_bytes(r.activation_peak_bytes),
                f"{r.activation_peak_bytes:,}", _where(r.activation_peak))
    tab.add_section()
    for cat in CATEGORIES:
        b = r.peak.by_category_bytes.get(cat, 0)
        if b or cat in ("parameters", "activations"):
            tab.add_row(f"  at peak: {cat.replace('_', ' ')}", human_bytes(b), f"{b:,}", "")
    tab.add_section()
    tab.add_row("parameters", human_bytes(r.params_bytes), f"{r.params_bytes:,}", r.dtype)
    if r.train:
        tab.add_row("gradients", human_bytes(r.gradients_bytes), f"{r.gradients_bytes:,}", "")
        if r.optimizer:
            tab.add_row("optimizer state", human_bytes(r.optimizer_state_bytes), f"{r.optimizer_state_bytes:,}",
                        "as allocated in the trace")
        if r.master_weights_bytes:
            tab.add_row("fp32 master weights", human_bytes(r.master_weights_bytes), f"{r.master_weights_bytes:,}",
                        "4 B x trainable parameters")
    tab.caption = f"{r.ops:,} ops, {r.mode} tensors on {r.device}" + (f", batch {r.batch}" if r.batch else "")
    tab.caption_justify = "left"
    return tab


def largest_table(r: MemoryReport) -> Any:
    from rich import box
    from rich.table import Table

    from ..units import human_bytes

    tab = Table(title=f"largest tensors alive at the peak (op #{r.peak.event_index})", box=box.SIMPLE_HEAD,
                title_justify="left")
    for col, j in [("size", "right"), ("category", "left"), ("shape", "left"), ("dtype", "left"),
                   ("created by", "left"), ("module", "left"), ("alive", "right")]:
        tab.add_column(col, justify=j)  # type: ignore[arg-type]
    for t in r.largest_at_peak:
        end = "end" if t.released_after is None else str(t.released_after)
        start = "start" if t.created_at < 0 else str(t.created_at)
        tab.add_row(human_bytes(t.size_bytes), t.category.replace("_", " "), "x".join(map(str, t.shape)) or "()",
                    t.dtype, t.op or "(before the run)", t.module or "(root)", f"{start}..{end}")
    return tab


def budget_table(r: MemoryReport) -> Any:
    from rich import box
    from rich.table import Table

    from ..units import human_bytes

    tab = Table(title="memory budget per batch size", box=box.SIMPLE_HEAD, title_justify="left")
    cols = ["batch", "params", "grads", "optimizer", "master fp32", "activations", "other", "sum", "peak"]
    if any(b.fits is not None for b in r.budget):
        cols.append("fits")
    for c in cols:
        tab.add_column(c, justify="right")
    for b in r.budget:
        row = [str(b.batch), human_bytes(b.params_bytes), human_bytes(b.gradients_bytes),
               human_bytes(b.optimizer_state_bytes), human_bytes(b.master_weights_bytes),
               human_bytes(b.activations_peak_bytes), human_bytes(b.buffers_bytes + b.inputs_bytes),
               human_bytes(b.sum_bytes), human_bytes(b.peak_bytes)]
        if len(cols) > len(row):
            row.append("" if b.fits is None else ("yes" if b.fits else "no"))
        tab.add_row(*row)
    tab.caption = ("sum: every component at its own maximum (conservative); peak: the live-memory timeline of a "
                   "steady-state step. other = buffers + inputs. Each row is its own capture on meta tensors.")
    tab.caption_justify = "left"
    return tab


def fit_text(r: MemoryReport) -> Any:
    from rich.text import Text

    from ..units import human_bytes

    f = r.fit
    assert f is not None
    if f.max_batch == 0:
        head = f"batch 1 does not fit in {human_bytes(f.memory_bytes)}"
    else:
        head = f"largest batch that fits in {human_bytes(f.memory_bytes)}: {f.max_batch}"
    probes = ", ".join(f"{p.batch}: {human_bytes(p.peak_bytes)}{'' if p.fits else ' (no)'}" for p in f.probes)
    return Text.assemble((head, "bold"), "\n", (f"{f.method}\nprobes (batch: steady peak): {probes}", "dim"))


def kv_table(k: KVCacheEstimate) -> Any:
    from rich import box
    from rich.table import Table

    from ..units import human_bytes

    tab = Table(title=f"KV cache ({k.dtype})", box=box.SIMPLE_HEAD, title_justify="left")
    tab.add_column("what")
    tab.add_column("value", justify="right")
    tab.add_column("how", style="dim")
    tab.add_row("bytes per token", f"{k.bytes_per_token:,} B",
                f"{k.layers} layers x 2 x {k.kv_heads} kv heads x {k.head_dim} x {k.itemsize_bytes} B")
    tab.add_row("per sequence", human_bytes(k.bytes_per_sequence), f"{k.context:,} tokens")
    tab.add_row(f"batch {k.batch}", human_bytes(k.total_bytes), f"{k.total_bytes:,} B")
    if k.memory_bytes is not None and k.max_context is not None:
        tab.add_row(f"longest context in {human_bytes(k.memory_bytes)}", f"{k.max_context:,} tokens",
                    f"beside {human_bytes(k.weights_bytes or 0)} of weights, batch {k.batch}")
    if k.model_max_context:
        tab.add_row("model's max context", f"{k.model_max_context:,} tokens", "max_position_embeddings")
    if k.notes:
        tab.caption = "; ".join(k.notes)
        tab.caption_justify = "left"
    return tab


def memory_renderables(r: MemoryReport) -> Any:
    from rich.text import Text

    yield summary_table(r)
    if r.largest_at_peak:
        yield largest_table(r)
    if r.budget:
        yield budget_table(r)
    if r.fit is not None:
        yield fit_text(r)
    if r.kv_cache is not None:
        yield kv_table(r.kv_cache)
    for n in r.notes:
        yield Text(f"note: {n}", style="yellow")


# -- matplotlib -------------------------------------------------------------------------------------
_COLORS = {
    "parameters": "#4c72b0", "buffers": "#8172b3", "inputs": "#937860", "activations": "#dd8452",
    "gradients": "#55a868", "optimizer_state": "#c44e52", "temporaries": "#ccb974",
}


def plot_timeline(r: MemoryReport, path: str, *, title: str | None = None) -> str:
    """Stacked live memory per category after each op, phases shaded, the peak marked."""
    from ..errors import InputError, require

    if r.timeline is None:
        raise InputError("this memory report has no timeline (it was saved without one): profile again")
    matplotlib = require("matplotlib", "plot", "the memory timeline plot")
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    tl = r.timeline
    n = len(tl.total_bytes)
    unit, scale = _plot_unit(max(tl.total_bytes) if n else 1)
    xs = list(range(n))
    cats = [c for c in tl.categories if any(tl.bytes_by_category[c])]
    fig, ax = plt.subplots(figsize=(10, 4.8), dpi=120)
    try:
        ax.stackplot(xs, *[[v / scale for v in tl.bytes_by_category[c]] for c in cats],
                     labels=[c.replace("_", " ") for c in cats], colors=[_COLORS[c] for c in cats],
                     step="post", linewidth=0)
        shade = {"forward": None, "loss": "#00000010", "backward": "#00000014", "optimizer": "#0000001e"}
        for span in tl.phases:
            ax.axvspan(span.first - 0.5, span.last + 0.5, color=shade.get(span.phase) or "#00000000", lw=0)
            ax.text((span.first + span.last) / 2, 1.0, span.phase, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom", fontsize=8, color="#555555")
        p = r.peak
        ax.axvline(p.event_index, color="black", lw=0.8, ls="--")
        ax.annotate(f"peak {p.total_bytes / scale:.3g} {unit}\n{p.op}\n{p.module or '(root)'}",
                    xy=(p.event_index, p.total_bytes / scale), xytext=(8, -8), textcoords="offset points",
                    fontsize=8, va="top", ha="left" if p.event_index < 0.7 * max(n, 1) else "right",
                    bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0.5})
        ax.plot([p.event_index], [p.total_bytes / scale], "o", color="black", ms=4)
        ax.set_xlim(-0.5, max(n - 0.5, 0.5))
        ax.set_ylim(0, max(tl.total_bytes) / scale * 1.12 if n else 1)
        ax.set_xlabel("op index (execution order)")
        ax.set_ylabel(f"live memory ({unit})")
        kind = "training step" if r.train else "inference"
        ax.set_title(title or f"{r.model} — live memory, {kind}", fontsize=10, pad=14)
        ax.legend(loc="upper left", fontsize=8, frameon=False, ncol=2)
        fig.tight_layout()
        try:
            fig.savefig(path)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot write the plot to {path}: {exc}; use a writable .png, .svg or .pdf path") from exc
    finally:
        plt.close(fig)
    return path


def _plot_unit(peak: float) -> tuple[str, float]:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if peak >= scale:
            return unit, float(scale)
    return "B", 1.0


__all__ = [
    "CATEGORIES", "BatchProbe", "BudgetRow", "FitSearch", "KVCacheEstimate", "LiveTensor", "MemoryPoint",
    "MemoryReport", "MemoryTimeline", "PhaseSpan", "memory_renderables", "plot_timeline",
]

"""Measured results: latency samples and statistics, throughput sweeps, MFU/HFU, energy, and the
measured-vs-predicted comparison. Frozen dataclasses with units in field names; raw samples kept.

A :class:`Benchmark` goes into ``Report.benchmark`` (``dataclasses.replace(report, benchmark=b)``);
its ``to_dict()`` is what the JSON report carries and ``Benchmark.from_dict`` reads it back losslessly.
It renders itself with rich (``__rich_console__``); the library never prints.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .jsonable import plain

BENCHMARK_SCHEMA = "modelmeter.benchmark/1"


@dataclass(frozen=True)
class LatencyStats:
    """Summary of timing samples (seconds per call). Percentiles interpolate linearly (numpy default)."""

    n: int
    mean_s: float
    std_s: float  # sample standard deviation (n - 1)
    min_s: float
    max_s: float
    p25_s: float
    p50_s: float
    p75_s: float
    p90_s: float
    p99_s: float
    iqr_s: float  # p75 - p25
    rel_iqr: float  # iqr / median
    median_ci95_low_s: float | None  # distribution-free 95% interval of the median (None when n < 8)
    median_ci95_high_s: float | None
    rel_precision: float | None  # half-width of that interval / median


@dataclass(frozen=True)
class Timing:
    """One harness run: warm-up, then timed samples until the budget or the precision target."""

    label: str  # "forward" or "train-step"
    device: str
    timer: str  # "perf_counter_ns", "cuda-event", "perf_counter_ns+mps-sync"
    threads: int  # torch intra-op threads during the run
    calls_per_sample: int  # each sample is the mean of this many back-to-back calls
    warmup_calls: int
    warmup_s: float
    budget_s: float
    target_rel_precision: float | None
    stop_reason: str  # "precision", "budget", "max-samples"
    timed_wall_s: float  # host wall time of the timed loop, sync overheads included
    samples_s: list[float]  # raw samples in the order taken, seconds per call
    stats: LatencyStats
    warnings: list[str] = field(default_factory=list)
    #: CPU time of this process during the timed loop / timed wall time, in cores (1.0 = one core busy
    #: all the time); well below the thread count on CPU means the process waited for a core (other load)
    cpu_busy_cores: float | None = None


@dataclass(frozen=True)
class ThroughputPoint:
    """One batch size of a sweep; its raw samples are in the run of the same batch (``Benchmark.runs``)."""

    batch: int
    latency_p50_s: float  # per batch
    latency_p90_s: float
    samples_per_s: float  # batch / latency_p50_s
    best: bool


@dataclass(frozen=True)
class ThroughputSweep:
    mode: str  # "inference" or "train"
    points: list[ThroughputPoint]
    best_batch: int | None  # highest samples_per_s
    largest_batch_ran: int | None
    oom_batch: int | None  # first batch that ran out of memory (the sweep stopped there)
    stop_reason: str  # "done" or "out-of-memory"
    note: str = ""


@dataclass(frozen=True)
class PeakInfo:
    """The peak a utilization figure divides by, and where it came from."""

    name: str
    kind: str  # "override", "catalog", "calibrated"
    dtype: str
    flops_per_s: float | None  # dense peak at dtype
    bandwidth_bytes_per_s: float | None
    tdp_w: float | None
    source: str


@dataclass(frozen=True)
class Utilization:
    """MFU and HFU of one timed run (warm-up excluded: the timed median is used).

    MFU = model FLOPs per call / median latency / dense peak at the dtype; model FLOPs are the counted
    matmul FLOPs (2 x MACs) of the forward pass, times 3 for a training step (backward = 2 x forward,
    PaLM appendix B), never counting recomputation. HFU = all counted FLOPs of the ops that really ran
    (matmul and non-matmul, every phase, recomputation included) / median latency / the same peak.
    """

    mfu: float | None
    hfu: float | None
    model_flops: int
    hardware_flops: int
    achieved_model_flops_per_s: float
    achieved_hardware_flops_per_s: float
    peak_flops_per_s: float | None
    peak_name: str | None
    reason: str  # why mfu is None, else ""
    mfu_definition: str
    hfu_definition: str


@dataclass(frozen=True)
class EnergyWindow:
    """What one meter read over one window (device synchronized at both ends)."""

    meter: str
    method: str  # "nvml-energy-counter", "nvml-power-sampling", "rapl-powercap", "none"
    energy_j: float | None
    duration_s: float
    approximate: bool  # energy from power x time instead of an energy counter
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EnergyEstimate:
    """Energy per call estimated from counted work, and a TDP x time upper bound. Both are estimates."""

    label: str  # always "estimated"
    flops: int
    bytes_moved: int
    pj_per_flop: float
    pj_per_byte: float
    arithmetic_j: float
    memory_j: float
    total_j: float
    figures: str  # which published per-operation energies, with their citation
    tdp_w: float | None
    tdp_source: str
    latency_s: float
    tdp_bound_j: float | None  # tdp_w x latency_s


@dataclass(frozen=True)
class Carbon:
    grams_co2e_per_call: float
    grams_co2e_per_1k_samples: float
    intensity_g_per_kwh: float
    intensity_source: str
    pue: float


@dataclass(frozen=True)
class EnergyResult:
    measured: bool
    meter: str
    method: str
    unavailable_reason: str  # why nothing was measured ("" when measured)
    window_s: float | None
    calls: int | None
    energy_j: float | None  # whole window
    energy_per_call_j: float | None  # measured, else the estimate's total
    energy_per_sample_j: float | None
    energy_per_token_j: float | None
    joules_per_flop: float | None
    avg_power_w: float | None
    idle_power_w: float | None
    energy_above_idle_per_call_j: float | None
    estimate: EnergyEstimate | None
    carbon: Carbon | None
    warnings: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "measured" if self.measured else ("estimated" if self.estimate is not None else "none")


@dataclass(frozen=True)
class Comparison:
    """Counted, predicted and measured side by side for one run."""

    macs: int
    flops: int
    matmul_flops: int
    bytes_moved: int
    predicted_s: float | None  # roofline, sum over ops (unfused)
    predicted_fused_s: float | None  # roofline of the fused lower bound
    predicted_on: str | None  # device entry the prediction used
    measured_p50_s: float
    ratio: float | None  # measured / predicted (>= 1 when the roofline is a true lower bound)
    mfu: float | None
    energy_per_call_j: float | None
    energy_kind: str  # "measured", "estimated" or "none"
    note: str = ""


@dataclass(frozen=True)
class BenchRun:
    mode: str  # "inference" or "train"
    batch: int
    tokens_per_call: int | None
    timing: Timing
    utilization: Utilization | None
    energy: EnergyResult | None
    comparison: Comparison | None

    @property
    def samples_per_s(self) -> float:
        return self.batch / self.timing.stats.p50_s


@dataclass(frozen=True)
class Benchmark:
    model: str
    device: str
    device_name: str
    dtype: str
    threads: int
    torch_version: str
    peak: PeakInfo | None
    runs: list[BenchRun]
    sweep: ThroughputSweep | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    schema: str = BENCHMARK_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Benchmark:
        if not str(d.get("schema", "")).startswith("modelmeter.benchmark/"):
            from ..errors import InputError

            raise InputError("not a modelmeter benchmark: the 'schema' field is missing or foreign")
        return _build(cls, d)

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield from render_benchmark(self)


# -- (de)serialization ------------------------------------------------------------------------------


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(args[0], value) if len(args) == 1 else value
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_build(item, x) for x in value]
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        kwargs = {f.name: _build(hints[f.name], value[f.name]) for f in dataclasses.fields(tp) if f.name in value}
        return tp(**kwargs)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


# -- rendering ----------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x * 100:.2g}%" if abs(x) < 0.01 else f"{x * 100:.1f}%"


def _energy(x: float | None) -> str:
    if x is None:
        return "-"
    for scale, unit in ((1.0, "J"), (1e-3, "mJ"), (1e-6, "µJ"), (1e-9, "nJ")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g} J"


def render_benchmark(b: Benchmark) -> Any:
    """Rich renderables: latency, counted vs predicted vs measured, energy, throughput sweep, warnings.

    Columns that would be empty for every row are left out, so the tables fit 80 columns.
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..units import human_count, human_seconds

    def table(title: str, cols: list[str], left: tuple[str, ...] = ()) -> Table:
        t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, caption_justify="left")
        for c in cols:
            t.add_column(c, justify="left" if c in left else "right", no_wrap=True)
        return t

    modes = sorted({r.mode for r in b.runs})
    one_mode = len(modes) == 1
    what = {"inference": "inference", "train": "training step"}
    label = ", ".join(what.get(m, m) for m in modes)
    peak = "no peak known (pass --peak-tflops)"
    if b.peak is not None and b.peak.flops_per_s:
        peak = f"peak {b.peak.flops_per_s / 1e12:.3g} TFLOP/s {b.peak.dtype} from {b.peak.name} ({b.peak.kind})"

    lead = [] if one_mode else ["mode"]
    lat = table(f"{b.model} {label} on {b.device_name} ({b.device}), {b.dtype}, {b.threads} threads",
                [*lead, "batch", "n", "p50", "p90", "p99", "min", "IQR", "samples/s"], left=("mode",))
    for r in b.runs:
        s = r.timing.stats
        lat.add_row(*([r.mode] if not one_mode else []), str(r.batch), str(s.n), human_seconds(s.p50_s),
                    human_seconds(s.p90_s), human_seconds(s.p99_s), human_seconds(s.min_s), _pct(s.rel_iqr),
                    f"{r.samples_per_s:,.1f}")
    timers = sorted({r.timing.timer for r in b.runs})
    lat.caption = f"timer {', '.join(timers)}; IQR as % of p50; mean, std and raw samples in the JSON"
    yield lat

    cmp_rows = [r for r in b.runs if r.comparison is not None]
    if cmp_rows:
        has_pred = any(r.comparison and r.comparison.predicted_s is not None for r in cmp_rows)
        has_mfu = any(r.utilization and r.utilization.mfu is not None for r in cmp_rows)
        has_energy = any(r.comparison and r.comparison.energy_per_call_j is not None for r in cmp_rows)
        cols = [*lead, "batch", "MACs", "FLOPs"]
        cols += ["predicted", "measured", "ratio"] if has_pred else ["measured"]
        cols += ["MFU", "HFU"] if has_mfu else []
        cols += ["energy/call"] if has_energy else []
        t = table("counted vs predicted vs measured", cols, left=("mode",))
        for r in cmp_rows:
            c = r.comparison
            assert c is not None
            u = r.utilization
            row = [*([r.mode] if not one_mode else []), str(r.batch), human_count(c.macs), human_count(c.flops)]
            if has_pred:
                row += ["-" if c.predicted_s is None else human_seconds(c.predicted_s), human_seconds(c.measured_p50_s),
                        "-" if c.ratio is None else f"{c.ratio:.2f}x"]
            else:
                row += [human_seconds(c.measured_p50_s)]
            if has_mfu:
                row += [_pct(u.mfu if u else None), _pct(u.hfu if u else None)]
            if has_energy:
                row += ["-" if c.energy_per_call_j is None else
                        _energy(c.energy_per_call_j) + ("" if c.energy_kind == "measured" else " *")]
            t.add_row(*row)
        cap = []
        on = sorted({r.comparison.predicted_on for r in cmp_rows if r.comparison and r.comparison.predicted_on})
        if has_pred:
            cap.append(f"predicted: roofline on {', '.join(on)}; ratio = measured / predicted")
        else:
            notes = sorted({r.comparison.note for r in cmp_rows if r.comparison and r.comparison.note})
            cap.append("no prediction: " + "; ".join(notes) if notes else "no prediction")
        if has_mfu:
            cap.append(f"MFU: forward matmul FLOPs (x3 for training) / p50 / peak; HFU: all counted FLOPs; {peak}")
        else:
            cap.append(f"MFU: {peak}")
        if has_energy and any(r.comparison and r.comparison.energy_kind != "measured" for r in cmp_rows):
            cap.append("* energy estimated, not measured")
        t.caption = "\n".join(cap)
        yield t

    en_rows = [r for r in b.runs if r.energy is not None]
    if en_rows:
        measured = any(r.energy and r.energy.measured for r in en_rows)
        tokens = any(r.energy and r.energy.energy_per_token_j is not None for r in en_rows)
        carbon = any(r.energy and r.energy.carbon is not None for r in en_rows)
        cols = [*lead, "batch", "kind", "per call", "per sample"] + (["per token"] if tokens else []) + ["J/FLOP"]
        cols += ["power", "above idle"] if measured else []
        cols += ["CO2e/1k samples"] if carbon else []
        t = table("energy", cols, left=("mode", "kind"))
        for r in en_rows:
            e = r.energy
            assert e is not None
            row = [*([r.mode] if not one_mode else []), str(r.batch), e.kind, _energy(e.energy_per_call_j),
                   _energy(e.energy_per_sample_j)]
            row += [_energy(e.energy_per_token_j)] if tokens else []
            row += ["-" if e.joules_per_flop is None else f"{e.joules_per_flop:.3g}"]
            if measured:
                row += ["-" if e.avg_power_w is None else f"{e.avg_power_w:.1f} W", _energy(e.energy_above_idle_per_call_j)]
            if carbon:
                row += ["-" if e.carbon is None else f"{e.carbon.grams_co2e_per_1k_samples:.3g} g"]
            t.add_row(*row)
        first = en_rows[0].energy
        assert first is not None
        cap = [f"meter: {first.meter} ({first.method})" if first.measured else f"not measured: {first.unavailable_reason}"]
        est = first.estimate
        if est is not None and not first.measured:
            cap.append(f"estimated: {est.pj_per_flop:g} pJ/FLOP + {est.pj_per_byte:g} pJ/byte moved ({est.figures})")
            if est.tdp_bound_j is not None:
                cap.append(f"TDP x time bound: {_energy(est.tdp_bound_j)} per call at batch {en_rows[0].batch} "
                           f"({est.tdp_w:g} W, {est.tdp_source})")
            else:
                cap.append(f"TDP x time bound: {est.tdp_source}")
        if first.carbon is not None:
            cap.append(f"CO2e: {first.carbon.intensity_source}; PUE {first.carbon.pue:g}")
        t.caption = "\n".join(cap)
        yield t

    if b.sweep is not None and b.sweep.points:
        sw = b.sweep
        t = table(f"throughput sweep ({what.get(sw.mode, sw.mode)})", ["batch", "p50 / batch", "p90 / batch",
                                                                     "samples/s", ""])
        for p in sw.points:
            t.add_row(str(p.batch), human_seconds(p.latency_p50_s), human_seconds(p.latency_p90_s),
                      f"{p.samples_per_s:,.1f}", "best" if p.best else "")
        if sw.oom_batch is not None:
            t.caption = f"batch {sw.oom_batch} ran out of memory; largest batch that ran: {sw.largest_batch_ran}"
        yield t

    warns = list(b.warnings)
    for r in b.runs:
        warns.extend(f"{r.mode} batch {r.batch}: {w}" for w in r.timing.warnings)
        if r.energy is not None and r.energy.measured:
            warns.extend(f"{r.mode} batch {r.batch} energy: {w}" for w in r.energy.warnings)
    for w in dict.fromkeys(warns):
        yield Text(f"warning: {w}", style="yellow")
    for n in b.notes:
        yield Text(f"note: {n}", style="dim")


__all__ = [
    "BENCHMARK_SCHEMA", "BenchRun", "Benchmark", "Carbon", "Comparison", "EnergyEstimate", "EnergyResult",
    "EnergyWindow", "LatencyStats", "PeakInfo", "ThroughputPoint", "ThroughputSweep", "Timing", "Utilization",
    "render_benchmark",
]

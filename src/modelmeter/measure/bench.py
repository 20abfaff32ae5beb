"""Benchmark a model: latency per batch size (a throughput sweep when several), training-step timing,
MFU/HFU, energy (measured or estimated) and the counted-vs-predicted-vs-measured comparison.

The user's model is not modified: inference runs the model itself in eval mode under
``torch.inference_mode()`` when it already sits on the device at the dtype (a deep copy otherwise),
and every module's ``training`` flag is restored; a training step always runs on a deep copy with its
own optimizer. Torch's random number generators are restored afterwards (dropout draws from them).
Inputs are placed on the device before the warm-up.
"""

from __future__ import annotations

import copy
import gc
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, MeasurementError
from ..report.benchmark import (
    Benchmark,
    BenchRun,
    Comparison,
    EnergyResult,
    EnergyWindow,
    PeakInfo,
    ThroughputPoint,
    ThroughputSweep,
    Timing,
)
from .energy import EnergyMeter, calls_for_window, detect_meter, idle_power_w, measure_energy
from .estimate import carbon, estimate_energy
from .mfu import matmul_dtype_key, override_peak, peak_info_from, resolve_entry, utilization
from .predict import predict_latency
from .timer import DeviceTimer, HarnessSettings, ProgressCallback, device_timer, measure, num_threads


@dataclass(frozen=True)
class EnergySettings:
    """``window_s``: minimum energy window (calls repeated to fill it); ``idle_s``: idle baseline length."""

    window_s: float = 1.0
    idle_s: float = 0.5
    tdp_w: float | None = None
    grid_g_per_kwh: float | None = None
    grid_source: str = ""
    pue: float = 1.0
    include_dram: bool = False


# -- inputs ------------------------------------------------------------------------------------------------


def _map_tensors(x: Any, fn: Callable[[Any], Any]) -> Any:
    from ..capture.run import map_tensors  # one walk of nested inputs for the whole package

    return map_tensors(x, fn)


def _tensors(x: Any) -> list[Any]:
    out: list[Any] = []
    _map_tensors(x, lambda t: out.append(t) or t)
    return out


def base_batch(inputs: Any) -> int:
    """The batch size of example inputs: dim 0 of the first tensor with at least one dimension."""
    for t in _tensors(inputs):
        if t.dim() >= 1:
            return int(t.shape[0])
    raise InputError("cannot tell the batch size: no input tensor has a batch dimension; pass inputs_for_batch")


def scale_batch(inputs: Any, batch: int) -> Any:
    """Inputs with dim 0 resized to ``batch`` (rows repeated cyclically) for every tensor whose dim 0 is the
    example's batch size; other tensors are kept as they are."""
    import torch

    if batch < 1:
        raise InputError(f"batch sizes must be >= 1, not {batch}")
    b0 = base_batch(inputs)
    if batch == b0:
        return inputs

    def resize(t: torch.Tensor) -> torch.Tensor:
        if t.dim() >= 1 and t.shape[0] == b0:
            idx = torch.arange(batch, device=t.device) % b0
            return t.index_select(0, idx).contiguous()
        return t

    return _map_tensors(inputs, resize)


def place(inputs: Any, device: Any, dtype: Any = None) -> Any:
    """Inputs on the device; floating tensors cast to ``dtype`` when given."""
    def move(t: Any) -> Any:
        target = dtype if (dtype is not None and t.dtype.is_floating_point) else t.dtype
        return t.detach().to(device=device, dtype=target)

    return _map_tensors(inputs, move)


def count_tokens(inputs: Any) -> int | None:
    """Tokens per call for language models: ``input_ids`` (or the first integer tensor of rank >= 2)."""
    if isinstance(inputs, dict) and "input_ids" in inputs:
        return int(inputs["input_ids"].numel())
    for t in _tensors(inputs):
        if not t.dtype.is_floating_point and not t.dtype.is_complex and t.dtype != _bool() and t.dim() >= 2:
            return int(t.numel())
    return None


def _bool() -> Any:
    import torch

    return torch.bool


def _call(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free(device: Any) -> None:
    import torch

    gc.collect()
    if str(device).startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def device_name(device: Any) -> str:
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    if dev.type == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                for line in f:
                    if line.startswith("model name"):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()
    return dev.type


# -- the model under test ------------------------------------------------------------------------------------


def _check_real(model: Any) -> None:
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.device.type == "meta":
            raise InputError(
                f"the model has meta (empty) tensors ('{name}'): timing needs real weights; build it on cpu or cuda, "
                f"e.g. modelmeter.models.load(spec, device='cpu')"
            )


def _needs_copy(model: Any, device: Any, dtype: Any) -> bool:
    import torch

    dev = torch.device(device)
    for t in [*model.parameters(), *model.buffers()]:
        if t.device.type != dev.type or (dev.index is not None and t.device.index != dev.index):
            return True
        if dtype is not None and t.dtype.is_floating_point and t.dtype != dtype:
            return True
    return False


def _copy_to(model: Any, device: Any, dtype: Any) -> Any:
    m = copy.deepcopy(model)
    m.to(device=device)
    if dtype is not None:
        m.to(dtype=dtype)
    return m


def inference_fn(model: Any, inputs: Any) -> Callable[[], Any]:
    return lambda: _call(model, inputs)


def train_step_fn(model: Any, inputs: Any, *, optimizer: str | None = "sgd",
                  loss_fn: Callable[[Any], Any] | None = None) -> Callable[[], Any]:
    """One training step on ``model`` (pass a copy): zero grads, forward, loss, backward, optimizer step."""
    from ..capture.run import default_loss, make_optimizer

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("a training step needs trainable parameters; this model has none")
    opt = make_optimizer(optimizer, params) if optimizer else None
    lossf = loss_fn or default_loss

    def step() -> None:
        if opt is not None:
            opt.zero_grad(set_to_none=True)
        else:
            for p in params:
                p.grad = None
        loss = lossf(_call(model, inputs))
        loss.backward()
        if opt is not None:
            opt.step()

    return step


# -- one run ---------------------------------------------------------------------------------------------------


def _energy_result(
    *, window: EnergyWindow | None, meter: EnergyMeter, calls: int | None, batch: int, tokens: int | None,
    hardware_flops: int | None, bytes_moved: int | None, dtype: str, latency_s: float, idle_w: float | None,
    peak: PeakInfo | None, es: EnergySettings,
) -> EnergyResult:
    measured = window is not None and window.energy_j is not None and calls
    estimate = None
    if hardware_flops is not None and bytes_moved is not None:
        tdp = es.tdp_w if es.tdp_w is not None else (peak.tdp_w if peak is not None else None)
        tdp_src = "--tdp-w" if es.tdp_w is not None else (f"{peak.name} entry" if peak is not None and peak.tdp_w else "")
        try:
            estimate = estimate_energy(flops=hardware_flops, bytes_moved=bytes_moved, dtype=dtype, latency_s=latency_s,
                                       tdp_w=tdp, tdp_source=tdp_src)
        except InputError:
            estimate = None
    warnings = list(window.warnings) if window is not None else []
    if measured:
        assert window is not None and window.energy_j is not None and calls
        per_call = window.energy_j / calls
        avg_w = window.energy_j / window.duration_s if window.duration_s > 0 else None
        above = ((avg_w - idle_w) * window.duration_s / calls) if (avg_w is not None and idle_w is not None) else None
        if window.approximate:
            warnings.append("energy approximated from power x time")
    else:
        per_call = estimate.total_j if estimate is not None else None
        avg_w = above = None
    reason = "" if measured else (meter.probe() or (window.warnings[0] if window and window.warnings else "no reading"))
    return EnergyResult(
        measured=bool(measured),
        meter=meter.name,
        method=meter.method if measured else (f"estimate ({meter.method} unavailable)" if estimate else "none"),
        unavailable_reason=reason,
        window_s=window.duration_s if window is not None else None,
        calls=calls if measured else None,
        energy_j=window.energy_j if measured and window is not None else None,
        energy_per_call_j=per_call,
        energy_per_sample_j=per_call / batch if per_call is not None else None,
        energy_per_token_j=per_call / tokens if (per_call is not None and tokens) else None,
        joules_per_flop=per_call / hardware_flops if (per_call is not None and hardware_flops) else None,
        avg_power_w=avg_w,
        idle_power_w=idle_w,
        energy_above_idle_per_call_j=above,
        estimate=estimate,
        carbon=carbon(per_call, batch, intensity_g_per_kwh=es.grid_g_per_kwh, intensity_source=es.grid_source,
                      pue=es.pue) if per_call is not None else None,
        warnings=warnings,
    )


def benchmark(
    model: Any,
    inputs: Any,
    *,
    batches: Sequence[int] | None = None,
    inputs_for_batch: Callable[[int], Any] | None = None,
    device: str = "cpu",
    dtype: Any = None,
    train: bool = False,
    optimizer: str | None = "sgd",
    loss_fn: Callable[[Any], Any] | None = None,
    threads: int | None = None,
    budget_s: float = 2.0,
    harness: HarnessSettings | None = None,
    energy: bool = False,
    meter: EnergyMeter | None = None,
    energy_settings: EnergySettings | None = None,
    peak_tflops: float | None = None,
    hardware: str | None = None,
    catalog: Any = None,
    count: bool = True,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    timer: DeviceTimer | None = None,
) -> Benchmark:
    """Time ``model(inputs)`` (or a training step) at each batch size and report the measured figures.

    ``batches`` defaults to the example's own batch; other sizes come from ``inputs_for_batch(b)`` or
    by repeating the example's rows. ``count=True`` also counts the same inputs on the meta device for
    MFU, the energy estimate and the counted-vs-predicted comparison. ``energy=True`` measures energy
    with the first meter that works here (or ``meter``), else estimates it.
    """
    import torch

    from ..api import parse_dtype

    # validate everything before any work ------------------------------------------------------------------
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    tdtype = parse_dtype(dtype)
    dev = torch.device(device)
    if dev.type == "meta":
        raise InputError("cannot time on the meta device (it does no work): use --device cpu or cuda")
    settings = harness or HarnessSettings(budget_s=budget_s)
    settings.validate()
    es = energy_settings or EnergySettings()
    if es.window_s <= 0 or es.idle_s < 0:
        raise InputError("the energy window must be > 0 s and the idle baseline >= 0 s")
    if optimizer is not None and train:
        from ..capture.run import OPTIMIZERS

        if optimizer.lower() not in OPTIMIZERS:
            raise InputError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    sizes = list(batches) if batches else [base_batch(inputs) if inputs is not None else 1]
    if any((not isinstance(b, int)) or b < 1 for b in sizes):
        raise InputError(f"batch sizes must be integers >= 1, not {sizes}")
    if inputs is None and inputs_for_batch is None:
        raise InputError("pass example inputs or inputs_for_batch")
    _check_real(model)
    timer = timer or device_timer(dev)

    run_dtype = tdtype or next((p.dtype for p in model.parameters() if p.dtype.is_floating_point), torch.float32)
    dtype_name = str(run_dtype).replace("torch.", "")
    key = matmul_dtype_key(str(dev), dtype_name)
    entry, kind, entry_note = resolve_entry(str(dev), hardware=hardware, catalog=catalog)
    notes: list[str] = []
    warnings: list[str] = []
    if peak_tflops is not None:
        peak = override_peak(peak_tflops, key, tdp_w=getattr(entry, "tdp_w", None))
    elif entry is not None:
        peak = peak_info_from(entry, key, kind=kind)
        if peak.flops_per_s is None:
            notes.append(f"{peak.name} has no {key} peak: no MFU; pass --peak-tflops")
    else:
        peak = None
        notes.append(entry_note)
    entry_kind = getattr(entry, "kind", None)
    if entry_kind in ("cpu", "gpu") and entry_kind != ("cpu" if dev.type == "cpu" else "gpu"):
        warnings.append(f"measured on {dev} but the device entry {entry.name} is a {entry_kind}: its peak and "
                        f"roofline describe another device")
    if entry is not None:
        notes.append(f"device entry {entry.name} ({kind}) for the roofline prediction"
                     + (" and the peak" if peak_tflops is None else "; the peak is the override"))
    mode = "train" if train else "inference"
    active_meter: EnergyMeter | None = None
    if energy:
        active_meter = meter or detect_meter(dev, include_dram=es.include_dram)

    saved_modes = {m: m.training for m in model.modules()}
    runs: list[BenchRun] = []
    oom_batch: int | None = None
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices), num_threads(threads) as used_threads:
            idle_w = None
            if active_meter is not None and active_meter.available and es.idle_s > 0:
                timer.sync()
                idle_w = idle_power_w(active_meter, es.idle_s)
            shared = None
            if not train:
                try:
                    shared = _copy_to(model, dev, tdtype) if _needs_copy(model, dev, tdtype) else model
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    _free(dev)
                    raise MeasurementError(f"the model does not fit on {dev} ({_first_line(exc)}): try --dtype bf16 "
                                           f"or a larger device") from exc
                shared.eval()
            for b in sizes:
                ex = inputs_for_batch(b) if inputs_for_batch is not None else scale_batch(inputs, b)
                try:
                    run = _one_run(
                        model, shared, ex, b, dev=dev, tdtype=tdtype, dtype_name=dtype_name, train=train,
                        optimizer=optimizer, loss_fn=loss_fn, settings=settings, timer=timer, progress=progress,
                        count=count, peak=peak, meter=active_meter, es=es, idle_w=idle_w, mode=mode,
                        entry=entry, key=key,
                    )
                except Exception as exc:
                    if not _is_oom(exc):
                        raise
                    oom_batch = b
                    _free(dev)
                    break
                runs.append(run)
    finally:
        for m, flag in saved_modes.items():
            m.training = flag
        if active_meter is not None:
            active_meter.close()

    if not runs:
        raise MeasurementError(f"batch {oom_batch} ran out of memory on {dev}: try a smaller --batch")
    sweep = None
    if len(sizes) > 1:
        best = max(runs, key=lambda r: r.samples_per_s)
        pts = [ThroughputPoint(r.batch, r.timing.stats.p50_s, r.timing.stats.p90_s, r.samples_per_s, r is best)
               for r in runs]
        sweep = ThroughputSweep(mode=mode, points=pts, best_batch=best.batch, largest_batch_ran=max(r.batch for r in runs),
                                oom_batch=oom_batch, stop_reason="out-of-memory" if oom_batch is not None else "done",
                                note="latency per batch; samples/s = batch / p50")
    if oom_batch is not None:
        warnings.append(f"batch {oom_batch} ran out of memory; the sweep stopped there")
    return Benchmark(
        model=name or type(model).__name__,
        device=str(dev),
        device_name=device_name(dev),
        dtype=dtype_name,
        threads=used_threads,
        torch_version=torch.__version__,
        peak=peak,
        runs=runs,
        sweep=sweep,
        warnings=warnings,
        notes=notes,
    )


def _one_run(
    model: Any, shared: Any, ex: Any, batch: int, *, dev: Any, tdtype: Any, dtype_name: str, train: bool,
    optimizer: str | None, loss_fn: Any, settings: HarnessSettings, timer: DeviceTimer,
    progress: ProgressCallback | None, count: bool, peak: PeakInfo | None, meter: EnergyMeter | None,
    es: EnergySettings, idle_w: float | None, mode: str, entry: Any = None, key: str = "fp32",
) -> BenchRun:
    import torch

    report = None
    if count:
        from ..api import profile

        report = profile(model, ex, train=train, device="meta", dtype=tdtype,
                         optimizer=optimizer if train else None, loss_fn=loss_fn)
    x = place(ex, dev, tdtype)
    tokens = count_tokens(ex)
    window: EnergyWindow | None = None
    calls: int | None = None
    if train:
        m = _copy_to(model, dev, tdtype)
        m.train()
        fn = train_step_fn(m, x, optimizer=optimizer, loss_fn=loss_fn)
        timing = measure(fn, timer=timer, settings=settings, label="train-step", device=str(dev), progress=progress)
        if meter is not None and meter.available:
            calls = calls_for_window(timing.stats.p50_s, es.window_s, meter)
            window = measure_energy(fn, meter, timer, calls=calls)
        del fn, m
    else:
        fn = inference_fn(shared, x)
        with torch.inference_mode():
            timing = measure(fn, timer=timer, settings=settings, label="forward", device=str(dev), progress=progress)
            if meter is not None and meter.available:
                calls = calls_for_window(timing.stats.p50_s, es.window_s, meter)
                window = measure_energy(fn, meter, timer, calls=calls)
    del x
    lat = timing.stats.p50_s

    util = comparison = energy_res = None
    if report is not None:
        tot = report.totals
        fwd = tot.phases.get("forward")
        fwd_mm = 2 * fwd.macs if fwd is not None else tot.matmul_flops
        util = utilization(forward_matmul_flops=fwd_mm, hardware_flops=tot.flops, latency_s=lat, train=train,
                           peak=peak)
    if meter is not None:
        energy_res = _energy_result(
            window=window, meter=meter, calls=calls, batch=batch, tokens=tokens,
            hardware_flops=report.totals.flops if report is not None else None,
            bytes_moved=report.totals.bytes_moved if report is not None else None,
            dtype=dtype_name, latency_s=lat, idle_w=idle_w, peak=peak, es=es,
        )
    if report is not None:
        tot = report.totals
        pred = predict_latency(report, entry, key)
        comparison = Comparison(
            macs=tot.macs, flops=tot.flops, matmul_flops=tot.matmul_flops, bytes_moved=tot.bytes_moved,
            predicted_s=pred.unfused_s, predicted_fused_s=pred.fused_s, predicted_on=pred.device, measured_p50_s=lat,
            ratio=(lat / pred.unfused_s) if pred.unfused_s else None, mfu=util.mfu if util else None,
            energy_per_call_j=energy_res.energy_per_call_j if energy_res else None,
            energy_kind=energy_res.kind if energy_res else "none", note=pred.note,
        )
    return BenchRun(mode=mode, batch=batch, tokens_per_call=tokens, timing=timing, utilization=util,
                    energy=energy_res, comparison=comparison)


def time_model(model: Any, inputs: Any, *, device: str = "cpu", dtype: Any = None, train: bool = False,
               optimizer: str | None = "sgd", loss_fn: Any = None, threads: int | None = None,
               budget_s: float = 2.0, harness: HarnessSettings | None = None,
               progress: ProgressCallback | None = None) -> Timing:
    """Only the latency of ``model(inputs)`` (or one training step): no counting, no energy."""
    b = benchmark(model, inputs, device=device, dtype=dtype, train=train, optimizer=optimizer, loss_fn=loss_fn,
                  threads=threads, budget_s=budget_s, harness=harness, count=False, progress=progress)
    return b.runs[0].timing


__all__ = ["EnergySettings", "base_batch", "benchmark", "count_tokens", "device_name", "inference_fn", "place",
           "scale_batch", "time_model", "train_step_fn"]

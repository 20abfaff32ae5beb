"""Measure this machine's ceilings and turn them into a device entry.

* **Matrix-multiply FLOP/s per dtype**: ``torch.mm`` of square n x n matrices, 2 n^3 FLOPs per call,
  n doubled from 256 while one call stays short; the best rate over sizes is the ceiling. fp32 always;
  bf16/fp16 where the device has a fast path (CUDA; a CPU with AVX512_BF16/AMX for bf16,
  AVX512_FP16/AMX-FP16 for fp16) or when asked for.
* **Memory bandwidth**: ``dst.copy_(src)`` of a buffer several times larger than the last-level
  cache; each copy moves ``2 x size`` bytes (read + write), as the roofline counts bytes.
* **Per-kernel overhead**: the time of a one-element ``torch.add`` (dispatch + launch), what a model of
  many small ops pays per op beyond the roofline.

Each figure is the best of its repeats (a ceiling, not a typical rate). The whole run is kept to about
``seconds`` of wall time. The result is a device entry (``confidence`` "measured") that
:func:`modelmeter.hardware.save_entry` writes to the user's hardware file, where predictions for this
machine then find it.
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import HardwareError, InputError
from .detect import LocalDevice, detect_cpu, detect_cuda
from .spec import SCHEMA, dtype_key


@dataclass(frozen=True)
class MatmulResult:
    dtype: str
    n: int  # matrices are n x n
    flop_per_s: float  # best over sizes and repeats: 2 n^3 / seconds per call
    seconds_per_call: float
    sizes_tried: list[int]
    rates_by_size: dict[int, float]  # best FLOP/s at each size


@dataclass(frozen=True)
class Calibration:
    device: LocalDevice
    entry: dict[str, Any]  # the device entry to save (JSON-ready)
    matmul: list[MatmulResult]
    bandwidth_bytes_per_s: float
    copy_bytes: int  # size of one buffer
    bandwidth_samples: list[float] = field(default_factory=list)
    launch_overhead_s: float | None = None
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48] or "device"


def default_dtypes(dev: LocalDevice) -> list[str]:
    """fp32 always; 16-bit types where the device has a fast matrix path."""
    if dev.kind == "cuda":
        import torch

        out = ["fp32", "fp16"]
        if torch.cuda.is_bf16_supported():
            out.insert(1, "bf16")
        return out
    out = ["fp32"]
    if {"avx512_bf16", "amx_bf16"} & set(dev.flags):
        out.append("bf16")
    if {"avx512_fp16", "amx_fp16"} & set(dev.flags):
        out.append("fp16")
    return out


def _sync_fn(device: str) -> Callable[[], None]:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


#: the clock samples are read from: wall time, or the calling thread's CPU time (``cpu_time=True``)
_CLOCK: list[Callable[[], float]] = [time.perf_counter]


def _time_calls(fn: Callable[[], Any], sync: Callable[[], None], budget_s: float, min_calls: int = 2,
                max_calls: int = 10_000) -> list[float]:
    """Seconds per call of ``fn``, one sample per call, until the budget (at least ``min_calls``)."""
    clock = _CLOCK[-1]
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max_calls:
        sync()
        t0 = clock()
        fn()
        sync()
        samples.append(clock() - t0)
        if len(samples) >= min_calls and time.perf_counter() - start >= budget_s:
            break
    return samples


def measure_matmul(device: str, dtype: str, budget_s: float, *, max_n: int | None = None) -> MatmulResult:
    """Best FLOP/s of square ``torch.mm`` at ``dtype`` within ``budget_s`` seconds."""
    import torch

    key = dtype_key(dtype)
    tdt = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}.get(key)
    if tdt is None:
        raise InputError(f"calibrate measures fp64, fp32, bf16 and fp16 matrix products, not {dtype!r}")
    sync = _sync_fn(device)
    max_n = max_n or (8192 if device.startswith("cuda") else 4096)
    n = 256
    rates: dict[int, float] = {}
    best: tuple[float, int, float] = (0.0, n, 0.0)
    deadline = time.perf_counter() + budget_s
    per_size = budget_s / 5
    while n <= max_n:
        gen = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=torch.float32, generator=gen).to(tdt)
        b = torch.randn(n, n, device=device, dtype=torch.float32, generator=gen).to(tdt)
        c = torch.empty(n, n, device=device, dtype=tdt)
        sync()
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)  # warm-up (library init, packing)
        sync()
        first = time.perf_counter() - t0
        samples = _time_calls(lambda a=a, b=b, c=c: torch.mm(a, b, out=c), sync,
                              min(per_size, max(deadline - time.perf_counter(), 0.0)), min_calls=2)
        sec = min(samples)
        rate = 2 * n**3 / sec
        rates[n] = rate
        if rate > best[0]:
            best = (rate, n, sec)
        # stop when the next size (8x the work, a few calls) would not fit the remaining budget
        if time.perf_counter() + 8 * sec * 3 + first > deadline:
            break
        n *= 2
    return MatmulResult(key, best[1], best[0], best[2], sorted(rates), rates)


def measure_bandwidth(device: str, nbytes: int, budget_s: float) -> tuple[float, list[float]]:
    """Best bytes/s of ``dst.copy_(src)`` on buffers of ``nbytes``; each copy counts 2 x nbytes."""
    import torch

    numel = max(nbytes // 4, 1)
    src = torch.ones(numel, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    sync = _sync_fn(device)
    dst.copy_(src)  # first touch of the pages
    samples = _time_calls(lambda: dst.copy_(src), sync, budget_s, min_calls=3)
    rates = [2 * numel * 4 / s for s in samples]
    return max(rates), rates


def measure_launch_overhead(device: str, budget_s: float) -> float:
    """Median seconds per call of a one-element add: dispatch + launch, no work."""
    import torch

    a = torch.ones(1, device=device)
    b = torch.ones(1, device=device)
    out = torch.empty(1, device=device)
    sync = _sync_fn(device)
    batch = 200

    def many() -> None:
        for _ in range(batch):
            torch.add(a, b, out=out)

    many()
    samples = _time_calls(many, sync, budget_s, min_calls=3)
    return statistics.median(samples) / batch


def calibrate(
    device: str = "cpu",
    *,
    dtypes: Sequence[str] | None = None,
    seconds: float = 4.0,
    name: str | None = None,
    copy_bytes: int | None = None,
    cpu_time: bool = False,
) -> Calibration:
    """Measure ``device`` ('cpu' or 'cuda[:i]') for about ``seconds`` and build its device entry.

    ``cpu_time=True`` (CPU, one torch thread) reads the calling thread's CPU time instead of wall time, so
    that other processes competing for the cores do not count: the ceilings of an unshared core.
    """
    import torch

    if not seconds > 0:
        raise InputError(f"--seconds must be > 0, not {seconds}")
    if cpu_time and (not str(device).startswith("cpu") or torch.get_num_threads() != 1):
        raise InputError("cpu_time measures one CPU thread: use device 'cpu' with one torch thread (--threads 1)")
    dev_text = str(device)
    kind = dev_text.split(":")[0]
    if kind == "cpu":
        dev = detect_cpu()
    elif kind == "cuda":
        gpus = detect_cuda()
        index = int(dev_text.split(":")[1]) if ":" in dev_text else 0
        if index >= len(gpus):
            raise HardwareError(f"cannot calibrate {dev_text!r}: {len(gpus)} CUDA device(s) visible; use --device cpu")
        dev = gpus[index]
        dev_text = f"cuda:{index}"
    else:
        raise InputError(f"calibrate measures 'cpu' or 'cuda[:i]', not {device!r}")
    keys = [dtype_key(d) for d in (dtypes or default_dtypes(dev))]
    t_start = time.perf_counter()
    notes: list[str] = []

    # budget: 65% matmuls, 25% bandwidth, 10% overhead
    mm_budget = 0.65 * seconds / max(len(keys), 1)
    results = []
    _CLOCK.append(time.thread_time if cpu_time else time.perf_counter)
    try:
        with torch.inference_mode():
            for key in keys:
                results.append(measure_matmul(dev_text, key, mm_budget))
            if copy_bytes is None:
                llc = max(dev.cache_bytes.values(), default=32 << 20)
                copy_bytes = max(256 << 20, 8 * llc)
                if dev.memory_bytes:
                    copy_bytes = min(copy_bytes, dev.memory_bytes // 8)
            bw, bw_samples = measure_bandwidth(dev_text, copy_bytes, 0.25 * seconds)
            overhead = measure_launch_overhead(dev_text, 0.1 * seconds)
    finally:
        _CLOCK.pop()
    wall = time.perf_counter() - t_start
    threads = torch.get_num_threads()
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    host = platform.node()
    entry_name = (name or f"local-{_slug(dev.name if kind == 'cpu' else dev.name.replace('NVIDIA', ''))}").lower()
    citation = (f"modelmeter hardware calibrate on {host or 'this machine'}, {now}: torch {torch.__version__}, "
                f"{threads} thread(s); torch.mm n x n (best of sizes {', '.join(str(r.n) for r in results)}); "
                f"copy_ of {copy_bytes / 2**20:.0f} MiB counted as read + write")
    entry: dict[str, Any] = {
        "name": entry_name,
        "display_name": f"{dev.name} (calibrated{f', {dev.cores} cores' if kind == 'cpu' else ''})",
        "vendor": _vendor(dev.name),
        "kind": "cpu" if kind == "cpu" else "gpu",
        "matrix_flop_per_s": {r.dtype: round(r.flop_per_s, -6) for r in results},
        "sparse_matrix_flop_per_s": {},
        "vector_flop_per_s": {},
        "memory_bandwidth_bytes_per_s": round(bw, -6),
        "memory_bytes": dev.memory_bytes,
        "cache_bytes": dict(dev.cache_bytes),
        "launch_overhead_s": overhead,
        "sources": [{"tag": "calibrate", "citation": citation}],
        "confidence": {"*": "measured"},
        "caveats": [
            "measured ceilings (best of repeats) of this machine at calibration time; other loads, clocks and thread "
            "counts change them",
            "matrix_flop_per_s is torch.mm at the best size tried; small or skinny products run slower",
        ],
        "measured": {
            "device_kind": kind,
            "device_name": dev.name,
            "date": now,
            "host": host,
            "threads": threads,
            "clock": "thread CPU time" if cpu_time else "wall time",
            "cores": dev.cores,
            "torch_version": torch.__version__,
            "schema": SCHEMA,
            "matmul": {r.dtype: {"n": r.n, "flop_per_s": r.flop_per_s, "rates_by_size": {str(k): v for k, v in
                                                                                          r.rates_by_size.items()}}
                       for r in results},
            "copy_bytes": copy_bytes,
            "bandwidth_samples_bytes_per_s": bw_samples[:50],
            "launch_overhead_s": overhead,
            "wall_s": wall,
        },
    }
    for r in results:
        if r.flop_per_s < 0.05 * max(x.flop_per_s for x in results):
            notes.append(f"{r.dtype} matrix products are slow here ({r.flop_per_s / 1e9:.2f} GFLOP/s): no fast path")
    return Calibration(dev, entry, results, bw, copy_bytes, bw_samples, overhead, wall, notes)


def _vendor(name: str) -> str:
    low = name.lower()
    for v in ("nvidia", "amd", "intel", "apple", "arm", "ampere"):
        if v in low:
            return v
    if "epyc" in low or "ryzen" in low:
        return "amd"
    if "xeon" in low or "core(tm)" in low:
        return "intel"
    return ""


__all__ = ["Calibration", "MatmulResult", "calibrate", "default_dtypes", "measure_bandwidth", "measure_launch_overhead",
           "measure_matmul"]

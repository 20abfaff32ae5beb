"""The timing harness: warm-up, synchronized timed samples until a time budget or a precision target,
raw samples kept, statistics and warnings returned as data.

Each timed region is bracketed by a device synchronization (reference ``hardware-energy.md`` 3.2):

* CPU: ``time.perf_counter_ns`` around the calls (nothing to synchronize);
* CUDA: ``torch.cuda.synchronize()`` before the region, a ``torch.cuda.Event`` pair recorded on the
  current stream around the calls, ``end.synchronize()`` after; the sample is ``start.elapsed_time(end)``
  (GPU clock, about 0.5 µs resolution);
* MPS: ``torch.mps.synchronize()`` before and after a ``perf_counter_ns`` region.

A sample is the mean time per call over ``calls_per_sample`` back-to-back calls; that block size is
chosen after the warm-up so that a sample lasts at least ``min_sample_s`` (timer and sync overhead
below ~0.1%, as ``blocked_autorange`` does). For model forward passes it is nearly always 1.

The time budget counts host wall time of the timed loop only (warm-up not included). The loop stops
at the first of: relative precision of the median <= ``target_rel_precision`` (with at least
``min_samples``), budget spent (with at least ``min_samples``), ``max_samples`` reached.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import InputError, MeasurementError
from ..report.benchmark import Timing
from .stats import relative_precision, spread_warnings, summarize


class Clock(Protocol):
    def now_ns(self) -> int: ...


class PerfCounterClock:
    """The host clock: ``time.perf_counter_ns`` (monotonic, highest available resolution)."""

    def now_ns(self) -> int:
        return time.perf_counter_ns()


class ProcessTimeClock:
    """CPU time of this process, all threads (``time.process_time_ns``)."""

    def now_ns(self) -> int:
        return time.process_time_ns()


@dataclass(frozen=True)
class Progress:
    """Passed to a progress callback after each warm-up call and each timed sample."""

    label: str
    phase: str  # "warmup" or "timed"
    elapsed_s: float  # of this phase
    budget_s: float
    samples: int


ProgressCallback = Callable[[Progress], None]


# -- device timers --------------------------------------------------------------------------------------


class DeviceTimer:
    """Times a block of calls with the device synchronized before and after."""

    name = "perf_counter_ns"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or PerfCounterClock()

    def sync(self) -> None:  # CPU work is synchronous
        return None

    def time_block(self, fn: Callable[[], Any], calls: int) -> float:
        """Seconds for ``calls`` back-to-back calls of ``fn``."""
        self.sync()
        t0 = self.clock.now_ns()
        for _ in range(calls):
            fn()
        self.sync()
        return (self.clock.now_ns() - t0) / 1e9


class CudaEventTimer(DeviceTimer):
    """CUDA events on the current stream; ``cuda`` is ``torch.cuda`` (injectable for tests)."""

    name = "cuda-event"

    def __init__(self, device: Any = None, clock: Clock | None = None, cuda: Any = None) -> None:
        super().__init__(clock)
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.cuda = cuda
        self.device = device

    def sync(self) -> None:
        self.cuda.synchronize(self.device)

    def time_block(self, fn: Callable[[], Any], calls: int) -> float:
        self.sync()
        start = self.cuda.Event(enable_timing=True)
        end = self.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1e3  # milliseconds -> seconds


class MpsTimer(DeviceTimer):
    name = "perf_counter_ns+mps-sync"

    def __init__(self, clock: Clock | None = None, mps: Any = None) -> None:
        super().__init__(clock)
        if mps is None:
            import torch

            mps = torch.mps
        self.mps = mps

    def sync(self) -> None:
        self.mps.synchronize()


def device_timer(device: Any, clock: Clock | None = None) -> DeviceTimer:
    """The right timer for a torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cpu":
        return DeviceTimer(clock)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MeasurementError("device 'cuda' asked for but CUDA is not available: use --device cpu")
        return CudaEventTimer(dev, clock)
    if dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise MeasurementError("device 'mps' asked for but MPS is not available: use --device cpu")
        return MpsTimer(clock)
    raise InputError(f"cannot time on device {str(dev)!r}: use cpu, cuda or mps (meta tensors do no work)")


# -- threads ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[int]:
    """Set torch's intra-op thread count for the block (None: leave it) and restore it afterwards."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise InputError(f"threads must be >= 1, not {n}")
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


# -- the harness ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HarnessSettings:
    budget_s: float = 2.0
    warmup_s: float = 0.05  # at least this long (reference: >= 25 ms, as Triton's do_bench)...
    warmup_calls: int = 2  # ...and at least this many calls; the first call's time is never used
    min_samples: int = 5
    max_samples: int = 5000
    target_rel_precision: float | None = 0.01  # 95% CI half-width of the median / median
    min_sample_s: float = 1e-4  # block calls so a sample lasts at least this long
    max_calls_per_sample: int = 10_000

    def validate(self) -> None:
        if not (self.budget_s > 0 and math.isfinite(self.budget_s)):
            raise InputError(f"the time budget must be a positive number of seconds, not {self.budget_s}")
        if self.warmup_s < 0 or self.warmup_calls < 0:
            raise InputError("warm-up time and calls must be >= 0")
        if self.min_samples < 1 or self.max_samples < self.min_samples:
            raise InputError(f"need 1 <= min_samples <= max_samples, got {self.min_samples} and {self.max_samples}")
        if self.target_rel_precision is not None and not self.target_rel_precision > 0:
            raise InputError(f"target precision must be > 0 (e.g. 0.01 for 1%), not {self.target_rel_precision}")


def measure(
    fn: Callable[[], Any],
    *,
    timer: DeviceTimer | None = None,
    settings: HarnessSettings | None = None,
    label: str = "call",
    device: str = "cpu",
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    cpu_clock: Clock | None = None,
) -> Timing:
    """Time ``fn()`` (inputs already on the device) and return raw samples with their statistics.

    ``cpu_clock`` reads this process's CPU time (default ``time.process_time_ns`` when the timer uses the
    real host clock, none with an injected clock) to report how busy the process was while timed.
    """
    settings = settings or HarnessSettings()
    settings.validate()
    timer = timer or device_timer(device)
    clock = timer.clock
    if cpu_clock is None and isinstance(clock, PerfCounterClock):
        cpu_clock = ProcessTimeClock()

    with num_threads(threads) as used_threads:
        # warm-up: lazy init, allocator growth, autotuning, clock ramp-up ------------------------------
        w0 = clock.now_ns()
        warm_calls = 0
        last_call_s = 0.0
        while warm_calls < settings.warmup_calls or (clock.now_ns() - w0) / 1e9 < settings.warmup_s:
            last_call_s = timer.time_block(fn, 1)
            warm_calls += 1
            if progress:
                progress(Progress(label, "warmup", (clock.now_ns() - w0) / 1e9, settings.warmup_s, warm_calls))
            if warm_calls >= 1_000_000:  # a no-op fn against a clock that never advances
                raise MeasurementError("the clock did not advance during warm-up; cannot time this call")
        warmup_s = (clock.now_ns() - w0) / 1e9

        if warm_calls and last_call_s > 0:
            calls = min(settings.max_calls_per_sample, max(1, math.ceil(settings.min_sample_s / last_call_s - 1e-9)))
        elif warm_calls:
            calls = settings.max_calls_per_sample  # faster than the clock resolves
        else:
            calls = 1

        # timed samples -----------------------------------------------------------------------------
        samples: list[float] = []
        ordered: list[float] = []
        c0 = cpu_clock.now_ns() if cpu_clock is not None else 0
        t0 = clock.now_ns()
        stop = "max-samples"
        while len(samples) < settings.max_samples:
            s = timer.time_block(fn, calls) / calls
            samples.append(s)
            bisect.insort(ordered, s)
            elapsed = (clock.now_ns() - t0) / 1e9
            if progress:
                progress(Progress(label, "timed", elapsed, settings.budget_s, len(samples)))
            if len(samples) < settings.min_samples:
                continue
            if settings.target_rel_precision is not None:
                rp = relative_precision(ordered)
                if rp is not None and rp <= settings.target_rel_precision:
                    stop = "precision"
                    break
            if elapsed >= settings.budget_s:
                stop = "budget"
                break
        timed_wall_s = (clock.now_ns() - t0) / 1e9
        cpu_s = (cpu_clock.now_ns() - c0) / 1e9 if cpu_clock is not None else None

    stats = summarize(samples)
    warnings = spread_warnings(stats)
    if stats.min_s <= 0:
        warnings.append("some samples are 0 s: the clock is too coarse for this call; "
                        "results are not meaningful")
    busy = cpu_s / timed_wall_s if (cpu_s is not None and timed_wall_s > 0) else None
    if busy is not None and timer.name == "perf_counter_ns" and busy < 0.8:
        hint = (f"; with {used_threads} threads every parallel region waits for its slowest thread: try fewer "
                f"threads than free cores (--threads 1)" if used_threads > 1 else "")
        warnings.append(f"the process used {busy:.2f} CPU cores on average while timed with {used_threads} "
                        f"thread(s): it waited for a core (other load on this machine); per-call p50 and block "
                        f"means diverge under such load{hint}")
    if timed_wall_s > 1.5 * settings.budget_s and stop == "budget":
        warnings.append(f"ran {timed_wall_s:.2f} s, past the {settings.budget_s:g} s budget, to take the minimum "
                        f"of {settings.min_samples} samples")
    return Timing(
        label=label,
        device=str(device),
        timer=timer.name,
        threads=used_threads,
        calls_per_sample=calls,
        warmup_calls=warm_calls,
        warmup_s=warmup_s,
        budget_s=settings.budget_s,
        target_rel_precision=settings.target_rel_precision,
        stop_reason=stop,
        timed_wall_s=timed_wall_s,
        samples_s=samples,
        stats=stats,
        warnings=warnings,
        cpu_busy_cores=busy,
    )


__all__ = ["Clock", "CudaEventTimer", "DeviceTimer", "HarnessSettings", "MpsTimer", "PerfCounterClock",
           "ProcessTimeClock", "Progress", "ProgressCallback", "device_timer", "measure", "num_threads"]

"""The timing harness with a fake clock: warm-up, stop rules, block size, exact statistics, device sync."""

from __future__ import annotations

import pytest
import torch

from modelmeter.errors import InputError, MeasurementError
from modelmeter.measure.timer import (
    CudaEventTimer,
    DeviceTimer,
    HarnessSettings,
    MpsTimer,
    device_timer,
    measure,
    num_threads,
)

MS = 1_000_000  # ns


class FakeClock:
    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        return self.t


class Work:
    """A callable that advances the clock by the next programmed duration (ns); repeats the last one."""

    def __init__(self, clock: FakeClock, durations_ns: list[int]) -> None:
        self.clock = clock
        self.durations = list(durations_ns)
        self.calls = 0

    def __call__(self) -> None:
        d = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        self.clock.t += d


def run(durations, **kw):
    clock = FakeClock()
    work = Work(clock, durations)
    s = HarnessSettings(**{"warmup_calls": 2, "warmup_s": 0.0, **kw})
    t = measure(work, timer=DeviceTimer(clock), settings=s, label="fake")
    return t, work


def test_warmup_excluded_and_exact_percentiles():
    # 2 warm-up calls (1 s each, never timed), then 1 2 3 4 100 ms; min 5 samples, budget already spent after 5
    t, work = run([1000 * MS, 1000 * MS, 1 * MS, 2 * MS, 3 * MS, 4 * MS, 100 * MS], min_samples=5, budget_s=0.01,
                  target_rel_precision=None)
    assert t.warmup_calls == 2 and t.warmup_s == pytest.approx(2.0)
    assert t.calls_per_sample == 1  # ceil(1e-4 s / 1 s) = 1
    assert t.samples_s == pytest.approx([0.001, 0.002, 0.003, 0.004, 0.1])
    assert t.stop_reason == "budget"
    s = t.stats
    assert s.n == 5 and s.p50_s == pytest.approx(0.003)
    assert s.p90_s == pytest.approx(0.0616)  # h = 3.6: 4 + 0.6 * 96 ms
    assert s.p99_s == pytest.approx(0.09616)  # h = 3.96: 4 + 0.96 * 96 ms
    assert s.mean_s == pytest.approx(0.022)  # 110 ms / 5
    assert t.timed_wall_s == pytest.approx(0.110)
    assert work.calls == 7


def test_stops_on_budget():
    # 10 ms per call, 100 ms budget, no precision target: samples end at 10, 20, ..., 100 ms -> 10 samples
    t, _ = run([10 * MS], budget_s=0.1, target_rel_precision=None, min_samples=1)
    assert t.stop_reason == "budget" and t.stats.n == 10 and t.timed_wall_s == pytest.approx(0.1)


def test_stops_on_precision_of_the_median():
    # identical samples: the median's interval has zero width as soon as it exists (n = 8)
    t, _ = run([1 * MS], budget_s=100.0, target_rel_precision=0.01, min_samples=5)
    assert t.stop_reason == "precision" and t.stats.n == 8 and t.stats.rel_precision == 0.0


def test_precision_not_reached_runs_to_budget():
    # alternating 1 ms / 3 ms: the median's interval spans 1..3 ms, precision 1.0 >> 1%
    t, _ = run([1 * MS, 1 * MS] + [1 * MS, 3 * MS] * 1000, budget_s=0.04, target_rel_precision=0.01, min_samples=5)
    # samples 1,3,1,3,...: cumulative 4 ms per pair; 40 ms reached after 20 samples
    assert t.stop_reason == "budget" and t.stats.n == 20


def test_stops_at_max_samples():
    t, _ = run([1 * MS], budget_s=100.0, target_rel_precision=None, min_samples=1, max_samples=7)
    assert t.stop_reason == "max-samples" and t.stats.n == 7


def test_min_samples_can_overrun_the_budget_with_a_warning():
    # 1 s per call, budget 0.1 s, at least 5 samples -> 5 s of timing
    t, _ = run([1000 * MS], budget_s=0.1, target_rel_precision=None, min_samples=5)
    assert t.stats.n == 5 and t.timed_wall_s == pytest.approx(5.0)
    assert any("past the 0.1 s budget" in w for w in t.warnings)


def test_block_size_amortizes_fast_calls():
    # 20 µs per call; a sample must last >= 100 µs -> ceil(100 / 20) = 5 calls per sample
    t, work = run([20_000], budget_s=0.001, target_rel_precision=None, min_samples=1)
    assert t.calls_per_sample == 5
    assert t.samples_s[0] == pytest.approx(20e-6)  # per call, not per block
    # each sample is 100 µs of wall time: 10 samples fill the 1 ms budget; 2 warm-up + 50 timed calls
    assert t.stats.n == 10 and work.calls == 2 + 50


def test_warmup_lasts_at_least_warmup_s():
    # 10 ms calls, warm-up at least 35 ms and 2 calls -> 4 calls (40 ms)
    t, _ = run([10 * MS], warmup_s=0.035, budget_s=0.01, min_samples=1, target_rel_precision=None)
    assert t.warmup_calls == 4 and t.warmup_s == pytest.approx(0.04)


def test_zero_time_samples_warn():
    t, _ = run([0], budget_s=1.0, min_samples=3, max_samples=3, target_rel_precision=None)
    assert any("clock is too coarse" in w for w in t.warnings)
    assert t.calls_per_sample == HarnessSettings().max_calls_per_sample


def test_progress_callback_reports_both_phases():
    seen = []
    clock = FakeClock()
    measure(Work(clock, [5 * MS]), timer=DeviceTimer(clock), label="x", progress=seen.append,
            settings=HarnessSettings(warmup_calls=2, warmup_s=0.0, budget_s=0.02, min_samples=1,
                                     target_rel_precision=None))
    assert [p.phase for p in seen] == ["warmup", "warmup", "timed", "timed", "timed", "timed"]
    assert seen[-1].samples == 4 and seen[-1].elapsed_s == pytest.approx(0.02) and seen[-1].label == "x"


def test_threads_set_during_the_run_and_restored():
    before = torch.get_num_threads()
    inside = []
    clock = FakeClock()

    def fn():
        inside.append(torch.get_num_threads())
        clock.t += MS

    t = measure(fn, timer=DeviceTimer(clock), threads=1,
                settings=HarnessSettings(warmup_calls=1, warmup_s=0, budget_s=0.002, min_samples=1))
    assert t.threads == 1 and set(inside) == {1}
    assert torch.get_num_threads() == before


def test_threads_restored_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with num_threads(1):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with pytest.raises(InputError):
        with num_threads(0):
            pass


@pytest.mark.parametrize("bad", [
    dict(budget_s=0), dict(budget_s=float("inf")), dict(min_samples=0), dict(min_samples=10, max_samples=5),
    dict(target_rel_precision=0.0), dict(warmup_s=-1.0),
])
def test_settings_are_validated(bad):
    with pytest.raises(InputError):
        measure(lambda: None, timer=DeviceTimer(FakeClock()), settings=HarnessSettings(**bad))


# -- device timers -------------------------------------------------------------------------------------------


class FakeCuda:
    """torch.cuda stand-in: a GPU clock advanced by the work, events read it, everything is logged."""

    def __init__(self) -> None:
        self.gpu_ns = 0
        self.log: list[str] = []

    def synchronize(self, device=None):
        self.log.append("sync")

    def Event(self, enable_timing=False):  # noqa: N802 - mirrors torch.cuda.Event
        assert enable_timing
        cuda = self

        class Ev:
            def record(self):
                self.t = cuda.gpu_ns
                cuda.log.append("record")

            def synchronize(self):
                cuda.log.append("event-sync")

            def elapsed_time(self, other):
                return (other.t - self.t) / 1e6  # milliseconds

        return Ev()


def test_cuda_event_timer_uses_gpu_time_and_syncs_around_each_region():
    host = FakeClock()
    cuda = FakeCuda()

    def kernel():  # launch costs 10 µs of host time, the kernel 2 ms of GPU time
        host.t += 10_000
        cuda.gpu_ns += 2 * MS
        cuda.log.append("call")

    timer = CudaEventTimer("cuda:0", clock=host, cuda=cuda)
    t = measure(kernel, timer=timer, settings=HarnessSettings(warmup_calls=1, warmup_s=0, budget_s=1.0, min_samples=3,
                                                              max_samples=3, target_rel_precision=None))
    assert t.timer == "cuda-event"
    assert t.samples_s == pytest.approx([0.002] * 3)  # GPU time, not the 10 µs of host time
    per_region = ["sync", "record", "call", "record", "event-sync"]
    assert cuda.log == per_region * 4  # 1 warm-up + 3 samples


def test_mps_timer_syncs_before_and_after():
    host = FakeClock()
    log = []

    class FakeMps:
        def synchronize(self):
            log.append("sync")

    def fn():
        log.append("call")
        host.t += MS

    t = measure(fn, timer=MpsTimer(clock=host, mps=FakeMps()),
                settings=HarnessSettings(warmup_calls=1, warmup_s=0, min_samples=2, max_samples=2))
    assert log == ["sync", "call", "sync"] * 3
    assert t.samples_s == pytest.approx([0.001, 0.001]) and t.timer == "perf_counter_ns+mps-sync"


def test_device_timer_choice_and_errors():
    assert isinstance(device_timer("cpu"), DeviceTimer) and device_timer("cpu").name == "perf_counter_ns"
    with pytest.raises(InputError):
        device_timer("meta")
    if not torch.cuda.is_available():
        with pytest.raises(MeasurementError):
            device_timer("cuda")


def test_real_cpu_timing_is_positive_and_consistent():
    x = torch.randn(64, 64)
    t = measure(lambda: x @ x, settings=HarnessSettings(budget_s=0.1, warmup_s=0.01))
    s = t.stats
    assert s.n == len(t.samples_s) >= 5
    assert 0 < s.min_s <= s.p25_s <= s.p50_s <= s.p75_s <= s.p90_s <= s.p99_s <= s.max_s
    assert t.threads == torch.get_num_threads()


def test_cpu_busy_ratio_flags_a_process_waiting_for_a_core():
    wall = FakeClock()
    cpu = FakeClock()

    def half_on_cpu():  # 10 ms of wall time, of which the process ran 5 ms
        wall.t += 10 * MS
        cpu.t += 5 * MS

    s = HarnessSettings(warmup_calls=1, warmup_s=0, budget_s=0.05, min_samples=1, target_rel_precision=None)
    t = measure(half_on_cpu, timer=DeviceTimer(wall), settings=s, cpu_clock=cpu)
    assert t.cpu_busy_cores == pytest.approx(0.5)
    assert any("waited for a core" in w for w in t.warnings)

    def busy():
        wall.t += 10 * MS
        cpu.t += 10 * MS

    t = measure(busy, timer=DeviceTimer(wall), settings=s, cpu_clock=cpu)
    assert t.cpu_busy_cores == pytest.approx(1.0) and not any("waited" in w for w in t.warnings)
    # an injected wall clock without a CPU clock records nothing
    assert measure(busy, timer=DeviceTimer(wall), settings=s).cpu_busy_cores is None

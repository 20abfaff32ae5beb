"""Energy meters with fakes: NVML counter and power sampling, RAPL sysfs with wrap-around and permissions,
the null meter, meter detection, windows and the idle baseline."""

from __future__ import annotations

import pathlib
from types import SimpleNamespace

import pytest
import torch

from modelmeter.errors import MeasurementError
from modelmeter.measure.energy import (
    EnergyMeter,
    NullMeter,
    NvmlEnergyMeter,
    NvmlPowerSampler,
    RaplMeter,
    calls_for_window,
    detect_meter,
    idle_power_w,
    measure_energy,
)
from modelmeter.measure.timer import DeviceTimer
from modelmeter.report.benchmark import EnergyWindow

MS = 1_000_000


class FakeClock:
    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        return self.t


# -- NVML ----------------------------------------------------------------------------------------------------


class FakeNvml:
    """pynvml stand-in. ``energy_mj`` is a list of successive counter readings; ``power_mw`` likewise."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's spelling
        pass

    def __init__(self, energy_mj=None, power_mw=None, energy_supported=True, instant_mw=None):
        self.energy = list(energy_mj or [0])
        self.power = list(power_mw or [0])
        self.energy_supported = energy_supported
        self.instant = list(instant_mw) if instant_mw is not None else None
        self.inits = self.shutdowns = 0
        if instant_mw is not None:
            self.NVML_FI_DEV_POWER_INSTANT = 186

    def nvmlInit(self):  # noqa: N802
        self.inits += 1

    def nvmlShutdown(self):  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        return ("handle", i)

    def nvmlDeviceGetTotalEnergyConsumption(self, h):  # noqa: N802
        if not self.energy_supported:
            raise self.NVMLError_NotSupported("Not Supported")
        return self.energy.pop(0) if len(self.energy) > 1 else self.energy[0]

    def nvmlDeviceGetPowerUsage(self, h):  # noqa: N802
        return self.power.pop(0) if len(self.power) > 1 else self.power[0]

    def nvmlDeviceGetFieldValues(self, h, ids):  # noqa: N802
        v = self.instant.pop(0) if len(self.instant) > 1 else self.instant[0]
        return [SimpleNamespace(nvmlReturn=0, value=SimpleNamespace(uiVal=v))]


def test_nvml_counter_difference_in_joules():
    clock = FakeClock()
    nv = FakeNvml(energy_mj=[0, 5_000_000, 5_250_000])  # probe, begin, end (mJ since driver load)
    m = NvmlEnergyMeter(0, nvml=nv, clock=clock)
    assert m.probe() is None
    m.begin()
    clock.t += 2000 * MS
    w = m.end()
    assert w.energy_j == pytest.approx(250.0)  # 250_000 mJ
    assert w.duration_s == pytest.approx(2.0) and not w.approximate and w.method == "nvml-energy-counter"
    assert w.warnings == []  # 2 s >> 10 x 100 ms
    m.close()
    assert nv.shutdowns == 1


def test_nvml_short_window_counter_not_advancing_uses_power_times_time():
    clock = FakeClock()
    nv = FakeNvml(energy_mj=[7, 1000, 1000], power_mw=[300_000])  # counter unchanged over 50 ms
    m = NvmlEnergyMeter(0, nvml=nv, clock=clock)
    m.begin()
    clock.t += 50 * MS
    w = m.end()
    assert w.approximate
    assert w.energy_j == pytest.approx(300.0 * 0.05)  # 300 W x 50 ms = 15 J
    assert any("did not advance" in x for x in w.warnings)
    assert any("counter update period" in x for x in w.warnings)  # 50 ms < 10 x 100 ms


def test_nvml_coarse_counter_in_a_short_window_is_flagged():
    clock = FakeClock()
    nv = FakeNvml(energy_mj=[0, 0, 40_000])
    m = NvmlEnergyMeter(0, nvml=nv, clock=clock)
    m.begin()
    clock.t += 200 * MS  # counter advanced, but the window is only 2 update periods
    w = m.end()
    assert w.energy_j == pytest.approx(40.0) and not w.approximate
    assert any("not much longer than the 100 ms" in x for x in w.warnings)


def test_nvml_counter_going_backwards_gives_no_reading():
    clock = FakeClock()
    m = NvmlEnergyMeter(0, nvml=FakeNvml(energy_mj=[0, 9000, 10]), clock=clock)
    m.begin()
    clock.t += 1000 * MS
    w = m.end()
    assert w.energy_j is None and "went backwards" in w.warnings[0]


def test_nvml_unsupported_counter_falls_back_to_power_sampling():
    nv = FakeNvml(energy_supported=False, power_mw=[100_000])
    counter = NvmlEnergyMeter(0, nvml=nv)
    assert "Volta or newer" in counter.probe()
    with pytest.raises(MeasurementError):
        counter.begin()
    counter.close()
    m = detect_meter("cuda:0", nvml=nv)
    assert isinstance(m, NvmlPowerSampler) and m.method == "nvml-power-sampling"
    assert nv.inits - nv.shutdowns == 1  # the failed counter's NVML session was shut down; the sampler's is open
    m.close()
    assert nv.inits == nv.shutdowns


def test_power_sampling_trapezoid_integration():
    clock = FakeClock()
    # begin samples 100 W; manual samples 200 W at 1 s, 200 W at 2 s; end samples 100 W at 3 s
    nv = FakeNvml(power_mw=[100_000, 200_000, 200_000, 100_000])
    m = NvmlPowerSampler(0, nvml=nv, clock=clock, threaded=False)
    m._probe = None  # already probed (probing would consume a reading)
    m.begin()
    for _ in range(2):
        clock.t += 1000 * MS
        m.sample()
    clock.t += 1000 * MS
    w = m.end()
    # trapezoids: (100+200)/2 x 1 + (200+200)/2 x 1 + (200+100)/2 x 1 = 150 + 200 + 150 = 500 J
    assert w.energy_j == pytest.approx(500.0) and w.duration_s == pytest.approx(3.0) and w.approximate
    assert any("1 s moving average" in x for x in w.warnings)  # no instant field offered


def test_power_sampling_prefers_the_instant_field():
    clock = FakeClock()
    nv = FakeNvml(power_mw=[999_000], instant_mw=[50_000])
    m = NvmlPowerSampler(0, nvml=nv, clock=clock, threaded=False)
    assert m.probe() is None
    m.begin()
    clock.t += 20_000 * MS
    w = m.end()
    assert w.energy_j == pytest.approx(50.0 * 20)  # instant 50 W for 20 s, not the 999 W average
    assert not any("moving average" in x for x in w.warnings)


def test_power_sampling_thread_collects_samples():
    nv = FakeNvml(power_mw=[10_000])
    m = NvmlPowerSampler(0, nvml=nv, interval_s=0.001)
    m.begin()
    import time

    time.sleep(0.05)
    w = m.end()
    n = int(w.warnings[0].split()[3])
    assert n > 2  # begin + end + the thread's samples
    assert w.energy_j == pytest.approx(10.0 * w.duration_s, rel=1e-9)  # constant 10 W


def test_nvml_missing_bindings_say_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pynvml(name, *a, **k):
        if name == "pynvml":
            raise ImportError("no pynvml")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pynvml)
    m = NvmlEnergyMeter(0)
    assert "nvidia-ml-py" in m.probe()
    null = detect_meter("cuda:0")
    assert isinstance(null, NullMeter) and "nvidia-ml-py" in null.reason


# -- RAPL -----------------------------------------------------------------------------------------------------


def make_rapl(root: pathlib.Path, zones: dict[str, tuple[str, int, int]]) -> pathlib.Path:
    """zones: dir name -> (name, energy_uj, max_energy_range_uj)"""
    for d, (name, e, mx) in zones.items():
        top = d.split(":")[0] + ":" + d.split(":")[1]
        path = root / d if d == top else root / top / d
        path.mkdir(parents=True, exist_ok=True)
        (path / "name").write_text(name + "\n")
        (path / "energy_uj").write_text(f"{e}\n")
        (path / "max_energy_range_uj").write_text(f"{mx}\n")
    return root


def set_energy(root: pathlib.Path, d: str, e: int) -> None:
    top = ":".join(d.split(":")[:2])
    path = root / d if d == top else root / top / d
    (path / "energy_uj").write_text(f"{e}\n")


MAX = 262_143_328_850  # a real package's max_energy_range_uj


def test_rapl_package_energy(tmp_path):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 1_000_000, MAX),
                                "intel-rapl:0:0": ("core", 5, MAX),
                                "intel-rapl:0:1": ("dram", 10, MAX),
                                "intel-rapl:1": ("psys", 0, MAX)})
    clock = FakeClock()
    m = RaplMeter(root, clock=clock, poll_s=None)
    assert m.probe() is None
    m.begin()
    set_energy(root, "intel-rapl:0", 4_500_000)
    set_energy(root, "intel-rapl:0:1", 999_999_999)  # DRAM not included by default
    clock.t += 1000 * MS
    w = m.end()
    assert w.energy_j == pytest.approx(3.5)  # 3_500_000 µJ, package only (core is inside it, psys skipped)
    assert w.method == "rapl-powercap" and "package-0" in w.warnings[-1] and "psys" not in w.warnings[-1]


def test_rapl_wrap_around(tmp_path):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 1000, 1_000_000)})
    clock = FakeClock()
    m = RaplMeter(root, clock=clock, poll_s=None)
    set_energy(root, "intel-rapl:0", 999_900)  # 100 µJ before the wrap
    m.begin()
    set_energy(root, "intel-rapl:0", 50)  # wrapped: 50 - 999_900 + 1_000_000 = 150 µJ
    clock.t += 100 * MS
    w = m.end()
    assert w.energy_j == pytest.approx(150e-6)


def test_rapl_polling_survives_several_wraps(tmp_path):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 0, 1_000)})
    m = RaplMeter(root, clock=FakeClock(), poll_s=None)
    m.begin()  # at 0
    for value in (900, 300, 800, 100):  # +900, +400 (wrap), +500, +300 (wrap)
        set_energy(root, "intel-rapl:0", value)
        m.poll()
    set_energy(root, "intel-rapl:0", 600)  # +500
    w = m.end()
    assert w.energy_j == pytest.approx((900 + 400 + 500 + 300 + 500) * 1e-6)  # 2600 µJ


def test_rapl_dram_and_duplicate_packages(tmp_path):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 0, MAX), "intel-rapl:0:0": ("dram", 0, MAX),
                                "intel-rapl:1": ("package-0", 0, MAX)})  # a die mirroring the same counter
    m = RaplMeter(root, include_dram=True, clock=FakeClock(), poll_s=None)
    m.begin()
    set_energy(root, "intel-rapl:0", 2_000_000)
    set_energy(root, "intel-rapl:0:0", 500_000)
    set_energy(root, "intel-rapl:1", 2_000_000)
    w = m.end()
    assert w.energy_j == pytest.approx(2.5)  # package 2 J + dram 0.5 J; the mirror counted once


def test_rapl_short_window_is_flagged(tmp_path):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 0, MAX)})
    clock = FakeClock()
    m = RaplMeter(root, clock=clock, poll_s=None)
    m.begin()
    clock.t += 2 * MS  # 2 ms < 10 x 1 ms update period
    w = m.end()
    assert any("not much longer than the 1 ms" in x for x in w.warnings)


def test_rapl_missing_root_and_no_zones(tmp_path):
    assert "does not exist" in RaplMeter(tmp_path / "nope").probe()
    (tmp_path / "empty").mkdir()
    assert "no intel-rapl package zone" in RaplMeter(tmp_path / "empty").probe()
    with pytest.raises(MeasurementError):
        RaplMeter(tmp_path / "nope").begin()


def test_rapl_permission_denied(tmp_path, monkeypatch):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 0, MAX)})
    real = pathlib.Path.read_text

    def guarded(self, *a, **k):
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(pathlib.Path, "read_text", guarded)
    reason = RaplMeter(root).probe()
    assert "root only" in reason and "CVE-2020-8694" in reason
    m = detect_meter("cpu", powercap_root=root)
    assert isinstance(m, NullMeter) and "root only" in m.reason


def test_rapl_background_polling_thread(tmp_path):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 0, MAX)})
    m = RaplMeter(root, poll_s=0.001)
    m.begin()
    import time

    time.sleep(0.02)
    set_energy(root, "intel-rapl:0", 7)
    w = m.end()
    assert w.energy_j == pytest.approx(7e-6)


# -- null meter, detection, windows -----------------------------------------------------------------------------


def test_null_meter_says_why():
    m = NullMeter("RAPL: nothing here")
    assert m.probe() == "RAPL: nothing here" and not m.available
    m.begin()
    w = m.end()
    assert w.energy_j is None and w.warnings == ["RAPL: nothing here"]


def test_detect_meter_cpu_without_powercap(tmp_path):
    m = detect_meter("cpu", powercap_root=tmp_path / "missing")
    assert isinstance(m, NullMeter) and "does not exist" in m.reason


def test_detect_meter_picks_rapl_and_nvml(tmp_path):
    root = make_rapl(tmp_path, {"intel-rapl:0": ("package-0", 0, MAX)})
    assert isinstance(detect_meter("cpu", powercap_root=root), RaplMeter)
    assert isinstance(detect_meter("cuda", nvml=FakeNvml()), NvmlEnergyMeter)
    assert isinstance(detect_meter("mps"), NullMeter)


class ScriptedMeter(EnergyMeter):
    """A meter that reports a fixed energy and logs begin/end."""

    name = "scripted"
    method = "scripted"
    update_period_s = 0.01

    def __init__(self, energy_j: float, log: list[str], clock: FakeClock) -> None:
        self.energy_j, self.log, self.clock = energy_j, log, clock

    def probe(self):
        return None

    def begin(self):
        self.log.append("begin")
        self.t0 = self.clock.t

    def end(self):
        self.log.append("end")
        return EnergyWindow(self.name, self.method, self.energy_j, (self.clock.t - self.t0) / 1e9, False, [])


def test_measure_energy_syncs_at_both_ends_and_counts_calls():
    log: list[str] = []
    clock = FakeClock()

    class LogTimer(DeviceTimer):
        def sync(self):
            log.append("sync")

    def fn():
        log.append("call")
        clock.t += 10 * MS

    w = measure_energy(fn, ScriptedMeter(3.0, log, clock), LogTimer(clock), calls=3)
    assert log == ["sync", "begin", "call", "call", "call", "sync", "end"]
    assert w.energy_j == 3.0 and w.duration_s == pytest.approx(0.03)
    with pytest.raises(MeasurementError):
        measure_energy(fn, ScriptedMeter(1.0, log, clock), LogTimer(clock), calls=0)


def test_calls_for_window():
    m = ScriptedMeter(0.0, [], FakeClock())  # 10 ms update period -> windows >= 100 ms
    assert calls_for_window(0.003, 1.0, m) == 334  # ceil(1.0 / 0.003)
    assert calls_for_window(0.003, 0.01, m) == 34  # ceil(0.1 / 0.003): 10 updates dominate
    assert calls_for_window(5.0, 1.0, m) == 1
    assert calls_for_window(0.0, 1.0, m, max_calls=50) == 50


def test_idle_power():
    clock = FakeClock()
    m = ScriptedMeter(6.0, [], clock)

    def sleep(s):
        clock.t += int(s * 1e9)

    assert idle_power_w(m, 0.5, sleep=sleep) == pytest.approx(12.0)  # 6 J over 0.5 s
    assert idle_power_w(NullMeter("x"), 0.5, sleep=sleep) is None
    assert idle_power_w(m, 0.0, sleep=sleep) is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_nvml_meter_on_gpu():
    pytest.importorskip("pynvml")
    m = detect_meter("cuda")
    assert not isinstance(m, NullMeter), getattr(m, "reason", "")
    x = torch.randn(4096, 4096, device="cuda")
    from modelmeter.measure.timer import device_timer

    w = measure_energy(lambda: x @ x, m, device_timer("cuda"), calls=200)
    assert w.energy_j is not None and w.energy_j > 0 and w.duration_s > 0

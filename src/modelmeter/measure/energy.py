"""Energy meters behind one interface, probed in priority order, with a null meter that says why.

Priority (reference ``hardware-energy.md`` section 5):

1. NVIDIA GPU: NVML total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since driver
   load, Volta+). The counter advances every 20-100 ms, so a window shorter than that may read 0:
   then the energy is approximated by power x time and marked approximate (Zeus v0.6.1 does the same).
2. NVIDIA GPU without the counter: NVML power sampling (instant power field where the driver offers
   it, else ``nvmlDeviceGetPowerUsage``, which is a 1-s moving average on Ampere and newer except
   GA100), integrated with the trapezoid rule.
3. CPU: RAPL through ``/sys/class/powercap/intel-rapl:N/energy_uj`` (cumulative µJ, package zones
   only so sub-zones are not double counted, DRAM zones optional). The counter wraps at
   ``max_energy_range_uj``: a negative difference has that range added, and long windows are polled
   often enough that at most one wrap happens between reads. Since CVE-2020-8694 ``energy_uj`` is
   root-only on patched kernels; the meter says so instead of failing.
4. :class:`NullMeter`: measures nothing and carries the reasons every other meter gave.

Meters only read counters; the caller synchronizes the device at both ends of a window
(:func:`measure_energy` does). Vendor modules and file roots are injectable, so all of this is
tested with fakes.
"""

from __future__ import annotations

import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import MeasurementError
from ..report.benchmark import EnergyWindow
from .timer import Clock, DeviceTimer, PerfCounterClock

#: NVML energy counter update period, upper end of "every 20-100ms" (PETSc, reference [P2])
NVML_COUNTER_PERIOD_S = 0.1
#: NVML averaged power covers about one second on Ampere and newer (reference [P1])
NVML_AVERAGE_WINDOW_S = 1.0
#: RAPL energy status registers update about every millisecond (Intel SDM vol. 3B, 14.9.3)
RAPL_UPDATE_PERIOD_S = 0.001


class EnergyMeter(ABC):
    """A source of energy readings over windows: ``begin()`` ... ``end() -> EnergyWindow``."""

    name: str = "meter"
    method: str = "none"
    #: the time between counter updates; windows should be much longer than this
    update_period_s: float = 0.0

    @abstractmethod
    def probe(self) -> str | None:
        """None when the meter can measure here, else a one-line reason why not."""

    @abstractmethod
    def begin(self) -> None: ...

    @abstractmethod
    def end(self) -> EnergyWindow: ...

    def close(self) -> None:
        return None

    @property
    def available(self) -> bool:
        return self.probe() is None

    def _window_warnings(self, duration_s: float) -> list[str]:
        if self.update_period_s and duration_s < 10 * self.update_period_s:
            return [f"window of {duration_s * 1e3:.1f} ms is not much longer than the {self.update_period_s * 1e3:g} ms "
                    f"counter update period; the reading may be off by up to one update"]
        return []


class NullMeter(EnergyMeter):
    """Measures nothing; ``reason`` says why (every probed meter's reason, joined)."""

    name = "none"
    method = "none"

    def __init__(self, reason: str, clock: Clock | None = None) -> None:
        self.reason = reason
        self.clock = clock or PerfCounterClock()
        self._t0: int | None = None

    def probe(self) -> str | None:
        return self.reason

    def begin(self) -> None:
        self._t0 = self.clock.now_ns()

    def end(self) -> EnergyWindow:
        t0 = self._t0 if self._t0 is not None else self.clock.now_ns()
        return EnergyWindow(self.name, self.method, None, (self.clock.now_ns() - t0) / 1e9, False, [self.reason])


# -- NVML -------------------------------------------------------------------------------------------------


def _import_nvml() -> Any:
    try:
        import pynvml  # provided by the nvidia-ml-py package
    except ImportError as exc:
        raise MeasurementError("NVML bindings not installed: pip install 'modelmeter[energy]' (nvidia-ml-py)") from exc
    return pynvml


def nvml_index(device: Any) -> int:
    """NVML index of a torch CUDA device (honours CUDA_VISIBLE_DEVICES where torch can map it)."""
    import torch

    dev = torch.device(device)
    idx = dev.index if dev.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    mapper = getattr(torch.cuda, "_get_nvml_device_index", None)
    if mapper is not None:
        try:
            return int(mapper(idx))
        except Exception:  # noqa: BLE001 - fall back to the CUDA index
            return int(idx)
    return int(idx)


class _NvmlBase(EnergyMeter):
    def __init__(self, index: int = 0, *, nvml: Any = None, clock: Clock | None = None) -> None:
        self.index = index
        self._nvml = nvml
        self.clock = clock or PerfCounterClock()
        self._handle: Any = None
        self._probe: str | None | bool = False  # False = not probed yet

    def _open(self) -> Any:
        if self._handle is None:
            if self._nvml is None:
                self._nvml = _import_nvml()
            self._nvml.nvmlInit()
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self.index)
        return self._handle

    def _nvml_error(self) -> type[BaseException]:
        return getattr(self._nvml, "NVMLError", Exception) if self._nvml is not None else Exception

    def close(self) -> None:
        if self._handle is not None and self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - shutting down twice is harmless
                pass
            self._handle = None

    def _power_mw(self) -> tuple[float, bool]:
        """(power in mW, instant?) from the instant field when offered, else the averaged reading."""
        nvml, h = self._nvml, self._open()
        field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is not None and getattr(self, "_instant_ok", True):
            try:
                (v,) = nvml.nvmlDeviceGetFieldValues(h, [field_id])
                if getattr(v, "nvmlReturn", 1) == 0:
                    return float(v.value.uiVal), True
            except Exception:  # noqa: BLE001 - the driver does not offer the field: use the average
                pass
            self._instant_ok = False
        return float(nvml.nvmlDeviceGetPowerUsage(h)), False


class NvmlEnergyMeter(_NvmlBase):
    """The NVML total-energy counter (mJ), read at both ends of the window."""

    name = "nvml"
    method = "nvml-energy-counter"
    update_period_s = NVML_COUNTER_PERIOD_S

    def probe(self) -> str | None:
        if self._probe is not False:
            return self._probe  # type: ignore[return-value]
        try:
            h = self._open()
            self._nvml.nvmlDeviceGetTotalEnergyConsumption(h)
            self._probe = None
        except MeasurementError as exc:
            self._probe = str(exc)
        except Exception as exc:  # noqa: BLE001 - NVMLError_NotSupported and friends
            self._probe = f"NVML energy counter unavailable on GPU {self.index} ({type(exc).__name__}: {exc}); " \
                          f"it needs a Volta or newer GPU"
        return self._probe  # type: ignore[return-value]

    def _read_mj(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._open()))

    def begin(self) -> None:
        reason = self.probe()
        if reason is not None:
            raise MeasurementError(reason)
        self._e0 = self._read_mj()
        self._t0 = self.clock.now_ns()

    def end(self) -> EnergyWindow:
        e1 = self._read_mj()
        dur = (self.clock.now_ns() - self._t0) / 1e9
        delta_mj = e1 - self._e0
        warnings = self._window_warnings(dur)
        if delta_mj < 0:
            return EnergyWindow(self.name, self.method, None, dur, False,
                                ["the NVML energy counter went backwards (driver reloaded?); no reading"])
        if delta_mj == 0 and dur < self.update_period_s:
            p_mw, instant = self._power_mw()
            warnings.append(f"energy counter did not advance in a {dur * 1e3:.1f} ms window; approximated by "
                            f"{'instant' if instant else '1-s average'} power x time")
            return EnergyWindow(self.name, self.method, p_mw / 1e3 * dur, dur, True, warnings)
        return EnergyWindow(self.name, self.method, delta_mj / 1e3, dur, False, warnings)



class _Poller:
    """Calls ``fn`` every ``interval_s`` on a daemon thread, from :meth:`start` until :meth:`stop`."""

    def __init__(self, fn: Any, interval_s: float, name: str) -> None:
        self._fn, self._interval_s = fn, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._fn()

    def start(self) -> _Poller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

class NvmlPowerSampler(_NvmlBase):
    """Power sampled by a background thread every ``interval_s`` and integrated (trapezoid rule).

    With ``threaded=False`` only the two ends are sampled unless the caller calls :meth:`sample`.
    """

    name = "nvml"
    method = "nvml-power-sampling"

    def __init__(self, index: int = 0, *, nvml: Any = None, clock: Clock | None = None, interval_s: float = 0.02,
                 threaded: bool = True) -> None:
        super().__init__(index, nvml=nvml, clock=clock)
        self.interval_s = interval_s
        self.threaded = threaded
        self._samples: list[tuple[int, float]] = []
        self._instant_seen = True
        self._poller: _Poller | None = None
        self._lock = threading.Lock()

    def probe(self) -> str | None:
        if self._probe is not False:
            return self._probe  # type: ignore[return-value]
        try:
            self._power_mw()
            self._probe = None
        except MeasurementError as exc:
            self._probe = str(exc)
        except Exception as exc:  # noqa: BLE001
            self._probe = f"NVML power reading unavailable on GPU {self.index} ({type(exc).__name__}: {exc})"
        return self._probe  # type: ignore[return-value]

    def sample(self) -> None:
        p_mw, instant = self._power_mw()
        with self._lock:
            self._samples.append((self.clock.now_ns(), p_mw))
            self._instant_seen = self._instant_seen and instant

    def begin(self) -> None:
        reason = self.probe()
        if reason is not None:
            raise MeasurementError(reason)
        self._samples = []
        self._instant_seen = True
        self.sample()
        if self.threaded:
            self._poller = _Poller(self.sample, self.interval_s, "modelmeter-power").start()

    def end(self) -> EnergyWindow:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        self.sample()
        with self._lock:
            pts = list(self._samples)
        energy_j = sum((t1 - t0) / 1e9 * (p0 + p1) / 2 / 1e3 for (t0, p0), (t1, p1) in zip(pts, pts[1:]))
        dur = (pts[-1][0] - pts[0][0]) / 1e9
        warnings = [f"energy integrated from {len(pts)} power samples"]
        if not self._instant_seen and dur < 10 * NVML_AVERAGE_WINDOW_S:
            warnings.append(f"power readings are a ~1 s moving average on this GPU; a {dur:.2f} s window blurs "
                            f"into the time before it")
        return EnergyWindow(self.name, self.method, energy_j, dur, True, warnings)


# -- RAPL ---------------------------------------------------------------------------------------------------

POWERCAP_ROOT = "/sys/class/powercap"


class RaplMeter(EnergyMeter):
    """Package (and optionally DRAM) energy from the Linux powercap RAPL interface."""

    name = "rapl"
    method = "rapl-powercap"
    update_period_s = RAPL_UPDATE_PERIOD_S

    def __init__(self, root: str | os.PathLike[str] = POWERCAP_ROOT, *, include_dram: bool = False,
                 clock: Clock | None = None, poll_s: float | None = 10.0) -> None:
        self.root = Path(root)
        self.include_dram = include_dram
        self.clock = clock or PerfCounterClock()
        self.poll_s = poll_s
        self._zones: list[tuple[str, Path, int]] | None = None  # (name, energy_uj path, max range)
        self._probe: str | None | bool = False
        self._poller: _Poller | None = None
        self._lock = threading.Lock()

    def _discover(self) -> list[tuple[str, Path, int]]:
        zones: list[tuple[str, Path, int]] = []
        seen: set[str] = set()
        tops = sorted(p for p in self.root.glob("intel-rapl:*") if p.name.count(":") == 1)
        for top in tops:
            name = (top / "name").read_text().strip()
            if not name.startswith("package"):
                continue  # psys covers the platform and overlaps the packages
            if name in seen:  # multi-die parts can mirror one socket counter (CodeCarbon de-duplicates)
                continue
            seen.add(name)
            zones.append((name, top / "energy_uj", int((top / "max_energy_range_uj").read_text())))
            if self.include_dram:
                for sub in sorted(top.glob(f"{top.name}:*")):
                    if (sub / "name").read_text().strip() == "dram":
                        zones.append((f"{name}/dram", sub / "energy_uj", int((sub / "max_energy_range_uj").read_text())))
        return zones

    def probe(self) -> str | None:
        if self._probe is not False:
            return self._probe  # type: ignore[return-value]
        reason: str | None = None
        if not self.root.is_dir():
            reason = f"RAPL: {self.root} does not exist (no powercap: not Linux, or a VM, which usually hides RAPL)"
        else:
            try:
                zones = self._discover()
                if not zones:
                    reason = f"RAPL: no intel-rapl package zone under {self.root} (RAPL not exposed on this machine)"
                else:
                    for _, path, _ in zones:
                        int(path.read_text())
                    self._zones = zones
            except PermissionError as exc:
                reason = (f"RAPL: {exc.filename or 'energy_uj'} is readable by root only (kernels patched for "
                          f"CVE-2020-8694); run as root or grant read access (sudo chmod o+r .../energy_uj)")
            except (OSError, ValueError) as exc:
                reason = f"RAPL: cannot read the powercap files ({exc})"
        self._probe = reason
        return reason

    def _read(self) -> list[int]:
        assert self._zones is not None
        return [int(path.read_text()) for _, path, _ in self._zones]

    def poll(self) -> None:
        """Fold the counters' progress since the last read into the window's total (handles one wrap)."""
        now = self._read()
        with self._lock:
            for i, (cur, prev) in enumerate(zip(now, self._last)):
                delta = cur - prev
                if delta < 0:  # wrapped past max_energy_range_uj
                    delta += self._zones[i][2]  # type: ignore[index]
                self._acc_uj[i] += delta
            self._last = now

    def begin(self) -> None:
        reason = self.probe()
        if reason is not None:
            raise MeasurementError(reason)
        self._last = self._read()
        self._acc_uj = [0] * len(self._last)
        self._t0 = self.clock.now_ns()
        if self.poll_s:
            self._poller = _Poller(self.poll, self.poll_s, "modelmeter-rapl").start()

    def end(self) -> EnergyWindow:
        if self._poller is not None:
            self._poller.stop()
            self._poller = None
        self.poll()
        dur = (self.clock.now_ns() - self._t0) / 1e9
        total_j = sum(self._acc_uj) / 1e6
        zones = ", ".join(z[0] for z in self._zones or [])
        warnings = self._window_warnings(dur)
        warnings.append(f"RAPL zones: {zones}; whole-package energy (other processes included)")
        return EnergyWindow(self.name, self.method, total_j, dur, False, warnings)


# -- choosing a meter -----------------------------------------------------------------------------------------


def detect_meter(device: Any = "cpu", *, nvml: Any = None, powercap_root: str | os.PathLike[str] = POWERCAP_ROOT,
                 clock: Clock | None = None, include_dram: bool = False) -> EnergyMeter:
    """The first meter that works for ``device``, else a :class:`NullMeter` carrying every reason."""
    dev_type = str(device).split(":")[0]
    reasons: list[str] = []
    if dev_type == "cuda":
        try:
            index = nvml_index(device) if nvml is None else (int(str(device).split(":")[1]) if ":" in str(device) else 0)
        except Exception:  # noqa: BLE001
            index = 0
        counter = NvmlEnergyMeter(index, nvml=nvml, clock=clock)
        r = counter.probe()
        if r is None:
            return counter
        reasons.append(r)
        counter.close()
        sampler = NvmlPowerSampler(index, nvml=counter._nvml or nvml, clock=clock)
        r2 = sampler.probe()
        if r2 is None:
            return sampler
        sampler.close()
        if r2 != r:
            reasons.append(r2)
    elif dev_type == "cpu":
        rapl = RaplMeter(powercap_root, include_dram=include_dram, clock=clock)
        r = rapl.probe()
        if r is None:
            return rapl
        reasons.append(r)
    else:
        reasons.append(f"no energy meter for device type '{dev_type}' (Apple powermetrics needs sudo and is not wired in)")
    return NullMeter("; ".join(reasons), clock=clock)


def measure_energy(
    fn: Callable[[], Any],
    meter: EnergyMeter,
    timer: DeviceTimer,
    *,
    calls: int,
) -> EnergyWindow:
    """Run ``fn`` ``calls`` times back to back inside one meter window, synchronized at both ends."""
    if calls < 1:
        raise MeasurementError(f"an energy window needs at least one call, not {calls}")
    timer.sync()
    meter.begin()
    try:
        for _ in range(calls):
            fn()
        timer.sync()
    finally:
        window = meter.end()
    return window


def calls_for_window(latency_s: float, window_s: float, meter: EnergyMeter, *, max_calls: int = 1_000_000) -> int:
    """How many calls make a window of at least ``window_s`` and 10 counter updates."""
    target = max(window_s, 10 * meter.update_period_s)
    if latency_s <= 0:
        return max_calls
    return int(min(max_calls, max(1, math.ceil(target / latency_s))))


def idle_power_w(meter: EnergyMeter, seconds: float, *, sleep: Callable[[float], None] = time.sleep) -> float | None:
    """Average power over ``seconds`` of doing nothing: the idle baseline (None if nothing measured)."""
    if seconds <= 0 or not meter.available:
        return None
    meter.begin()
    try:
        sleep(seconds)
    finally:
        w = meter.end()
    if w.energy_j is None or w.duration_s <= 0:
        return None
    return w.energy_j / w.duration_s


__all__ = ["EnergyMeter", "NVML_COUNTER_PERIOD_S", "NullMeter", "NvmlEnergyMeter", "NvmlPowerSampler", "POWERCAP_ROOT",
           "RaplMeter", "calls_for_window", "detect_meter", "idle_power_w", "measure_energy", "nvml_index"]

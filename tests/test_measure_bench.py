"""Benchmark runs on real CPU tensors (tiny models, short budgets): sweep, training step, MFU, energy,
out-of-memory handling, no side effects on the user's model, JSON round trip and rendering."""

from __future__ import annotations

import dataclasses
import json
from importlib import resources

import pytest
import torch
from torch import nn

import modelmeter as mm
from modelmeter.errors import InputError, MeasurementError
from modelmeter.measure import EnergySettings, HarnessSettings, NullMeter, benchmark, scale_batch, time_model
from modelmeter.measure.bench import count_tokens
from modelmeter.measure.catalog import Catalog
from modelmeter.measure.energy import EnergyMeter, calls_for_window
from modelmeter.report.benchmark import Benchmark, EnergyWindow

FAST = HarnessSettings(budget_s=0.03, warmup_s=0.005, warmup_calls=1, min_samples=5, max_samples=200)
NO_CATALOG = Catalog()  # peaks come from overrides only, whatever the hardware package offers


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8))


def test_inference_sweep_mfu_and_no_side_effects():
    model = mlp()
    model.train()  # the benchmark runs eval mode and must restore this
    before = {k: v.clone() for k, v in model.state_dict().items()}
    b = benchmark(model, torch.randn(2, 32), batches=[1, 2, 4], harness=FAST, peak_tflops=0.001, catalog=NO_CATALOG,
                  name="mlp")
    assert [r.batch for r in b.runs] == [1, 2, 4] and all(r.mode == "inference" for r in b.runs)
    for r in b.runs:
        assert len(r.timing.samples_s) == r.timing.stats.n >= 5
        u = r.utilization
        # forward MACs per sample: 32*64 + 64*8 = 2560 -> matmul FLOPs 5120 per sample
        assert u.model_flops == 5120 * r.batch
        assert u.mfu == pytest.approx(5120 * r.batch / r.timing.stats.p50_s / 1e9)
        assert r.comparison.macs == 2560 * r.batch and r.comparison.measured_p50_s == r.timing.stats.p50_s
    assert b.peak.kind == "override" and b.peak.flops_per_s == 1e9
    sw = b.sweep
    assert sw is not None and sw.stop_reason == "done" and sw.oom_batch is None and sw.largest_batch_ran == 4
    best = max(sw.points, key=lambda p: p.samples_per_s)
    assert sw.best_batch == best.batch and [p.best for p in sw.points].count(True) == 1
    assert all(p.samples_per_s == pytest.approx(p.batch / p.latency_p50_s) for p in sw.points)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_training_step_runs_on_a_copy_and_restores_rng():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 32), nn.Dropout(0.5), nn.BatchNorm1d(32), nn.Linear(32, 4))
    x = torch.randn(8, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    b = benchmark(model, x, train=True, optimizer="adamw", harness=FAST, peak_tflops=0.001, catalog=NO_CATALOG)
    assert torch.equal(torch.get_rng_state(), rng)  # dropout's draws did not move the user's generator
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # weights, BN stats, counters
    assert all(m.training for m in model.modules())
    (r,) = b.runs
    assert r.mode == "train" and r.timing.label == "train-step"
    # forward matmul FLOPs: 2 * 8 * (16*32 + 32*4) = 10240; the training step's model FLOPs are 3x that
    assert r.utilization.model_flops == 3 * 10240
    # hardware FLOPs are every counted FLOP of the step (forward, loss, backward, adamw)
    rep = mm.profile(model, x, train=True, optimizer="adamw")
    assert r.utilization.hardware_flops == rep.totals.flops > 3 * 10240 - 2 * 8 * 16 * 32


class OOMAtBatch(nn.Module):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.limit = limit

    def forward(self, x):
        if x.shape[0] >= self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.lin(x)


def test_sweep_stops_cleanly_at_out_of_memory():
    b = benchmark(OOMAtBatch(4), torch.randn(1, 4), batches=[1, 2, 4, 8], harness=FAST, count=False,
                  catalog=NO_CATALOG)
    assert [r.batch for r in b.runs] == [1, 2]
    assert b.sweep.oom_batch == 4 and b.sweep.largest_batch_ran == 2 and b.sweep.stop_reason == "out-of-memory"
    assert any("ran out of memory" in w for w in b.warnings)
    with pytest.raises(MeasurementError, match="batch 1 ran out of memory"):
        benchmark(OOMAtBatch(1), torch.randn(1, 4), batches=[1, 2], harness=FAST, count=False, catalog=NO_CATALOG)


def test_other_errors_propagate():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            raise ValueError("not an OOM")

    with pytest.raises(ValueError):
        benchmark(Broken(), torch.randn(1, 2), harness=FAST, count=False, catalog=NO_CATALOG)


def test_arguments_are_validated_before_work():
    with torch.device("meta"):
        meta_model = nn.Linear(2, 2)
    with pytest.raises(InputError, match="meta"):
        benchmark(meta_model, torch.randn(1, 2), harness=FAST)
    with pytest.raises(InputError, match="meta device"):
        benchmark(mlp(), torch.randn(1, 32), device="meta")
    with pytest.raises(InputError, match="batch sizes"):
        benchmark(mlp(), torch.randn(1, 32), batches=[0, 2])
    with pytest.raises(InputError, match="optimizer"):
        benchmark(mlp(), torch.randn(1, 32), train=True, optimizer="lion")
    with pytest.raises(InputError, match="nn.Module"):
        benchmark(lambda x: x, torch.randn(1, 32))


class FixedMeter(EnergyMeter):
    """Reports ``watts`` x window duration (real clock), like a steady power draw."""

    name = "fixed"
    method = "fixed-power"
    update_period_s = 0.001

    def __init__(self, watts: float) -> None:
        self.watts = watts

    def probe(self):
        return None

    def begin(self):
        import time

        self.t0 = time.perf_counter()

    def end(self):
        import time

        d = time.perf_counter() - self.t0
        return EnergyWindow(self.name, self.method, self.watts * d, d, False, [])


def test_measured_energy_per_call_sample_and_token():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(16 * 6, 4))
    ids = torch.randint(0, 100, (2, 6))
    es = EnergySettings(window_s=0.02, idle_s=0.01, grid_g_per_kwh=100.0, grid_source="test grid")
    b = benchmark(model, ids, energy=True, meter=FixedMeter(50.0), energy_settings=es, harness=FAST, catalog=NO_CATALOG)
    (r,) = b.runs
    e = r.energy
    assert e.measured and e.kind == "measured" and e.method == "fixed-power"
    assert r.tokens_per_call == 12  # 2 x 6 token ids
    assert e.calls == calls_for_window(r.timing.stats.p50_s, 0.02, FixedMeter(50.0))
    assert e.energy_per_call_j == pytest.approx(e.energy_j / e.calls)
    assert e.energy_per_sample_j == pytest.approx(e.energy_per_call_j / 2)
    assert e.energy_per_token_j == pytest.approx(e.energy_per_call_j / 12)
    assert e.avg_power_w == pytest.approx(50.0) and e.idle_power_w == pytest.approx(50.0)
    assert e.energy_above_idle_per_call_j == pytest.approx(0.0, abs=1e-12)  # steady 50 W is all idle power
    assert e.joules_per_flop == pytest.approx(e.energy_per_call_j / r.utilization.hardware_flops)
    assert e.carbon.intensity_g_per_kwh == 100.0
    assert e.carbon.grams_co2e_per_call == pytest.approx(e.energy_per_call_j / 3.6e6 * 100.0)
    assert r.comparison.energy_kind == "measured"


def test_estimated_energy_when_no_meter_works():
    model = mlp()
    b = benchmark(model, torch.randn(4, 32), energy=True, meter=NullMeter("RAPL: not here"), harness=FAST,
                  peak_tflops=0.001, catalog=NO_CATALOG, energy_settings=EnergySettings(tdp_w=10.0))
    (r,) = b.runs
    e = r.energy
    rep = mm.profile(model, torch.randn(4, 32))
    assert not e.measured and e.kind == "estimated" and e.unavailable_reason == "RAPL: not here"
    # 2.3 pJ per counted FLOP + 160 pJ per counted byte moved
    expect = rep.totals.flops * 2.3e-12 + rep.totals.bytes_moved * 160e-12
    assert e.estimate.total_j == pytest.approx(expect) and e.energy_per_call_j == pytest.approx(expect)
    assert e.estimate.tdp_bound_j == pytest.approx(10.0 * r.timing.stats.p50_s)
    assert e.avg_power_w is None and e.calls is None
    assert r.comparison.energy_kind == "estimated"


def test_json_round_trip_and_report_schema():
    jsonschema = pytest.importorskip("jsonschema")
    model = mlp()
    x = torch.randn(2, 32)
    b = benchmark(model, x, batches=[1, 2], harness=FAST, energy=True, meter=NullMeter("none here"),
                  peak_tflops=0.001, catalog=NO_CATALOG)
    d = json.loads(json.dumps(b.to_dict()))
    assert d["schema"] == "modelmeter.benchmark/1"
    assert d["runs"][0]["timing"]["samples_s"] == b.runs[0].timing.samples_s
    assert Benchmark.from_dict(d) == b
    rep = dataclasses.replace(mm.profile(model, x), benchmark=b)
    schema = json.loads(resources.files("modelmeter.report").joinpath("schema.json").read_text())
    jsonschema.validate(json.loads(rep.to_json()), schema)
    with pytest.raises(InputError):
        Benchmark.from_dict({"runs": []})


def test_rendering_shows_tables_and_warnings():
    from rich.console import Console

    b = benchmark(mlp(), torch.randn(2, 32), batches=[1, 2], harness=FAST, energy=True, meter=NullMeter("no meter"),
                  peak_tflops=0.001, catalog=NO_CATALOG, name="tiny-mlp")
    con = Console(record=True, width=220, color_system=None)
    con.print(b)
    text = con.export_text()
    for needle in ("tiny-mlp", "p50", "p99", "samples/s", "counted vs predicted vs measured", "MFU", "energy",
                   "estimated", "throughput sweep", "best", "not measured: no meter", "warning:"):
        assert needle in text, needle


def test_scale_batch_and_tokens():
    x = torch.arange(6.0).reshape(2, 3)
    mask = torch.ones(3)
    y = scale_batch((x, mask), 5)
    # rows cycle 0 1 0 1 0; the tensor without the batch dim is kept
    assert torch.equal(y[0], torch.tensor([[0.0, 1, 2], [3, 4, 5], [0, 1, 2], [3, 4, 5], [0, 1, 2]]))
    assert y[1] is mask
    assert scale_batch({"a": x}, 1)["a"].shape == (1, 3)
    assert count_tokens({"input_ids": torch.zeros(4, 7, dtype=torch.long)}) == 28
    assert count_tokens(torch.zeros(2, 3)) is None
    with pytest.raises(InputError):
        scale_batch(x, 0)


def test_time_model_and_threads():
    before = torch.get_num_threads()
    t = time_model(mlp(), torch.randn(1, 32), threads=1, harness=FAST)
    assert t.threads == 1 and t.stats.n >= 5
    assert torch.get_num_threads() == before


def test_dtype_copy_leaves_model_in_fp32():
    model = mlp()
    b = benchmark(model, torch.randn(1, 32), dtype="bf16", harness=FAST, count=False, catalog=NO_CATALOG)
    assert b.dtype == "bfloat16"
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_benchmark_on_cuda():
    b = benchmark(mlp(), torch.randn(8, 32), batches=[8, 64], device="cuda", harness=FAST, catalog=NO_CATALOG,
                  peak_tflops=100.0, train=False)
    assert all(r.timing.timer == "cuda-event" for r in b.runs)
    assert b.runs[0].timing.stats.p50_s > 0


def _cpu_entry(flops_per_s: float = 1e11, bw: float = 2e10):
    from modelmeter.hardware.spec import DeviceSpec

    return DeviceSpec.from_dict({"name": "test-cpu", "kind": "cpu", "matrix_flop_per_s": {"fp32": flops_per_s},
                                 "memory_bandwidth_bytes_per_s": bw, "tdp_w": 65.0,
                                 "sources": ["made up for a test"], "measured": {"device_kind": "cpu"}})


def test_prediction_is_the_roofline_of_the_same_counts():
    from modelmeter.analysis.roofline import roofline

    entry = _cpu_entry()
    cat = Catalog(local={"cpu": (entry, "calibrated")})
    model = mlp()
    x = torch.randn(4, 32)
    b = benchmark(model, x, harness=FAST, catalog=cat, energy=True, meter=NullMeter("none"))
    (r,) = b.runs
    assert b.peak.kind == "calibrated" and b.peak.flops_per_s == 1e11 and b.peak.tdp_w == 65.0
    rr = roofline(mm.profile(model, x), entry, dtype="fp32")  # independent call on a fresh count
    c = r.comparison
    assert c.predicted_on == "test-cpu"
    assert c.predicted_s == pytest.approx(rr.predicted_s) and c.predicted_fused_s == pytest.approx(rr.fused_lower_bound_s)
    assert c.ratio == pytest.approx(r.timing.stats.p50_s / rr.predicted_s)
    assert r.utilization.mfu == pytest.approx(5120 * 4 / r.timing.stats.p50_s / 1e11)
    # the entry's TDP gives the TDP x time bound of the estimate
    assert r.energy.estimate.tdp_bound_j == pytest.approx(65.0 * r.timing.stats.p50_s)
    assert not b.warnings


def test_override_peak_keeps_the_entry_for_the_prediction_and_flags_a_foreign_device():
    from modelmeter.hardware.spec import DeviceSpec

    gpu = DeviceSpec.from_dict({"name": "test-gpu", "kind": "gpu", "matrix_flop_per_s": {"fp32": 5e13},
                                "memory_bandwidth_bytes_per_s": 1e12, "sources": ["test"]})
    cat = Catalog(entries={"test-gpu": gpu})
    b = benchmark(mlp(), torch.randn(2, 32), harness=FAST, catalog=cat, hardware="test-gpu", peak_tflops=0.001)
    assert b.peak.kind == "override" and b.runs[0].comparison.predicted_on == "test-gpu"
    assert any("describe another device" in w for w in b.warnings)


def test_no_entry_means_no_mfu_and_a_note():
    b = benchmark(mlp(), torch.randn(2, 32), harness=FAST, catalog=NO_CATALOG)
    (r,) = b.runs
    assert b.peak is None and r.utilization.mfu is None and r.comparison.predicted_s is None
    assert any("calibrate" in n for n in b.notes)


def test_model_that_does_not_fit_is_a_measurement_error(monkeypatch):
    import modelmeter.measure.bench as bench

    def oom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(bench, "_copy_to", oom)
    with pytest.raises(MeasurementError, match="does not fit"):
        benchmark(mlp(), torch.randn(1, 32), dtype="bf16", harness=FAST, count=False, catalog=NO_CATALOG)

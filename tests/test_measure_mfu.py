"""MFU/HFU arithmetic, peak resolution (override, catalog, local), energy estimate and CO2."""

from __future__ import annotations

import pytest
import torch

from modelmeter.errors import HardwareError, InputError
from modelmeter.measure.catalog import Catalog, StaticEntry
from modelmeter.measure.estimate import carbon, estimate_energy
from modelmeter.measure.mfu import dtype_key, matmul_dtype_key, resolve_peak, utilization


def test_utilization_inference_exact():
    from modelmeter.measure.mfu import override_peak

    peak = override_peak(1.0, "fp32")  # 1 TFLOP/s
    # 1e9 matmul FLOPs in 10 ms -> 1e11 FLOP/s -> MFU 0.1; 1.5e9 counted FLOPs -> HFU 0.15
    u = utilization(forward_matmul_flops=10**9, hardware_flops=15 * 10**8, latency_s=0.01, train=False, peak=peak)
    assert u.model_flops == 10**9 and u.hardware_flops == 15 * 10**8
    assert u.achieved_model_flops_per_s == pytest.approx(1e11)
    assert u.mfu == pytest.approx(0.1) and u.hfu == pytest.approx(0.15)
    assert u.peak_name == "user override" and u.reason == ""


def test_utilization_training_step_counts_backward_as_twice_forward():
    from modelmeter.measure.mfu import override_peak

    # model FLOPs = 3 x 1e9; in 0.1 s on 0.1 TFLOP/s -> 3e10 / 1e11 = 0.3
    u = utilization(forward_matmul_flops=10**9, hardware_flops=4 * 10**9, latency_s=0.1, train=True,
                    peak=override_peak(0.1, "bf16"))
    assert u.model_flops == 3 * 10**9 and u.mfu == pytest.approx(0.3) and u.hfu == pytest.approx(0.4)


def test_utilization_without_peak_says_why():
    u = utilization(forward_matmul_flops=100, hardware_flops=100, latency_s=1.0, train=False, peak=None,
                    reason="no catalog")
    assert u.mfu is None and u.hfu is None and u.reason == "no catalog"
    assert u.achieved_model_flops_per_s == 100.0
    with pytest.raises(InputError):
        utilization(forward_matmul_flops=1, hardware_flops=1, latency_s=0.0, train=False, peak=None)


def test_dtype_keys():
    assert dtype_key("torch.float32") == "fp32" and dtype_key("bfloat16") == "bf16" and dtype_key("half") == "fp16"
    with pytest.raises(InputError):
        dtype_key("int3")
    assert matmul_dtype_key("cpu", "float32") == "fp32"


def test_fp32_on_cuda_uses_tf32_peak_when_torch_allows_it(monkeypatch):
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "highest")
    assert matmul_dtype_key("cuda:0", "float32") == "fp32"
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert matmul_dtype_key("cuda:0", "float32") == "tf32"
    assert matmul_dtype_key("cuda:0", "bfloat16") == "bf16"


CAT = Catalog(
    entries={"h100-sxm": StaticEntry("h100-sxm", {"bf16": 989.4e12, "fp32": 67e12}, 3.35e12, 700.0, "[H3]")},
    local={"cpu": (StaticEntry("local-cpu", {"fp32": 2.0e11}, 2.0e10, None, "calibrated 2024"), "calibrated")},
)


def test_resolve_peak_order():
    p, note = resolve_peak("cpu", "float32", peak_tflops=3.0, hardware="h100-sxm", catalog=CAT)
    assert p.kind == "override" and p.flops_per_s == 3e12 and note == ""
    p, _ = resolve_peak("cpu", "bfloat16", hardware="h100-sxm", catalog=CAT)
    assert (p.name, p.kind, p.flops_per_s, p.tdp_w, p.dtype) == ("h100-sxm", "catalog", 989.4e12, 700.0, "bf16")
    p, _ = resolve_peak("cpu", "float32", catalog=CAT)
    assert (p.name, p.kind, p.flops_per_s) == ("local-cpu", "calibrated", 2.0e11)


def test_resolve_peak_missing_figures():
    p, note = resolve_peak("cpu", "float16", catalog=CAT)  # the local entry has no fp16 peak
    assert p.flops_per_s is None and "no fp16 peak" in note
    p, note = resolve_peak("mps", "float32", catalog=CAT)
    assert p is None and "not in the catalog" in note
    with pytest.raises(HardwareError):
        resolve_peak("cpu", "float32", hardware="tpu-v99", catalog=CAT)
    with pytest.raises(InputError):
        resolve_peak("cpu", "float32", peak_tflops=-1.0, catalog=CAT)


# -- energy estimate and CO2 ---------------------------------------------------------------------------------


def test_energy_estimate_fp32_exact():
    # 1e9 FLOPs x 2.3 pJ = 2.3 mJ; 1e6 bytes x 160 pJ = 0.16 mJ; TDP 100 W x 10 ms = 1 J
    e = estimate_energy(flops=10**9, bytes_moved=10**6, dtype="float32", latency_s=0.01, tdp_w=100.0, tdp_source="x")
    assert e.label == "estimated"
    assert e.pj_per_flop == pytest.approx(2.3) and e.pj_per_byte == pytest.approx(160.0)
    assert e.arithmetic_j == pytest.approx(2.3e-3) and e.memory_j == pytest.approx(1.6e-4)
    assert e.total_j == pytest.approx(2.46e-3)
    assert e.tdp_bound_j == pytest.approx(1.0)
    assert "Horowitz" in e.figures and "640 pJ" in e.figures


def test_energy_estimate_half_precision_and_unknown_tdp():
    # fp16: (1.1 + 0.4) / 2 = 0.75 pJ per FLOP; bf16 borrows it
    e = estimate_energy(flops=4 * 10**12, bytes_moved=0, dtype="bf16", latency_s=1.0)
    assert e.pj_per_flop == pytest.approx(0.75) and e.total_j == pytest.approx(3.0)
    assert e.tdp_bound_j is None and "--tdp-w" in e.tdp_source
    with pytest.raises(InputError):
        estimate_energy(flops=1, bytes_moved=1, dtype="int8", latency_s=1.0)
    with pytest.raises(InputError):
        estimate_energy(flops=1, bytes_moved=1, dtype="fp32", latency_s=1.0, tdp_w=0.0)


def test_carbon():
    # 3.6 MJ = 1 kWh at 100 g/kWh and PUE 1.5 -> 150 g per call; batch 10 -> 15 g per sample, 15 kg per 1k
    c = carbon(3.6e6, 10, intensity_g_per_kwh=100.0, intensity_source="FR 2023", pue=1.5)
    assert c.grams_co2e_per_call == pytest.approx(150.0)
    assert c.grams_co2e_per_1k_samples == pytest.approx(15_000.0)
    assert c.intensity_source == "FR 2023"
    d = carbon(3.6e6, 1)
    assert d.intensity_g_per_kwh == 475.0 and "world average" in d.intensity_source and d.pue == 1.0
    with pytest.raises(InputError):
        carbon(1.0, 1, pue=0.9)
    with pytest.raises(InputError):
        carbon(1.0, 1, intensity_g_per_kwh=-5)


def test_package_catalog_adapter(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no user calibration file
    from modelmeter.measure.catalog import PackageCatalog, default_catalog

    cat = default_catalog()
    assert isinstance(cat, PackageCatalog)
    p, note = resolve_peak("cpu", "bfloat16", hardware="h100-sxm", catalog=cat)
    # dense BF16 Tensor Core peak of the H100 SXM: 1979 "with sparsity" / 2 = 989.4 TFLOP/s
    assert p.flops_per_s == pytest.approx(989.4e12) and p.kind == "catalog" and p.tdp_w == 700.0 and note == ""
    assert cat.local("mps") == (None, "catalog")
    with pytest.raises(HardwareError):
        cat.get("no-such-gpu")

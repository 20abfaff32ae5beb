"""Local detection, name matching to catalog entries, calibration and the calibrated entry winning."""

from __future__ import annotations

import json

import pytest

from modelmeter.errors import HardwareError
from modelmeter.hardware import load_catalog, local_device, resolve_devices, save_entry
from modelmeter.hardware.calibrate import calibrate, measure_bandwidth
from modelmeter.hardware.detect import detect_cpu, match_catalog


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    """No user hardware file from the machine running the tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("MODELMETER_HARDWARE_FILE", raising=False)


# names as torch.cuda.get_device_name and /proc/cpuinfo print them
@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"),
    ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA H100 NVL", None),  # a different SKU: not silently the SXM part
    ("NVIDIA H200", "h200"),
    ("NVIDIA H200 NVL", None),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
    ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("NVIDIA A100 80GB PCIe", None),  # 1,935 GB/s, not the SXM entry
    ("NVIDIA B200", "b200"),
    ("NVIDIA L4", "l4"),
    ("NVIDIA L40S", "l40s"),
    ("NVIDIA L40", None),
    ("Tesla T4", "t4"),
    ("Tesla V100-SXM2-16GB", "v100-sxm2"),
    ("Tesla V100-PCIE-32GB", "v100-pcie"),
    ("NVIDIA A10", "a10"),
    ("NVIDIA A10G", None),  # sources conflict: no entry
    ("NVIDIA GeForce RTX 3090", "rtx-3090"),
    ("NVIDIA GeForce RTX 3090 Ti", None),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"),
    ("NVIDIA GeForce RTX 4090 D", None),
    ("AMD Instinct MI300X", "mi300x"),
    ("AMD EPYC 9654 96-Core Processor", "epyc-9654"),
    ("Intel(R) Xeon(R) Platinum 8480+", "xeon-8480p"),
    ("AMD EPYC", None),
])
def test_match_catalog(name, expected):
    spec = match_catalog(name, load_catalog(user=False, env=False))
    assert (spec.name if spec else None) == expected


def test_detect_cpu_reads_this_machine():
    cpu = detect_cpu(load_catalog(user=False, env=False))
    assert cpu.kind == "cpu" and cpu.name and cpu.cores and cpu.cores >= 1
    assert cpu.torch_device == "cpu"


def _fake_calibrated(tmp_path, cpu_name: str, bw: float = 20e9) -> str:
    entry = {
        "name": "my-box", "kind": "cpu", "matrix_flop_per_s": {"fp32": 1e11}, "memory_bandwidth_bytes_per_s": bw,
        "launch_overhead_s": 2e-6, "confidence": {"*": "measured"},
        "measured": {"device_kind": "cpu", "device_name": cpu_name, "date": "2026-01-01T00:00:00+00:00"},
    }
    return str(save_entry(entry, tmp_path / "hw.json"))


def test_calibrated_entry_wins_for_this_machine(tmp_path, monkeypatch):
    cpu = detect_cpu(load_catalog(user=False, env=False))
    path = _fake_calibrated(tmp_path, cpu.name)
    monkeypatch.setenv("MODELMETER_HARDWARE_FILE", path)
    spec = local_device("cpu")
    assert spec is not None and spec.name == "my-box" and spec.calibrated
    assert [s.name for s in resolve_devices("local,h100-sxm")] == ["my-box", "h100-sxm"]


def test_a_calibration_of_another_machine_is_not_used(tmp_path, monkeypatch):
    path = _fake_calibrated(tmp_path, "Some Other CPU 9000")
    monkeypatch.setenv("MODELMETER_HARDWARE_FILE", path)
    cpu = detect_cpu()
    if cpu.catalog_name is None:
        assert local_device("cpu") is None
        with pytest.raises(HardwareError, match="calibrate"):
            resolve_devices("local")


def test_save_entry_keeps_other_devices(tmp_path):
    f = tmp_path / "sub" / "hw.json"
    save_entry({"name": "a", "vector_flop_per_s": {"fp32": 1e12}, "memory_bandwidth_bytes_per_s": 1e11}, f)
    save_entry({"name": "b", "vector_flop_per_s": {"fp32": 2e12}, "memory_bandwidth_bytes_per_s": 1e11}, f)
    save_entry({"name": "a", "vector_flop_per_s": {"fp32": 3e12}, "memory_bandwidth_bytes_per_s": 1e11}, f)
    names = [d["name"] for d in json.loads(f.read_text())["devices"]]
    assert names == ["b", "a"]
    assert load_catalog([f], package=False, user=False, env=False).get("a").peak_flops_per_s("fp32") == 3e12


def test_bandwidth_counts_read_and_write():
    # 4 MiB copied: each copy moves 2 x 4 MiB; the rate must be the bytes of both buffers over the time
    best, samples = measure_bandwidth("cpu", 4 << 20, 0.05)
    assert best == max(samples) > 0


def test_calibrate_builds_a_loadable_entry(tmp_path, monkeypatch):
    cal = calibrate("cpu", dtypes=["fp32"], seconds=0.6, name="unit-test-cpu", copy_bytes=16 << 20)
    e = cal.entry
    assert e["name"] == "unit-test-cpu" and e["confidence"] == {"*": "measured"}
    assert e["matrix_flop_per_s"]["fp32"] > 1e8  # any machine does > 0.1 GFLOP/s
    assert e["memory_bandwidth_bytes_per_s"] > 1e8
    assert e["launch_overhead_s"] > 0
    r = cal.matmul[0]
    assert r.flop_per_s == pytest.approx(2 * r.n**3 / r.seconds_per_call)  # 2 n^3 FLOPs per n x n product
    assert cal.wall_s < 10
    path = save_entry(e, tmp_path / "hw.json")
    monkeypatch.setenv("MODELMETER_HARDWARE_FILE", str(path))
    spec = local_device("cpu")
    assert spec is not None and spec.name == "unit-test-cpu"
    assert spec.ridge_flop_per_byte("fp32") == pytest.approx(e["matrix_flop_per_s"]["fp32"] / e["memory_bandwidth_bytes_per_s"])


def test_calibrate_rejects_bad_arguments():
    from modelmeter.errors import InputError

    with pytest.raises(InputError):
        calibrate("cpu", seconds=0)
    with pytest.raises(InputError):
        calibrate("tpu")
    with pytest.raises(InputError, match="not 'int8'"):
        calibrate("cpu", dtypes=["int8"], seconds=0.2)

"""The hardware catalog: every reference device present, every figure sourced and consistent, SI units,
dense and sparse apart, GeForce accumulate rates, ridge points, and user override files."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from modelmeter.errors import HardwareError
from modelmeter.hardware import DTYPES, get_device, load_catalog
from modelmeter.hardware.spec import CONFIDENCE, DeviceSpec


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(user=False, env=False)


def _raw_entries():
    """The data files read with json alone: an independent path to the numbers."""
    out = {}
    for item in (resources.files("modelmeter.hardware") / "data").iterdir():
        if item.name.endswith(".json"):
            data = json.loads(item.read_text())
            for e in data["devices"]:
                out[e["name"]] = (e, data["sources"])
    return out


# every device of ../shared/reference/hardware-energy.md section 1 (1.1-1.4)
REFERENCE_DEVICES = [
    "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "l4", "l40s", "t4", "v100-sxm2", "v100-pcie",
    "a10", "rtx-3090", "rtx-4090", "mi300x", "tpu-v4", "tpu-v5e", "tpu-v5p", "apple-m2-gpu", "epyc-9654", "xeon-8480p",
]


def test_every_reference_device_is_in_the_catalog(catalog):
    assert sorted(catalog.names()) == sorted(REFERENCE_DEVICES)


def test_every_entry_has_sources_that_resolve(catalog):
    raw = _raw_entries()
    for spec in catalog:
        entry, table = raw[spec.name]
        assert entry["sources"], spec.name
        for tag in entry["sources"]:
            assert tag in table, f"{spec.name}: source tag {tag} not in its file's source table"
        assert all(s.citation for s in spec.sources)


def test_confidence_keys_name_real_figures_and_levels_are_known(catalog):
    for spec in catalog:
        figures = {k for k, _ in spec.figures()}
        heads = {k.split(".")[0] for k in figures}
        for key, level in spec.confidence.items():
            assert level in CONFIDENCE
            assert key == "*" or key in figures or key in heads, f"{spec.name}: confidence key {key} names no figure"


def test_units_are_si(catalog):
    # bandwidth in bytes/s (> 10 GB/s), capacity in bytes (> 1 GB), peaks in FLOP/s (> 100 GFLOP/s): a figure
    # typed in GB/s, GB or TFLOP/s would be off by 1e9 or 1e12 and fail here
    for spec in catalog:
        assert 1e10 < spec.memory_bandwidth_bytes_per_s < 1e14, spec.name
        if spec.memory_bytes is not None:
            assert 1e9 < spec.memory_bytes < 1e12, spec.name
        for key, v in spec.figures():
            if "flop_per_s" in key:
                assert 1e11 < v < 1e17, (spec.name, key, v)
        if spec.tdp_w is not None:
            assert 10 < spec.tdp_w < 2000
        for b in spec.cache_bytes.values():
            assert 1 << 20 <= b <= 1 << 30


def test_sparse_is_twice_dense_where_both_exist(catalog):
    # vendors print the sparse figure; dense = half of it ("Specifications 1/2 lower without sparsity"). Rounding in
    # the printed figures (H100 TF32: 494.7 dense vs 989 sparse; RTX 3090 TF32: 35.6 vs 71) stays within 0.5%.
    # One documented exception: NVIDIA's L40S table prints FP16/BF16 as 362.05 dense and 733 sparse (ratio 2.025);
    # both printed figures are kept and the entry's caveats say so.
    pairs = 0
    for spec in catalog:
        for d, sparse in spec.sparse_matrix_flop_per_s.items():
            dense = spec.matrix_flop_per_s[d]
            if spec.name == "l40s" and d in ("fp16", "bf16"):
                assert (dense, sparse) == (362.05e12, 733e12)
                assert any("362.05" in c for c in spec.caveats)
                continue
            assert sparse / dense == pytest.approx(2.0, rel=5e-3), (spec.name, d)
            pairs += 1
    assert pairs >= 40


def test_dense_figures_against_the_reference_tables(catalog):
    tf = 1e12
    # reference 1.1: dense Tensor Core figures (the sparse one in parentheses is twice)
    assert catalog.get("h100-sxm").matrix_peak("bf16") == 989.4 * tf
    assert catalog.get("h100-sxm").matrix_peak("bf16", sparse=True) == 1979 * tf
    assert catalog.get("h100-pcie").matrix_peak("fp8") == 1513 * tf
    assert catalog.get("a100-80gb").matrix_peak("bf16") == 312 * tf
    # B200: dense BF16 is 2.25e15; 4.5e15 is the sparse figure (a known torchtitan slip)
    assert catalog.get("b200").matrix_peak("bf16") == 2.25e15
    assert catalog.get("b200").matrix_peak("bf16", sparse=True) == 4.5e15
    assert catalog.get("b200").matrix_peak("fp4") == 9e15
    # fp32 matrix products on A100/H100 run on the CUDA cores unless TF32 is chosen
    assert catalog.get("a100-40gb").matrix_peak("fp32") == 19.5 * tf
    assert catalog.get("a100-40gb").matrix_peak("tf32") == 156 * tf
    assert catalog.get("mi300x").matrix_peak("bf16") == 1307.4 * tf
    assert catalog.get("tpu-v5e").matrix_peak("int8") == 393 * tf
    assert catalog.get("xeon-8480p").matrix_peak("bf16") == 114.7 * tf


def test_geforce_16_bit_is_the_fp32_accumulate_rate(catalog):
    # reference 0: on GeForce FP16/BF16 with FP32 accumulate is half the FP16-accumulate rate, and PyTorch GEMMs
    # accumulate in FP32, so fp16/bf16 must hold the halved figure: 3090 71 (not 142), 4090 165.2 (not 330.3)
    for name, expected in (("rtx-3090", 71e12), ("rtx-4090", 165.2e12)):
        spec = catalog.get(name)
        assert spec.matrix_peak("fp16") == spec.matrix_peak("bf16") == expected
        assert spec.matrix_peak("fp16-acc16") == pytest.approx(2 * expected, rel=1e-3)
    assert catalog.get("rtx-4090").matrix_peak("fp8") == pytest.approx(catalog.get("rtx-4090").matrix_peak("fp8-acc16") / 2)


def test_unsupported_dtypes_are_absent_not_zero(catalog):
    assert catalog.get("h100-sxm").peak_flops_per_s("int4") is None  # Hopper lists no INT4
    assert catalog.get("t4").peak_flops_per_s("bf16") is None  # Turing: no BF16
    assert catalog.get("tpu-v4").peak_flops_per_s("fp32") is None  # Google publishes no fp32 rate
    with pytest.raises(HardwareError, match="no bf16 peak"):
        catalog.get("t4").matrix_peak("bf16")
    assert catalog.get("l40s").peak_flops_per_s("int8") is None  # not in the table copy read
    assert "L2" not in catalog.get("b200").cache_bytes  # unknown: left out, not guessed


def test_ridge_of_every_device_is_peak_over_bandwidth(catalog):
    raw = _raw_entries()
    for spec in catalog:
        entry, _ = raw[spec.name]
        for d in spec.dtypes():
            peak = entry.get("matrix_flop_per_s", {}).get(d) or entry["vector_flop_per_s"][d]
            assert spec.ridge_flop_per_byte(d) == pytest.approx(float(peak) / float(entry["memory_bandwidth_bytes_per_s"]))


# reference 1.5 "Derived roofline constants": dense BF16/FP16 Tensor Core peak / bandwidth, rounded. RTX parts at the
# FP32-accumulate rate, M2 at FP32 = FP16, EPYC at FP32 AVX-512, Xeon at AMX BF16.
REFERENCE_RIDGES = {
    "a100-40gb": ("bf16", 201), "a100-80gb": ("bf16", 153), "h100-sxm": ("bf16", 295), "h100-pcie": ("bf16", 378),
    "h200": ("bf16", 206), "b200": ("bf16", 292), "l4": ("bf16", 403), "l40s": ("bf16", 419), "t4": ("fp16", 203),
    "v100-sxm2": ("fp16", 139), "rtx-3090": ("bf16", 76), "rtx-4090": ("bf16", 164), "a10": ("bf16", 208),
    "mi300x": ("bf16", 247), "tpu-v4": ("bf16", 229), "tpu-v5e": ("bf16", 241), "tpu-v5p": ("bf16", 166),
    "apple-m2-gpu": ("fp16", 36), "epyc-9654": ("fp32", 16), "xeon-8480p": ("bf16", 373),
}


def test_ridges_match_the_reference_table(catalog):
    for name, (dtype, ridge) in REFERENCE_RIDGES.items():
        assert round(catalog.get(name).ridge_flop_per_byte(dtype)) == ridge, name


def test_vector_peak_rules():
    spec = get_device("h100-sxm")
    assert spec.vector_peak("fp32") == 67e12
    assert spec.vector_peak("bf16") == 67e12  # no 16-bit vector figure published: the fp32 one (conservative)
    tpu = get_device("tpu-v4")
    assert tpu.vector_peak("bf16") == 275e12  # no vector figure at all: the matrix one


def test_aliases_and_suggestions(catalog):
    assert catalog.get("H100").name == "h100-sxm"
    assert catalog.get("rtx3090").name == "rtx-3090"
    with pytest.raises(HardwareError, match="did you mean h100-sxm"):
        catalog.get("h100-sxn")
    assert [s.name for s in catalog.parse_list("h100-sxm, a100-80gb,h100")] == ["h100-sxm", "a100-80gb"]


def test_round_trip_through_to_dict(catalog):
    for spec in catalog:
        again = DeviceSpec.from_dict(spec.to_dict())
        assert again.to_dict() == spec.to_dict()


# -- user files -------------------------------------------------------------------------------------------

def test_user_entry_merges_onto_a_catalog_device(tmp_path):
    f = tmp_path / "hw.json"
    f.write_text(json.dumps({"devices": [{"name": "h100", "memory_bandwidth_bytes_per_s": 3.0e12,
                                          "matrix_flop_per_s": {"bf16": 700e12}}]}))
    cat = load_catalog([f], user=False, env=False)
    spec = cat.get("h100-sxm")
    assert spec.memory_bandwidth_bytes_per_s == 3.0e12
    assert spec.matrix_peak("bf16") == 700e12
    assert spec.matrix_peak("fp8") == 1978.9e12  # untouched figures stay
    assert spec.origin.startswith("user:")


def test_user_entry_extends_and_replaces(tmp_path):
    f = tmp_path / "hw.json"
    f.write_text(json.dumps([
        {"name": "my-h100-capped", "extends": "h100-sxm", "display_name": "H100 at 500 W", "tdp_w": 500},
        {"name": "t4", "replace": True, "kind": "gpu", "vector_flop_per_s": {"fp32": 8e12},
         "memory_bandwidth_bytes_per_s": 300e9},
    ]))
    cat = load_catalog([f], user=False, env=False)
    capped = cat.get("my-h100-capped")
    assert capped.tdp_w == 500 and capped.matrix_peak("bf16") == 989.4e12
    assert capped.match == () and capped.aliases == ()  # detection patterns are not inherited
    t4 = cat.get("t4")  # replaced wholesale: the catalog's fp16 Tensor Core figure is gone
    assert t4.matrix_flop_per_s == {}
    assert t4.peak_flops_per_s("fp16") is None
    assert t4.peak_flops_per_s("fp32") == 8e12


def test_toml_file_and_env_var(tmp_path, monkeypatch):
    f = tmp_path / "hw.toml"
    f.write_text(
        '[[devices]]\nname = "toy"\nkind = "gpu"\nmemory_bandwidth_bytes_per_s = 1e12\nmemory_bytes = 16e9\n'
        'sources = ["my own measurement"]\n[devices.matrix_flop_per_s]\nbf16 = 100e12\n'
    )
    monkeypatch.setenv("MODELMETER_HARDWARE_FILE", str(f))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    spec = get_device("toy")
    assert spec.ridge_flop_per_byte("bf16") == 100.0
    assert str(spec.sources[0]) == "my own measurement"


@pytest.mark.parametrize("entry, message", [
    ({"name": "x", "memory_bandwidth_bytes_per_s": 1e12}, "at least one peak"),
    ({"name": "x", "matrix_flop_per_s": {"bf16": 1e14}}, "memory_bandwidth_bytes_per_s' is required"),
    ({"name": "x", "matrix_flop_per_s": {"bf16": -1}, "memory_bandwidth_bytes_per_s": 1e12}, "positive"),
    ({"name": "x", "matrix_flop_per_s": {"bf17": 1e14}, "memory_bandwidth_bytes_per_s": 1e12}, "unknown dtype"),
    ({"name": "x", "matrix_flop_per_s": {"bf16": 1e14}, "memory_bandwidth_bytes_per_s": 1e12, "bandwidth": 3},
     "unknown field"),
    ({"name": "x", "matrix_flop_per_s": {"bf16": 1e14}, "memory_bandwidth_bytes_per_s": 1e12,
      "confidence": {"*": "sure"}}, "confidence"),
    ({"name": "x", "extends": "nope", "memory_bandwidth_bytes_per_s": 1e12}, "unknown device 'nope'"),
])
def test_bad_user_entries_raise_hardware_errors(tmp_path, entry, message):
    f = tmp_path / "hw.json"
    f.write_text(json.dumps({"devices": [entry]}))
    with pytest.raises(HardwareError, match=message):
        load_catalog([f], user=False, env=False)


def test_unreadable_files(tmp_path):
    with pytest.raises(HardwareError, match="does not exist"):
        load_catalog([tmp_path / "missing.json"], user=False, env=False)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(HardwareError, match="not valid JSON"):
        load_catalog([bad], user=False, env=False)
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(HardwareError, match="holds no devices"):
        load_catalog([empty], user=False, env=False)


def test_every_dtype_key_is_known(catalog):
    for spec in catalog:
        for table in (spec.matrix_flop_per_s, spec.sparse_matrix_flop_per_s, spec.vector_flop_per_s):
            assert set(table) <= set(DTYPES)

"""Roofline arithmetic, derived by hand on a device with round numbers, and the validation cases of the issue.

The toy device: matrix peak 100 TFLOP/s (fp32), vector peak 10 TFLOP/s, bandwidth 1 TB/s: ridge 100 FLOP/B.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import modelmeter as mm
from modelmeter.analysis.roofline import (
    compare_devices,
    fused_bytes,
    kv_cache_shape,
    lm_estimate,
    op_family,
    profile_lm,
    ridge_crossing,
    roofline,
    sweep_batches,
    weights_bytes,
)
from modelmeter.errors import HardwareError, InputError
from modelmeter.hardware import get_device, load_catalog
from modelmeter.hardware.spec import DeviceSpec

TOY = DeviceSpec.from_dict({
    "name": "toy", "kind": "gpu",
    "matrix_flop_per_s": {"fp32": 100e12, "bf16": 200e12},
    "sparse_matrix_flop_per_s": {"bf16": 400e12},
    "vector_flop_per_s": {"fp32": 10e12},
    "memory_bandwidth_bytes_per_s": 1e12, "memory_bytes": 16e9,
})


def _only(rf, op_prefix):
    ops = [o for o in rf.ops if o.op.startswith(op_prefix)]
    assert len(ops) == 1, [o.op for o in rf.ops]
    return ops[0]


def test_matmul_memory_bound_at_small_batch():
    # Linear(1024 -> 1024, no bias) at batch 64, fp32: one aten.mm (the weight's .t() is a view: no kernel)
    #   MACs  = 64 x 1024 x 1024 = 67,108,864;  FLOPs = 134,217,728
    #   bytes = x 64x1024x4 (262,144) + W 1024x1024x4 (4,194,304) + y 64x1024x4 (262,144) = 4,718,592
    #   compute = 134,217,728 / 100e12 = 1.34217728 us;  memory = 4,718,592 / 1e12 = 4.718592 us -> memory-bound
    r = mm.profile(nn.Linear(1024, 1024, bias=False), torch.randn(64, 1024))
    rf = roofline(r, TOY)
    o = _only(rf, "aten.mm")
    assert (o.macs, o.flops, o.bytes_moved) == (67_108_864, 134_217_728, 4_718_592)
    assert o.compute_s == pytest.approx(1.34217728e-6)
    assert o.memory_s == pytest.approx(4.718592e-6)
    assert o.time_s == pytest.approx(4.718592e-6) and o.bound == "memory"
    assert o.intensity_flop_per_byte == pytest.approx(134_217_728 / 4_718_592)
    assert rf.kernels == 1 and rf.predicted_s == pytest.approx(4.718592e-6)
    assert o.family == "matmul"


def test_matmul_compute_bound_at_large_batch():
    # batch 4096: FLOPs = 2 x 4096 x 1024 x 1024 = 8,589,934,592 -> 85.89934592 us
    #   bytes = 2 x 4096x1024x4 + 1024x1024x4 = 33,554,432 + 4,194,304 = 37,748,736 -> 37.748736 us: compute-bound
    r = mm.profile(nn.Linear(1024, 1024, bias=False), torch.randn(4096, 1024))
    o = _only(roofline(r, TOY), "aten.mm")
    assert o.compute_s == pytest.approx(85.89934592e-6)
    assert o.memory_s == pytest.approx(37.748736e-6)
    assert o.bound == "compute" and o.time_s == pytest.approx(85.89934592e-6)


def test_conv_on_paper():
    # Conv2d(64 -> 128, 3x3, pad 1, no bias) on 1x64x56x56 fp32 -> 1x128x56x56
    #   MACs = 128 x 56 x 56 x 64 x 3 x 3 = 231,211,008;  FLOPs = 462,422,016
    #   bytes = in 64x56x56x4 (802,816) + W 128x64x3x3x4 (294,912) + out 128x56x56x4 (1,605,632) = 2,703,360
    #   compute = 462,422,016 / 100e12 = 4.62422016 us; memory = 2.70336 us -> compute-bound, 171.06 FLOP/B
    r = mm.profile(nn.Conv2d(64, 128, 3, padding=1, bias=False), torch.randn(1, 64, 56, 56))
    o = _only(roofline(r, TOY), "aten.convolution")
    assert (o.macs, o.bytes_moved) == (231_211_008, 2_703_360)
    assert o.compute_s == pytest.approx(4.62422016e-6)
    assert o.memory_s == pytest.approx(2.70336e-6)
    assert o.bound == "compute" and o.family == "conv"
    assert o.intensity_flop_per_byte == pytest.approx(462_422_016 / 2_703_360)


def test_elementwise_is_bandwidth_bound_and_uses_the_vector_peak():
    # relu on 2^20 fp32 elements: 1 FLOP each (1,048,576) on the 10 TFLOP/s vector units = 0.1048576 us;
    # bytes = read 4 MiB + write 4 MiB = 8,388,608 -> 8.388608 us: memory-bound at 0.125 FLOP/B
    r = mm.profile(nn.ReLU(), torch.randn(1024, 1024))
    o = _only(roofline(r, TOY), "aten.relu")
    assert o.peak_flop_per_s == 10e12
    assert o.compute_s == pytest.approx(1_048_576 / 10e12)
    assert o.memory_s == pytest.approx(8.388608e-6)
    assert o.bound == "memory" and o.family == "elementwise"


def test_fused_bound_of_a_chain_of_elementwise_ops():
    # x -> relu -> sigmoid -> tanh on 2^20 fp32 values: unfused 3 x 8 MiB moved; fused: input + output once,
    # 4 MiB + 4 MiB = 8,388,608 B -> 8.388608 us
    model = nn.Sequential(nn.ReLU(), nn.Sigmoid(), nn.Tanh())
    r = mm.profile(model, torch.randn(1024, 1024))
    rf = roofline(r, TOY)
    assert rf.kernels == 3
    assert rf.memory_s == pytest.approx(3 * 8.388608e-6)
    assert rf.fused_bytes == fused_bytes(r) == 8_388_608
    assert rf.fused_lower_bound_s == pytest.approx(8.388608e-6)
    assert rf.fused_lower_bound_s <= rf.predicted_s


def test_efficiency_overhead_and_sparsity():
    r = mm.profile(nn.Linear(1024, 1024, bias=False), torch.randn(4096, 1024), dtype="bf16")
    base = _only(roofline(r, TOY), "aten.mm")
    # bf16: FLOPs 8,589,934,592 / 200e12 = 42.9497 us; bytes 2 x 4096x1024x2 + 1024x1024x2 = 18,874,368 -> 18.87 us
    assert base.compute_s == pytest.approx(8_589_934_592 / 200e12)
    assert base.memory_s == pytest.approx(18_874_368 / 1e12)
    half = roofline(r, TOY, compute_efficiency=0.5, memory_efficiency=0.25)
    o = _only(half, "aten.mm")
    assert o.compute_s == pytest.approx(2 * base.compute_s)
    assert o.memory_s == pytest.approx(4 * base.memory_s)
    sp = _only(roofline(r, TOY, sparse=True), "aten.mm")
    assert sp.compute_s == pytest.approx(base.compute_s / 2)  # the 400 TFLOP/s sparse figure
    ov = roofline(r, TOY, launch_overhead_s=5e-6)
    assert ov.overhead_s == pytest.approx(5e-6 * ov.kernels)
    assert ov.predicted_s == pytest.approx(roofline(r, TOY).predicted_s + 5e-6 * ov.kernels)


def test_launch_overhead_from_the_device_and_bad_settings():
    dev = DeviceSpec.from_dict({**TOY.to_dict(), "launch_overhead_s": 3e-6})
    r = mm.profile(nn.Sequential(nn.ReLU(), nn.Flatten()), torch.randn(4, 8))  # flatten is a view: no kernel
    rf = roofline(r, dev, launch_overhead_s="device")
    assert rf.kernels == 1 and rf.overhead_s == pytest.approx(3e-6)
    for bad in ({"compute_efficiency": 0}, {"memory_efficiency": 1.5}, {"launch_overhead_s": -1},
                {"launch_overhead_s": "later"}):
        with pytest.raises(InputError):
            roofline(r, TOY, **bad)


def test_missing_dtype_and_mismatched_bytes():
    r = mm.profile(nn.Linear(8, 8), torch.randn(2, 8))
    with pytest.raises(HardwareError, match="no bf16 peak"):
        roofline(r, get_device("t4"), dtype="bf16")
    rf = roofline(r, TOY, dtype="bf16")  # counted at fp32, peak of bf16: said in a note
    assert any("counted at float32" in n for n in rf.notes)
    tf32 = roofline(r, get_device("a100-80gb"), dtype="tf32")  # fp32 storage, TF32 Tensor Core peak: no mismatch
    assert tf32.device.matrix_flop_per_s == 156e12
    assert not any("counted at" in n for n in tf32.notes)


def test_rollups_sum_to_the_model():
    import torchvision

    r = mm.profile(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
    rf = roofline(r, get_device("a100-80gb"), launch_overhead_s=2e-6)
    root = rf.module("")
    assert root.time_s == pytest.approx(rf.predicted_s)
    assert root.kernels == rf.kernels
    assert sum(m.own_time_s for m in rf.modules) == pytest.approx(rf.predicted_s)
    assert sum(k.time_s for k in rf.op_kinds) == pytest.approx(rf.predicted_s)
    kids = [m for m in rf.modules if m.parent == ""]
    assert sum(m.time_s for m in kids) + root.own_time_s == pytest.approx(rf.predicted_s)
    assert rf.compute_bound_s + rf.memory_bound_s + rf.overhead_s == pytest.approx(rf.predicted_s)
    assert rf.flops == r.totals.flops and rf.bytes_moved == r.totals.bytes_moved


def test_op_family_comes_from_the_rule_file():
    assert op_family("aten.mm.default") == "matmul"
    assert op_family("aten.convolution.default") == "conv"
    assert op_family("aten.native_layer_norm.default") == "norm"
    assert op_family("aten.add.Tensor") == "elementwise"
    assert op_family("aten.cat.default") == "data"
    assert op_family("aten.no_such_op.default") == "other"


def test_ridge_crossing_interpolates_in_log_batch():
    # fraction 0.2 at batch 4 and 0.8 at batch 16: 0.5 is half way in log2 -> 2^3 = 8
    assert ridge_crossing([(4, 0.2), (16, 0.8)]) == (pytest.approx(8.0), 16)
    assert ridge_crossing([(1, 0.6), (2, 0.9)]) == (None, 1)
    assert ridge_crossing([(1, 0.1), (2, 0.2)]) == (None, None)


def test_batch_sweep_finds_the_ridge_batch_of_a_linear_layer():
    # one Linear(1024 -> 1024, no bias) fp32 on TOY turns compute-bound when
    #   2 b 1024^2 / 100e12 > 4 (2 x 1024 b + 1024^2) / 1e12  <=>  b > 4,194,304 / 12,779.52 = 328.2
    lin = nn.Linear(1024, 1024, bias=False)
    sweep, per = sweep_batches(lambda b: mm.profile(lin, torch.randn(b, 1024)), [64, 256, 512, 1024], [TOY])
    assert sweep.first_compute_bound_batch["toy"] == 512
    rb = sweep.ridge_batch["toy"]
    assert 256 < rb < 512 and 256 < 328.2 < 512
    tp = {p.batch: p.throughput_per_s for p in sweep.points}
    assert tp[1024] > tp[64]  # throughput grows while memory-bound
    assert per[64].devices[0].batch == 64


def test_compare_devices_and_fits():
    r = mm.profile(nn.Linear(1024, 1024), torch.randn(8, 1024))
    rr = compare_devices(r, ["h100-sxm", "rtx-4090", TOY], required_bytes=30 * 10**9)
    assert [d.device.name for d in rr.devices] == ["h100-sxm", "rtx-4090", "toy"]
    assert [d.fits for d in rr.devices] == [True, False, False]  # 80 GB / 24 GB / 16 GB
    faster = {d.device.name: d.predicted_s for d in rr.devices}
    assert faster["h100-sxm"] < faster["rtx-4090"]
    cpu = compare_devices(r, ["epyc-9654"])
    assert cpu.devices[0].fits is None  # capacity depends on the DIMMs


# -- the validation cases of the issue -------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet50_b1():
    import torchvision

    return mm.profile(torchvision.models.resnet50(), torch.randn(1, 3, 224, 224), name="resnet50")


def test_resnet50_on_rtx3090_fp32(resnet50_b1):
    r = resnet50_b1
    # ResNet-50 at 224x224 has 4.09 GMACs (torchvision lists "4.09 GFLOPS", which are MACs)
    assert r.totals.macs == pytest.approx(4.09e9, rel=2e-3)
    rf = roofline(r, get_device("rtx-3090"))
    peak = 35.6e12  # RTX 3090 fp32 (CUDA cores; no Tensor Core path for fp32 in PyTorch by default)
    mac_ops = [o for o in rf.ops if o.macs]
    # pure compute lower bound from the counted MACs: 2 x 4.089e9 / 35.6e12 = 0.2297 ms, ~0.23 ms
    matmul_s = sum(2 * o.macs for o in mac_ops) / peak
    assert matmul_s == pytest.approx(2 * r.totals.macs / peak)
    assert matmul_s == pytest.approx(0.23e-3, rel=0.01)
    # dividing MACs (not FLOPs) by the peak gives the 0.115 ms some write-ups quote: off by 2x
    assert r.totals.macs / peak == pytest.approx(0.115e-3, rel=0.01)
    # the roofline's compute time adds the non-matmul FLOPs (bias, batch norm, relu, pool) at 35.6 TFLOP/s too
    assert rf.compute_s == pytest.approx(r.totals.flops / peak)
    assert rf.compute_s >= matmul_s and rf.fused_lower_bound_s >= matmul_s
    assert rf.predicted_s > rf.compute_s  # unfused, batch 1: memory-bound ops add time


@pytest.fixture(scope="module")
def llama3_8b():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    prefill, step = profile_lm(model, batch=1, context=2048, dtype="bf16")
    return model, prefill, step


def test_llama3_8b_decode_on_h100_is_bound_by_reading_the_weights(llama3_8b):
    model, prefill, step = llama3_8b
    # parameters by hand: per layer q,o 2x4096x4096 + k,v 2x4096x1024 + MLP 3x4096x14336 + 2 norms x 4096
    #   = 33,554,432 + 8,388,608 + 176,160,768 + 8,192 = 218,112,000; x 32 = 6,979,584,000
    #   + embed 128,256x4096 (525,336,576) + lm_head (same) + final norm 4,096 = 8,030,261,248
    params = 32 * 218_112_000 + 2 * 128_256 * 4096 + 4096
    assert params == 8_030_261_248 == step.totals.params
    assert weights_bytes(step) == 2 * params == 16_060_522_496  # bf16: ~16.06 GB
    bw = 3.35e12
    assert weights_bytes(step) / bw == pytest.approx(4.794e-3, rel=1e-3)  # the ~4.8 ms of the issue
    kv = kv_cache_shape(model.config)
    assert kv.bytes_per_token(2) == 32 * 2 * 8 * 128 * 2 == 131_072  # layers x 2 x kv_heads x head_dim x itemsize
    est, pre, dec = lm_estimate(prefill, step, kv, get_device("h100-sxm"), batch=1, context=2048)
    assert est.kv_cache_bytes == 131_072 * 2048 == 268_435_456
    assert est.decode_bound == "memory" and est.decode_compute_s < 0.01 * est.decode_s
    # a decode step reads every weight matrix once; the embedding table is only indexed (one row), so the step
    # reads between (weights - embedding table) and all weights, plus the KV cache, plus tiny activations
    low = (2 * (params - 128_256 * 4096) + 268_435_456) / bw  # 4.561 ms
    high = (2 * params + 268_435_456) / bw  # 4.874 ms
    assert low <= est.decode_s <= high * 1.005
    assert est.decode_tokens_per_s == pytest.approx(1 / est.decode_s)
    assert est.fits is True and est.required_bytes == 2 * params + 131_072 * 2049
    # prefill of 2048 tokens is compute-bound: at least 2 x 2048 x (params - embedding) / 989.4e12 = 31.1 ms
    assert est.prefill_bound == "compute"
    assert est.prefill_s >= 2 * 2048 * (params - 128_256 * 4096) / 989.4e12
    # memory-bound: half the bandwidth doubles the time per token
    slow, _, _ = lm_estimate(prefill, step, kv, get_device("h100-sxm"), batch=1, context=2048, memory_efficiency=0.5)
    assert slow.decode_s == pytest.approx(2 * est.decode_s, rel=1e-6)


def test_every_catalog_device_predicts_resnet50(resnet50_b1):
    for spec in load_catalog(user=False, env=False):
        dtype = "fp32" if spec.peak_flops_per_s("fp32") else "bf16"
        rf = roofline(resnet50_b1, spec, dtype=dtype)
        assert rf.predicted_s >= rf.fused_lower_bound_s > 0
        assert rf.device.ridge_flop_per_byte == pytest.approx(spec.ridge_flop_per_byte(dtype))
        assert math.isfinite(rf.predicted_s)

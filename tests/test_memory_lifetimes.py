"""Storage lifetimes: the tracker sees allocations and deaths exactly, on meta and on real tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelmeter.analysis.memory import analyze_memory, capture_with_lifetimes
from modelmeter.capture.lifetimes import LifetimeTracker
from modelmeter.capture.run import run_capture


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def records_by_op(records):
    return [(r.op, r.nbytes, r.start, r.end) for r in records if r.start >= 0]


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_mlp_inference_lifetimes_exact(device: str) -> None:
    # ops: 0 t(W1) view, 1 addmm -> h1 (2x16 fp32 = 128 B), 2 relu -> r (128 B), 3 t(W2) view,
    # 4 addmm -> y (2x4 = 32 B). h1 dies when Sequential rebinds its variable after relu: last alive
    # after op 2. r and y live to the end of the run (r until Sequential returns, y is the output).
    tracker = LifetimeTracker()
    trace = run_capture(mlp(), torch.randn(2, 8), device=device, observers=[tracker])
    records = tracker.finish()
    assert [e.op for e in trace.events] == [
        "aten.t.default", "aten.addmm.default", "aten.relu.default", "aten.t.default", "aten.addmm.default"]
    created = records_by_op(records)
    assert created == [
        ("aten.addmm.default", 128, 1, 2),
        ("aten.relu.default", 128, 2, 4),
        ("aten.addmm.default", 32, 4, 4),
    ]
    h1 = records[[r.op for r in records].index("aten.addmm.default")]
    assert trace.events[2].released == [h1.key]  # OpEvent.released is filled
    # parameters and the input were first seen as inputs: dated before the run
    pre = sorted(r.nbytes for r in records if r.start == -1)
    assert pre == sorted([16 * 8 * 4, 16 * 4, 2 * 8 * 4, 4 * 16 * 4, 4 * 4])


@pytest.mark.parametrize("train,optimizer", [(False, None), (True, None), (True, "adam"), (True, "sgd-momentum")])
def test_callback_and_poll_trackers_agree(train: bool, optimizer: str | None) -> None:
    # two independent death detectors: weakref callbacks on the storage's Python object, and
    # StorageWeakRef expiry polled at every op; they must date every death identically
    results = []
    for mode in ("callback", "poll"):
        tracker = LifetimeTracker(mode)
        run_capture(mlp(), torch.randn(2, 8), train=train, optimizer=optimizer, observers=[tracker])
        results.append([(r.op, r.nbytes, r.start, r.end, r.shape) for r in tracker.finish()])
    assert results[0] == results[1]


def test_meta_and_cpu_timelines_identical_for_training() -> None:
    # allocation and release points do not depend on whether tensors hold data
    out = []
    for device in ("meta", "cpu"):
        m = mlp()
        trace, records = capture_with_lifetimes(m, torch.randn(2, 8), train=True, optimizer="adamw", device=device)
        out.append(analyze_memory(m, trace, records).timeline.total_bytes)
    assert out[0] == out[1]


def test_views_keep_their_storage_alive() -> None:
    class ViewKeeper(nn.Module):
        def forward(self, x):
            y = x * 2  # 4x4 fp32 = 64 B
            v = y[:1]  # a view: y's storage must stay alive while v is
            del y
            z = v + 1  # 1x4 = 16 B
            return z

    tracker = LifetimeTracker()
    trace = run_capture(ViewKeeper(), torch.randn(4, 4), observers=[tracker])
    tracker.finish()
    ops = [e.op for e in trace.events]
    mul = next(r for r in tracker.records if r.op == "aten.mul.Tensor")
    # y's storage is still alive at the add (index of add), released only when v dies after it
    assert mul.end is not None and mul.end >= ops.index("aten.add.Tensor")


def test_storage_address_reuse_opens_a_new_record() -> None:
    # a loop that frees and allocates same-sized tensors: addresses get reused; every allocation
    # must still be its own record with its own lifetime
    class Loop(nn.Module):
        def forward(self, x):
            for _ in range(5):
                x = x + 1
            return x

    tracker = LifetimeTracker()
    run_capture(Loop(), torch.randn(32), observers=[tracker])
    adds = [r for r in tracker.finish() if r.op == "aten.add.Tensor"]
    assert [r.start for r in adds] == [0, 1, 2, 3, 4]
    # each intermediate dies right after the next add read it
    assert [r.end for r in adds[:4]] == [1, 2, 3, 4]


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="callback"):
        LifetimeTracker("sometimes")

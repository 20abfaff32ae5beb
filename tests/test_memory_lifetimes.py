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


class AddLoop(nn.Module):
    """Five adds in a row, each result replacing the last: freed and allocated storages of one size,
    so the allocator reuses addresses."""

    def forward(self, x):
        for _ in range(5):
            x = x + 1
        return x


def test_storage_address_reuse_opens_a_new_record() -> None:
    # a loop that frees and allocates same-sized tensors: addresses get reused; every allocation
    # must still be its own record with its own lifetime
    tracker = LifetimeTracker()
    run_capture(AddLoop(), torch.randn(32), observers=[tracker])
    adds = [r for r in tracker.finish() if r.op == "aten.add.Tensor"]
    assert [r.start for r in adds] == [0, 1, 2, 3, 4]
    # each intermediate dies right after the next add read it
    assert [r.end for r in adds[:4]] == [1, 2, 3, 4]


def _created_by_tracker(records) -> dict[int, set]:
    made: dict[int, set] = {}
    for r in records:
        if r.start >= 0 and r.seen_as == "output":
            made.setdefault(r.start, set()).add((r.key, r.nbytes))
    return made


def test_created_lists_every_allocation_despite_address_reuse() -> None:
    # OpEvent.created comes from the op's schema (a return that aliases no argument and is not an
    # input's storage was allocated by the op), not from "a storage key not seen before": the five
    # 32-element adds allocate 128 B each (32 x 4 B), though the allocator hands later ones the
    # address of a dead earlier one
    tracker = LifetimeTracker()
    trace = run_capture(AddLoop(), torch.randn(32), device="cpu", observers=[tracker])
    made = _created_by_tracker(tracker.finish())
    assert [[n for _, n in ev.created] for ev in trace.events] == [[128]] * 5
    assert {ev.index: set(ev.created) for ev in trace.events} == made  # the same keys as the tracker


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_created_excludes_views_in_place_and_out_writes_and_includes_lifted_constants(device: str) -> None:
    class Mixed(nn.Module):
        def forward(self, x):
            y = x.view(2, 8)  # a view: nothing allocated
            y.mul_(2)  # in place: nothing allocated
            z = torch.empty(2, 8, device=x.device)  # 2x8 fp32 = 64 B
            torch.add(y, 1, out=z)  # out=: writes z, allocates nothing
            c = torch.tensor([3.0], device=x.device)  # built outside the dispatcher, lifted: 4 B
            return z * c  # 64 B

    trace = run_capture(Mixed(), torch.randn(16), device=device)
    got = [(ev.op, [n for _, n in ev.created]) for ev in trace.events]
    ops = [op for op, _ in got]
    assert dict(got)["aten.view.default"] == []
    assert dict(got)["aten.mul_.Tensor"] == []
    assert dict(got)["aten.empty.memory_format"] == [64]
    assert dict(got)["aten.add.out"] == []
    assert dict(got)["aten.mul.Tensor"] == [64]
    # torch.tensor on CPU builds its data outside the dispatcher and hands it over through
    # lift_fresh, which returns its argument: 1 fp32 = 4 B allocated there. On meta no op sees it
    # until the multiply reads it (the tracker, too, dates it as first seen as an input)
    if device == "cpu":
        assert dict(got)["aten.lift_fresh.default"] == [4]
    assert sorted(ops) == sorted(["aten.view.default", "aten.mul_.Tensor", "aten.empty.memory_format",
                                  "aten.add.out", "aten.mul.Tensor"] + (["aten.lift_fresh.default"] if device == "cpu" else []))


def _gpt2_tiny() -> nn.Module:
    import transformers

    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64,
                                  bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(cfg).eval()


def _mobilenet() -> nn.Module:
    import torchvision

    return torchvision.models.mobilenet_v2(weights=None).eval()


@pytest.mark.parametrize("device", ["meta", "cpu"])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("build,inputs", [
    (_mobilenet, lambda: torch.randn(2, 3, 64, 64)),
    (_gpt2_tiny, lambda: torch.randint(0, 1000, (1, 16))),
])
def test_created_agrees_with_the_lifetime_tracker(build, inputs, device: str, train: bool) -> None:
    # two independent accounts of which op allocated which storage: the schema rule of OpEvent.created
    # and the tracker's weak references (a storage first seen as an op's output is allocated there).
    # modelmeter.sdpa_backward is the exception: its outputs are the forward's query/key/value
    # metadata standing in for the gradients, which its untraced inner kernels make; the tracker
    # dates those storages from it when later ops read them, the event itself lists nothing
    torch.manual_seed(0)
    model = build()
    trace, records = capture_with_lifetimes(model, inputs(), device=device, train=train,
                                            optimizer="adamw" if train else None, attention="fused")
    made = _created_by_tracker(records)
    sdpa_bwd = {ev.index for ev in trace.events if ev.op == "modelmeter.sdpa_backward"}
    created = {ev.index: set(ev.created) for ev in trace.events if ev.created}
    assert created == {i: s for i, s in made.items() if i not in sdpa_bwd}
    assert not any(trace.events[i].created for i in sdpa_bwd)
    # not a vacuous comparison: every convolution and linear layer (GPT-2's Conv1D too) allocates at least
    # its output
    layers = sum(1 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) or type(m).__name__ == "Conv1D")
    assert layers > 0 and sum(len(s) for s in created.values()) >= layers


def test_invalid_mode() -> None:
    with pytest.raises(ValueError, match="callback"):
        LifetimeTracker("sometimes")


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_storages_made_inside_a_recurrent_layer_are_named_after_it(device: str) -> None:
    # the layer is one op (modelmeter.rnn); the storages its kernels keep are tracked and named after
    # it, in backward too, although its weights' gradients are accumulated (recorded ops) meanwhile
    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(8, 16, num_layers=2)
            self.head = nn.Linear(16, 4)

        def forward(self, x):
            return self.head(self.lstm(x)[0])

    torch.manual_seed(0)
    _, records = capture_with_lifetimes(Tagger(), torch.randn(5, 2, 8), device=device, train=True)
    inner = [r for r in records if r.seen_as == "inner"]
    assert inner and all(r.module == "lstm" for r in inner)
    assert {r.op.rsplit("(inside ", 1)[1] for r in inner} == {"modelmeter.rnn)", "modelmeter.rnn_backward)"}

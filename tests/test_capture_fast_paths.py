"""The capture's fast paths record exactly what the general ones would.

* Each op's arguments are read through a plan made once from its schema (only the arguments typed
  as tensors are looked at); the events must equal those of the general, look-at-everything path.
* A real-tensor inference run catches ``F.scaled_dot_product_attention`` by wrapping the function
  instead of watching every torch call; counts must equal the meta run's, the function must be put
  back whatever happens, and calls bound before the capture or made from other threads must be
  handled.
* ``profile`` pauses the cyclic garbage collector and restores it.
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.functional import scaled_dot_product_attention as bound_early

import modelmeter as mm
from modelmeter.capture.run import run_capture
from modelmeter.capture.tracer import _State, capturing

# q, k, v of shape (2, 4, 6, 8), not causal (derived in test_costs_attention.py): 8 heads x 36 pairs
# = 288 scores; MACs 288 x (8 + 8) = 4608; FLOPs 2 x 4608 + 288 x (1 scale + 5 softmax) = 10944.
DENSE = (4608, 10944)


class Mixed(nn.Module):
    """Ops whose tensors sit in every kind of argument: plain, optional, lists, lists of optionals,
    keyword-only, ``out=``, and an op returning a tuple."""

    def __init__(self, use_out: bool = True) -> None:
        super().__init__()
        self.use_out = use_out  # out= is not differentiable: off for the training step
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.emb = nn.Embedding(10, 4)

    def forward(self, x, ids):
        y = self.bn(self.conv(x))
        y = torch.cat([y, y], dim=1)
        idx = torch.tensor([0, 2])
        z = y[:, idx]  # aten.index.Tensor: a list of optional tensors
        z = z.relu_()  # in place: returns its first argument
        w = torch.where(z > 0, z, torch.zeros_like(z))
        if self.use_out:
            out = torch.empty_like(w)
            torch.add(w, w, alpha=2, out=out)  # keyword-only alpha, out=
        else:
            out = torch.add(w, w, alpha=2)
        vals, _ = torch.max(out.flatten(1), dim=1)  # a tuple of outputs
        e = self.emb(ids)
        return vals.sum() + e.sum() + F.scaled_dot_product_attention(e[None], e[None], e[None]).sum()


class _BothWays(_State):
    """Records each op through its plan and checks it against the general conversion."""

    def __init__(self) -> None:
        super().__init__({}, {})
        self.checked = 0

    def record_op(self, plan, module, phase, args, kwargs, out):  # noqa: ANN001, ANN201
        ev = super().record_op(plan, module, phase, args, kwargs, out)
        general = _State({}, {})
        ref = general.record(plan.name, plan.func, module, phase, args, kwargs or {}, out)
        assert (ev.op, ev.args, ev.kwargs, ev.inputs, ev.outputs, ev.is_view) == (
            ref.op, ref.args, ref.kwargs, ref.inputs, ref.outputs, ref.is_view), ev.op
        self.checked += 1
        return ev


def test_schema_plan_records_what_the_general_conversion_records():
    m = Mixed().eval()
    st = _BothWays()
    with torch.no_grad(), capturing(m, st, function_mode=False):
        m(torch.randn(1, 3, 8, 8), torch.tensor([[1, 2, 3]]))
    ops = {e.op for e in st.events}
    # the kinds of arguments this test is about were all seen
    assert {"aten.convolution.default", "aten.cat.default", "aten.index.Tensor", "aten.add.out",
            "aten.where.self", "aten.max.dim", "aten.embedding.default", "aten.relu_.default"} <= ops
    assert st.checked == len(st.events)  # every event went through the plan path, attention included


def test_plan_records_the_same_events_in_a_training_step():
    m = Mixed(use_out=False)
    st = _BothWays()
    with capturing(m, st, function_mode=True):
        st.tag_nodes = True
        m(torch.randn(1, 3, 8, 8), torch.tensor([[1, 2, 3]])).backward()
    assert {e.phase for e in st.events} == {"forward", "backward"}
    # every event went through the plan path but the attention gradient, emitted whole from its forward
    assert st.checked == len([e for e in st.events if e.op != "modelmeter.sdpa_backward"])


class Attn(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


class AttnBoundEarly(nn.Module):
    """Calls a reference to the function taken when this test file was imported."""

    def forward(self, q, k, v):
        return bound_early(q, k, v)


def _qkv():
    return tuple(torch.randn(2, 4, 6, 8) for _ in range(3))


def test_real_inference_catches_attention_without_the_function_mode():
    original = F.scaled_dot_product_attention
    tr = run_capture(Attn(), _qkv(), device="cpu")
    assert [e.op for e in tr.events] == ["modelmeter.sdpa"]
    assert F.scaled_dot_product_attention is original
    for device in ("cpu", "meta"):
        r = mm.profile(Attn(), _qkv(), device=device)
        assert (r.totals.macs, r.totals.flops) == DENSE


def test_attention_bound_before_the_capture_counts_the_same():
    # on CPU the early reference reaches the fused CPU kernel, which has the same formula; on meta
    # the function mode catches it whatever name it is called by
    cpu = mm.profile(AttnBoundEarly(), _qkv(), device="cpu")
    assert [o.op for o in cpu.ops] == ["aten._scaled_dot_product_flash_attention_for_cpu.default"]
    meta = mm.profile(AttnBoundEarly(), _qkv(), device="meta")
    assert [o.op for o in meta.ops] == ["modelmeter.sdpa"]
    assert (cpu.totals.macs, cpu.totals.flops) == (meta.totals.macs, meta.totals.flops) == DENSE


class AttnWithThread(nn.Module):
    """Attention here, and a second call from another thread during the forward."""

    def forward(self, q, k, v):
        t = threading.Thread(target=F.scaled_dot_product_attention, args=(q, k, v))
        t.start()
        t.join()
        return F.scaled_dot_product_attention(q, k, v)


def test_attention_from_another_thread_is_not_recorded():
    tr = run_capture(AttnWithThread(), _qkv(), device="cpu")
    assert [e.op for e in tr.events] == ["modelmeter.sdpa"]


class Broken(nn.Module):
    def forward(self, q, k, v):
        F.scaled_dot_product_attention(q, k, v)
        raise RuntimeError("boom")


@pytest.mark.parametrize("fastpath", [True, False])
def test_function_and_fast_path_flag_restored_after_a_failure(fastpath):
    original = F.scaled_dot_product_attention
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        with pytest.raises(mm.ModelmeterError, match="boom"):
            mm.profile(Broken(), _qkv(), device="cpu")
        assert F.scaled_dot_product_attention is original
        assert torch.backends.mha.get_fastpath_enabled() is fastpath
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


def test_transformer_encoder_layer_counted_alike_on_meta_and_cpu():
    # in eval under no_grad a real run would take the fused fast path (one opaque
    # aten._transformer_encoder_layer_fwd); the capture turns the fast path off so that the CPU run
    # sees the ops the meta run sees
    layer = nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, batch_first=True).eval()
    x = torch.randn(2, 5, 16)
    cpu = mm.profile(layer, x, device="cpu")
    meta = mm.profile(layer, x, device="meta")
    assert not any("_transformer_encoder_layer_fwd" in o.op for o in cpu.ops)
    assert not cpu.uncounted_ops
    # in-projection 3 x 10 rows x 16 x 16 = 7680; attention 2 x 4 heads x 25 pairs x (4 + 4) = 1600;
    # out-projection 10 x 16 x 16 = 2560; feed-forward 10 x 16 x 32 x 2 = 10240. Total 22080.
    assert cpu.totals.macs == meta.totals.macs == 22080
    assert cpu.totals.flops == meta.totals.flops


@pytest.mark.parametrize("enabled", [True, False])
def test_profile_restores_the_garbage_collector(enabled):
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        seen = []

        class Probe(nn.Module):
            def forward(self, x):
                seen.append(gc.isenabled())
                return x * 2

        mm.profile(Probe(), torch.randn(3), device="cpu")
        assert seen == [False]  # paused while counting
        assert gc.isenabled() is enabled
        with pytest.raises(mm.ModelmeterError, match="boom"):  # and restored when the model fails
            mm.profile(Broken(), _qkv(), device="cpu")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_module_walk_matches_named_modules():
    # a Linear registered under two parents, a Sequential under two parents (so the Linear is met a
    # third time), a None child: the walk must list what named_modules lists, in its order
    shared = nn.Linear(2, 2)
    inner = nn.Sequential(nn.ReLU(), shared)
    m = nn.Module()
    m.a = nn.Sequential(inner, nn.Tanh())
    m.b = shared
    m.c = None
    m.d = nn.ModuleList([inner, nn.Identity()])
    from modelmeter.capture.tracer import walk_modules

    walked = walk_modules(m)
    assert [(p, id(x)) for p, _, x in walked] == [(p, id(x)) for p, x in m.named_modules()]
    assert [parent for _, parent, _ in walked][:3] == [None, "", "a"]
    import torchvision

    r = torchvision.models.resnet18()
    assert [(p, id(x)) for p, _, x in walk_modules(r)] == [(p, id(x)) for p, x in r.named_modules()]


def _brute_force_params(model: nn.Module) -> dict[str, tuple[int, int]]:
    # nn.Module.parameters() yields each tensor of a subtree once: the definition of the figures
    return {path: (sum(p.numel() for p in m.parameters()), sum(p.numel() for p in m.parameters(recurse=False)))
            for path, m in model.named_modules()}


class _Tied(nn.Module):
    def __init__(self, shared_module: bool) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Sequential(self.a if shared_module else nn.Linear(3, 3), nn.Linear(3, 3))
        self.c = nn.Linear(3, 3)
        self.c.weight = self.b[1].weight  # a tensor held by two modules
        self.d = nn.Linear(2, 2)
        self.d.w2 = self.d.weight  # a tensor held twice by one module


def test_parameter_table_against_brute_force_with_and_without_ties():
    import torchvision
    from transformers import T5Config, T5Model

    from modelmeter.analysis.params import param_table

    with torch.device("meta"):
        t5 = T5Model(T5Config(num_layers=2, d_model=64, d_ff=128, num_heads=4, d_kv=16))  # shared embedding
    for model in (_Tied(shared_module=False), t5, torchvision.models.resnet18()):
        table = param_table(model)
        assert table.per_module == _brute_force_params(model)
        assert table.params == sum(p.numel() for p in model.parameters())
        assert table.buffers == sum(b.numel() for b in model.buffers())


def test_module_registered_twice_belongs_to_its_first_path():
    # `a` is also b[0]: like its ops (attributed to "a" wherever it is called), its parameters count
    # under "a" only, so the row of `b` holds b[1] alone: 3x3 + 3 = 12 (b.parameters() would say 24)
    from modelmeter.analysis.params import param_table

    model = _Tied(shared_module=True)
    table = param_table(model)
    assert table.per_module["b"] == (12, 0) and "b.0" not in table.per_module
    # a 12 + b.1 12 + c 3 (its bias; its weight is b.1's) + d 6 = 33, each tensor once
    assert table.per_module[""] == (33, 0) == (sum(p.numel() for p in model.parameters()), 0)
    report = mm.profile(model.b, torch.randn(2, 3))  # called on its own, b is the root
    assert report.module("").params == 24


# -- batch norm: torch.batch_norm's native_batch_norm called directly in an inference run ------------
_ORIGINAL_BATCH_NORM = torch._C._VariableFunctions.batch_norm  # what torch.batch_norm is outside a capture


class TwoNorms(nn.Module):
    """The same eval batch norm twice: through nn.BatchNorm2d (torch.batch_norm, which the capture
    replaces) and through the original function object, which PyTorch runs as it always does."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        a = self.bn(x)
        b = _ORIGINAL_BATCH_NORM(x, self.bn.weight, self.bn.bias, self.bn.running_mean, self.bn.running_var,
                                 False, 0.1, 1e-5, False)
        return a, b


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_batch_norm_runs_one_native_op_counted_as_pytorch_runs_it(device):
    model = TwoNorms().eval()
    x = torch.randn(2, 3, 4, 4)
    tr = run_capture(model, x, device=device)
    direct = [e.op for e in tr.events if e.module == "bn"]
    original = [e.op for e in tr.events if e.module == ""]
    assert direct == ["aten.native_batch_norm.default"]
    # PyTorch's own path first makes the empty byte tensor a cuDNN kernel would fill
    assert original == ["aten.empty.memory_format", "aten.native_batch_norm.default"]
    report = mm.profile(model, x, device=device)
    rows = {m.path: m for m in report.modules}
    # eval: 2 x 3 x 4 x 4 = 96 elements; per element 2 FLOPs to normalize by the running statistics
    # (a scale and a shift) + 1 for the weight + 1 for the bias = 4 -> 384
    # read: input 96 x 4 B + weight, bias, running mean, running var 4 x 3 x 4 B = 432; written 384 B
    assert (rows["bn"].flops, rows["bn"].bytes_read, rows["bn"].bytes_written) == (384, 432, 384)
    root_own = (report.totals.flops - rows["bn"].flops, report.totals.bytes_read - rows["bn"].bytes_read,
                report.totals.bytes_written - rows["bn"].bytes_written)
    assert root_own == (384, 432, 384)  # the empty tensor moves nothing


def test_batch_norm_direct_gives_pytorchs_results_and_running_statistics():
    x = torch.randn(4, 3, 5)
    w, b = torch.randn(3), torch.randn(3)
    expected_stats = [torch.randn(3), torch.rand(3) + 0.5]
    stats = [t.clone() for t in expected_stats]
    with torch.no_grad():
        want_eval = F.batch_norm(x, expected_stats[0], expected_stats[1], w, b, training=False)
        want_train = F.batch_norm(x, expected_stats[0], expected_stats[1], w, b, training=True, momentum=0.3)
        st = _State({}, {})
        with capturing(nn.Identity(), st, function_mode=False):
            assert torch.batch_norm is not _ORIGINAL_BATCH_NORM
            got_eval = F.batch_norm(x, stats[0], stats[1], w, b, training=False)
            got_train = F.batch_norm(x, stats[0], stats[1], w, b, training=True, momentum=0.3)
    assert torch.batch_norm is _ORIGINAL_BATCH_NORM
    assert torch.equal(got_eval, want_eval) and torch.equal(got_train, want_train)
    assert all(torch.equal(s, e) for s, e in zip(stats, expected_stats))  # running statistics updated alike
    assert [e.op for e in st.events] == ["aten.native_batch_norm.default"] * 2


class WrongWeight(nn.Module):
    def forward(self, x):
        return F.batch_norm(x, torch.zeros(3), torch.ones(3), torch.ones(4), None)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_batch_norm_with_wrong_sizes_gets_pytorchs_error_and_is_put_back(device):
    # native_batch_norm does not check the sizes of its weight: the original function does
    with pytest.raises(mm.ModelmeterError, match="weight should contain 3 elements not 4"):
        mm.profile(WrongWeight(), torch.randn(2, 3, 4), device=device)
    assert torch.batch_norm is _ORIGINAL_BATCH_NORM


def test_training_step_and_empty_input_take_pytorchs_path():
    model = nn.BatchNorm1d(3)
    tr = run_capture(model, torch.randn(4, 3), device="cpu", train=True)
    forward = [e.op for e in tr.events if e.phase == "forward"]
    # num_batches_tracked += 1, then PyTorch's own batch_norm path
    assert forward == ["aten.add_.Tensor", "aten.empty.memory_format", "aten.native_batch_norm.default"]
    tr = run_capture(model, torch.randn(0, 3, 2), device="cpu")
    assert "aten.native_batch_norm.default" not in [e.op for e in tr.events]  # PyTorch's empty-input path

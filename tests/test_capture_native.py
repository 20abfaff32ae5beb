"""The native op recorder (``capture/native/recorder.cpp``) records the same events as the Python capture.

Each comparison runs a model twice on CPU, once with ``native=False`` (the Python ``TorchDispatchMode``
capture) and once with the native recorder, and checks that the native path really ran (spies on
``_State.start_native`` and ``_State.finish_native``: without them, a recorder that silently refused to
start would make every comparison Python against Python). Storage keys are addresses: only the parameters', buffers' and
inputs' storages are the same in two runs; every other key is compared by the order in which it first
appears within its own event.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import modelmeter as mm
from modelmeter.capture import native, tracer
from modelmeter.capture.events import TensorMeta
from modelmeter.capture.run import run_capture
from modelmeter.errors import ModelRunError

if native.load() is None:
    pytest.skip(f"the native recorder is not available: {native.status()}", allow_module_level=True)

try:
    import transformers
except ImportError:  # only the Hugging Face cases need it
    transformers = None

FIELDS = ("index", "op", "overload", "module", "phase", "args", "kwargs", "inputs", "outputs", "created",
          "released", "is_view")


# -- comparison ---------------------------------------------------------------------------------------
def canon(trace) -> list[tuple]:
    """Every event as a tuple of comparable values, storage keys made run-independent."""
    fixed = set(trace.param_storages) | set(trace.buffer_storages) | set(trace.input_storages)
    out = []
    for e in trace.events:
        local: dict[int, int] = {}

        def key(k, local=local):
            if k in fixed:
                return ("p", k)
            return local.setdefault(k, len(local))

        def c(x, key=key):
            if isinstance(x, TensorMeta):
                return ("T", tuple(x.shape), x.dtype, x.device, key(x.storage_key), x.storage_nbytes,
                        x.requires_grad, x.numel, x.nbytes)
            if isinstance(x, (list, tuple)):
                return (type(x).__name__, tuple(c(y) for y in x))
            if isinstance(x, dict):
                return ("dict", tuple((k, c(v)) for k, v in x.items()))
            if isinstance(x, torch.Generator):
                return None
            return x

        overload = None if e.overload is None else e.overload.name()
        out.append((e.index, e.op, overload, e.module, e.phase, c(e.args), c(e.kwargs), c(e.inputs),
                    c(e.outputs), tuple((key(a), b) for a, b in e.created), tuple(key(k) for k in e.released),
                    e.is_view))
    return out


def first_difference(a, b) -> str | None:
    """None when the two traces record the same events; else the first differing event, field by field."""
    ca, cb = canon(a), canon(b)
    for p, q in zip(ca, cb):
        if p != q:
            lines = [f"event {p[0]} ({p[1]} | {q[1]}) differs:"]
            lines += [f"  {f}: python={u!r}\n  {' ' * len(f)}  native={v!r}"
                      for f, u, v in zip(FIELDS, p, q) if u != v]
            return "\n".join(lines)
    if len(ca) != len(cb):
        return (f"{len(ca)} python events vs {len(cb)} native events; ops:\n  python={[e[1] for e in ca]}\n"
                f"  native={[e[1] for e in cb]}")
    return None


@pytest.fixture
def native_runs(monkeypatch):
    """Counts, per test: runs the native recorder started on ("started"), refused to start on
    ("refused"), was drained after ("finished"), and could not describe ("unsupported")."""
    calls = {"started": 0, "refused": 0, "finished": 0, "unsupported": 0}
    start, finish = tracer._State.start_native, tracer._State.finish_native

    def start_spy(self, rec):
        ok = start(self, rec)
        calls["started" if ok else "refused"] += 1
        return ok

    def finish_spy(self):
        calls["finished"] += 1
        try:
            return finish(self)
        except tracer.NativeUnsupported:
            calls["unsupported"] += 1
            raise

    monkeypatch.setattr(tracer._State, "start_native", start_spy)
    monkeypatch.setattr(tracer._State, "finish_native", finish_spy)
    return calls


RECORDED = {"started": 1, "refused": 0, "finished": 1, "unsupported": 0}  # one run, recorded natively


def assert_same_capture(model, inputs, native_runs) -> tuple:
    py = run_capture(model, inputs, device="cpu", native=False)
    assert native_runs["started"] == native_runs["refused"] == 0  # native=False never tries the recorder
    nat = run_capture(model, inputs, device="cpu")
    assert native_runs == RECORDED, "the native recorder did not record this run"
    assert py.events, "nothing was recorded"
    diff = first_difference(py, nat)
    assert diff is None, diff
    # the run's other records: the same tensors (parameters, buffers, inputs are the user's own here)
    assert (nat.param_storages, nat.buffer_storages, nat.input_storages) == \
        (py.param_storages, py.buffer_storages, py.input_storages)
    assert (nat.calls, nat.output_bytes, nat.dtype) == (py.calls, py.output_bytes, py.dtype)
    assert (py.settings.pop("capture"), nat.settings.pop("capture")) == ("dispatch-mode", "native")
    assert nat.settings == py.settings
    return py, nat


# -- models ---------------------------------------------------------------------------------------------
@torch.library.custom_op("mmnative::double_it", mutates_args=())
def double_it(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@double_it.register_fake
def _(x):
    return torch.empty_like(x)


class UsesCustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(double_it(x)).relu()


class Misc(nn.Module):
    """Python-level odds and ends: values built in forward, Python numbers, list outputs, in-place ops,
    ``out=``, copies made by reshape and dtype conversion. Input 2x4x6x6."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        y = self.conv(x)
        y = y + 1
        y = y * 0.5
        y = 2.0 - y
        y = y * torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 4, 1, 1)  # lift_fresh
        y = y + torch.zeros(y.shape, device=y.device, dtype=y.dtype)
        cl = x.contiguous(memory_format=torch.channels_last)
        parts = torch.split(y, 2, dim=1)
        rows = torch.unbind(parts[0], dim=0)
        a = rows[0].clone()
        a.add_(1)
        a.relu_()
        F.relu_(a)
        c = torch.empty_like(a)
        torch.add(a, rows[1], out=c)
        t = y.transpose(2, 3).reshape(2, -1)  # not contiguous: a copy
        d = t.to(torch.float64)
        e = d.detach()
        f = self.fc(parts[1].contiguous())  # (a non-contiguous input: see test_linear_on_a_non_contiguous_input)
        return cl.sum() + c.sum() + e.sum().float() + f.mean()


class MoreArgs(nn.Module):
    """Arguments of many kinds: strings, dtypes, int lists, optional tensors, tensor lists, bool masks,
    named-tuple returns, a value read back to Python. Input 2x8x16."""

    def __init__(self) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(16)
        self.emb = nn.Embedding(10, 16)

    def forward(self, x):
        h = self.ln(x)
        h = F.gelu(h, approximate="tanh")
        ids = torch.arange(8, dtype=torch.long) % 10
        h = h + self.emb(ids)
        h = torch.cat([h, h.new_ones(2, 8, 16)], dim=-1)
        h = torch.stack([h, h], dim=0).sum(0)
        h = h.softmax(-1, dtype=torch.float64).float()
        s = h.cumsum(1, dtype=torch.float32)
        mask = s > s.mean()
        s = s.masked_fill(mask, float("-inf")).clamp(min=-1.0)
        sel = h[mask]  # data-dependent size
        v, i = h.topk(3, dim=-1)
        m = h.max(dim=1)
        g = torch.gather(h, 2, i)
        w = torch.where(h > 0.01, h, 0.0)
        p = F.pad(h, (1, 1), value=0.5)
        up = F.interpolate(h.unsqueeze(1), scale_factor=2.0, mode="nearest")
        e = torch.einsum("bij,bkj->bik", h, h)
        n = int(mask.sum().item())  # _local_scalar_dense
        r = torch.full((n + 1,), 3.0)
        return (s.sum() + sel.sum() + v.sum() + m.values.sum() + g.sum() + w.sum() + p.sum() + up.sum()
                + e.sum() + r.sum() + i.float().sum())


class Attention(nn.Module):
    """F.scaled_dot_product_attention called directly: recorded as one event, modelmeter.sdpa."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(32, 96)
        self.out = nn.Linear(32, 32)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, 4, 8).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = a + F.scaled_dot_product_attention(q, k, v, attn_mask=torch.ones(n, n, dtype=torch.bool).tril())
        return self.out(a.transpose(1, 2).reshape(b, n, 32))


class Recurrent(nn.Module):
    def __init__(self, kind: type[nn.Module]) -> None:
        super().__init__()
        self.rnn = kind(8, 16, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class OneOp(nn.Module):
    """A module around one function of (module, x); x is 2x4x6x6."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn
        self.fc = nn.Linear(6, 6)
        self.bag = nn.EmbeddingBag(10, 6)
        self.gn = nn.GroupNorm(2, 4)
        self.mha = nn.MultiheadAttention(6, 2)

    def forward(self, x):
        return self.fn(self, x)


def _seq(x, i):  # (6, 2, 6): sequence-first, as nn.MultiheadAttention takes it by default
    return x[0, i:i + 1].transpose(0, 1)


ONE_OP = {
    "linear_4d": lambda m, x: m.fc(x),
    "linear_2d_transposed": lambda m, x: m.fc(x[0, 0].t()),  # 2-D: addmm, whatever the strides
    "linear_no_bias_non_contiguous": lambda m, x: F.linear(x[:, :2], m.fc.weight),
    "matmul_non_contiguous": lambda m, x: x.transpose(2, 3) @ m.fc.weight,
    "batched_matmul": lambda m, x: x @ x.transpose(-1, -2),
    "einsum": lambda m, x: torch.einsum("bchw,bcwk->bchk", x, x),
    "baddbmm": lambda m, x: torch.baddbmm(x[0], x[0], x[0]),
    "layer_norm_non_contiguous": lambda m, x: F.layer_norm(x.transpose(2, 3), (6,)),
    "group_norm": lambda m, x: m.gn(x),
    "embedding_bag": lambda m, x: m.bag(torch.tensor([[1, 2], [3, 4]])),
    "multihead_attention": lambda m, x: m.mha(_seq(x, 0), _seq(x, 1), _seq(x, 1), need_weights=True)[1],
    "cross_entropy": lambda m, x: F.cross_entropy(x.flatten(1), torch.tensor([1, 3])),
    "mse_loss": lambda m, x: F.mse_loss(x, x * 2),
    "bce_with_logits": lambda m, x: F.binary_cross_entropy_with_logits(x, torch.ones_like(x)),
    "index_put_accumulate": lambda m, x: x.index_put((torch.tensor([0, 1, 0]),), torch.ones(3, 4, 6, 6),
                                                     accumulate=True),
    "setitem": lambda m, x: x.clone().__setitem__((slice(None), 0), 1.0),
    "advanced_index": lambda m, x: x[..., torch.tril_indices(6, 6)[0], 0],
    "nonzero": lambda m, x: (x > 0).nonzero(),
    "scatter_add": lambda m, x: torch.zeros(2, 4, 6, 6).scatter_add(3, torch.zeros(2, 4, 6, 6, dtype=torch.long), x),
    "cdist": lambda m, x: torch.cdist(x[0], x[1]),
    "unfold": lambda m, x: F.unfold(x, 2),
    "pixel_shuffle": lambda m, x: F.pixel_shuffle(x, 2),
    "vector_norm": lambda m, x: torch.linalg.vector_norm(x, dim=-1),
    "std": lambda m, x: x.std(dim=1),
    "adaptive_avg_pool": lambda m, x: F.adaptive_avg_pool2d(x, 3),
    "max_pool_indices": lambda m, x: F.max_pool2d(x, 2, return_indices=True)[1].float(),
    "chunk": lambda m, x: sum(c.sum() for c in x.chunk(3, dim=-1)),
    "roll_flip": lambda m, x: torch.roll(x, 1, 2).flip(-1),
    "repeat_interleave": lambda m, x: x.repeat_interleave(2, dim=1),
    "sort": lambda m, x: x.sort(-1).values,
    "random": lambda m, x: torch.rand_like(x) + F.dropout(x, 0.5, training=True),  # Generator arguments
    "rfft_complex": lambda m, x: torch.fft.rfft(x).abs(),
    "bfloat16": lambda m, x: (x.bfloat16() * 2).float(),
    "integer_ops": lambda m, x: (x.long() // 2) % 3,
    "bool_ops": lambda m, x: (x > 0) & (x < 1),
    "branch_on_item": lambda m, x: x * (2 if x.sum().item() > 0 else 3),
    "new_tensor": lambda m, x: x.new_tensor([1.0, 2.0]),
    "as_strided": lambda m, x: x.as_strided((2, 2), (1, 2)),
    "expand_contiguous": lambda m, x: x[:, :1].expand(2, 4, 6, 6).contiguous(),
}


def _vision(name):
    return lambda: getattr(torchvision.models, name)(weights=None)


def _tiny_vit():
    return torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10)


def _gpt2():
    cfg = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32)
    return transformers.GPT2LMHeadModel(cfg)


def _bert():
    cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                  intermediate_size=64, vocab_size=100, max_position_embeddings=32)
    return transformers.BertModel(cfg)


def _llama():
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=64, vocab_size=100,
                                   max_position_embeddings=32)
    return transformers.LlamaForCausalLM(cfg)


def _t5():
    cfg = transformers.T5Config(num_layers=2, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=4, d_kv=8,
                                vocab_size=100)
    return transformers.T5Model(cfg)


def _distilbert():
    cfg = transformers.DistilBertConfig(n_layers=2, dim=32, n_heads=4, hidden_dim=64, vocab_size=100,
                                        max_position_embeddings=32)
    return transformers.DistilBertModel(cfg)


def _transformer():
    return nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                          batch_first=True)


HF = ("gpt2", "bert", "llama_gqa", "t5", "distilbert")


def _needs(name: str) -> None:
    if name in HF and transformers is None:
        pytest.skip("transformers is not installed")


def _ids():
    return torch.randint(0, 100, (1, 16))


class Annotated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        with torch.profiler.record_function("block"):
            y = self.lin(x)
        with torch.autograd.profiler.record_function("act"):
            return y.relu()


def test_profiler_annotations_are_not_ops() -> None:
    # t + addmm (the linear) and relu: 3 ops; the record_function enter/exit ops are not among them
    for native_on in (False, True):
        tr = run_capture(Annotated().eval(), torch.randn(2, 4), device="cpu", native=native_on)
        assert [e.op for e in tr.events] == ["aten.t.default", "aten.addmm.default", "aten.relu.default"]


IMAGE = (1, 3, 64, 64)
CASES = {
    "resnet18": (_vision("resnet18"), lambda: torch.randn(IMAGE)),
    "mobilenet_v2": (_vision("mobilenet_v2"), lambda: torch.randn(IMAGE)),
    "efficientnet_b0": (_vision("efficientnet_b0"), lambda: torch.randn(IMAGE)),
    "densenet121": (_vision("densenet121"), lambda: torch.randn(IMAGE)),
    "tiny_vit": (_tiny_vit, lambda: torch.randn(1, 3, 32, 32)),
    "gpt2": (_gpt2, lambda: {"input_ids": _ids()}),
    "bert": (_bert, lambda: {"input_ids": _ids(), "attention_mask": torch.ones(1, 16, dtype=torch.long)}),
    "llama_gqa": (_llama, lambda: {"input_ids": _ids()}),
    "t5": (_t5, lambda: {"input_ids": _ids(), "decoder_input_ids": torch.randint(0, 100, (1, 8))}),
    "distilbert": (_distilbert, lambda: {"input_ids": _ids()}),
    "nn_transformer": (_transformer, lambda: (torch.randn(1, 10, 16), torch.randn(1, 6, 16))),
    "lstm": (lambda: Recurrent(nn.LSTM), lambda: torch.randn(2, 5, 8)),
    "gru": (lambda: Recurrent(nn.GRU), lambda: torch.randn(2, 5, 8)),
    "sdpa": (Attention, lambda: torch.randn(2, 6, 32)),
    "misc": (Misc, lambda: torch.randn(2, 4, 6, 6)),
    "more_args": (MoreArgs, lambda: torch.randn(2, 8, 16)),
    "custom_op": (UsesCustomOp, lambda: torch.randn(3, 4)),
    # ops with a composite kernel beside kernels of their own (native_channel_shuffle has a CPU kernel and is
    # recorded whole; rms_norm runs _fused_rms_norm unobserved, whose CPU kernel is the composite one)
    # torch.profiler.record_function inside forward: its enter/exit ops are annotations, recorded by neither
    "record_function": (lambda: Annotated(), lambda: torch.randn(2, 4)),
    "shuffle_mish_rmsnorm": (lambda: nn.Sequential(nn.Conv2d(4, 8, 1), nn.ChannelShuffle(2), nn.Mish(),
                                                   nn.Flatten(2), nn.RMSNorm(36)),
                             lambda: torch.randn(1, 4, 6, 6)),
}
for _name, _fn in ONE_OP.items():
    CASES[f"op_{_name}"] = ((lambda fn=_fn: OneOp(fn)), lambda: torch.randn(2, 4, 6, 6))


@pytest.mark.parametrize("name", list(CASES))
def test_native_records_the_python_captures_events(name, native_runs):
    _needs(name)
    torch.manual_seed(0)
    make_model, make_inputs = CASES[name]
    model = make_model().eval()
    py, nat = assert_same_capture(model, make_inputs(), native_runs)
    ops = [e.op for e in nat.events]
    # the events the Python side records among the native records (fused ops, Python-dispatched ops)
    if name in ("lstm", "gru"):
        # the initial state nn.LSTM/GRU makes when given none (zeros for h0, and c0 for an LSTM), then the
        # whole 2-layer bidirectional layer as one event, its kernels unrecorded
        zeros = ["aten.zeros.default"] * (2 if name == "lstm" else 1)
        assert [e.op for e in nat.events if e.module == "rnn"] == [*zeros, "modelmeter.rnn"]
    if name == "sdpa":
        assert ops.count("modelmeter.sdpa") == 2  # two calls in Attention.forward
    if name == "custom_op":
        # one event for the op, none of its implementation's (x * 2 would be aten.mul.Tensor)
        assert ops.count("mmnative.double_it.default") == 1 and "aten.mul.Tensor" not in ops
        assert ops.index("mmnative.double_it.default") < ops.index("aten.addmm.default")  # in call order
    if name == "misc":
        for op in ("aten.lift_fresh.default", "aten.zeros.default", "aten.add_.Tensor", "aten.relu_.default",
                   "aten.add.out", "aten.split.Tensor", "aten.unbind.int", "aten._to_copy.default",
                   "aten.detach.default"):
            assert op in ops, op


class LinearOnAView(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc(x.transpose(1, 2))  # a 3-D input that is not contiguous


def test_linear_on_a_non_contiguous_input(native_runs):
    # aten::linear on a non-contiguous input of 3+ dims runs matmul and then adds the bias: in place
    # (add_) when nothing watches, out of place (add) when isTensorSubclassLike(bias), which every tensor
    # is while a TorchDispatchMode is active. The native recorder records the add_ that runs, the Python
    # capture the add it sees (documented in docs/counting.md); the same reads and writes.
    model, x = LinearOnAView().eval(), torch.randn(2, 6, 3)
    py = run_capture(model, x, device="cpu", native=False)
    nat = run_capture(model, x, device="cpu")
    assert native_runs == RECORDED
    assert [e.op for e in py.events][:-1] == [e.op for e in nat.events][:-1]
    assert (py.events[-1].op, nat.events[-1].op) == ("aten.add.Tensor", "aten.add_.Tensor")
    # the add writes a new 2x3x6 fp32 tensor (144 B); add_ writes into the matmul's output
    assert [c[1] for c in py.events[-1].created] == [144] and nat.events[-1].created == ()
    from modelmeter.analysis.totals import cost_events
    from modelmeter.costs import CountSettings

    def sums(trace):
        rows = cost_events(trace, CountSettings())
        return sum(r[4] for r in rows), sum(r[5] for r in rows), sum(r[6] for r in rows), sum(r[7] for r in rows)

    assert sums(py) == sums(nat)


# -- profile totals ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["resnet18", "gpt2", "misc"])
def test_profile_totals_do_not_depend_on_the_recorder(name, monkeypatch, native_runs):
    _needs(name)
    torch.manual_seed(0)
    make_model, make_inputs = CASES[name]
    model, x = make_model().eval(), make_inputs()

    def totals():
        r = mm.profile(model, x, device="cpu")
        t = r.totals
        return (t.macs, t.flops, t.bytes_read, t.bytes_written, t.ops), r

    monkeypatch.setenv("MODELMETER_NATIVE", "0")
    python, report = totals()
    assert native_runs["started"] == native_runs["refused"] == 0  # turned off: never tried
    assert report.provenance.capture == "dispatch-mode"
    monkeypatch.delenv("MODELMETER_NATIVE")
    recorded, report = totals()
    assert native_runs == RECORDED
    assert python[0] > 0 and python[4] > 0
    assert recorded == python
    assert report.provenance.capture == "native"


# -- fallbacks -----------------------------------------------------------------------------------------
class SparseMM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 3))

    def forward(self, x):
        return torch.sparse.mm(x, self.w).relu()


def test_a_sparse_input_is_recorded_again_in_python(native_runs):
    x = torch.randn(4, 6).relu().to_sparse()
    model = SparseMM()  # in training mode: the inference run sets eval, and the retry must put it back
    py = run_capture(model, x, device="cpu", native=False)
    nat = run_capture(model, x, device="cpu")
    # the native recorder ran, could not describe the sparse tensor, and the run was redone in Python
    assert native_runs == {"started": 1, "refused": 0, "finished": 1, "unsupported": 1}
    assert nat.settings["capture"] == "dispatch-mode"
    # the sparse input is described by its stored values: numel is its number of non-zeros
    assert any(t.shape == (4, 6) and t.numel == x._nnz() for e in nat.events for t in e.inputs)
    diff = first_difference(py, nat)
    assert diff is None, diff
    assert model.training is True


class Boom(nn.Module):
    def forward(self, x):
        raise ValueError("boom in the block")


class FailsInside(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.block = nn.Sequential(nn.ReLU(), Boom())

    def forward(self, x):
        return self.block(self.stem(x))


def _hooks_left(model) -> list[str]:
    from torch.nn.modules import module as module_mod

    left = [f"{path or '(root)'}.{kind}" for path, m in model.named_modules()
            for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
            if getattr(m, kind)]
    left += [kind for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                               "_global_backward_pre_hooks") if getattr(module_mod, kind)]
    return left


def test_a_failing_forward_names_its_module_and_the_next_run_records(native_runs):
    model = FailsInside().train()
    with pytest.raises(ModelRunError) as ei:
        run_capture(model, torch.randn(2, 4), device="cpu")
    assert ei.value.module_path == "block.1"
    assert "module 'block.1' (Boom)" in str(ei.value) and "boom in the block" in str(ei.value)
    # it failed on the native path: started, never drained (nothing is kept after a failed run)
    assert native_runs == {"started": 1, "refused": 0, "finished": 0, "unsupported": 0}
    assert _hooks_left(model) == [] and all(m.training for m in model.modules())
    # the next run starts clean: no records left from the failed one, no stale module stack
    good = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    native_runs.update(started=0)
    py, nat = assert_same_capture(good, torch.randn(2, 4), native_runs)
    # Linear on a 2-D input with a bias: t (the weight's transpose) and addmm; then ReLU's relu
    assert [(e.op, e.module) for e in nat.events] == [
        ("aten.t.default", "0"), ("aten.addmm.default", "0"), ("aten.relu.default", "1")]
    assert [e.index for e in nat.events] == [0, 1, 2]


def test_under_the_profiler_the_python_capture_records(native_runs):
    torch.manual_seed(0)
    model, x = CASES["misc"][0]().eval(), CASES["misc"][1]()
    py = run_capture(model, x, device="cpu", native=False)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        nat = run_capture(model, x, device="cpu")
    # the recorder refused to start beside the profiler's RecordFunction callbacks
    assert native_runs == {"started": 0, "refused": 1, "finished": 0, "unsupported": 0}
    assert nat.settings["capture"] == "dispatch-mode"
    diff = first_difference(py, nat)
    assert diff is None, diff
    assert any(ev.name == "aten::convolution" for ev in prof.events())  # the profiler saw the run too
    # once the profiler has stopped, the recorder records again
    native_runs.update(refused=0)
    again = run_capture(model, x, device="cpu")
    assert native_runs == RECORDED
    diff = first_difference(py, again)
    assert diff is None, diff


# -- the user's model ----------------------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
def test_the_model_is_left_as_it_was(training, native_runs):
    from torch import _VF
    from torch._ops import OpOverload

    torch.manual_seed(0)
    model = nn.Sequential(_vision("resnet18")(), nn.Unflatten(1, (10, 100)), nn.LSTM(100, 8, batch_first=True))
    model.train(training)
    model[0].layer1[0].bn1.train(not training)  # a mixed model: every module's own flag must come back
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    globals_before = (F.scaled_dot_product_attention, torch.batch_norm, _VF.lstm, OpOverload.__call__,
                      torch.backends.mha.get_fastpath_enabled())
    run_capture(model, torch.randn(IMAGE), device="cpu")
    assert native_runs == RECORDED
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert _hooks_left(model) == []
    after = model.state_dict()
    assert after.keys() == state.keys()
    assert all(torch.equal(after[k], v) for k, v in state.items())  # running statistics untouched
    assert (F.scaled_dot_product_attention, torch.batch_norm, _VF.lstm, OpOverload.__call__,
            torch.backends.mha.get_fastpath_enabled()) == globals_before

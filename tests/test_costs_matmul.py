"""Matrix-product rules, each alone, with counts derived by hand."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from test_costs_support import cost, cost_of_call, events_of, only, synthetic
from torch import nn

import modelmeter as mm
from modelmeter.costs import cost_of

A = torch.ops.aten


def total(events):
    macs = flops = 0
    for e in events:
        c, counted = cost_of(e)
        assert counted, e.op
        macs += c.macs
        flops += c.flops
    return macs, flops


def test_mm():
    # (3, 4) @ (4, 5): 3*5*4 = 60 MACs, 120 FLOPs; reads (12 + 20) * 4 = 128 B, writes 15 * 4 = 60 B
    c = cost_of_call("aten.mm", torch.mm, torch.randn(3, 4), torch.randn(4, 5))
    assert (c.macs, c.flops, c.bytes_read, c.bytes_written) == (60, 120, 128, 60)


def test_addmm():
    # bias (5,) + (3, 4) @ (4, 5): 60 MACs; FLOPs 2*60 + 3*5 (bias add) = 135
    # reads (5 + 12 + 20) * 4 = 148 B, writes 60 B
    c = cost_of_call("aten.addmm", torch.addmm, torch.randn(5), torch.randn(3, 4), torch.randn(4, 5))
    assert (c.macs, c.flops, c.bytes_read, c.bytes_written) == (60, 135, 148, 60)


def test_bmm_and_baddbmm():
    # (2, 3, 4) @ (2, 4, 5): 2*3*5*4 = 120 MACs, 240 FLOPs
    c = cost_of_call("aten.bmm", torch.bmm, torch.randn(2, 3, 4), torch.randn(2, 4, 5))
    assert (c.macs, c.flops) == (120, 240)
    # + self (2, 3, 5): 120 MACs, 240 + 30 = 270 FLOPs
    c = cost_of_call("aten.baddbmm", torch.baddbmm, torch.randn(2, 3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5))
    assert (c.macs, c.flops) == (120, 270)
    # addbmm sums the batch: still 120 MACs, + 3*5 = 15 for the add of self (3, 5)
    c = cost_of_call("aten.addbmm", torch.addbmm, torch.randn(3, 5), torch.randn(2, 3, 4), torch.randn(2, 4, 5))
    assert (c.macs, c.flops) == (120, 255)


def test_mv_dot_addr_addmv():
    # (3, 4) @ (4,): 12 MACs
    assert cost_of_call("aten.mv", torch.mv, torch.randn(3, 4), torch.randn(4)).macs == 12
    # (4,) . (4,): 4 MACs
    assert cost_of_call("aten.dot", torch.dot, torch.randn(4), torch.randn(4)).macs == 4
    # self (3, 5) + outer((3,), (5,)): 15 MACs (k = 1) + 15 adds -> 45 FLOPs
    c = cost_of_call("aten.addr", torch.addr, torch.randn(3, 5), torch.randn(3), torch.randn(5))
    assert (c.macs, c.flops) == (15, 45)
    # self (3,) + (3, 4) @ (4,): 12 MACs + 3 adds -> 27 FLOPs
    c = cost_of_call("aten.addmv", torch.addmv, torch.randn(3), torch.randn(3, 4), torch.randn(4))
    assert (c.macs, c.flops) == (12, 27)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_functional_3d(bias):
    # F.linear on x (2, 3, 4), W (5, 4): 2*3 rows x 5 outputs x 4 inputs = 120 MACs;
    # the bias adds 6*5 = 30 FLOPs: 270 with bias, 240 without. Every other op is a view.
    x, w, b = torch.randn(2, 3, 4), torch.randn(5, 4), torch.randn(5)
    macs, flops = total(events_of(F.linear, x, w, b if bias else None))
    assert (macs, flops) == (120, 270 if bias else 240)


def test_linear_op_kept_whole():
    # A backend that keeps aten.linear whole: (6, 4) rows x (5, 4) weight = 120 MACs, + 30 bias FLOPs
    ev = synthetic(A.linear.default, torch.empty(2, 3, 4), torch.empty(5, 4), torch.empty(5),
                   outputs=(torch.empty(2, 3, 5),))
    c = cost(ev)
    assert (c.macs, c.flops) == (120, 270)


@pytest.mark.parametrize(
    ("a", "b", "macs"),
    [
        ((3, 4), (4,), 12),  # mv: 3*4
        ((4,), (4,), 4),  # dot
        ((4,), (4, 5), 20),  # vector-matrix: 1*5*4
        ((2, 3, 4), (4, 5), 120),  # folded to mm: (6, 4) @ (4, 5) = 6*5*4
        ((2, 1, 3, 4), (5, 4, 6), 720),  # broadcast batch (2, 5): 10 * 3*6*4
        ((2, 3, 4), (2, 4, 5), 120),  # bmm: 2*3*5*4
    ],
)
def test_matmul_and_at_operator(a, b, macs):
    x, y = torch.randn(*a), torch.randn(*b)
    assert total(events_of(torch.matmul, x, y))[0] == macs
    assert total(events_of(lambda: x @ y))[0] == macs


class Einsums(nn.Module):
    """Products written with einsum, matmul, @ and F.linear inside a custom forward."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))

    def forward(self, q, k):
        s = torch.einsum("bhqd,bhkd->bhqk", q, k)  # 2*3*5*7*4 = 840 MACs
        p = torch.matmul(s, k)  # (2,3,5,7) @ (2,3,7,4): 2*3*5*4*7 = 840 MACs
        r = p @ self.w  # (2,3,5,4) @ (4,6): 30 rows * 6 * 4 = 720 MACs
        return torch.einsum("bhqe,ef->bhqf", r, torch.ones(6, 2))  # 30 rows * 2 * 6 = 360 MACs


def test_products_inside_custom_forward_are_counted():
    # 840 + 840 + 720 + 360 = 2760 MACs, on meta and on CPU alike
    q, k = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 7, 4)
    for device in ("meta", "cpu"):
        r = mm.profile(Einsums(), (q, k), device=device)
        assert r.totals.macs == 2760
        assert r.totals.matmul_flops == 5520


def test_scaled_mm_runs_on_cpu():
    # fp8 (8, 16) @ (16, 32): 8*32*16 = 4096 MACs; scales are epilogue, not counted
    a = torch.randn(8, 16).to(torch.float8_e4m3fn)
    b = torch.randn(32, 16).to(torch.float8_e4m3fn).t()
    one = torch.tensor(1.0)
    c = cost_of_call("aten._scaled_mm", torch._scaled_mm, a, b, one, one, out_dtype=torch.float32)
    assert (c.macs, c.flops) == (4096, 8192)
    # with a bias (32,): + 8*32 = 256 FLOPs (synthetic: the CPU kernel rejects an fp32 bias here)
    ev = synthetic(A._scaled_mm.default, a, b, one, one, torch.empty(32), outputs=(torch.empty(8, 32),))
    assert (cost(ev).macs, cost(ev).flops) == (4096, 8448)


def test_grouped_mm_all_layouts():
    bf = torch.bfloat16
    offs = torch.tensor([2, 4, 6], dtype=torch.int32)
    # 2d x 3d (MoE forward): tokens (6, 16) each through one of 3 experts (16, 8): 6*16*8 = 768
    c = cost_of_call("aten._grouped_mm", torch._grouped_mm, torch.randn(6, 16, dtype=bf),
                     torch.randn(3, 16, 8, dtype=bf), offs=offs)
    assert c.macs == 768
    # 2d x 2d (MoE weight gradient, groups along K): (16, 16) x (16, 8) -> (3, 16, 8): 16*8*16 = 2048
    c = cost_of_call("aten._grouped_mm", torch._grouped_mm, torch.randn(16, 16, dtype=bf),
                     torch.randn(16, 8, dtype=bf), offs=torch.tensor([4, 8, 16], dtype=torch.int32))
    assert c.macs == 2048
    # 3d x 3d (batched): 3 * 4*8*16 = 1536
    c = cost_of_call("aten._grouped_mm", torch._grouped_mm, torch.randn(3, 4, 16, dtype=bf),
                     torch.randn(3, 16, 8, dtype=bf))
    assert c.macs == 1536
    # 3d x 2d (groups along N): (3, 4, 16) x (16, 24) -> (4, 24): 4*24*16 = 1536
    w = torch.randn(24, 16, dtype=bf).t()
    c = cost_of_call("aten._grouped_mm", torch._grouped_mm, torch.randn(3, 4, 16, dtype=bf), w,
                     offs=torch.tensor([8, 16, 24], dtype=torch.int32))
    assert c.macs == 1536


def test_grouped_mm_matches_the_loop_of_products_it_replaces():
    # Independent check: the same MoE layer as a python loop of mm calls has the same MACs.
    bf = torch.bfloat16
    x, w = torch.randn(6, 16, dtype=bf), torch.randn(3, 16, 8, dtype=bf)
    grouped = cost_of_call("aten._grouped_mm", torch._grouped_mm, x, w,
                           offs=torch.tensor([1, 4, 6], dtype=torch.int32)).macs
    looped = total(events_of(lambda: [x[s:e] @ w[g] for g, (s, e) in enumerate([(0, 1), (1, 4), (4, 6)])]))[0]
    assert grouped == looped == 768


def test_bilinear_trilinear():
    # nn.Bilinear(3, 4, 5) on batch 2: every term x1_i W_oij x2_j: 2*5*3*4 = 120 MACs, +120 FLOPs
    # for the third factor, + 2*5 = 10 for the bias add
    lin = nn.Bilinear(3, 4, 5)
    macs, flops = total(events_of(lin, torch.randn(2, 3), torch.randn(2, 4)))
    assert (macs, flops) == (120, 2 * 120 + 120 + 10)


def test_int_and_weight_only_quantized_mm():
    # int8 (32, 64) @ (64, 32): 32*32*64 = 65536 MACs
    a = torch.randint(-8, 8, (32, 64), dtype=torch.int8)
    b = torch.randint(-8, 8, (64, 32), dtype=torch.int8)
    assert cost_of_call("aten._int_mm", torch._int_mm, a, b).macs == 65536
    # int8 weight-only: x (4, 64) bf16, W (32, 64) int8, scales (32,): 4*32*64 = 8192 MACs
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    w = torch.randint(-8, 8, (32, 64), dtype=torch.int8)
    c = cost_of_call("aten._weight_int8pack_mm", torch.ops.aten._weight_int8pack_mm, x, w,
                     torch.ones(32, dtype=torch.bfloat16))
    assert c.macs == 8192


def _loop_linear_macs(rows: int, n_in: int, n_out: int) -> int:
    count = 0
    for _r, _o in itertools.product(range(rows), range(n_out)):
        for _i in range(n_in):  # one multiply-accumulate per input feature
            count += 1
    return count


@settings(max_examples=25, deadline=None)
@given(
    lead=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    n_in=st.integers(1, 6),
    n_out=st.integers(1, 6),
    bias=st.booleans(),
)
def test_linear_property(lead, n_in, n_out, bias):
    lin = nn.Linear(n_in, n_out, bias=bias)
    x = torch.randn(*lead, n_in)
    r = mm.profile(lin, x)
    rows = 1
    for d in lead:
        rows *= d
    macs = _loop_linear_macs(rows, n_in, n_out)
    assert r.totals.macs == macs
    assert r.totals.flops == 2 * macs + (rows * n_out if bias else 0)


def test_unsafe_view_after_matmul_moves_nothing():
    # matmul of (2, 1, 3, 4) @ (2, 4, 5) broadcasts the batch to (2, 2), runs bmm on (4, 3, 4) and
    # ends with _unsafe_view of the (4, 3, 5) bmm output to (2, 2, 3, 5): a view, 0 bytes
    evs = events_of(torch.matmul, torch.randn(2, 1, 3, 4), torch.randn(2, 4, 5))
    views = [e for e in evs if e.op.startswith("aten._unsafe_view")]
    assert views
    for e in views:
        c = cost(e)
        assert (c.bytes_read, c.bytes_written) == (0, 0)
    assert only(evs, "aten.bmm").outputs[0].shape == (4, 3, 5)


def test_sparse_operands_count_their_stored_values():
    # a 5x5 sparse matrix with 7 stored values times a dense 5x8: each stored value meets a row of 8:
    # 7 * 8 = 56 MACs (not the dense 5*5*8 = 200), COO through @, torch.sparse.addmm (+ 5*8 = 40 FLOPs
    # for the add) and CSR through torch.mm
    idx = torch.tensor([[0, 1, 2, 3, 4, 0, 4], [0, 1, 2, 3, 4, 4, 0]])
    adj = torch.sparse_coo_tensor(idx, torch.ones(7), (5, 5))
    x = torch.randn(5, 8)

    class Graph(torch.nn.Module):
        def forward(self, adj, x):
            return (adj @ x) + torch.sparse.addmm(torch.zeros(5, 8), adj, x) + torch.mm(adj.to_sparse_csr(), x)

    r = mm.profile(Graph(), (adj, x), device="cpu")
    products = [(e.op, e.macs, e.flops) for e in r.events if e.macs]
    assert products == [("aten.mm.default", 56, 112), ("aten._sparse_addmm.default", 56, 152),
                        ("aten.mm.default", 56, 112)]
    assert r.uncounted_ops == []
    # the sparse input's bytes are what it stores: 7 fp32 values + 2x7 int64 indices = 28 + 112 = 140
    assert next(e for e in r.events if e.op == "aten.mm.default").bytes_read == 140 + 5 * 8 * 4


def test_sparse_gradients_train_on_cpu_and_meta():
    # nn.EmbeddingBag(sparse=True) makes a sparse gradient, which has no storage of its own
    for device in ("cpu", "meta"):
        torch.manual_seed(0)
        r = mm.profile(torch.nn.EmbeddingBag(100, 8, sparse=True), torch.randint(0, 100, (4, 3)), train=True,
                       optimizer="sgd", device=device)
        assert "aten._embedding_bag_backward.default" in {e.op for e in r.events}
        assert r.uncounted_ops == []


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16])
def test_dynamically_quantized_linear(dtype):
    # Linear(16 -> 8) with a bias, quantized dynamically, on a 2x16 input: 2*8*16 = 256 MACs;
    # FLOPs 512 + bias 16, int8 also quantizes the input (4 x 32 = 128) and dequantizes the output (16): 672;
    # fp16: 528. Bytes read: input 128 + the weight 16*8 at 1 B (int8, 128) or 2 B (fp16, 256) + bias 32
    m = torch.ao.quantization.quantize_dynamic(nn.Sequential(nn.Linear(16, 8)), {nn.Linear}, dtype=dtype)
    r = mm.profile(m, torch.randn(2, 16), device="cpu")
    (ev,) = r.events
    int8 = dtype == torch.qint8
    assert (ev.macs, ev.flops, ev.bytes_read, ev.bytes_written) == (256, 672 if int8 else 528,
                                                                    288 if int8 else 416, 64)
    assert r.uncounted_ops == []


def test_complex_products_count_real_macs():
    # (2x3) @ (3x4) complex64: 24 complex MACs = 4 x 24 = 96 real MACs, 192 FLOPs; with a complex bias
    # (addmm): + 8 outputs x 2 real adds = 16
    a = torch.randn(2, 3, dtype=torch.complex64)
    b = torch.randn(3, 4, dtype=torch.complex64)
    c = cost_of_call("aten.mm", torch.mm, a, b)
    assert (c.macs, c.flops) == (96, 192)
    c = cost_of_call("aten.addmm", torch.addmm, torch.randn(2, 4, dtype=torch.complex64), a, b)
    assert (c.macs, c.flops) == (96, 192 + 16)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_solve_triangular(device: str):
    class Solve(nn.Module):
        def forward(self, a, b):
            x = torch.linalg.solve_triangular(a, b, upper=True)  # A X = B, 2 right-hand sides
            y = torch.linalg.solve_triangular(a, b.mT, upper=True, left=False, unitriangular=True)  # Y A = B^T
            return x.sum() + y.sum()

    # n = 3: each right-hand side 3 x 2 / 2 = 3 MACs and 3 divisions; 2 of them: 6 MACs, 12 + 6 = 18 FLOPs;
    # unitriangular: no division, 12 FLOPs
    a = torch.triu(torch.rand(3, 3)) + torch.eye(3)
    r = mm.profile(Solve(), (a, torch.rand(3, 2)), device=device)
    got = [(e.macs, e.flops) for e in r.events if e.op == "aten.linalg_solve_triangular.default"]
    assert got == [(6, 18), (6, 12)] and r.uncounted_ops == []

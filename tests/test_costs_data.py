"""Data-movement ops: embedding/gather/index (bytes, no MACs), scatters, views (nothing moved),
copies and creation. float32 = 4 B, int64 = 8 B."""

from __future__ import annotations

import pytest
import torch
from test_costs_support import cost, events_of, only
from torch import nn

import modelmeter as mm


def test_embedding_reads_gathered_rows_not_the_table():
    # Embedding(100, 8), 6 int64 indices: reads indices 6 x 8 B = 48 + 6 rows x 8 x 4 B = 192 -> 240 B;
    # writes (2, 3, 8) x 4 B = 192 B. No MACs, no FLOPs. (The table is 100 x 8 x 4 = 3200 B.)
    emb = nn.Embedding(100, 8)
    idx = torch.randint(0, 100, (2, 3))
    c = cost(only(events_of(emb, idx), "aten.embedding"))
    assert (c.macs, c.flops, c.bytes_read, c.bytes_written) == (0, 0, 240, 192)


def test_embedding_backward():
    # embedding_dense_backward: one add per grad-output element (6 x 8 = 48 FLOPs); it writes the
    # whole zero-initialized (100, 8) gradient: 3200 B
    emb = nn.Embedding(100, 8)
    y = emb(torch.randint(0, 100, (2, 3)))
    c = cost(only(events_of(y.sum().backward), "aten.embedding_dense_backward"))
    assert (c.flops, c.bytes_written) == (48, 3200)


@pytest.mark.parametrize(
    ("fn", "op", "expected"),
    [
        # index_select (10, 4) rows [3 indices]: reads 3 x 8 + 12 x 4 = 72 B, writes 48 B
        (lambda x, i: x.index_select(0, i), "aten.index_select", (72, 48)),
        # x[i]: the same gather through aten.index
        (lambda x, i: x[i], "aten.index", (72, 48)),
        # gather (10, 4) dim 1 with a (3, 2) index: reads 6 x 8 + 6 x 4 = 72 B, writes 24 B
        (lambda x, i: x.gather(1, torch.zeros(3, 2, dtype=torch.long)), "aten.gather", (72, 24)),
    ],
)
def test_gathers(fn, op, expected):
    x, i = torch.randn(10, 4), torch.tensor([1, 5, 7])
    c = cost(only(events_of(fn, x, i), op))
    assert (c.macs, c.flops, c.bytes_read, c.bytes_written) == (0, 0, *expected)


def test_scatters():
    # index_put_ with accumulate on x (5, 4), 3 row indices, values (3, 4): 12 adds; reads indices 24 B
    # + values 48 B + the 12 addressed elements 48 B = 120 B; writes 48 B
    x = torch.zeros(5, 4)
    idx, vals = torch.tensor([0, 2, 4]), torch.ones(3, 4)
    c = cost(only(events_of(lambda: x.index_put_((idx,), vals, accumulate=True)), "aten.index_put_"))
    assert (c.flops, c.bytes_read, c.bytes_written) == (12, 120, 48)
    # without accumulate: no FLOPs, addressed elements not read: 72 B read, 48 B written
    c = cost(only(events_of(lambda: x.index_put_((idx,), vals)), "aten.index_put_"))
    assert (c.flops, c.bytes_read, c.bytes_written) == (0, 72, 48)
    # scatter_add_ on (3, 5) with index/src (3, 2): 6 adds; reads 48 + 24 + 24 = 96 B, writes 24 B
    y = torch.zeros(3, 5)
    si, src = torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2)
    c = cost(only(events_of(lambda: y.scatter_add_(1, si, src)), "aten.scatter_add_"))
    assert (c.flops, c.bytes_read, c.bytes_written) == (6, 96, 24)
    # index_add_ with alpha=2 on (5, 4), source (3, 4): 2 x 12 = 24 FLOPs
    c = cost(only(events_of(lambda: x.index_add_(0, idx, vals, alpha=2.0)), "aten.index_add_"))
    assert c.flops == 24


def test_masked_scatter_backward_moves_the_selected_gradient():
    # x (2, 3).masked_scatter(mask, src (6,)) with 4 of 6 mask elements True; the gradient of src is
    # masked_scatter_backward(grad (2, 3), mask, [6]): no arithmetic; reads grad 6 x 4 B = 24 + mask 6 x 1 B
    # = 30 B, writes the (6,) gradient of src, 24 B (the last two elements zero)
    src = torch.randn(6, requires_grad=True)
    mask = torch.tensor([[True, False, True], [True, True, False]])
    y = torch.zeros(2, 3).masked_scatter(mask, src)
    c = cost(only(events_of(y.sum().backward), "aten.masked_scatter_backward"))
    assert (c.macs, c.flops, c.bytes_read, c.bytes_written) == (0, 0, 30, 24)
    assert torch.equal(src.grad, torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]))


@pytest.mark.parametrize(
    "fn",
    [
        lambda x: x.view(4, 3),
        lambda x: x.transpose(0, 1),
        lambda x: x.permute(1, 0),
        lambda x: x.t(),
        lambda x: x.unsqueeze(0),
        lambda x: x[1:],
        lambda x: x[0],
        lambda x: x.expand(2, 3, 4),
        lambda x: x.narrow(1, 0, 2),
        lambda x: x.split(2, dim=1),
        lambda x: x.reshape(12),
        lambda x: x.detach(),
        lambda x: x.as_strided((2, 2), (1, 1)),
    ],
)
def test_views_move_nothing(fn):
    x = torch.randn(3, 4)
    evs = events_of(fn, x)
    assert evs
    for e in evs:
        c = cost(e)
        assert (c.macs, c.flops, c.bytes_read, c.bytes_written) == (0, 0, 0, 0), e.op


def test_metadata_ops_move_nothing():
    x = torch.randn(3, 4)
    for fn in (lambda: x.as_strided_((2, 2), (1, 1)), lambda: torch.empty(0).resize_(5), lambda: torch.empty(3, 4)):
        for e in events_of(fn):
            c = cost(e)
            assert (c.bytes_read, c.bytes_written) == (0, 0), e.op


def test_copies():
    x = torch.randn(3, 4)  # 48 B
    # clone: reads 48, writes 48
    c = cost(only(events_of(x.clone), "aten.clone"))
    assert (c.flops, c.bytes_read, c.bytes_written) == (0, 48, 48)
    # contiguous() of a transposed tensor is a clone
    c = cost(only(events_of(x.t().contiguous), "aten.clone"))
    assert (c.bytes_read, c.bytes_written) == (48, 48)
    # copy_(dst, src) reads only the source: 48 + 48, not 96 + 48
    dst = torch.empty(3, 4)
    c = cost(only(events_of(dst.copy_, x), "aten.copy_"))
    assert (c.bytes_read, c.bytes_written) == (48, 48)
    # a dtype conversion: reads 12 x 4, writes 12 x 8
    c = cost(only(events_of(x.to, torch.float64), "aten._to_copy"))
    assert (c.bytes_read, c.bytes_written) == (48, 96)
    # cat of two (3, 4): reads 96, writes 96
    c = cost(only(events_of(torch.cat, [x, x]), "aten.cat"))
    assert (c.bytes_read, c.bytes_written) == (96, 96)


def test_creation_reads_nothing():
    x = torch.randn(3, 4)
    for fn, op in ((lambda: torch.zeros(3, 4), "aten.zeros"), (lambda: torch.zeros_like(x), "aten.zeros_like"),
                   (lambda: torch.full((3, 4), 2.0), "aten.full"), (lambda: x.new_ones(3, 4), "aten.new_ones")):
        c = cost(only(events_of(fn), op))
        assert (c.flops, c.bytes_read, c.bytes_written) == (0, 0, 48), op
    # fill_ and zero_ write self and read nothing
    c = cost(only(events_of(x.zero_), "aten.zero_"))
    assert (c.bytes_read, c.bytes_written) == (0, 48)


def test_language_model_embedding_bytes_meta_equals_cpu():
    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(1000, 16)
            self.head = nn.Linear(16, 1000, bias=False)
            self.head.weight = self.emb.weight  # tied

        def forward(self, ids):
            return self.head(self.emb(ids))

    ids = torch.randint(0, 1000, (2, 5))
    a, b = (mm.profile(LM(), ids, device=d) for d in ("meta", "cpu"))
    # embedding: reads 10 x 8 B + 10 x 16 x 4 B = 720 B (not the 64000 B table)
    emb = [e for e in a.events if e.op.startswith("aten.embedding")]
    assert [(e.bytes_read, e.bytes_written) for e in emb] == [(720, 640)]
    # head: (10, 16) @ (16, 1000) = 160000 MACs
    assert a.totals.macs == b.totals.macs == 160000
    assert (a.totals.bytes_read, a.totals.bytes_written) == (b.totals.bytes_read, b.totals.bytes_written)

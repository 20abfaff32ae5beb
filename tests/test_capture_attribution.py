"""Module attribution of counted ops: rows sum to totals, reused and tied modules, functional calls
inside forward, and backward ops attributed to the module whose forward created them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import modelmeter as mm


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 8)

    def forward(self, x):
        h = F.gelu(self.fc1(x))  # a functional call: Block's own op
        return x + self.fc2(h) * 0.5  # Block's own mul and add


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 8)
        self.block = Block()
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        h = self.block(self.block(self.inp(x)))  # the same block called twice
        return self.head(h)


# x (4, 8): inp 4*8*8 = 256 MACs; block.fc1 4*8*16 = 512 per call, x 2 = 1024; block.fc2 512 x 2 = 1024;
# head 4*8*2 = 64. Total 2368 MACs.
X = torch.randn(4, 8)


def own(r, path):
    return next(m for m in r.modules if m.path == path)


def assert_rows_sum_to_totals(r):
    for field in ("macs", "flops", "bytes_read", "bytes_written"):
        assert sum(getattr(m, "own_" + field) for m in r.modules) == getattr(r.totals, field), field
        assert getattr(own(r, ""), field) == getattr(r.totals, field), field
    assert sum(e.macs for e in r.events) == r.totals.macs


def test_reused_module_and_per_module_macs():
    r = mm.profile(Net(), X)
    assert r.totals.macs == 2368
    assert own(r, "block").calls == 2
    assert own(r, "block.fc1").calls == 2
    assert own(r, "inp").calls == 1
    assert (own(r, "inp").own_macs, own(r, "block.fc1").own_macs, own(r, "block.fc2").own_macs,
            own(r, "head").own_macs) == (256, 1024, 1024, 64)
    # inclusive: block = fc1 + fc2 = 2048
    assert own(r, "block").macs == 2048
    assert_rows_sum_to_totals(r)


def test_functional_calls_attributed_to_the_calling_module():
    r = mm.profile(Net(), X)
    by_op = {}
    for e in r.events:
        by_op.setdefault(e.op.split(".")[1], set()).add(e.module)
    assert by_op["gelu"] == {"block"}
    assert by_op["addmm"] == {"inp", "block.fc1", "block.fc2", "head"}
    # gelu: 5 FLOPs x 4*16 elements x 2 calls = 640; the mul and add: 32 + 32 per call = 128
    assert own(r, "block").own_flops == 640 + 128


@pytest.mark.parametrize("optimizer", [None, "adamw"])
def test_rows_sum_to_totals_in_a_training_step(optimizer):
    r = mm.profile(Net(), X, train=True, optimizer=optimizer)
    assert_rows_sum_to_totals(r)
    phases = r.totals.phases
    assert sum(p.macs for p in phases.values()) == r.totals.macs
    assert sum(p.flops for p in phases.values()) == r.totals.flops


def test_backward_ops_attributed_to_their_forward_module():
    m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    r = mm.profile(m, torch.randn(5, 4), train=True)
    bwd = [e for e in r.events if e.phase == "backward"]
    assert {e.module for e in bwd if e.op.startswith("aten.threshold_backward")} == {"1"}
    mms = [(e.module, e.macs) for e in bwd if e.op.startswith("aten.mm")]
    # layer 2: grad input (5,2)@(2,8) = 80 and grad weight (2,5)@(5,8) = 80; layer 0: weight only (8,5)@(5,4) = 160
    assert sorted(mms) == [("0", 160), ("2", 80), ("2", 80)]
    # the reused block: its backward lands on block.fc1/fc2 and block, never on the other modules
    r = mm.profile(Net(), X, train=True)
    fc1_bwd = sum(e.macs for e in r.events if e.phase == "backward" and e.module == "block.fc1")
    # fc1 per call: grad input (4,16)@(16,8) = 512 + grad weight (16,4)@(4,8) = 512; 2 calls = 2048
    assert fc1_bwd == 2048


class ParentWithOwnOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.fc = nn.Linear(4, 4, bias=False)

    def forward(self, x):
        return self.fc(torch.tanh(x * self.scale))  # mul and tanh belong to the parent


def test_parent_ops_created_before_a_child_call_stay_with_the_parent_in_backward():
    r = mm.profile(ParentWithOwnOps(), torch.randn(3, 4), train=True)
    bwd = [(e.op.split(".")[1], e.module) for e in r.events if e.phase == "backward"]
    assert ("tanh_backward", "") in bwd
    # mul's backward (grad of scale: g * x, then a sum over the batch) stays with the parent
    assert {m for op, m in bwd if op in ("mul", "sum")} == {""}
    # fc's own backward: weight grad (4,3)@(3,4) = 48 and input grad (3,4)@(4,4) = 48 MACs
    assert sorted(e.macs for e in r.events if e.phase == "backward" and e.module == "fc" and e.macs) == [48, 48]


def test_tied_weights_counted_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            h = self.emb(ids)
            return self.head(h) + F.linear(h, self.emb.weight)  # functional use of the tied weight

    r = mm.profile(Tied(), torch.randint(0, 10, (2, 3)))
    assert r.totals.params == 80  # 10 x 8, once
    # head and the functional linear: 6 rows x 10 x 8 = 480 MACs each
    assert own(r, "head").own_macs == 480
    assert own(r, "").own_macs == 480
    assert r.totals.macs == 960
    rt = mm.profile(Tied(), torch.randint(0, 10, (2, 3)), train=True, optimizer="sgd")
    # SGD updates the one tied tensor once: p.add_(g, alpha=-lr), 2 x 80 = 160 FLOPs
    assert rt.totals.phases["optimizer"].flops == 160
    assert_rows_sum_to_totals(rt)


def test_hf_model_rows_sum_to_totals():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=128, vocab_size=1000)
    m = transformers.LlamaForCausalLM(cfg)
    r = mm.profile(m, {"input_ids": torch.randint(0, 1000, (2, 16))}, train=True, optimizer="adamw")
    assert_rows_sum_to_totals(r)
    layers = [x for x in r.modules if x.path.startswith("model.layers.") and x.path.count(".") == 2]
    assert len(layers) == 2 and layers[0].macs == layers[1].macs > 0

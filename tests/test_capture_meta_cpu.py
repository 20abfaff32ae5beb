"""Counts are identical on meta (no weights) and on CPU (real tensors): MACs and FLOPs always,
bytes where the two runs dispatch to kernels with the same output layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import modelmeter as mm

transformers = pytest.importorskip("transformers")


def _counts(r):
    t = r.totals
    return t.macs, t.flops, t.bytes_read, t.bytes_written


def _per_op(r):
    out = {}
    for e in r.events:
        k = (e.op, e.phase)
        a = out.setdefault(k, [0, 0, 0])
        a[0] += e.macs
        a[1] += e.flops
        a[2] += e.bytes_read + e.bytes_written
    return out


@pytest.mark.parametrize(("train", "optimizer"), [(False, None), (True, "adamw")])
def test_resnet18_identical(train, optimizer):
    m = torchvision.models.resnet18()
    x = torch.randn(1, 3, 64, 64)
    a = mm.profile(m, x, device="meta", train=train, optimizer=optimizer)
    b = mm.profile(m, x, device="cpu", train=train, optimizer=optimizer)
    assert _counts(a) == _counts(b)
    assert _per_op(a) == _per_op(b)


def _lm(name):
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg)
    if name == "bert":
        cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                      intermediate_size=128, vocab_size=1000)
        return transformers.BertModel(cfg)
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=128, vocab_size=1000)
    return transformers.LlamaForCausalLM(cfg)


IDS = {"input_ids": torch.randint(0, 1000, (2, 16))}


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("train", [False, True])
def test_language_models_macs_and_flops_identical(name, train):
    m = _lm(name)
    a = mm.profile(m, IDS, device="meta", train=train, optimizer="adamw" if train else None)
    b = mm.profile(m, IDS, device="cpu", train=train, optimizer="adamw" if train else None)
    assert (a.totals.macs, a.totals.flops) == (b.totals.macs, b.totals.flops)
    assert a.uncounted_ops == b.uncounted_ops == []


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_language_models_bytes_identical_inference(name):
    # the (B, L, H, d) queries of Hugging Face attention: SDPA's output layout agrees on meta and CPU,
    # so the .transpose(1, 2).contiguous() after attention copies in neither mode
    m = _lm(name)
    a = mm.profile(m, IDS, device="meta")
    b = mm.profile(m, IDS, device="cpu")
    assert _counts(a) == _counts(b)


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_language_models_bytes_identical_training(name):
    # gradients of the CPU flash kernel are (B, L, H, d) and BERT's dropout sends the CPU to the math
    # kernel: the meta run must take the same kernel to get the same layouts, hence the same copies
    m = _lm(name)
    a = mm.profile(m, IDS, device="meta", train=True)
    b = mm.profile(m, IDS, device="cpu", train=True)
    assert _counts(a) == _counts(b)


class ContiguousHeads(nn.Module):
    """q, k, v made contiguous in (B, H, L, d): the CPU flash kernel returns (B, H, L, d) too."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(32, 96)

    def forward(self, x):
        q, k, v = self.qkv(x).view(2, 8, 3, 4, 8).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous()


@pytest.mark.parametrize("train", [False, True])
def test_contiguous_heads_bytes_identical(train):
    x = torch.randn(2, 8, 32)
    a = mm.profile(ContiguousHeads(), x, device="meta", train=train)
    b = mm.profile(ContiguousHeads(), x, device="cpu", train=train)
    assert (a.totals.macs, a.totals.flops) == (b.totals.macs, b.totals.flops)
    assert _counts(a) == _counts(b)


def test_inputs_that_require_grad_on_meta():
    # the input is moved to meta as a new leaf: its gradient is computed on meta, not copied back
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    r = mm.profile(lin, x, train=True, device="meta")
    # backward: grad input (2,4)@(4,4) = 32 + grad weight (4,2)@(2,4) = 32 MACs
    assert r.totals.phases["backward"].macs == 64

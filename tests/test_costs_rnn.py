"""Recurrent layers: oneDNN's fused LSTM layer on CPU counted as its cell loop is on meta."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modelmeter as mm

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


def _lstm() -> nn.Module:
    torch.manual_seed(0)
    return nn.LSTM(16, 32, num_layers=2, batch_first=True)


def _events(r, op):
    return [e for e in r.events if e.op == op]


@needs_onednn
def test_lstm_forward_fused_on_cpu_counts_its_cell_loop_as_meta_does() -> None:
    # T=5 steps, B=2, I=16, H=32, G=4 gates; per step and row: G*H*(I + H) MACs
    #   layer 1: 5*2 * 128*(16 + 32) = 61,440; layer 2 (input = layer 1's H): 5*2 * 128*(32 + 32) = 81,920
    # FLOPs: 2 x MACs + per unit (T*B*H = 320 of them) 22 (cell) + 8 (two bias adds of G):
    #   layer 1: 122,880 + 320*30 = 132,480; layer 2: 163,840 + 9,600 = 173,440; total 305,920
    x = torch.randn(2, 5, 16)
    cpu = mm.profile(_lstm(), x, device="cpu")
    meta = mm.profile(_lstm(), x, device="meta")
    fused = _events(cpu, "aten.mkldnn_rnn_layer.default")
    assert [(e.macs, e.flops) for e in fused] == [(61_440, 132_480), (81_920, 173_440)]
    assert not _events(meta, "aten.mkldnn_rnn_layer.default")  # the cell loop on meta
    for r in (cpu, meta):
        assert (r.totals.macs, r.totals.flops) == (143_360, 305_920)
        assert r.uncounted_ops == []  # unsafe_split (the loop's gate split) is a view


@needs_onednn
def test_lstm_without_bias_and_bidirectional_agree_on_meta_and_cpu() -> None:
    # per direction and layer: 5*2 * 128*(16 + 32) = 61,440 MACs, 2 directions: 122,880;
    # FLOPs 2 x 122,880 + 2 * 320 * 22 (no bias adds) = 245,760 + 14,080 = 259,840
    torch.manual_seed(0)
    m = nn.LSTM(16, 32, bidirectional=True, bias=False)
    x = torch.randn(5, 2, 16)
    cpu, meta = mm.profile(m, x, device="cpu"), mm.profile(m, x)
    assert len(_events(cpu, "aten.mkldnn_rnn_layer.default")) == 2
    assert (cpu.totals.macs, cpu.totals.flops) == (meta.totals.macs, meta.totals.flops) == (122_880, 259_840)


@needs_onednn
def test_lstm_backward_fused_counts_every_gradient() -> None:
    # the fused backward computes the gradients of the input, the hidden state and both weights:
    # 2 x the forward MACs per layer (122,880 and 163,840); FLOPs 2 x MACs + per unit 23 (cell
    # backward) + 4 (bias gradient): layer 1 245,760 + 320*27 = 254,400; layer 2 327,680 + 8,640 = 336,320
    x = torch.randn(2, 5, 16)
    cpu = mm.profile(_lstm(), x, device="cpu", train=True)
    bwd = _events(cpu, "aten.mkldnn_rnn_layer_backward.default")
    assert sorted((e.macs, e.flops) for e in bwd) == [(122_880, 254_400), (163_840, 336_320)]
    assert cpu.uncounted_ops == []
    # the cell loop on meta skips what nobody needs: the first layer's input gradient
    # (5*2 * 128*16 = 20,480) and, in each layer, the initial hidden state's (2 * 128*32 = 8,192)
    meta = mm.profile(_lstm(), x, train=True)
    assert cpu.totals.macs - meta.totals.macs == 20_480 + 2 * 8_192

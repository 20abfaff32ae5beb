"""Recurrent layers: one op per nn.LSTM/GRU/RNN call, the same counts on meta and CPU; oneDNN's fused
LSTM layer when called directly."""

from __future__ import annotations

import pytest
import torch
from test_costs_support import cost, synthetic
from torch import nn

import modelmeter as mm
from modelmeter.errors import ModelRunError


def _totals(r):
    t = r.totals
    return t.macs, t.flops, t.bytes_read, t.bytes_written


def _rnn(r):
    return [(e.op, e.macs, e.flops) for e in r.events if e.op.startswith("modelmeter.rnn")]


def _lstm() -> nn.Module:
    torch.manual_seed(0)
    return nn.LSTM(16, 32, num_layers=2, batch_first=True)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_lstm_is_one_op_counted_as_its_cell_loop(device: str) -> None:
    # 5 steps x batch 2 = 10 rows, I=16, H=32, G=4 gates (128 = G x H); per row G H (I + H) MACs:
    #   layer 1: 10 * 128 * (16 + 32) = 61,440; layer 2 (input = layer 1's H): 10 * 128 * 64 = 81,920
    # FLOPs 2 x MACs + per unit (10 * 32 = 320) 22 (cell) + 8 (two bias adds of G):
    #   layer 1: 122,880 + 9,600 = 132,480; layer 2: 163,840 + 9,600 = 173,440; total 305,920
    # bytes read: input 2*5*16*4 = 640, h0 and c0 2 * (2*2*32*4) = 1,024, weights: layer 1
    #   (128*16 + 128*32 + 2*128) * 4 = 25,600, layer 2 (128*32*2 + 2*128) * 4 = 33,792: 61,056;
    #   written: output 2*5*32*4 = 1,280, h_n and c_n 1,024: 2,304
    r = mm.profile(_lstm(), torch.randn(2, 5, 16), device=device)
    assert _rnn(r) == [("modelmeter.rnn", 143_360, 305_920)]
    (ev,) = [e for e in r.events if e.op == "modelmeter.rnn"]
    assert (ev.bytes_read, ev.bytes_written) == (61_056, 2_304)
    assert r.uncounted_ops == []


def test_lstm_training_step_identical_on_meta_and_cpu() -> None:
    # backward: layer 1 weights 10*128*48 = 61,440 + hidden state 10*128*32 = 40,960 (the input needs no
    # gradient); layer 2 weights 10*128*64 = 81,920 + hidden 40,960 + its input 10*128*32 = 40,960:
    # 266,240 MACs; FLOPs 532,480 + per unit 320 * (23 cell + 4 bias) * 2 layers = 17,280: 549,760
    x = torch.randn(2, 5, 16)
    meta, cpu = mm.profile(_lstm(), x, train=True), mm.profile(_lstm(), x, train=True, device="cpu")
    assert _rnn(meta) == _rnn(cpu) == [("modelmeter.rnn", 143_360, 305_920),
                                       ("modelmeter.rnn_backward", 266_240, 549_760)]
    assert _totals(meta) == _totals(cpu)
    assert not any("mkldnn" in e.op for e in cpu.events)  # the kernels inside are not recorded


@pytest.mark.parametrize("train", [False, True])
def test_gru_rnn_and_projected_lstm_identical_on_meta_and_cpu(train: bool) -> None:
    # bidirectional GRU(16 -> 32): 2 directions x 10 rows x 96 x 48 = 92,160 MACs, FLOPs 184,320 +
    #   2 x 320 x (16 + 6) = 198,400
    # RNN(16 -> 32): 10 * 32 * 48 = 15,360 MACs; FLOPs 30,720 + 320 * (2 + 2) = 32,000
    # LSTM(16 -> 32, proj_size 8): 10 * 128 * (16 + 8) = 30,720 + the projection 10 * 8 * 32 = 2,560 = 33,280
    x = torch.randn(5, 2, 16)
    cases = [(nn.GRU(16, 32, bidirectional=True), 92_160, 198_400), (nn.RNN(16, 32), 15_360, 32_000),
             (nn.LSTM(16, 32, proj_size=8), 33_280, None)]
    for m, macs, flops in cases:
        meta, cpu = mm.profile(m, x, train=train), mm.profile(m, x, train=train, device="cpu")
        assert _totals(meta) == _totals(cpu)
        fwd = _rnn(meta)[0]
        assert fwd[1] == macs and (flops is None or fwd[2] == flops)
        assert meta.uncounted_ops == []


def test_packed_sequence_counts_the_packed_rows() -> None:
    # lengths 5 and 3: 8 rows, not 10: 8 * 128 * 48 = 49,152 MACs
    class Packed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(16, 32, batch_first=True)

        def forward(self, x):
            packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]), batch_first=True)
            return self.lstm(packed)[1][0]

    r = mm.profile(Packed(), torch.randn(2, 5, 16), device="cpu")
    assert [e[1] for e in _rnn(r)] == [49_152]


def test_dropout_between_layers_in_training() -> None:
    # dropout 0.5 between the two layers, training only: 3 FLOPs per element of layer 1's output
    # (10 rows x 32) = 960 more than without
    x = torch.randn(2, 5, 16)
    torch.manual_seed(0)
    with_dropout = mm.profile(nn.LSTM(16, 32, num_layers=2, batch_first=True, dropout=0.5), x, train=True)
    assert _rnn(with_dropout)[0][2] == 305_920 + 960


def test_fused_lstm_layer_called_directly() -> None:
    # oneDNN's layer kernel (what PyTorch runs per layer on CPU), as an event of its own: 10 rows,
    # I=16, H=32: 61,440 MACs, 132,480 FLOPs (as the loop); its backward computes every gradient:
    # 2 x 61,440 MACs, FLOPs 245,760 + 320 * (23 + 4) = 254,400
    x, w_ih, w_hh, b = torch.randn(5, 2, 16), torch.randn(128, 16), torch.randn(128, 32), torch.randn(128)
    h = torch.zeros(2, 32)
    ev = synthetic(torch.ops.aten.mkldnn_rnn_layer.default, x, w_ih, w_hh, b, b, h, h, False, [5], 2, 32, 1,
                   True, False, False, True)
    assert (cost(ev).macs, cost(ev).flops) == (61_440, 132_480)
    out = torch.randn(5, 2, 32)
    bwd = synthetic(torch.ops.aten.mkldnn_rnn_layer_backward.default, x, w_ih, w_hh, b, b, h, h, out, h, h,
                    out, h, h, False, 2, 32, 1, True, True, False, [5], False, torch.zeros(1))
    assert (cost(bwd).macs, cost(bwd).flops) == (122_880, 254_400)


def test_torch_vf_restored_after_the_capture_even_when_the_model_fails() -> None:
    from torch import _VF

    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(4, 4)

        def forward(self, x):
            self.lstm(x)
            raise ValueError("boom")

    mm.profile(nn.LSTM(4, 4), torch.randn(3, 1, 4))
    with pytest.raises(ModelRunError, match="boom"):
        mm.profile(Fails(), torch.randn(3, 1, 4))
    for name in ("lstm", "gru", "rnn_tanh", "rnn_relu"):
        assert name not in _VF.__dict__  # the module forwards to torch._C._VariableFunctions again
        assert getattr(_VF, name) is getattr(torch._C._VariableFunctions, name)


def test_cuda_fused_cells_count_what_the_cpu_decomposition_counts() -> None:
    # nn.LSTMCell(16, 32) on a batch of 2: on CPU two addmm with biases and the cell's elementwise ops;
    # on CUDA two mm without biases and _thnn_fused_lstm_cell, which adds the biases itself.
    # Products: 2 * 128 * (16 + 32) = 12,288 MACs; the cell 64 units x (22 + 2 x 4 biases) = 1,920
    cpu = mm.profile(nn.LSTMCell(16, 32), torch.randn(2, 16), device="cpu")
    assert (cpu.totals.macs, cpu.totals.flops) == (12_288, 2 * 12_288 + 1_920)
    gates, state = torch.randn(2, 128), torch.randn(2, 32)
    ev = synthetic(torch.ops.aten._thnn_fused_lstm_cell.default, gates, gates, state, torch.randn(128),
                   torch.randn(128))
    assert cost(ev).flops == 1_920
    bwd = synthetic(torch.ops.aten._thnn_fused_lstm_cell_backward_impl.default, state, state, state, state,
                    gates, True)
    assert cost(bwd).flops == 64 * (22 + 4)  # the cell's backward, + the bias gradient
    # nn.GRUCell(16, 32): 2 * 96 * 48 = 9,216 MACs; the cell 64 x (16 + 2 x 3) = 1,408
    cpu = mm.profile(nn.GRUCell(16, 32), torch.randn(2, 16), device="cpu")
    assert (cpu.totals.macs, cpu.totals.flops) == (9_216, 2 * 9_216 + 1_408)
    g3 = torch.randn(2, 96)
    ev = synthetic(torch.ops.aten._thnn_fused_gru_cell.default, g3, g3, state, torch.randn(96), torch.randn(96))
    assert cost(ev).flops == 1_408
    bwd = synthetic(torch.ops.aten._thnn_fused_gru_cell_backward.default, state, torch.randn(2, 160), True)
    assert cost(bwd).flops == 64 * (16 + 6)

"""Recurrent layers: ``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` as one op each (``modelmeter.rnn``), and
oneDNN's fused LSTM layer (``mkldnn_rnn_layer``) where it is called directly.

The capture records a whole recurrent module's call (``torch._VF.lstm`` etc.: every layer and
direction) as one op, as it does attention: PyTorch runs it as one oneDNN kernel per layer on CPU
and as a cell loop elsewhere, and the loop itself differs per device, so counting the call keeps
meta, CPU and CUDA equal. Per layer and direction, with ``R`` the rows the layer runs (time steps x
batch; for a packed sequence, the packed rows), hidden size ``H``, recurrent size ``H_r`` (``H``, or
the projection's ``P`` for an LSTM with ``proj_size``), layer input size ``I`` and ``G`` gates (LSTM
4, GRU 3, RNN 1):

* MACs: ``R G H (I + H_r)`` for the two products ``x W_ih^T`` and ``h W_hh^T`` (+ ``R P H`` for an
  LSTM's projection);
* FLOPs: ``2 x MACs`` + per hidden unit and row the cell (LSTM 22: gates' sum 4, three sigmoids 12,
  two tanh 2, three products 3, cell update 1; GRU 16: two sigmoids with their sums 10, the new
  gate's product, sum and tanh 3, ``n + z (h - n)`` 3; RNN 2: the sum and tanh or relu) + ``2G``
  for the two biases, + 3 per element of each layer's output that dropout (training, ``dropout >
  0``) draws, scales and multiplies, but the last layer's;
* backward (``modelmeter.rnn_backward``): the weights' gradients (``R G H (I + H_r)``, + ``R P H``),
  the hidden state's at every step (``R G H H_r``) and every layer's input's (``R G H I``) but the
  first layer's when the model's input needs none: MACs, and ``2 x MACs`` FLOPs + per hidden unit
  and row the cell's backward (LSTM 23, GRU 17, RNN tanh 4, relu 2) + ``G`` for the bias gradient;
* bytes: the input, the initial state and every weight read once, the output and the final state
  written (the default); its backward reads those and the outputs' gradients and writes the
  gradients of what needs one.

These are the counts of the cell loop a meta run decomposes into, op by op: the forward's exactly; in
backward the loop also skips the initial state's gradient at the first step, and sums the weights'
per-step gradients with adds.

``mkldnn_rnn_layer`` (one LSTM layer and direction, as PyTorch calls it on CPU) is counted the same
way when it is reached without the module, e.g. by code calling ``torch._VF.lstm`` on another
thread: its backward computes every gradient (``2 x`` the forward MACs).
"""

from __future__ import annotations

from ..capture.events import OpEvent
from .registry import Cost, arguments, register_rule

_LSTM_GATES = 4
_CELL_FORWARD = 22  # per hidden unit and step, biases apart
_CELL_BACKWARD = 23


def _dims(input_numel: int, w_ih: tuple[int, ...], hidden: int) -> tuple[int, int, int, int]:
    """(steps x batch, input size, gates, hidden size) of one layer call."""
    size_in = int(w_ih[1])
    gates = int(w_ih[0]) // hidden
    return input_numel // size_in, size_in, gates, hidden


@register_rule("aten.mkldnn_rnn_layer")
def mkldnn_rnn_layer(ev: OpEvent) -> Cost:
    a = arguments(ev)
    rows, size_in, gates, hidden = _dims(a["input"].numel, a["weight0"].shape, int(a["hidden_size"]))
    macs = rows * gates * hidden * (size_in + hidden)
    per_unit = (_CELL_FORWARD if gates == _LSTM_GATES else 0) + (2 * gates if a["has_biases"] else 0)
    return Cost.of_macs(macs, extra_flops=rows * hidden * per_unit)


@register_rule("aten.mkldnn_rnn_layer_backward")
def mkldnn_rnn_layer_backward(ev: OpEvent) -> Cost:
    a = arguments(ev)
    rows, size_in, gates, hidden = _dims(a["input"].numel, a["weight1"].shape, int(a["hidden_size"]))
    macs = 2 * rows * gates * hidden * (size_in + hidden)
    per_unit = (_CELL_BACKWARD if gates == _LSTM_GATES else 0) + (gates if a["has_biases"] else 0)
    return Cost.of_macs(macs, extra_flops=rows * hidden * per_unit)


_CELL = {"lstm": (22, 23), "gru": (16, 17), "rnn_tanh": (2, 4), "rnn_relu": (2, 2)}  # forward, backward
_DROPOUT = 3  # per element: draw and compare, scale, multiply (as native_dropout)


def _layers(a: dict) -> list[tuple[int, int, int, int, int, bool]]:
    """(I, G x H, H, H_r, P, weights need grad) of every layer and direction, from the flat weights."""
    params = [p for p in a["params"] if p is not None]
    layers, dirs = int(a["num_layers"]), 2 if a["bidirectional"] else 1
    per = len(params) // (layers * dirs) if layers * dirs else 0
    has_biases = bool(a["has_biases"])
    proj = per == (2 + 2 * has_biases + 1)
    out = []
    for k in range(0, per * layers * dirs, per):
        w_ih, w_hh = params[k], params[k + 1]
        gh = int(w_ih.shape[0])
        p = int(params[k + per - 1].shape[0]) if proj else 0
        hidden = int(params[k + per - 1].shape[1]) if proj else int(w_hh.shape[1])
        out.append((int(w_ih.shape[1]), gh, hidden, int(w_hh.shape[1]), p, bool(w_ih.requires_grad)))
    return out


def _rows(a: dict) -> int:
    x = a["input"]
    return x.numel // x.shape[-1] if x.shape[-1] else 0  # steps x batch, or the packed rows


def _call(ev: OpEvent) -> tuple[dict, int, bool, list, int, bool]:
    """(arguments, rows, biases, layers, directions, dropout between layers) of a recorded call."""
    a = arguments(ev)
    dirs = 2 if a["bidirectional"] else 1
    dropout = bool(a.get("train")) and float(a.get("dropout") or 0) > 0
    return a, _rows(a), bool(a["has_biases"]), _layers(a), dirs, dropout


@register_rule("modelmeter.rnn")
def rnn(ev: OpEvent) -> Cost:
    a, rows, bias, layers, dirs, dropout = _call(ev)
    cell = _CELL[a["mode"]][0]
    macs = extra = 0
    for i, (size_in, gh, hidden, rec, p, _grad) in enumerate(layers):
        gates = gh // hidden
        macs += rows * gh * (size_in + rec) + rows * p * hidden
        extra += rows * hidden * (cell + (2 * gates if bias else 0))
        if dropout and i < len(layers) - dirs:
            extra += rows * (p or hidden) * _DROPOUT
    return Cost.of_macs(macs, extra_flops=extra)


@register_rule("modelmeter.rnn_backward")
def rnn_backward(ev: OpEvent) -> Cost:
    a, rows, bias, layers, dirs, dropout = _call(ev)
    cell = _CELL[a["mode"]][1]
    input_grad = bool(a["input"].requires_grad)
    macs = extra = 0
    for i, (size_in, gh, hidden, rec, p, grad) in enumerate(layers):
        gates = gh // hidden
        if grad:  # the weights' gradients
            macs += rows * gh * (size_in + rec) + rows * p * hidden
            extra += rows * hidden * (gates if bias else 0)
        macs += rows * gh * rec  # the hidden state's, through time
        if i >= dirs or input_grad:  # the layer input's
            macs += rows * gh * size_in
        extra += rows * hidden * cell
        if dropout and i < len(layers) - dirs:
            extra += rows * (p or hidden)  # dropout's backward: the mask times the gradient
    return Cost.of_macs(macs, extra_flops=extra)


# -- CUDA's fused cells (nn.LSTMCell / nn.GRUCell, and the cell loop, on CUDA) ---------------------
# The gates' products run before the cell as ordinary linear ops without biases; the fused cell adds
# the biases and does the cell's arithmetic, as the CPU and meta decomposition (linear with bias,
# then the elementwise ops) counts it: per hidden unit and row the cell, + 2G for the biases.


def _cell_units(gates: object, per_unit_gates: int) -> int:
    return gates.numel // per_unit_gates  # type: ignore[attr-defined]  # rows x H


@register_rule("aten._thnn_fused_lstm_cell")
def fused_lstm_cell(ev: OpEvent) -> Cost:
    # (input_gates (B, 4H), hidden_gates, cx, input_bias, hidden_bias) -> (hy, cy, workspace)
    a = arguments(ev)
    units = _cell_units(a["input_gates"], _LSTM_GATES)
    bias = (a.get("input_bias") is not None) + (a.get("hidden_bias") is not None)
    return Cost(flops=units * (_CELL_FORWARD + bias * _LSTM_GATES))


@register_rule("aten._thnn_fused_lstm_cell_backward_impl", "aten._thnn_fused_lstm_cell_backward")
def fused_lstm_cell_backward(ev: OpEvent) -> Cost:
    # (grad_hy, grad_cy, cx, cy, workspace (B, 4H), has_bias): the cell's backward without the
    # incoming gradients' add (22), + the bias gradient (a sum of the 4 gates' gradients)
    a = arguments(ev)
    units = _cell_units(a["workspace"], _LSTM_GATES)
    return Cost(flops=units * (_CELL_BACKWARD - 1 + (_LSTM_GATES if a["has_bias"] else 0)))


@register_rule("aten._thnn_fused_gru_cell")
def fused_gru_cell(ev: OpEvent) -> Cost:
    # (input_gates (B, 3H), hidden_gates, hx, input_bias, hidden_bias) -> (hy, workspace)
    a = arguments(ev)
    units = _cell_units(a["input_gates"], 3)
    bias = (a.get("input_bias") is not None) + (a.get("hidden_bias") is not None)
    return Cost(flops=units * (_CELL["gru"][0] + bias * 3))


@register_rule("aten._thnn_fused_gru_cell_backward")
def fused_gru_cell_backward(ev: OpEvent) -> Cost:
    # (grad_hy, workspace (B, 5H), has_bias): the cell's backward without the incoming add (16), + the
    # two bias gradients (sums of the 3 gates' gradients each)
    a = arguments(ev)
    units = a["workspace"].numel // 5
    return Cost(flops=units * (_CELL["gru"][1] - 1 + (2 * 3 if a["has_bias"] else 0)))

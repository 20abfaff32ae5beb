"""Recurrent layers run as one fused kernel: oneDNN's LSTM layer on CPU (``mkldnn_rnn_layer``).

PyTorch runs ``nn.LSTM`` on CPU as one ``mkldnn_rnn_layer`` call per layer and direction; on meta (and
wherever that kernel is not used) the same layer arrives as its cell loop (``addmm``, ``sigmoid_``,
``tanh``, ``mul`` per time step), which the ordinary rules count. The fused rule counts what that
loop counts, so forward MACs and FLOPs are the same on every device.

Forward, per time step ``t`` and batch row ``b`` (``T x B`` of them), hidden size ``H``, input size
``I``, ``G`` gates (4 for an LSTM):

* MACs: the two products ``x_t W_ih^T`` and ``h_{t-1} W_hh^T``: ``G H (I + H)``;
* FLOPs: ``2 x MACs``, plus per hidden unit (the cell, at the per-element costs of
  :mod:`.elementwise`): the two bias adds 8 (``G = 4`` each, with biases), the gates' sum 4, three
  sigmoids 3 x 4 = 12, two tanh 2, three products 3, the cell update's add 1: ``22 + 8``.

Backward (``mkldnn_rnn_layer_backward``): the fused kernel computes every gradient, of the input,
the hidden state, both weights and the bias: ``2 x`` the forward MACs, and per hidden unit the
cell's backward: the incoming hidden gradients' add 1, ``do = dh tanh(c)`` 1, ``dh o`` 1, tanh
backward 3 and its add 1, the four products ``di, dg, df, dc_prev`` 4, three sigmoid backwards 9
and one tanh backward 3: 23; and the bias gradient, a sum over ``T x B`` of the ``G`` gate
gradients: 4. The cell loop a meta run records skips the gradients nobody asked for (the first
layer's input, the initial hidden state), so a training step of an LSTM counts up to
``T B G H (I + H)`` fewer MACs per layer on meta than the fused kernel does on CPU; see
``docs/counting.md``.
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

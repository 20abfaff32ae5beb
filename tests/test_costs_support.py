"""Helpers shared by the cost-rule tests (this module holds no tests).

``events_of(fn)`` runs ``fn`` under a bare capture (the dispatch-mode recorder alone, without the
``F.scaled_dot_product_attention`` interception and without module hooks), so that tests see the
aten ops PyTorch really dispatches, e.g. ``aten._native_multi_head_attention`` on the fast path or
``aten._scaled_dot_product_flash_attention_for_cpu``. ``synthetic(overload, ...)`` builds an
:class:`OpEvent` for an op that cannot run here (CUDA-only kernels) with the op's real schema.
"""

from __future__ import annotations

from typing import Any

import torch

from modelmeter.capture.events import OpEvent, TensorMeta
from modelmeter.capture.tracer import _Recorder, _State
from modelmeter.costs import Cost, cost_of


def events_of(fn, *args: Any, **kwargs: Any) -> list[OpEvent]:
    st = _State({}, {})
    with _Recorder(st):
        fn(*args, **kwargs)
    return st.events


def only(events: list[OpEvent], op: str) -> OpEvent:
    """The single event whose op name starts with ``op``."""
    found = [e for e in events if e.op == op or e.op.startswith(op + ".")]
    assert len(found) == 1, f"expected one {op}, got {[e.op for e in events]}"
    return found[0]


def cost(ev: OpEvent) -> Cost:
    c, counted = cost_of(ev)
    assert counted, f"{ev.op} is not counted"
    return c


def cost_of_call(op: str, fn, *args: Any, **kwargs: Any) -> Cost:
    """Run ``fn`` under the bare capture and return the cost of its single ``op`` event."""
    return cost(only(events_of(fn, *args, **kwargs), op))


def meta(t: torch.Tensor) -> TensorMeta:
    return TensorMeta.of(t)


def tm(*shape: int, dtype: torch.dtype = torch.float32) -> TensorMeta:
    """A TensorMeta of a fresh tensor (no storage sharing with anything)."""
    return TensorMeta(tuple(shape), dtype, "meta", 0, 0)


def _conv(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return TensorMeta.of(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_conv(y) for y in x)
    return x


def _flat(x: Any, out: list[TensorMeta]) -> None:
    if isinstance(x, TensorMeta):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for y in x:
            _flat(y, out)


def synthetic(overload: Any, *args: Any, outputs: tuple = (), **kwargs: Any) -> OpEvent:
    """An event for ``overload(*args, **kwargs)`` without running it: tensors become TensorMeta."""
    margs = tuple(_conv(a) for a in args)
    mkw = {k: _conv(v) for k, v in kwargs.items()}
    inputs: list[TensorMeta] = []
    _flat(margs, inputs)
    _flat(list(mkw.values()), inputs)
    outs: list[TensorMeta] = []
    _flat(_conv(outputs), outs)
    return OpEvent(index=0, op=str(overload), module="", phase="forward", args=margs, kwargs=mkw,
                   inputs=tuple(inputs), outputs=tuple(outs), overload=overload)


def nbytes(*shapes: tuple[int, ...], itemsize: int = 4) -> int:
    total = 0
    for s in shapes:
        n = 1
        for d in s:
            n *= d
        total += n * itemsize
    return total

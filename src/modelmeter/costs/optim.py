"""Optimizer steps: the multi-tensor ``_foreach_*`` ops and the fused optimizer kernels.

``torch.optim`` runs an update as per-tensor elementwise ops (``foreach=False``), as ``_foreach_*``
ops over lists of tensors (``foreach=True``, the default on CUDA), or as one fused kernel
(``fused=True``). All three cost the same per parameter element:

* ``_foreach_OP`` / ``_foreach_OP_``: the elementwise cost of ``OP`` (see :mod:`.elementwise`, with
  the same ``alpha``/``value`` rules; a list of scalars counts as a scale != 1) x the elements of
  ``self``. ``_foreach_norm``: 2 per element (|x|^p, accumulate), ``_foreach_max``: 1,
  ``_foreach_mm``: the MACs of each product. ``_foreach_copy_``/``_foreach_zero_``/``_foreach_clone``
  do no arithmetic.
* ``_fused_adam(w)_`` per element: ``exp_avg.lerp_(g, 1 - b1)`` 3, ``exp_avg_sq.mul_(b2)
  .addcmul_(g, g, value=1 - b2)`` 4, ``denom = sqrt(exp_avg_sq) / bc2 + eps`` 3,
  ``p.addcdiv_(exp_avg, denom, value=-step)`` 3 = 13; weight decay adds 2 for Adam
  (``g + wd * p``) and 1 for AdamW (``p * (1 - lr * wd)``); ``amsgrad`` 1 (a maximum),
  ``maximize`` 1 (a negation). The same as the ``foreach=False`` sequence counted op by op.
* ``_fused_sgd_``: ``p.add_(g, alpha=-lr)`` 2; weight decay 2; momentum after the first step
  ``buf.mul_(m).add_(g, alpha=1 - dampening)`` 2 (3 with dampening); nesterov 2; maximize 1.
* ``_fused_adagrad_``: ``sum.addcmul_(g, g)`` 2, ``sqrt(sum) + eps`` 2,
  ``p.addcdiv_(g, std, value=-clr)`` 3 = 7; weight decay 2; maximize 1.

Bytes: every tensor read once; written: for ``_foreach_*_`` the tensors of ``self`` (the registry
reads the mutated arguments from the op's schema, as these ops return nothing); for the fused
kernels the parameters and the optimizer state they update (not the gradients, which the schema
marks as mutable only for unscaling with a ``grad_scale``).
"""

from __future__ import annotations

from typing import Any

from ..capture.events import OpEvent, TensorMeta
from .elementwise import ELEMENTWISE_FLOPS
from .registry import Cost, arguments, op_exists, register_no_arithmetic, register_rule


def _numel(xs: Any) -> int:
    if isinstance(xs, TensorMeta):
        return xs.numel
    if isinstance(xs, (list, tuple)):
        return sum(_numel(x) for x in xs)
    return 0


def _not_one(x: Any) -> bool:
    if x is None:
        return False
    if isinstance(x, (list, tuple)):  # a ScalarList (or Tensor list): scales in general
        return True
    if isinstance(x, TensorMeta):
        return True
    return x != 1


def _make_foreach(name: str, per: int):
    def rule(ev: OpEvent) -> Cost:
        a = arguments(ev)
        p = per
        if name in ("add", "sub") and _not_one(a.get("alpha")):
            p += 1
        if name in ("addcmul", "addcdiv") and (_not_one(a.get("value")) or _not_one(a.get("scalars"))):
            p += 1
        return Cost(flops=p * _numel(a.get("self")))

    rule.__name__ = f"foreach_{name}"
    rule.__doc__ = f"_foreach_{name}: {per} FLOP(s) per element of self."
    return rule


for _name, _per in ELEMENTWISE_FLOPS.items():
    _ops = [op for op in (f"aten._foreach_{_name}", f"aten._foreach_{_name}_") if op_exists(op)]
    if _ops:
        register_rule(*_ops)(_make_foreach(_name, _per))

register_no_arithmetic("aten._foreach_copy", "aten._foreach_copy_", "aten._foreach_zero", "aten._foreach_zero_",
                       "aten._foreach_clone")


@register_rule("aten._foreach_max")
def foreach_max(ev: OpEvent) -> Cost:
    # one comparison per element of each tensor
    return Cost(flops=_numel(arguments(ev).get("self")))


@register_rule("aten._foreach_norm", "aten._foreach_powsum")
def foreach_norm(ev: OpEvent) -> Cost:
    # |x|^p and accumulate
    return Cost(flops=2 * _numel(arguments(ev).get("self")))


@register_rule("aten._foreach_mm")
def foreach_mm(ev: OpEvent) -> Cost:
    a = arguments(ev)
    macs = 0
    for x, w in zip(a["self"], a["mat2"]):
        macs += x.shape[0] * x.shape[1] * w.shape[1]
    return Cost.of_macs(macs)


ADAM_FLOPS = 13


def _bytes(*xs: Any) -> int:
    total = 0
    for x in xs:
        if isinstance(x, TensorMeta):
            total += x.nbytes
        elif isinstance(x, (list, tuple)):
            total += _bytes(*x)
    return total


def _fused_cost(ev: OpEvent, a: dict[str, Any], per: int, state: tuple[str, ...]) -> Cost:
    """Read every tensor argument; write the parameters, the state lists and (with a grad_scale) the
    gradients. The functional forms (no trailing underscore) return new tensors instead."""
    read = sum(t.nbytes for t in ev.inputs)
    if ev.outputs:
        written = sum(t.nbytes for t in ev.outputs)
    else:
        written = _bytes(a.get("self"), *(a.get(n) for n in state))
        if isinstance(a.get("grad_scale"), TensorMeta):
            written += _bytes(a.get("grads"))
    return Cost(0, per * _numel(a["self"]), read, written)


@register_rule("aten._fused_adam", "aten._fused_adam_", "aten._fused_adamw", "aten._fused_adamw_")
def fused_adam(ev: OpEvent) -> Cost:
    a = arguments(ev)
    per = ADAM_FLOPS
    wd = a.get("weight_decay") or 0
    if wd:
        per += 1 if ev.packet.startswith("aten._fused_adamw") else 2
    if a.get("amsgrad"):
        per += 1
    if a.get("maximize"):
        per += 1
    return _fused_cost(ev, a, per, ("exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"))


@register_rule("aten._fused_sgd", "aten._fused_sgd_")
def fused_sgd(ev: OpEvent) -> Cost:
    a = arguments(ev)
    per = 2
    if a.get("weight_decay"):
        per += 2
    if a.get("momentum"):
        if not a.get("is_first_step"):
            per += 3 if a.get("dampening") else 2
        if a.get("nesterov"):
            per += 2
    if a.get("maximize"):
        per += 1
    return _fused_cost(ev, a, per, ("momentum_buffer_list",))


@register_rule("aten._fused_adagrad", "aten._fused_adagrad_")
def fused_adagrad(ev: OpEvent) -> Cost:
    a = arguments(ev)
    per = 7 + (2 if a.get("weight_decay") else 0) + (1 if a.get("maximize") else 0)
    return _fused_cost(ev, a, per, ("state_sums",))

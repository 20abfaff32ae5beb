"""Real values of the small meta tensors whose values a meta run can know.

A meta tensor has a shape and no values, so a model that reads one (``if mask.any():``,
``n = lengths.max().item()``, ``x[mask]``) cannot be followed exactly on meta. Most such reads,
though, are of tensors whose values do not depend on the weights: the token ids and attention mask
the user passed, a ``torch.ones``/``arange`` mask the model builds itself, a ``position_ids`` buffer,
and what is computed from those. A meta run keeps those values beside their meta tensors: every op
whose tensor arguments all have known values, and are small, is also run on CPU, and its outputs'
values are kept. A read of a known value is answered with it (no assumption, nothing noted), and an
op whose output size depends on values (``nonzero``, ``masked_select``, ``x[mask]``, ``unique``) gets
the size a real run gets. Everything else is as before: a read of an unknown value (anything that
depends on the weights, or on random numbers) is answered True/0 and listed in the report.

What has a known value:

* the inputs the user passed and the model's buffers, when they hold real values and are small;
* CPU tensors handed to a meta op (a 0-dim scalar);
* the outputs of an op whose tensor arguments all have known values, when the op is deterministic
  (no random-number ops, which would also draw from the user's generator) and does not leave its
  output uninitialized (``empty``);
* a tensor written in place keeps its value only when the write is known too; otherwise it, and
  every tensor sharing its storage, is unknown from then on.

"Small" is at most :data:`MAX_ELEMENTS` elements per tensor, so that the CPU side costs little next to
the meta run and a model's activations never qualify. Parameters are never used.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_unflatten

#: the largest tensor whose values are kept (1 Mi elements: 4 MiB at fp32, a 64 x 16,384 attention mask)
MAX_ELEMENTS = 1 << 20

_META = torch.device("meta")
_CPU = torch.device("cpu")
_LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default
_INDEX_OPS = frozenset({torch.ops.aten.index.Tensor, torch.ops.aten._unsafe_index.Tensor, torch.ops.aten.index_put.default,
                        torch.ops.aten.index_put_.default, torch.ops.aten._index_put_impl_.default})
_MASKED_SELECT = torch.ops.aten.masked_select.default
_MASK_DTYPES = (torch.bool, torch.uint8)
#: ops whose output holds no values (uninitialized memory): never run on known values
NO_VALUE_OPS = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
                          "empty_permuted", "resize_", "set_"})


class _Unknown(Exception):
    """An argument whose value is not known: the op runs on meta alone."""


def _meta_like(x: Any) -> Any:
    """Meta tensors shaped and strided like the CPU results (other values as they are)."""
    leaves, spec = tree_flatten(x)
    return tree_unflatten(
        [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=_META) if isinstance(t, torch.Tensor) else t
         for t in leaves], spec)


class KnownValues:
    """The CPU values of a meta run's small tensors whose values are known (see the module's doc)."""

    def __init__(self) -> None:
        # id(meta tensor) -> (a weak reference to it, its value); an entry leaves when its tensor dies
        # (and whether the value is still the caller's own tensor, to be copied when first used)
        self._values: dict[int, tuple[weakref.ref, torch.Tensor, bool]] = {}
        # storages written with unknown values, by data pointer; the tensors are held so that the
        # pointer is not reused while the run lasts
        self._stale: dict[int, torch.Tensor] = {}

    def add(self, meta: torch.Tensor, value: torch.Tensor) -> None:
        """Know ``meta``'s value: a real tensor of the caller's (an input, a buffer), never written to.

        It is copied to CPU when first used (most buffers never are: batch norm's statistics meet
        activations), so that an in-place op on the copy leaves the caller's tensor as it was."""
        if value.is_meta or value.numel() > MAX_ELEMENTS or value.shape != meta.shape:
            return
        if value.is_cpu and value.dtype == meta.dtype:
            self._keep(meta, value.detach(), borrowed=True)
        else:
            self._keep(meta, value.detach().to(_CPU, dtype=meta.dtype, copy=True))

    def add_from_data(self, meta: torch.Tensor, func: Any, args: tuple, kwargs: dict) -> None:
        """Know the value of ``torch.tensor(data, device="meta")`` (or ``as_tensor``/``asarray``): the
        same call made on CPU, when the data holds no tensor."""
        if meta.numel() > MAX_ELEMENTS or any(isinstance(x, torch.Tensor) for x in tree_flatten((args, kwargs))[0]):
            return
        with _disable_current_modes():
            try:
                value = func(*args, **{**kwargs, "device": _CPU})
            except Exception:  # noqa: BLE001 - then the value is simply not known
                return
        if isinstance(value, torch.Tensor) and value.shape == meta.shape and value.dtype == meta.dtype:
            self._keep(meta, value)

    def _keep(self, meta: torch.Tensor, value: torch.Tensor, borrowed: bool = False) -> None:
        key, values = id(meta), self._values

        def forget(ref: weakref.ref) -> None:
            entry = values.get(key)
            if entry is not None and entry[0] is ref:
                del values[key]

        values[key] = (weakref.ref(meta, forget), value, borrowed)

    def get(self, t: torch.Tensor) -> torch.Tensor | None:
        """``t``'s value on CPU, or None when it is not known."""
        if not t.is_meta:
            return t if t.numel() <= MAX_ELEMENTS else None
        entry = self._values.get(id(t))
        if entry is None or entry[0]() is not t:
            return None
        v = entry[1]
        if entry[2]:  # the caller's tensor: copied before anything can write to it
            with _disable_current_modes():  # called while an op is dispatched: no mode is to see the copy
                v = v.clone()
            self._values[id(t)] = (entry[0], v, False)
        if self._stale and v.untyped_storage().data_ptr() in self._stale:
            return None
        return v

    def _may_know(self, args: tuple) -> bool:
        """False when a top-level tensor argument is a meta tensor without a value (the common case: an
        activation or a weight), before any conversion."""
        values = self._values
        for a in args:
            if isinstance(a, torch.Tensor) and a.is_meta and id(a) not in values:
                return False
        return True

    # -- one op ---------------------------------------------------------------------------------
    def _to_cpu(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            v = self.get(x)
            if v is None:
                raise _Unknown
            return v
        if isinstance(x, torch.device):
            return _CPU if x.type == "meta" else x
        if isinstance(x, (list, tuple)):
            items = [self._to_cpu(y) for y in x]
            return items if isinstance(x, list) else tuple(items)
        if isinstance(x, dict):
            return {k: self._to_cpu(v) for k, v in x.items()}
        return x

    def dispatch(self, func: Any, plan: Any, args: tuple, kwargs: dict | None, unknown: Any) -> tuple[Any, bool]:
        """Run ``func`` on meta, and on CPU too when its arguments' values are known.

        ``plan`` is the capture's per-op plan (``tracer._OpPlan``: ``evaluable``, ``written``).
        ``unknown(func, args, kwargs)`` runs the op on meta alone (answering a data-dependent read without a
        value). Returns the meta result and whether the values were known (the result, a read's answer
        and an output's size are then those of a real run).
        """
        kwargs = kwargs or {}
        written = plan.written
        cpu_args: Any = None
        if plan.evaluable and self._may_know(args):
            try:
                cpu_args = self._to_cpu(args), self._to_cpu(kwargs)
            except _Unknown:
                cpu_args = None
            if cpu_args is not None and written and any(
                    isinstance(t, torch.Tensor) and not t.is_meta for t in _written(written, args, kwargs)):
                cpu_args = None  # never write into a real tensor the model (or the user) holds
        if cpu_args is None:
            self._forget_written(written, args, kwargs)
            shaped = self._known_mask(func, args, kwargs)
            if shaped is not None:
                return shaped, True
            return unknown(func, args, kwargs), False
        if func is _LOCAL_SCALAR:
            return _on_cpu(func, cpu_args), True
        try:
            out = func(*args, **kwargs)
            failed: BaseException | None = None
        except Exception as exc:  # noqa: BLE001 - no meta kernel, or an output size that needs values
            out, failed = None, exc
        if failed is None and _too_big(out):
            self._forget_written(written, args, kwargs)
            return out, False
        try:
            value = _on_cpu(func, cpu_args)
        except Exception:  # noqa: BLE001 - the CPU kernel refuses what meta accepted: values unknown
            if failed is not None:
                raise failed from None
            self._forget_written(written, args, kwargs)
            return out, False
        if failed is not None or (not written and _shapes(out) != _shapes(value)):
            if written or _too_big(value):
                if failed is not None:
                    raise failed
                self._forget_written(written, args, kwargs)
                return out, False
            out = _meta_like(value)  # the size a real run gets (nonzero, x[mask], unique)
        for m, v in zip(tree_flatten(out)[0], tree_flatten(value)[0]):
            if isinstance(m, torch.Tensor) and isinstance(v, torch.Tensor) and m.is_meta and not v.is_meta \
                    and m.shape == v.shape and m.dtype == v.dtype:
                self._keep(m, v)
        return out, True

    def _known_mask(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """``x[mask]``, ``x[mask] = v`` and ``masked_select(x, mask)`` of unknown ``x`` and a known mask:
        run on meta with the mask's selected positions, which is what the kernel does with a mask, so
        that the output has the real size (None when there is no known mask)."""
        if func in _INDEX_OPS and len(args) > 1 and isinstance(args[1], (list, tuple)):
            indices, changed = [], False
            for i in args[1]:
                v = self.get(i) if isinstance(i, torch.Tensor) and i.dtype in _MASK_DTYPES else None
                if v is None:
                    indices.append(i)
                else:
                    with _disable_current_modes():  # one long index per dimension of the mask
                        indices.extend(v.nonzero(as_tuple=True))
                    changed = True
            if changed:
                return func(args[0], indices, *args[2:], **kwargs)
        elif func is _MASKED_SELECT and len(args) == 2:
            v = self.get(args[1])
            if v is not None:
                shape = torch.broadcast_shapes(args[0].shape, v.shape)
                with _disable_current_modes():
                    n = int(v.expand(shape).count_nonzero())
                return torch.empty(n, dtype=args[0].dtype, device=_META)
        return None

    def _forget_written(self, written: tuple[tuple[int, str], ...], args: tuple, kwargs: dict | None) -> None:
        """Tensors written with unknown values: their storage's known values are stale."""
        if not written or not self._values:
            return
        for t in _written(written, args, kwargs or {}):
            if not (isinstance(t, torch.Tensor) and t.is_meta):
                continue
            entry = self._values.get(id(t))
            if entry is None or entry[0]() is not t:
                continue
            if entry[2]:  # still the caller's tensor: nothing shares a copy of it yet, so just forget it
                del self._values[id(t)]
            else:
                self._stale[entry[1].untyped_storage().data_ptr()] = entry[1]


def _on_cpu(func: Any, cpu_args: tuple[Any, dict]) -> Any:
    """The op on the known values, seen by no dispatch mode (the CPU side is not part of the run)."""
    with _disable_current_modes():
        return func(*cpu_args[0], **cpu_args[1])


def _written(written: tuple[tuple[int, str], ...], args: tuple, kwargs: dict) -> list[Any]:
    found = []
    for i, name in written:
        x = kwargs.get(name) if name in kwargs else (args[i] if i < len(args) else None)
        found.extend(x if isinstance(x, (list, tuple)) else [x])
    return found


def _shapes(x: Any) -> list[Any]:
    return [t.shape if isinstance(t, torch.Tensor) else type(t) for t in tree_flatten(x)[0]]


def _too_big(x: Any) -> bool:
    return any(isinstance(t, torch.Tensor) and t.numel() > MAX_ELEMENTS for t in tree_flatten(x)[0])

"""Storage lifetimes: when each tensor storage is allocated and when its last reference dies.

:class:`LifetimeTracker` is a capture observer (``run_capture(..., observers=[tracker])``): the
capture calls it with every :class:`OpEvent` right after the op ran, while the op's input and output
tensors are still referenced. The tracker takes a weak reference to every storage it has not seen
yet; when the storage's ``StorageImpl`` is destroyed (its last tensor, view or autograd saved-variable
reference died) the weak reference fires and the tracker notes the death. Deaths are collected at the
next event (they happened between the two ops) and once more at the end of the run, so ``released``
of an event lists the storages that died after it and before the next op.

Two mechanisms are offered, with identical results (a test checks it):

* ``"callback"`` (default): a Python ``weakref`` with a callback on the storage's Python object.
  PyTorch keeps a storage's Python object alive exactly as long as its ``StorageImpl`` (PyObject
  preservation), so the callback runs when the storage dies. Cost: O(1) per storage.
* ``"poll"``: a ``torch.multiprocessing.reductions.StorageWeakRef`` (a weak reference to the
  ``StorageImpl`` itself) per live storage, checked for expiry at every event. Cost: O(live storages)
  per event; kept as an independent cross-check.

Both work on meta tensors (no data, a ``StorageImpl`` with a size) and on real tensors alike.

Storages first seen as inputs (parameters, buffers, the model's inputs, tensors built before the
run, and outputs of fused ops whose inner kernels the capture does not record) are tracked from that
point: the analysis dates parameters, buffers and inputs from the start of the run, and an output of
``modelmeter.sdpa`` from that event (its ``created`` field is filled after the observers ran).

The capture records scaled-dot-product attention as one fused event and does not pass its inner
kernels to observers. With :class:`InnerStorages` (a dispatch mode entered below the capture) the
tracker also sees the storages those kernels create and keep, e.g. the attention weights the math
kernel saves for backward; without it, attention costs what a fused kernel keeps (its output).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .events import OpEvent, TensorMeta
from .tracer import FUSED_KEY

#: synthetic events recorded by the capture around fused attention
_SDPA = "modelmeter.sdpa"
_SDPA_BACKWARD = "modelmeter.sdpa_backward"
#: every op the capture records as one event around kernels it does not record (attention, recurrent
#: layers): their outputs are filled after the observers ran, their backward's gradients made inside
_FUSED = frozenset({_SDPA, "modelmeter.rnn"})
_FUSED_BACKWARD = frozenset({_SDPA_BACKWARD, "modelmeter.rnn_backward"})


@dataclass(slots=True)
class StorageRecord:
    """One storage's life. ``start`` is the event that allocated it (-1: before the run); ``end`` the
    last event it was alive after (None: alive when the run ended)."""

    key: int
    nbytes: int
    start: int
    end: int | None
    op: str  # the op that created it ("" when it existed before the run)
    module: str
    phase: str
    shape: tuple[int, ...]
    dtype: str
    seen_as: str  # "output"; "input" (first seen as an input: made outside recorded ops); "inner" (inside a fused op)
    # position inside the start / end event, for storages made or freed by the kernels of a fused op:
    # step 0 is the op itself, steps 1.. its inner kernel calls; END_SUB = until the event is over
    start_sub: int = 0
    end_sub: int = 1 << 62


END_SUB = 1 << 62


class LifetimeTracker:
    """Observer that records the lifetime of every storage an op reads or writes.

    Call :meth:`finish` once the captured run returned, then read :attr:`records`.
    """

    def __init__(self, mode: str = "callback", *, fused_attention: bool = True) -> None:
        if mode not in ("callback", "poll"):
            raise ValueError(f"mode must be 'callback' or 'poll', not {mode!r}")
        self.mode = mode
        # hold what a fused attention kernel saves for backward (q, k, v, out) until its backward runs,
        # whatever kernel really ran underneath (off when the inner kernels are tracked as they run)
        self.fused_attention = fused_attention
        self._held: dict[int, list[Any]] = {}  # id(TensorMeta of an sdpa output) -> storages held
        self._held_fwd: tuple[OpEvent, list[Any]] | None = None  # an sdpa event whose output is not held yet
        self.records: list[StorageRecord] = []
        self.events: list[OpEvent] = []
        self._live: dict[int, int] = {}  # storage key -> slot of the live StorageImpl at that address
        self._refs: dict[int, Any] = {}  # slot -> weak reference
        self._slot_record: dict[int, int] = {}  # slot -> its current record (a resize opens a new one)
        self._died: list[int] = []  # slots whose storage died since the last check (callback mode)
        self._pending_sdpa: OpEvent | None = None  # an sdpa event whose outputs were filled after it
        self._sdpa_outputs: dict[int, int] = {}  # storage key -> index of the sdpa event that made it
        self._last_sdpa_backward: int | None = None
        self._fused_backward: OpEvent | None = None  # the last fused op's backward event seen
        self._inner_pending: list[int] = []  # slots opened by inner() since the last event
        self._sub = 0  # inner kernel calls since the last event
        self._next_slot = 0
        self._finished = False

    # -- observer -----------------------------------------------------------------------------
    def __call__(self, ev: OpEvent) -> None:
        self.events.append(ev)
        i = ev.index
        if self._died or self.mode == "poll":
            self._collect(i - 1)
        self._sub = 0
        if self._inner_pending:
            self._claim(ev)
        if self._pending_sdpa is not None:
            sd = self._pending_sdpa
            for t in sd.outputs:
                slot = self._live.get(t.storage_key)
                if slot is None:
                    self._sdpa_outputs[t.storage_key] = sd.index
                else:  # made by an inner kernel, already tracked: name it after the fused op
                    rec = self.records[self._slot_record[slot]]
                    if rec.seen_as == "inner" and rec.start == sd.index:
                        rec.op, rec.seen_as = sd.op, "output"
            self._pending_sdpa = None
        if ev.op in _FUSED:
            # its output does not exist yet when observers run: picked up at the next event
            self._pending_sdpa = ev
            if ev.op == _SDPA and self.fused_attention and torch.is_grad_enabled() and any(t.requires_grad for t in ev.inputs[:3]):
                held = [torch.UntypedStorage._new_with_weak_ptr(t.storage_key) for t in ev.inputs[:3]]
                self._held_fwd = (ev, [h for h in held if h is not None])
            return
        if self._held_fwd is not None:
            self._hold_output()
        if ev.op in _FUSED_BACKWARD:
            # metadata copied from the forward call: the gradients it makes are seen when used
            self._last_sdpa_backward = i
            self._fused_backward = ev
            if ev.inputs:
                self._held.pop(id(ev.inputs[-1]), None)  # the forward's output: release what it saved
            return
        live = self._live
        for t in ev.inputs:
            if t.storage_key not in live:
                self._first_seen_input(t, ev)
        for t in ev.outputs:
            slot = live.get(t.storage_key)
            if slot is None:
                self._open(t, i, ev.op, ev.module, ev.phase, "output")
            elif self.records[self._slot_record[slot]].nbytes != t.storage_nbytes:
                # the storage was resized in place (e.g. an out= op): the old size ends before this op
                self._end_record(self._slot_record[slot], i - 1)
                self._slot_record[slot] = self._new_record(t, i, ev.op, ev.module, ev.phase, "output")

    def inner(self, op: str, args: Any, out: Any) -> None:
        """Called by :class:`InnerStorages` with every aten call's result, recorded or not.

        Storages not seen yet are tracked from now on, dated at the last recorded event; the next
        event claims the ones that are its outputs. The rest were made inside a fused op the capture
        records as one event (``modelmeter.sdpa`` and its backward): they keep that event's date.
        """
        if not self.events or self._finished:
            return
        if self.fused_attention and self.events[-1].op in (_SDPA, _SDPA_BACKWARD):
            return  # attention's kernels stand for a fused kernel's (held q, k, v, out), not their own
        self._sub += 1
        if self._died or self.mode == "poll":
            # died before this kernel ran (a dead storage's address may be reused right now)
            self._collect(len(self.events) - 1, self._sub - 1)
        last = self.events[-1]
        # named after the op whose kernel made it: in backward, the fused op whose autograd node runs
        # (other ops, e.g. a gradient accumulated, may have been recorded since its backward began)
        label = last
        if self._fused_backward is not None and last.phase == "backward":
            node = torch._C._current_autograd_node()
            if node is not None and FUSED_KEY in node.metadata:
                label = self._fused_backward
        skip = {t.untyped_storage()._cdata for t in _tensors(args)}
        for t in _tensors(out):
            st = t.untyped_storage()
            if st._cdata in self._live or st._cdata in skip:
                continue
            meta = TensorMeta(shape=tuple(t.shape), dtype=t.dtype, device=t.device.type, storage_key=st._cdata,
                              storage_nbytes=st.nbytes())
            slot = self._open(meta, len(self.events) - 1, f"{op} (inside {label.op})", label.module, label.phase,
                              "inner", storage=st)
            self.records[self._slot_record[slot]].start_sub = self._sub
            self._inner_pending.append(slot)

    def _claim(self, ev: OpEvent) -> None:
        pending = set(self._inner_pending)
        self._inner_pending.clear()
        if ev.op in _FUSED_BACKWARD:
            # its first inner op ran before the capture emitted this event: date them all here
            for slot in pending:
                rid = self._slot_record.get(slot)
                if rid is not None:
                    rec = self.records[rid]
                    rec.start, rec.start_sub = ev.index, 0
                    rec.op = rec.op.rsplit(" (inside ", 1)[0] + f" (inside {ev.op})"
                    rec.module, rec.phase = ev.module, ev.phase
            return
        for t in ev.outputs:
            slot = self._live.get(t.storage_key)
            if slot in pending:
                rid = self._slot_record.get(slot)
                if rid is not None:
                    rec = self.records[rid]
                    rec.start, rec.op, rec.module, rec.phase, rec.seen_as = ev.index, ev.op, ev.module, ev.phase, "output"
                    rec.start_sub = 0

    def _hold_output(self) -> None:
        fwd, held = self._held_fwd  # type: ignore[misc]
        self._held_fwd = None
        if not fwd.outputs:
            return
        slot = self._live.get(fwd.outputs[0].storage_key)
        ref = self._refs.get(slot) if slot is not None else None
        if ref is not None:
            st = ref() if self.mode == "callback" else torch.UntypedStorage._new_with_weak_ptr(ref.cdata)
            if st is not None:
                held.append(st)
        self._held[id(fwd.outputs[0])] = held

    def finish(self) -> list[StorageRecord]:
        """Collect deaths after the last op. Storages still alive keep ``end=None``."""
        self._held.clear()
        self._held_fwd = None
        if not self._finished:
            self._collect(len(self.events) - 1)
            self._finished = True
        return self.records

    # -- internals ----------------------------------------------------------------------------
    def _first_seen_input(self, t: TensorMeta, ev: OpEvent) -> None:
        start = self._sdpa_outputs.pop(t.storage_key, None)
        if start is None and ev.phase == "backward" and self._last_sdpa_backward is not None:
            start = self._last_sdpa_backward  # a gradient made inside a fused attention backward
        if start is not None:
            src = self.events[start]
            self._open(t, start, src.op, src.module, src.phase, "output")
        elif ev.op.startswith("aten.lift_fresh"):
            # torch.tensor(...) builds its data outside the dispatcher, then lifts it: created here
            self._open(t, ev.index, ev.op, ev.module, ev.phase, "output")
        else:
            self._open(t, -1, "", "", "", "input")

    def _new_record(self, t: TensorMeta, start: int, op: str, module: str, phase: str, seen_as: str) -> int:
        self.records.append(StorageRecord(
            key=t.storage_key, nbytes=t.storage_nbytes, start=start, end=None, op=op, module=module,
            phase=phase, shape=t.shape, dtype=str(t.dtype).replace("torch.", ""), seen_as=seen_as,
        ))
        return len(self.records) - 1

    def _open(self, t: TensorMeta, start: int, op: str, module: str, phase: str, seen_as: str,
              storage: Any = None) -> int:
        # the running op still references the tensor, so its StorageImpl is alive: lock it by address
        st = storage if storage is not None else torch.UntypedStorage._new_with_weak_ptr(t.storage_key)
        if st is None:  # pragma: no cover - cannot happen for a tensor the op still holds
            return -1
        slot = self._next_slot
        self._next_slot += 1
        self._slot_record[slot] = self._new_record(t, start, op, module, phase, seen_as)
        self._live[t.storage_key] = slot
        if self.mode == "callback":
            died = self._died
            self._refs[slot] = weakref.ref(st, lambda _r, slot=slot: died.append(slot))
        else:
            from torch.multiprocessing.reductions import StorageWeakRef

            self._refs[slot] = StorageWeakRef(st)
        return slot

    def _end_record(self, rid: int, end: int, end_sub: int = END_SUB) -> None:
        rec = self.records[rid]
        rec.end = end
        rec.end_sub = end_sub
        if 0 <= end < len(self.events):
            ev = self.events[end]
            if not ev.released:
                ev.released = []
            ev.released.append(rec.key)

    def _collect(self, end: int, end_sub: int = END_SUB) -> None:
        """Close every storage that died since the last call: it was last alive after event ``end``."""
        if self.mode == "poll":
            dead = [slot for slot, ref in self._refs.items() if ref.expired()]
        else:
            if not self._died:
                return
            dead = self._died[:]
            self._died.clear()  # the same list object: the callbacks hold it
        for slot in dead:
            del self._refs[slot]
            rid = self._slot_record.pop(slot)
            rec = self.records[rid]
            if self._live.get(rec.key) == slot:
                del self._live[rec.key]
            self._end_record(rid, end, end_sub)


class InnerStorages(TorchDispatchMode):
    """A dispatch mode entered *below* the capture's recorder (enter it before the capture starts).

    The recorder passes every aten call down to it, including the kernels inside fused ops it records
    as one event (scaled-dot-product attention and its backward); their results go to
    :meth:`LifetimeTracker.inner`, so storages those kernels keep (attention weights saved for backward
    by the math kernel, the log-sum-exp of a flash kernel) are tracked too.
    """

    def __init__(self, tracker: LifetimeTracker) -> None:
        super().__init__()
        self.tracker = tracker

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.tracker.inner(str(func), (args, kwargs), out)
        return out


def _tensors(x: Any) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(x) if isinstance(t, torch.Tensor) and t.layout == torch.strided]


__all__ = ["InnerStorages", "LifetimeTracker", "StorageRecord", "END_SUB"]

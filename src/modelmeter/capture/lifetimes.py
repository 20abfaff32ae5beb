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
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch

from .events import OpEvent, TensorMeta

#: synthetic events recorded by the capture around fused attention
_SDPA = "modelmeter.sdpa"
_SDPA_BACKWARD = "modelmeter.sdpa_backward"


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
    seen_as: str  # "output" or "input" (first seen as an input: created outside recorded ops)


class LifetimeTracker:
    """Observer that records the lifetime of every storage an op reads or writes.

    Call :meth:`finish` once the captured run returned, then read :attr:`records`.
    """

    def __init__(self, mode: str = "callback") -> None:
        if mode not in ("callback", "poll"):
            raise ValueError(f"mode must be 'callback' or 'poll', not {mode!r}")
        self.mode = mode
        self.records: list[StorageRecord] = []
        self.events: list[OpEvent] = []
        self._live: dict[int, int] = {}  # storage key -> slot of the live StorageImpl at that address
        self._refs: dict[int, Any] = {}  # slot -> weak reference
        self._slot_record: dict[int, int] = {}  # slot -> its current record (a resize opens a new one)
        self._died: list[int] = []  # slots whose storage died since the last check (callback mode)
        self._pending_sdpa: OpEvent | None = None  # an sdpa event whose outputs were filled after it
        self._sdpa_outputs: dict[int, int] = {}  # storage key -> index of the sdpa event that made it
        self._last_sdpa_backward: int | None = None
        self._next_slot = 0
        self._finished = False

    # -- observer -----------------------------------------------------------------------------
    def __call__(self, ev: OpEvent) -> None:
        self.events.append(ev)
        i = ev.index
        if self._died or self.mode == "poll":
            self._collect(i - 1)
        if self._pending_sdpa is not None:
            for t in self._pending_sdpa.outputs:
                self._sdpa_outputs[t.storage_key] = self._pending_sdpa.index
            self._pending_sdpa = None
        if ev.op == _SDPA:
            # its output does not exist yet when observers run: picked up at the next event
            self._pending_sdpa = ev
            return
        if ev.op == _SDPA_BACKWARD:
            # metadata copied from the forward call: the gradients it makes are seen when used
            self._last_sdpa_backward = i
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

    def finish(self) -> list[StorageRecord]:
        """Collect deaths after the last op. Storages still alive keep ``end=None``."""
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

    def _open(self, t: TensorMeta, start: int, op: str, module: str, phase: str, seen_as: str) -> None:
        # the running op still references the tensor, so its StorageImpl is alive: lock it by address
        st = torch.UntypedStorage._new_with_weak_ptr(t.storage_key)
        if st is None:  # pragma: no cover - cannot happen for a tensor the op still holds
            return
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

    def _end_record(self, rid: int, end: int) -> None:
        rec = self.records[rid]
        rec.end = end
        if 0 <= end < len(self.events):
            self.events[end].released.append(rec.key)

    def _collect(self, end: int) -> None:
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
            self._end_record(rid, end)


__all__ = ["LifetimeTracker", "StorageRecord"]

"""The trace: one :class:`OpEvent` per aten call, with tensor metadata only (never tensor data)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

PHASES = ("forward", "loss", "backward", "optimizer")
_tuple_new = tuple.__new__


class _TensorMetaFields(NamedTuple):
    shape: tuple[int, ...]
    dtype: torch.dtype
    device: str
    storage_key: int
    storage_nbytes: int
    requires_grad: bool = False
    numel: int = 0  # derived from shape: filled in by TensorMeta, never passed
    nbytes: int = 0  # numel x itemsize


class TensorMeta(_TensorMetaFields):
    """What a cost rule may know about a tensor: its shape, dtype and storage, never its values.

    An immutable named tuple (not a frozen dataclass): one is built for every tensor of every op, and a
    tuple is several times cheaper to build. ``numel`` and ``nbytes`` (bytes of the tensor as seen by
    an op: numel x itemsize) are worked out once when it is built: every cost rule reads them.
    Build one as ``TensorMeta(shape, dtype, device, storage_key, storage_nbytes[, requires_grad])``.
    """

    __slots__ = ()

    def __new__(cls, shape: tuple[int, ...], dtype: torch.dtype, device: str, storage_key: int,
                storage_nbytes: int, requires_grad: bool = False) -> TensorMeta:
        n = math.prod(shape)
        return _tuple_new(cls, (shape, dtype, device, storage_key, storage_nbytes, requires_grad, n, n * dtype.itemsize))

    def __getnewargs__(self) -> tuple[Any, ...]:  # pickling: the arguments of __new__, not every field
        return tuple(self[:6])

    def _replace(self, **changes: Any) -> TensorMeta:
        fields = dict(zip(self._fields[:6], self[:6]))
        fields.update(changes)
        return TensorMeta(**fields)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @classmethod
    def of(cls, t: torch.Tensor) -> TensorMeta:
        # the capture's hot path: positional arguments, the shape as the torch.Size it is (a tuple),
        # device type from flags (no torch.device object)
        try:
            st = t.untyped_storage()
        except NotImplementedError:  # no storage of its own: a sparse tensor
            return _of_sparse(cls, t)
        dev = "cpu" if t.is_cpu else ("meta" if t.is_meta else t.device.type)
        return _tuple_new(cls, (t.shape, t.dtype, dev, st._cdata, st.nbytes(), t.requires_grad, t.numel(), t.nbytes))


def _of_sparse(cls: type, t: torch.Tensor) -> TensorMeta:
    """A sparse tensor (COO, CSR, CSC, BSR, BSC), described by what it stores: ``numel`` counts the
    stored values, ``nbytes`` the values and the indices, and its storage is the values' (the one a
    lifetime tracker can follow; the indices' memory is not tracked). The shape is the dense one."""
    layout = t.layout
    if layout == torch.sparse_coo:
        values, indices = t._values(), (t._indices(),)
    elif layout in (torch.sparse_csr, torch.sparse_bsr):
        values, indices = t.values(), (t.crow_indices(), t.col_indices())
    elif layout in (torch.sparse_csc, torch.sparse_bsc):
        values, indices = t.values(), (t.ccol_indices(), t.row_indices())
    else:
        raise NotImplementedError(f"tensors of layout {layout} are not supported")
    st = values.untyped_storage()
    nbytes = values.nbytes + sum(i.nbytes for i in indices)
    return _tuple_new(cls, (t.shape, t.dtype, t.device.type, st._cdata, st.nbytes(), t.requires_grad,
                            values.numel(), nbytes))


@dataclass(slots=True)
class OpEvent:
    """One aten call as seen by the capture.

    ``args``/``kwargs`` are the call's arguments with every tensor replaced by its :class:`TensorMeta`.
    ``inputs`` are the tensors read (the flattened tensor arguments, minus ``out=``), ``outputs`` the
    tensors returned. ``created`` lists the storages this op allocated: ``(storage_key, nbytes)``,
    taken from the op's schema (each returned storage of an op whose returns alias no argument,
    unless it is one of the op's inputs' storages; ``lift_fresh``'s output, which ``torch.tensor``
    built just before), so a storage made at the address of a dead one is listed too. Empty for
    ``modelmeter.sdpa_backward``, whose outputs stand in for gradients its untraced kernels make.
    ``released`` lists storages whose last reference died right after this op (memory analysis).
    """

    index: int
    op: str
    module: str
    phase: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]
    created: tuple[tuple[int, int], ...] = ()
    released: list[int] | tuple[()] = ()  # a list once a storage is released after this op
    is_view: bool = False
    overload: Any = None  # the torch OpOverload, when there is one (None for synthetic events)

    @property
    def packet(self) -> str:
        """'aten.mm.default' -> 'aten.mm'."""
        parts = self.op.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 else self.op


@dataclass(slots=True)
class Trace:
    """Everything one captured run recorded; every analysis reads only this."""

    events: list[OpEvent]
    root_type: str
    mode: str  # "meta" or "real"
    device: str
    train: bool
    param_storages: dict[int, int] = field(default_factory=dict)  # storage_key -> nbytes
    buffer_storages: dict[int, int] = field(default_factory=dict)
    input_storages: dict[int, int] = field(default_factory=dict)
    grad_storages: set[int] = field(default_factory=set)
    optimizer_storages: set[int] = field(default_factory=set)
    input_shapes: list[list[int]] = field(default_factory=list)
    input_dtypes: list[str] = field(default_factory=list)
    dtype: str = "float32"
    output_bytes: int = 0
    settings: dict[str, Any] = field(default_factory=dict)
    # (path, parent path, module) of every module of the model that ran, called or not, parents
    # first (``named_modules()`` order): the analyses read the module tree and the parameters from
    # it instead of walking the model again (and a torch.compile wrapper's ``_orig_mod.`` prefix
    # never enters the paths)
    walk: list[tuple[str, str | None, Any]] = field(default_factory=list, repr=False)
    calls: dict[str, int] = field(default_factory=dict)  # module path -> times its forward ran

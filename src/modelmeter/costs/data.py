"""Ops that do no arithmetic: views and metadata ops, creation, copies, indexing and embedding.

They cost bytes only. Listing them here marks them as counted-with-zero-FLOPs, so they never appear
among the uncounted ops. Bytes follow what the op touches, not the full size of every tensor it is
handed:

* views and metadata ops (``view``, ``transpose``, ``_unsafe_view``, ``lift_fresh``, ``as_strided_``,
  ``resize_``, ``detach_``, profiler markers) move nothing: 0 bytes;
* ``empty*`` allocates and writes nothing: 0 bytes; ``zeros``/``ones``/``full``/``arange``/``rand*``
  (and their ``_like``/``new_`` forms) write their output and read nothing (a ``_like`` input only
  gives the shape);
* ``copy_(dst, src)`` reads ``src`` (at most its storage, when broadcast) and writes ``dst``;
  ``fill_``/``zero_`` write ``self``; ``scalar_tensor`` (a number as a 0-dim tensor) moves nothing;
* gathers (``embedding``, ``index_select``, ``gather``, ``index``, ``take``, ``take_along_dim``) read
  the indices and the gathered elements only (as many as the output holds), not the whole source
  table: an embedding lookup of 16 tokens reads 16 rows, not the vocabulary;
* in-place scatters (``index_put_``, ``scatter_``, ``index_copy_``, ``index_fill_``, ``index_add_``,
  ``scatter_add_``, ``scatter_reduce_``) read the indices and the source and write the elements they
  address (those that accumulate also read them); out-of-place forms copy ``self`` as well;
* ``embedding_bag`` writes its output and its bookkeeping (``offset2bag``, bag sizes, ``max_indices``
  for max) as computed, whatever a backend returns; ``_to_copy`` from CPU onto meta at the same dtype
  moves nothing (a CPU run's ``.to("cpu")`` dispatches no op);
* accumulating ops add one FLOP per accumulated element: ``index_put`` with ``accumulate=True``,
  ``index_add`` (2 with ``alpha != 1``), ``scatter_add``, ``scatter_reduce``,
  ``embedding_dense_backward`` (one add per grad-output element), ``embedding_bag`` (one add or
  compare per gathered element, + 1 divide per output element for ``mode="mean"``) and its backward.
"""

from __future__ import annotations

from typing import Any

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, op_exists, register_no_arithmetic, register_rule


def _aten(*names: str) -> list[str]:
    return [f"aten.{n}" for n in names if op_exists(f"aten.{n}")]


register_no_arithmetic(*_aten(
    # copies, conversions, data-dependent reads
    "to", "copy", "clone", "contiguous", "_to_dense", "_local_scalar_dense", "item",
    "is_nonzero", "equal", "is_same_size", "_has_compatible_shallow_copy_type", "_assert_async",
    "_assert_scalar", "sym_constrain_range_for_size", "_functional_assert_async", "tril", "triu",
    "tril_", "triu_", "lift_fresh_copy", "alias_copy", "detach_copy",
    # movement
    "cat", "stack", "split", "split_with_sizes", "chunk", "unbind", "repeat", "repeat_interleave", "roll",
    "flip", "constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "masked_select", "nonzero",
    "scatter", "index_put", "index_copy", "index_fill", "masked_scatter", "masked_scatter_",
    "masked_scatter_backward", "one_hot", "sort", "topk", "argsort", "unique", "_unique2", "unique_consecutive",
    "unique_dim", "bucketize",
    "searchsorted", "slice_scatter", "select_scatter", "diagonal_scatter", "as_strided_scatter", "im2col",
    "col2im", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle",
    "select_backward", "slice_backward", "diagonal_backward", "unfold_backward", "expand_copy",
    "permute_copy", "view_copy", "t_copy", "transpose_copy", "unsqueeze_copy", "squeeze_copy",
    "_reshape_copy", "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
    "replication_pad1d_backward", "replication_pad2d_backward", "replication_pad3d_backward", "kthvalue",
    "msort", "trace", "diag_embed", "block_diag", "tensor_split", "narrow_copy", "_pad_packed_sequence",
    "index_select_backward", "_index_put_impl", "_fused_sdp_choice",
    # layout conversions
    "to_sparse", "_to_sparse", "_to_sparse_csr", "_to_sparse_csc", "_to_sparse_bsr", "_to_sparse_bsc",
    "coalesce", "_coalesce", "_sparse_coo_tensor_with_dims_and_tensors", "sparse_resize_",
    "sparse_resize_and_clear_",
))

#: Allocation and metadata only: no bytes at all.
_ZERO_BYTES = _aten(
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted",
    "_unsafe_view", "_reshape_alias", "lift_fresh", "lift", "alias", "detach", "detach_", "as_strided_",
    "resize_", "resize_as_", "set_", "squeeze_", "unsqueeze_", "transpose_", "t_", "swapdims_",
    "swapaxes_", "record_stream", "_nested_tensor_from_mask_left_aligned", "sym_size", "sym_stride",
    "sym_numel", "sym_storage_offset", "_version", "requires_grad_", "retain_grad", "_resize_output_",
    # views in practice, though their schemas do not say so (the RNN cell loop splits its gates with them)
    "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk",
)
_ZERO_BYTES += ["profiler._record_function_enter", "profiler._record_function_enter_new",
                "profiler._record_function_exit"]


@register_rule(*_ZERO_BYTES)
def metadata(ev: OpEvent) -> Cost:
    """Allocation, aliasing, metadata and profiler markers: nothing read or written."""
    return Cost(0, 0, 0, 0)


@register_rule(*_aten(
    "zeros", "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full",
    "arange", "linspace", "logspace", "eye", "randn", "rand", "randint", "randn_like",
    "rand_like", "randint_like", "randperm", "normal", "normal_", "uniform_", "exponential_",
    "geometric_", "log_normal_", "cauchy_", "random_", "zero_", "fill", "fill_",
))
def creation(ev: OpEvent) -> Cost:
    """Creation and filling: the output written, nothing read (a ``_like`` input gives only the shape;
    ``fill_`` with a tensor value reads that value, unless there is nothing to fill: an empty slice
    assigned on CPU, as ``copy_`` reads nothing for it on meta)."""
    a = arguments(ev)
    value = a.get("value")
    out = ev.outputs[0].nbytes if ev.outputs else 0
    return Cost(0, 0, value.nbytes if isinstance(value, TensorMeta) and out else 0, out)


@register_rule(*_aten("scalar_tensor"))
def scalar_tensor(ev: OpEvent) -> Cost:
    """A 0-dim tensor made from a Python number: a scalar handed to the kernel that uses it, no
    bytes here (that kernel counts reading it).

    PyTorch makes the same tensor outside the dispatcher on CPU (``t[i] = 5`` arrives as
    ``lift_fresh`` + ``fill_``) and with ``scalar_tensor`` elsewhere (meta, CUDA: ``scalar_tensor`` +
    ``copy_`` from it broadcast); counting it on neither keeps meta and CPU runs equal.
    """
    return Cost(0, 0, 0, 0)


@register_rule("aten.copy_", "aten._copy_from", "aten._copy_from_and_resize")
def copy_(ev: OpEvent) -> Cost:
    """``copy_(self, src)`` reads ``src`` and writes ``self``; ``_copy_from(self, dst)`` reads ``self``
    and writes ``dst``.

    A source that overlaps itself (broadcast with ``expand``, as ``t[i] = value`` copies a scalar off
    CPU) reads at most its storage: ``min(numel x itemsize, storage bytes)``, the value read once,
    as CPU's ``fill_`` for the same assignment counts it.
    """
    a = arguments(ev)
    if ev.packet == "aten.copy_":
        src, dst = a["src"], a["self"]
    else:
        src, dst = a["self"], a["dst"]
    return Cost(0, 0, min(src.nbytes, src.storage_nbytes), dst.nbytes)


def _bytes(x: Any) -> int:
    if isinstance(x, TensorMeta):
        return x.nbytes
    if isinstance(x, (list, tuple)):
        return sum(_bytes(y) for y in x)
    return 0


@register_rule(*_aten("embedding", "index_select", "gather", "index", "take", "take_along_dim",
                      "_unsafe_index"))
def gather(ev: OpEvent) -> Cost:
    """Reads the indices and the gathered elements (as many as the output holds), writes the output."""
    a = arguments(ev)
    idx = a.get("indices", a.get("index"))
    out = ev.outputs[0]
    return Cost(0, 0, _bytes(idx) + out.nbytes, out.nbytes)


def _slice_numel(x: TensorMeta, dim: int) -> int:
    """Elements of one index along ``dim`` (the rest of the tensor's dims)."""
    d = dim % x.ndim if x.ndim else 0
    return x.numel // x.shape[d] if x.ndim and x.shape[d] else 0


def _scatter_like(ev: OpEvent, accumulate: bool, flops_per: int = 1) -> Cost:
    """In-place scatter: indices and source read, addressed elements written (read too when
    accumulating). Out-of-place: ``self`` copied as well."""
    a = arguments(ev)
    x = a.get("self")
    idx = a.get("indices", a.get("index"))
    src = a.get("values", a.get("source", a.get("src")))
    item = x.itemsize
    if ev.packet.startswith("aten.index_fill"):  # one slice per index, filled with a value
        n = _numel(idx) * _slice_numel(x, int(a.get("dim") or 0))
        src_bytes = 0
    elif ev.packet.startswith(("aten.index_put", "aten._index_put")):  # values broadcast to the indexed region
        n = max(src.numel, _numel(idx))
        src_bytes = src.nbytes
    elif ev.packet.startswith(("aten.index_add", "aten.index_copy")):  # whole source slices
        n = src.numel
        src_bytes = src.nbytes
    else:  # scatter: one element per index entry, from src or a scalar value
        n = _numel(idx)
        src_bytes = n * src.itemsize if isinstance(src, TensorMeta) else 0
    flops = n * flops_per if accumulate else 0
    read = _bytes(idx) + src_bytes + (n * item if accumulate else 0)
    written = n * item
    if not ev.op.split(".")[1].endswith("_"):  # functional form: copies self into a new output
        read += x.nbytes
        written = ev.outputs[0].nbytes if ev.outputs else x.nbytes
    return Cost(0, flops, read, written)


def _numel(x: Any) -> int:
    if isinstance(x, TensorMeta):
        return x.numel
    if isinstance(x, (list, tuple)):  # index_put's indices broadcast together
        ts = [t for t in x if isinstance(t, TensorMeta)]
        return max((t.numel for t in ts), default=0)
    return 0


@register_rule(*_aten("index_put_", "_index_put_impl_", "index_put", "_index_put_impl"))
def index_put(ev: OpEvent) -> Cost:
    """``self[indices] = values`` (``accumulate=True``: ``+=``, one add per value element)."""
    return _scatter_like(ev, bool(arguments(ev).get("accumulate")))


@register_rule(*_aten("scatter_", "index_copy_", "index_fill_"))
def scatter_inplace(ev: OpEvent) -> Cost:
    return _scatter_like(ev, False)


@register_rule(*_aten("scatter_add", "scatter_add_", "scatter_reduce", "scatter_reduce_"))
def scatter_add(ev: OpEvent) -> Cost:
    """One add (or reduce) per index element."""
    return _scatter_like(ev, True)


@register_rule(*_aten("index_add", "index_add_"))
def index_add(ev: OpEvent) -> Cost:
    """``self.index_add_(dim, index, source, alpha)``: one add per source element, 2 with alpha != 1."""
    alpha = arguments(ev).get("alpha", 1)
    return _scatter_like(ev, True, 1 if alpha in (None, 1) else 2)


@register_rule("aten.embedding_dense_backward", "aten.embedding_backward")
def embedding_backward(ev: OpEvent) -> Cost:
    """(grad_output, indices, num_weights, ...): one add per grad-output element into a zeroed
    (num_weights, dim) gradient, which is written whole."""
    return Cost(flops=arguments(ev)["grad_output"].numel)


@register_rule("aten._embedding_bag", "aten.embedding_bag", "aten._embedding_bag_forward_only")
def embedding_bag(ev: OpEvent) -> Cost:
    """(weight, indices, offsets, scale_grad_by_freq, mode (0 sum, 1 mean, 2 max), ...): one add or
    compare per gathered element, + 1 divide per output element for mean (+1 multiply per gathered
    element with per_sample_weights). Reads the gathered rows, not the whole table.

    Writes what the kernel computes, not what a backend returns (as batch norm): the output, the
    bag of each index (``offset2bag``, one index each), each bag's size and, for ``mode="max"``, the
    arg-max of each output element. The CPU kernel returns a dummy ``max_indices`` for sum and mean
    and an empty ``offset2bag`` on its sum fast path, the meta kernel neither; counted this way the
    two agree."""
    a = arguments(ev)
    w, idx = a["weight"], a["indices"]
    dim = w.shape[-1]
    gathered = idx.numel * dim
    out = ev.outputs[0]
    mode = int(a.get("mode") or 0)
    flops = gathered + (out.numel if mode == 1 else 0)
    psw = a.get("per_sample_weights")
    if isinstance(psw, TensorMeta):
        flops += gathered
    read = gathered * w.itemsize + _bytes(idx) + _bytes(a.get("offsets")) + _bytes(psw)
    return Cost(0, flops, read, out.nbytes + _bag_bookkeeping(idx, out.shape[0], dim, mode))


def _bag_bookkeeping(idx: TensorMeta, bags: int, dim: int, mode: int) -> int:
    """Bytes of ``offset2bag`` + ``bag_size`` (+ ``max_indices`` for max), at the indices' itemsize."""
    return (idx.numel + bags + (bags * dim if mode == 2 else 0)) * idx.itemsize


@register_rule("aten._embedding_bag_backward", "aten._embedding_bag_dense_backward",
               "aten._embedding_bag_sparse_backward")
def embedding_bag_backward(ev: OpEvent) -> Cost:
    """(grad, indices, ...): each gathered row receives its bag's gradient: one add per element.

    Reads the gradient, the indices and offsets, the forward's bookkeeping as
    :func:`embedding_bag` counts it written, and the per-sample weights; writes the weight gradient."""
    a = arguments(ev)
    grad, idx = a["grad"], a["indices"]
    dim = grad.shape[-1]
    read = (grad.nbytes + idx.nbytes + _bytes(a.get("offsets")) + _bytes(a.get("per_sample_weights"))
            + _bag_bookkeeping(idx, grad.shape[0], dim, int(a.get("mode") or 0)))
    return Cost(flops=idx.numel * dim, bytes_read=read)


@register_rule("aten._to_copy")
def to_copy(ev: OpEvent) -> Cost:
    """A copy or conversion: reads its input, writes its output; a CPU tensor moved onto meta with its
    dtype unchanged moves nothing, as the same ``.to(device)`` in a CPU run dispatches no op (a
    model that makes a tensor on CPU and moves it to its device, as transformers' caches do)."""
    x, out = ev.inputs[0], ev.outputs[0]
    if x.device == "cpu" and out.device == "meta" and x.dtype == out.dtype:
        return Cost(0, 0, 0, 0)
    return Cost(0, 0, x.nbytes, out.nbytes)

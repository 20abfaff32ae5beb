"""Ops that do no arithmetic: views (nothing moved), copies, creation, indexing and embedding.

They cost bytes only (filled by the registry from the op's tensors). Listing them here marks them as
counted-with-zero-FLOPs, so they never appear among the uncounted ops. ``embedding_dense_backward``
and ``index_add``/``scatter_add``/``index_put`` with accumulate add one FLOP per source element.
"""

from __future__ import annotations

from ..capture.events import OpEvent
from .registry import Cost, register_no_arithmetic, register_rule

register_no_arithmetic(*[f"aten.{n}" for n in [
    # creation
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like",
    "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full", "arange", "linspace",
    "scalar_tensor", "eye", "randn", "rand", "randint", "randn_like", "rand_like", "normal", "normal_",
    "uniform_", "fill", "fill_", "zero_", "tril", "triu", "tril_", "triu_", "lift_fresh", "lift_fresh_copy",
    "_to_copy", "to", "copy", "copy_", "clone", "contiguous", "_unsafe_view", "detach", "alias", "_local_scalar_dense",
    "_to_dense", "resize_", "set_", "record_stream", "_assert_async", "_assert_scalar", "sym_constrain_range_for_size",
    # movement and indexing
    "cat", "stack", "split", "split_with_sizes", "chunk", "unbind", "repeat", "repeat_interleave", "roll",
    "flip", "constant_pad_nd", "pad", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d", "index", "index_select", "gather",
    "take", "take_along_dim", "masked_select", "nonzero", "scatter", "scatter_", "index_put", "index_put_",
    "index_copy", "index_copy_", "index_fill", "index_fill_", "masked_scatter", "embedding", "_embedding_bag",
    "embedding_bag", "one_hot", "sort", "topk", "argsort", "unique", "_unique2", "bucketize", "searchsorted",
    "slice_scatter", "select_scatter", "diagonal_scatter", "as_strided_scatter", "im2col", "col2im",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "select_backward",
    "slice_backward", "diagonal_backward", "unfold_backward", "expand_copy", "permute_copy", "view_copy",
    "t_copy", "transpose_copy", "unsqueeze_copy", "squeeze_copy", "_reshape_copy", "constant_pad_nd",
    "reflection_pad1d_backward", "reflection_pad2d_backward", "reflection_pad3d_backward",
    "replication_pad1d_backward", "replication_pad2d_backward", "replication_pad3d_backward",
    "is_nonzero", "item", "equal", "is_same_size", "_has_compatible_shallow_copy_type",
]])


@register_rule("aten.embedding_dense_backward", "aten.index_add", "aten.index_add_", "aten.scatter_add",
               "aten.scatter_add_", "aten.scatter_reduce", "aten.scatter_reduce_", "aten._embedding_bag_backward",
               "aten.embedding_backward")
def accumulate(ev: OpEvent) -> Cost:
    # one add per accumulated source element (grad_output rows for embedding_dense_backward)
    src = ev.args[0] if ev.op.startswith("aten.embedding") else ev.inputs[-1]
    return Cost(flops=src.numel)

"""Parameter counts and sizes: tied weights once, frozen vs trainable, what-if precisions."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ..capture.tracer import walk_modules
from ..report.model import ParamSizes


class ParamTable(NamedTuple):
    """Everything the report says about parameters and buffers, from one pass over the modules."""

    per_module: dict[str, tuple[int, int]]  # path -> (inclusive params, own params)
    params: int  # each tensor once (tied weights once)
    trainable: int
    buffers: int  # elements
    buffer_bytes: int
    sizes: ParamSizes


def param_table(
    model: nn.Module, order: list[tuple[str, str | None, nn.Module]] | None = None, group_size: int = 128,
) -> ParamTable:
    """Parameter and buffer figures of ``model``, each tensor counted once.

    ``order``: the model's :func:`~modelmeter.capture.tracer.walk_modules` list when the caller has
    it (``named_modules()`` order, a module registered twice under its first path only).

    Per module: when no parameter tensor is held twice (the common case) a module's inclusive count
    is its own plus its children's, summed in one backward pass over that order. With tied tensors
    each module's inclusive set of tensor ids is built instead, so a tied tensor counts once
    wherever both users sit in the same subtree.

    Sizes: bytes at the model's own dtypes and at fp32/fp16/bf16/fp8/int8/int4. int8 and int4 store
    one fp16 scale (2 bytes) per group of ``group_size`` consecutive weights of each tensor:
    ``ceil(numel / group_size) * 2`` bytes per tensor. int4 packs two weights per byte:
    ``ceil(numel / 2)``.
    """
    if group_size < 1:
        from ..errors import InputError

        raise InputError(f"quantization group size must be a positive integer, not {group_size}")
    if order is None:
        order = walk_modules(model)
    own: dict[str, int] = {}
    held: set[int] = set()
    held_buffers: set[int] = set()
    total = trainable = own_bytes = int8 = int4 = nbuf = bbytes = 0
    tied = False
    for path, _, mod in order:
        n = 0
        for p in mod._parameters.values():
            if p is None:
                continue
            k = p.numel()
            n += k
            if id(p) in held:
                tied = True
                continue
            held.add(id(p))
            total += k
            if p.requires_grad:
                trainable += k
            own_bytes += k * p.element_size()
            scales = -(-k // group_size) * 2  # ceil(k / group_size) fp16 scales
            int8 += k + scales
            int4 += -(-k // 2) + scales
        own[path] = n
        for b in mod._buffers.values():
            if b is not None and id(b) not in held_buffers:
                held_buffers.add(id(b))
                k = b.numel()
                nbuf += k
                bbytes += k * b.element_size()
    if tied:
        per_module = _module_params_tied(order)
    else:
        incl = dict(own)
        for path, parent, _ in reversed(order):
            if parent is not None:
                incl[parent] += incl[path]
        per_module = {path: (incl[path], own[path]) for path, _, _ in order}
    sizes = ParamSizes(
        own_bytes=own_bytes, fp32_bytes=4 * total, fp16_bytes=2 * total, bf16_bytes=2 * total, fp8_bytes=total,
        int8_bytes=int8, int4_bytes=int4, group_size=group_size,
    )
    return ParamTable(per_module, total, trainable, nbuf, bbytes, sizes)


def _module_params_tied(order: list[tuple[str, str | None, nn.Module]]) -> dict[str, tuple[int, int]]:
    """Per-module figures when some parameter tensor is held by several modules (or twice by one).

    A tensor held once is summed up the tree as usual; a shared one is added once to every module on
    the union of its holders' paths to the root.
    """
    parent_of: dict[str, str | None] = {}
    sizes: dict[int, int] = {}
    holders: dict[int, list[str]] = {}
    own: dict[str, int] = {}
    for path, parent, mod in order:
        parent_of[path] = parent
        mine: dict[int, int] = {}
        for p in mod._parameters.values():
            if p is not None:
                mine[id(p)] = p.numel()
        own[path] = sum(mine.values())
        for i, k in mine.items():
            sizes[i] = k
            holders.setdefault(i, []).append(path)
    shared = {i: paths for i, paths in holders.items() if len(paths) > 1}
    incl = dict(own)
    for i, paths in shared.items():  # taken out of the plain sums, added back once below
        for path in paths:
            incl[path] -= sizes[i]
    for path, parent, _ in reversed(order):
        if parent is not None:
            incl[parent] += incl[path]
    for i, paths in shared.items():
        covered: set[str] = set()
        for path in paths:
            p: str | None = path
            while p is not None and p not in covered:
                covered.add(p)
                p = parent_of[p]
        for path in covered:
            incl[path] += sizes[i]
    return {path: (incl[path], own[path]) for path, _, _ in order}

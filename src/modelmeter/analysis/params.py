"""Parameter counts and sizes: tied weights once, frozen vs trainable, what-if precisions."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..capture.tracer import walk_modules
from ..report.model import ParamSizes


def unique_members(model: nn.Module, attr: str) -> list[torch.Tensor]:
    """The model's parameters (``attr="_parameters"``) or buffers (``"_buffers"``), each tensor once:
    what ``model.parameters()`` / ``model.buffers()`` give, in one walk of the module tree."""
    out: list[torch.Tensor] = []
    seen: set[int] = set()
    for mod in _all_modules(model):
        for v in getattr(mod, attr).values():
            if v is not None and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


def _all_modules(model: nn.Module) -> list[nn.Module]:
    """Every module once, in ``model.modules()`` order."""
    return [m for _, _, m in walk_modules(model)]


def count_params(model: nn.Module, params: list[torch.Tensor] | None = None,
                 buffers: list[torch.Tensor] | None = None) -> tuple[int, int, int, int]:
    """(total, trainable, buffers, buffer_bytes); a tensor shared by several modules counts once.
    ``params``/``buffers``: ``unique_members(model, "_parameters"/"_buffers")`` when the caller has them."""
    total = trainable = 0
    for p in params if params is not None else unique_members(model, "_parameters"):
        k = p.numel()
        total += k
        if p.requires_grad:
            trainable += k
    nbuf = bbytes = 0
    for b in buffers if buffers is not None else unique_members(model, "_buffers"):
        k = b.numel()
        nbuf += k
        bbytes += k * b.element_size()
    return total, trainable, nbuf, bbytes


def param_sizes(model: nn.Module, group_size: int = 128, params: list[torch.Tensor] | None = None) -> ParamSizes:
    """Bytes at the model's own dtypes and at fp32/fp16/bf16/fp8/int8/int4.

    int8 and int4 store one fp16 scale (2 bytes) per group of ``group_size`` consecutive weights of
    each tensor: ``ceil(numel / group_size) * 2`` bytes per tensor. int4 packs two weights per byte:
    ``ceil(numel / 2)``.
    """
    if group_size < 1:
        from ..errors import InputError

        raise InputError(f"quantization group size must be a positive integer, not {group_size}")
    own = n = int8 = int4 = 0
    for p in params if params is not None else unique_members(model, "_parameters"):
        k = p.numel()
        n += k
        own += k * p.element_size()
        scales = math.ceil(k / group_size) * 2
        int8 += k + scales
        int4 += math.ceil(k / 2) + scales
    return ParamSizes(
        own_bytes=own, fp32_bytes=4 * n, fp16_bytes=2 * n, bf16_bytes=2 * n, fp8_bytes=n,
        int8_bytes=int8, int4_bytes=int4, group_size=group_size,
    )


def module_params(model: nn.Module) -> dict[str, tuple[int, int]]:
    """path -> (inclusive params, own params); see :func:`param_table`."""
    return param_table(model)[0]


def param_table(
    model: nn.Module, order: list[tuple[str, str | None, nn.Module]] | None = None,
) -> tuple[dict[str, tuple[int, int]], list[torch.Tensor], list[torch.Tensor]]:
    """(path -> (inclusive params, own params), the parameters once, the buffers once), in one walk.

    Each tensor counts once within a subtree, and the lists are what ``model.parameters()`` and
    ``model.buffers()`` give. ``order``: the model's :func:`walk_modules` list when the caller has it.

    Modules in ``named_modules()`` order (a module registered twice under its first path only). When
    no parameter tensor is held twice (the common case) a module's inclusive count is its own plus
    its children's, summed in one backward pass over that order. With tied tensors each module's
    inclusive set of tensor ids is built instead, so a tied tensor counts once wherever both users
    sit in the same subtree.
    """
    if order is None:
        order = walk_modules(model)  # (path, parent path, module), parents first

    own: dict[str, int] = {}
    held: set[int] = set()
    params: list[torch.Tensor] = []
    buffers: list[torch.Tensor] = []
    bufs_held: set[int] = set()
    tied = False
    for path, _, mod in order:
        n = 0
        for p in mod._parameters.values():
            if p is not None:
                if id(p) in held:
                    tied = True
                else:
                    held.add(id(p))
                    params.append(p)
                n += p.numel()
        own[path] = n
        for b in mod._buffers.values():
            if b is not None and id(b) not in bufs_held:
                bufs_held.add(id(b))
                buffers.append(b)
    if tied:
        return _module_params_tied(order), params, buffers
    incl = dict(own)
    for path, parent, _ in reversed(order):
        if parent is not None:
            incl[parent] += incl[path]
    return {path: (incl[path], own[path]) for path, _, _ in order}, params, buffers


def _module_params_tied(order: list[tuple[str, str | None, nn.Module]]) -> dict[str, tuple[int, int]]:
    sizes: dict[int, int] = {}
    own_ids: dict[str, set[int]] = {}
    ids: dict[str, set[int]] = {}
    for path, _, mod in order:
        mine = set()
        for p in mod._parameters.values():
            if p is not None:
                sizes[id(p)] = p.numel()
                mine.add(id(p))
        own_ids[path] = mine
        ids[path] = set(mine)
    for path, parent, _ in reversed(order):
        if parent is not None:
            ids[parent] |= ids[path]
    return {path: (sum(sizes[i] for i in ids[path]), sum(sizes[i] for i in own_ids[path])) for path, _, _ in order}

"""The public entry point: :func:`profile`."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .errors import InputError, UncountedOpsError
from .report.model import Report

_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64,
}


def parse_dtype(value: str | torch.dtype | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    key = str(value).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise InputError(f"unknown dtype {value!r}: use one of fp32, fp16, bf16, fp64")
    return _DTYPES[key]


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while counting; restore it after.

    Counting allocates a few small objects per op (the event, its tensor metadata), none of them in
    reference cycles: reference counting frees them all. With the collector on, those allocations
    set off its collections: a young one every few hundred ops (about 0.2 ms each on the 2-core
    benchmark machine, 0.7 ms per MobileNet-V2 count) and now and then a full one, which scans every
    object the process holds (370k once torch, torchvision and transformers are imported: 0.2 s,
    17 forwards of that model). Tensors are freed by reference counting either way; the memory
    analysis (``memory=True``), which follows every storage's lifetime, runs with the collector as
    the user has it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def profile(
    model: nn.Module,
    inputs: Any,
    *,
    train: bool = False,
    device: str = "meta",
    dtype: str | torch.dtype | None = None,
    optimizer: str | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    causal: str = "unmasked",
    strict: bool = False,
    group_size: int = 128,
    name: str | None = None,
    memory: bool = False,
) -> Report:
    """Count parameters, MACs, FLOPs and bytes of ``model(inputs)`` per op, per module and in total.

    ``inputs`` is a tensor, a tuple of positional arguments or a dict of keyword arguments.
    ``device="meta"`` (default) runs without weights or memory; ``"cpu"``/``"cuda"`` runs real tensors
    (counts are identical). ``train=True`` adds loss and backward (and ``optimizer`` one step of
    sgd, sgd-momentum, adam or adamw). ``causal="dense"`` counts masked attention pairs too.
    ``strict=True`` raises :class:`UncountedOpsError` if any op has no FLOP rule.
    ``memory=True`` also tracks every tensor storage's lifetime in the same run and fills
    ``report.memory`` (timeline, peak, where it happens, largest tensors alive at the peak).
    The model is left as it was: parameters, buffers, mode and hooks.
    """
    from .analysis.totals import build_report
    from .capture.run import run_capture
    from .costs import CountSettings

    if causal not in ("unmasked", "dense"):
        raise InputError(f"causal must be 'unmasked' or 'dense', not {causal!r}")
    if memory:
        from .analysis.memory import analyze_memory, capture_with_lifetimes

        trace, records = capture_with_lifetimes(model, inputs, train=train, device=device, dtype=parse_dtype(dtype),
                                                optimizer=optimizer, loss_fn=loss_fn)
        report = build_report(model, trace, name=name, settings=CountSettings(causal=causal), group_size=group_size)
    else:
        with _gc_paused():
            trace = run_capture(model, inputs, train=train, device=device, dtype=parse_dtype(dtype),
                                optimizer=optimizer, loss_fn=loss_fn)
            report = build_report(model, trace, name=name, settings=CountSettings(causal=causal),
                                  group_size=group_size)
            # freed before the collector is back: it then has only the report's objects to look at
            del trace
    if memory:
        import dataclasses

        report = dataclasses.replace(report, memory=analyze_memory(model, trace, records, name=name))
    if strict and report.uncounted_ops:
        names = ", ".join(f"{u.op} x{u.calls}" for u in report.uncounted_ops[:5])
        raise UncountedOpsError(
            f"{len(report.uncounted_ops)} op(s) have no FLOP rule: {names}; register a rule with "
            f"modelmeter.register_rule or drop --strict"
        )
    return report

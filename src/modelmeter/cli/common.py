"""Arguments and helpers shared by the commands (argparse only at import time)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def batch_list(text: str) -> list[int]:
    """argparse type for --batch: '1,8,32' -> [1, 8, 32]."""
    try:
        out = [int(x) for x in str(text).replace(" ", "").split(",") if x]
    except ValueError:
        out = []
    if not out or any(b < 1 for b in out):
        raise argparse.ArgumentTypeError(f"batch sizes must be integers >= 1 separated by commas, e.g. 1,8,32, not {text!r}")
    return out


def add_model_args(p: argparse.ArgumentParser, *, many: bool = False) -> None:
    if many:
        p.add_argument("specs", nargs="+", metavar="SPEC", help="models to compare (same forms as for profile)")
    else:
        p.add_argument("spec", metavar="SPEC", help="torchvision:NAME | hf:PRESET | path/config.json | file.py:factory")
    p.add_argument("--shape", help="input shape(s), e.g. 1x3x224x224 or 1x128:int64 (several: comma-separated)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--seq", type=int, default=None, help="sequence length for language models (default 128)")
    p.add_argument("--device", default="meta",
                   help="meta (default: no weights, any size), cpu or cuda (real tensors; same counts)")
    p.add_argument("--dtype", default=None, help="run the model in fp32, fp16 or bf16 (default: its own dtype)")


def add_count_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--train", action="store_true", help="count a training step: forward, loss, backward")
    p.add_argument("--optimizer", default=None, help="add an optimizer step: sgd, sgd-momentum, adam, adamw")
    p.add_argument("--causal", choices=["unmasked", "dense"], default="unmasked",
                   help="count only unmasked pairs of causal attention (default) or every pair")
    p.add_argument("--strict", action="store_true", help="fail if any op has no FLOP rule")
    p.add_argument("--group-size", type=int, default=128, help="int8/int4 quantization group size (default 128)")
    p.add_argument("--memory", action="store_true",
                   help="add the memory timeline and peak from real tensor lifetimes (same run)")


def load_model(args: Any, spec: str | None = None, *, weightless: bool = False) -> Any:
    from ..models import load

    return load(spec or args.spec, batch=args.batch, seq=args.seq, shape=args.shape, device=args.device,
                dtype=args.dtype, weightless=weightless)


def with_real_buffers(loaded: Any, run: Any, reload: Any, device: str = "meta") -> tuple[Any, Any, str | None]:
    """``run(loaded)``; if a Hugging Face model's meta run fails after reads of values it had to answer, the
    model is built again by ``reload()`` with its small buffers real (parameters still on meta) and run once
    more: its constructor put values in buffers that its forward reads (the audio codecs' padding).

    Returns the result, the model it came from, and the note to add to the report (None when the first
    build ran). When the second run fails too, the first error is raised.
    """
    from ..errors import ModelRunError
    from ..models import parse_spec

    try:
        return run(loaded), loaded, None
    except ModelRunError as exc:
        if device != "meta" or not exc.answered_reads or parse_spec(loaded.spec).source not in ("preset", "config"):
            raise
        first = exc
    again = reload()
    try:
        result = run(again)
    except ModelRunError:
        raise first from None
    note = (f"built again with its small buffers real (parameters still on meta): the meta build's buffers had no "
            f"values, and the first run failed after {first.answered_reads} read(s) of them were answered")
    return result, again, note


def profile_loaded(loaded: Any, args: Any) -> Any:
    """Profile a loaded model (built again with real buffers if it needs them, see :func:`with_real_buffers`)."""
    import dataclasses

    report, _, note = with_real_buffers(loaded, lambda m: _profile(m, args),
                                        lambda: load_model(args, loaded.spec, weightless=True), args.device)
    return dataclasses.replace(report, notes=[*report.notes, note]) if note else report


def _build_recorder_first(args: Any) -> None:
    """A real-tensor inference run on CPU records with the native recorder, compiled on first use: say so
    on standard error while it builds (once per torch and Python version), rather than sit silent."""
    if not str(args.device).startswith("cpu") or args.train or getattr(args, "memory", False):
        return
    from ..capture import native

    if native.needs_build():
        from . import make_console

        with make_console(stderr=True).status("building the native op recorder (once per torch version, ~10 s)"):
            native.load()


def _profile(loaded: Any, args: Any) -> Any:
    from ..api import profile

    _build_recorder_first(args)

    return profile(
        loaded.model, loaded.inputs, train=args.train, device=args.device, dtype=args.dtype,
        optimizer=args.optimizer, causal=args.causal, strict=args.strict, group_size=args.group_size,
        name=loaded.name, memory=getattr(args, "memory", False),
    )


def write_text(path: str, text: str, console: Any) -> None:
    """Write to a file, or to standard output for '-'."""
    from ..errors import InputError

    if path == "-":
        console.file.write(text if text.endswith("\n") else text + "\n")
        return
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}; choose a writable path") from exc

"""modelmeter memory SPEC: peak memory of inference or a training step, budget per batch, KV cache."""

from __future__ import annotations

import argparse
from typing import Any

from .common import batch_list

SCHEMA = "modelmeter.memory/1"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "memory", help="peak memory (inference or training step), budget per batch, largest batch, KV cache",
        description="Memory of a model from the real lifetimes of its tensors: live bytes after every op by "
        "category, the peak and where it happens, the largest tensors alive there; for training the "
        "parameters, gradients, optimizer state and activations, per batch size, and the largest batch "
        "that fits a memory size; the KV cache of decoder language models. Runs on meta tensors by default "
        "(no weights, any model size).",
    )
    p.add_argument("spec", metavar="SPEC", help="torchvision:NAME | hf:PRESET | path/config.json | file.py:factory")
    p.add_argument("--batch", type=batch_list, default=None, metavar="B[,B...]",
                   help="batch size(s): the first is profiled in detail; with several, one budget row each "
                        "(default 1)")
    p.add_argument("--seq", type=int, default=None, help="sequence length for language models (default 128)")
    p.add_argument("--shape", help="input shape(s) instead of --batch/--seq, e.g. 1x3x224x224")
    p.add_argument("--device", default="meta", help="meta (default), cpu or cuda (real tensors: same lifetimes)")
    p.add_argument("--dtype", default=None, help="weights in fp32, fp16 or bf16 (default: the model's own)")
    p.add_argument("--autocast", default=None, metavar="DTYPE",
                   help="run the forward under autocast at fp16 or bf16 (weights stay fp32)")
    p.add_argument("--train", action="store_true", help="a training step: forward, loss, backward")
    p.add_argument("--optimizer", default=None, help="add an optimizer step: sgd, sgd-momentum, adam, adamw")
    p.add_argument("--no-master-weights", action="store_true",
                   help="with --dtype fp16/bf16 --train: do not add fp32 master weights and fp32 optimizer state")
    p.add_argument("--attention", choices=["auto", "fused", "as-run"], default="auto",
                   help="what scaled-dot-product attention keeps: fused (a flash kernel: q, k, v and its output), "
                        "as-run (every tensor of the kernels that ran; on meta the math kernel, as CPU training "
                        "with attention dropout); auto: fused on meta, as-run on real devices")
    p.add_argument("--fits", default=None, metavar="SIZE",
                   help="a memory size (24GiB, 80GB): mark what fits, find the largest batch and KV context")
    p.add_argument("--context", type=int, default=None,
                   help="KV-cache context length in tokens (default: the model's maximum)")
    p.add_argument("--top", type=int, default=10, help="largest tensors to list at the peak (default 10)")
    p.add_argument("--plot", metavar="PATH", help="write the memory timeline plot (.png, .svg or .pdf)")
    p.add_argument("--json", metavar="PATH", help="write the memory report as JSON ('-' for stdout)")
    p.add_argument("--no-timeline", action="store_true", help="leave the per-op timeline out of the JSON")
    return p


def run(args: Any, console: Any) -> int:
    import dataclasses
    import json

    from ..analysis.memory import memory_profile
    from ..errors import InputError
    from ..models import load
    from ..units import parse_bytes
    from .common import with_real_buffers, write_text

    batches = args.batch or [1]
    if args.optimizer and not args.train:
        raise InputError("--optimizer needs --train: the optimizer step is part of a training step")
    if args.top < 0:
        raise InputError(f"--top must be 0 or more, not {args.top}")
    fits = parse_bytes(args.fits) if args.fits is not None else None
    def build(weightless: bool = False) -> Any:
        return load(args.spec, batch=batches[0], seq=args.seq, shape=args.shape, device=args.device,
                    weightless=weightless)

    def analyze(loaded: Any) -> Any:
        return memory_profile(
            loaded.model, loaded.inputs, train=args.train, optimizer=args.optimizer, dtype=args.dtype,
            autocast=args.autocast, batch_sizes=batches if (len(batches) > 1 or fits is not None) else None,
            fits=fits, device=args.device, master_weights=False if args.no_master_weights else None,
            kv_context=args.context, attention=args.attention, top=args.top, name=loaded.name,
        )

    report, _, note = with_real_buffers(build(), analyze, lambda: build(weightless=True), args.device)
    if note:
        report = dataclasses.replace(report, notes=[*report.notes, note])
    if args.json != "-":
        console.print(report)
    if args.plot:
        report.plot(args.plot)
        if args.json != "-":
            console.print(f"[dim]timeline plot written to {args.plot}[/]", highlight=False)
    if args.json:
        d = {"schema": SCHEMA, **report.to_dict(include_timeline=not args.no_timeline)}
        write_text(args.json, json.dumps(d, indent=2), console)
    return 0

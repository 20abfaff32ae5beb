"""modelmeter roofline SPEC --hardware DEV[,DEV...]: predicted latency per op, module and model on devices."""

from __future__ import annotations

import argparse
import re
from typing import Any

from .common import batch_list


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], not {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"efficiency must be in (0, 1] (1 = pure roofline), not {text!r}")
    return v


_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def _overhead(text: str) -> float | str:
    t = str(text).strip().lower()
    if t in ("device", "measured", "auto"):
        return "device"
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(s|ms|us|µs|ns)?", t)
    if not m:
        raise argparse.ArgumentTypeError(f"--launch-overhead takes a time like 5us, 0.01ms or 'device', not {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "roofline", help="predicted latency per op, module and model on one or more devices",
        description="Roofline prediction: per op max(FLOPs / peak, bytes / bandwidth) on each named device at a dtype, "
        "rolled up per module and model, beside the fused lower bound; with several batch sizes a sweep that shows "
        "where the model turns compute-bound; with --decode the prefill and decode times of a language model.")
    p.add_argument("spec", metavar="SPEC", help="torchvision:NAME | hf:PRESET | path/config.json | file.py:factory")
    p.add_argument("--hardware", required=True, metavar="DEV[,DEV...]",
                   help="catalog devices, e.g. h100-sxm,a100-80gb ('modelmeter hardware list'); 'local' = this machine")
    p.add_argument("--dtype", default=None, help="fp32, tf32, fp16, bf16 (default: the model's own dtype); the model "
                   "runs at this dtype so bytes are counted at its size")
    p.add_argument("--batch", type=batch_list, default=[1], metavar="B[,B...]",
                   help="batch size(s); several = a batch sweep (default 1)")
    p.add_argument("--seq", type=int, default=None, help="sequence length for language models (default 128)")
    p.add_argument("--shape", help="input shape(s) instead of --batch/--seq, e.g. 1x3x224x224 or 1x128:int64")
    p.add_argument("--train", action="store_true", help="predict a training step (forward, loss, backward)")
    p.add_argument("--optimizer", default=None, help="with --train, add an optimizer step: sgd, sgd-momentum, adam, adamw")
    p.add_argument("--sparse", action="store_true", help="use the vendors' 2:4 structured-sparsity peaks")
    p.add_argument("--compute-efficiency", type=_fraction, default=1.0, metavar="F",
                   help="fraction of the peak FLOP/s reached (default 1 = pure roofline)")
    p.add_argument("--memory-efficiency", type=_fraction, default=1.0, metavar="F",
                   help="fraction of the memory bandwidth reached (default 1)")
    p.add_argument("--launch-overhead", type=_overhead, default=0.0, metavar="T",
                   help="time added per kernel, e.g. 5us; 'device' = the calibrated per-op overhead (default 0)")
    p.add_argument("--decode", action="store_true", help="language model: prefill (time to first token) and decode "
                   "(time per output token) with a KV cache of --context tokens")
    p.add_argument("--context", type=int, default=2048, help="context length for --decode (default 2048)")
    p.add_argument("--no-memory", action="store_true", help="skip the activation-memory capture: 'fits' then uses "
                   "weights + inputs + outputs only")
    p.add_argument("--depth", type=int, default=None, help="module depth of the per-module table (default: automatic)")
    p.add_argument("--top", type=int, default=10, help="slowest ops to list (default 10; 0 = none)")
    p.add_argument("--plot", default=None, metavar="PATH[,PATH]",
                   help="write the roofline chart (and PATH-layers.EXT, the per-layer breakdown); .png, .svg or .pdf, "
                   "comma-separated for several formats")
    p.add_argument("--json", metavar="PATH", help="write the JSON report with the roofline ('-' = stdout)")
    p.add_argument("--ops", action="store_true", help="include every op's prediction in the JSON")
    p.add_argument("--hardware-file", action="append", default=[], metavar="PATH",
                   help="extra device entries (JSON/TOML), repeatable (also $MODELMETER_HARDWARE_FILE)")
    return p


_PROFILE_DTYPES = {"fp32": "fp32", "tf32": "fp32", "fp16": "fp16", "bf16": "bf16", "fp64": "fp64", "fp16-acc16": "fp16"}


def run(args: Any, console: Any) -> int:
    from ..errors import InputError
    from ..hardware import load_catalog, resolve_devices
    from ..hardware.spec import dtype_key

    catalog = load_catalog(args.hardware_file)
    devices = resolve_devices(args.hardware, catalog)
    peak_key = dtype_key(args.dtype) if args.dtype else None
    if peak_key is not None and peak_key not in _PROFILE_DTYPES:
        raise InputError(f"--dtype {args.dtype}: a run cannot be counted at {peak_key} yet (bytes would be wrong); "
                         f"use fp32, tf32, fp16 or bf16")
    run_dtype = _PROFILE_DTYPES[peak_key] if peak_key else None
    if args.context < 1:
        raise InputError(f"--context must be >= 1, not {args.context}")
    if args.decode and (args.train or args.shape):
        raise InputError("--decode predicts inference of a language model: drop --train and --shape")
    if args.depth is not None and args.depth < 0 or args.top < 0:
        raise InputError("--depth and --top must be >= 0")
    kw = dict(sparse=args.sparse, compute_efficiency=args.compute_efficiency,
              memory_efficiency=args.memory_efficiency, launch_overhead_s=args.launch_overhead)
    if args.decode:
        rr, report = _decode(args, devices, run_dtype, peak_key, kw)
    else:
        rr, report = _forward(args, devices, run_dtype, peak_key, kw)
    from ..report.roofline import plot_breakdown, plot_roofline, roofline_renderable

    console.print(roofline_renderable(rr, depth=args.depth, top=args.top))
    if args.plot:
        written = []
        for path in [x.strip() for x in args.plot.split(",") if x.strip()]:
            written += plot_roofline(rr, path)
            stem, dot, ext = path.rpartition(".")
            written += plot_breakdown(rr, f"{stem}-layers.{ext}" if dot else f"{path}-layers")
        console.print(f"[dim]wrote {', '.join(str(w) for w in written)}[/]")
    if args.json:
        import dataclasses
        import json

        from .common import write_text

        d = dataclasses.replace(report, roofline=None).to_dict()
        d["roofline"] = rr.to_dict(include_ops=args.ops)
        write_text(args.json, json.dumps(d, indent=2), console)
    return 0


def _load(args: Any, batch: int, seq: int | None, run_dtype: str | None, weightless: bool = False) -> Any:
    from ..models import load

    return load(args.spec, batch=batch, seq=seq, shape=args.shape, device="meta", dtype=run_dtype,
                weightless=weightless)


def _required(args: Any, loaded: Any, run_dtype: str | None) -> tuple[int | None, str | None, str | None]:
    """Peak memory of the run from a lifetime capture, or None (with the reason) to fall back."""
    if args.no_memory:
        return None, None, None
    try:
        from ..analysis.memory import memory_profile

        m = memory_profile(loaded.model, loaded.inputs, train=args.train, optimizer=args.optimizer, dtype=run_dtype)
    except ImportError:  # pragma: no cover - memory analysis not in this build
        return None, None, "memory analysis not available: 'fits' uses weights + inputs + outputs"
    peak = m.steady_peak_bytes if args.train else m.peak_bytes
    what = "training step peak (weights, gradients, optimizer state, activations)" if args.train \
        else "inference peak (weights + live activations)"
    return int(peak), what, None


def _forward(args: Any, devices: list[Any], run_dtype: str | None, peak_key: str | None, kw: dict[str, Any]) -> Any:
    from ..analysis.roofline import compare_devices, sweep_from_rooflines
    from ..api import profile
    from ..report.roofline import RooflineReport
    from .common import with_real_buffers

    per: list[tuple[int, Any]] = []
    first_report = None
    notes: list[str] = []
    for b in args.batch:
        report, loaded, rebuilt = with_real_buffers(
            _load(args, b, args.seq, run_dtype),
            lambda m: profile(m.model, m.inputs, train=args.train, optimizer=args.optimizer, dtype=run_dtype,
                              name=m.name),
            lambda b=b: _load(args, b, args.seq, run_dtype, weightless=True))
        if rebuilt and rebuilt not in notes:
            notes.append(rebuilt)
        required, basis, note = _required(args, loaded, run_dtype)
        if note:
            notes.append(note)
        rr = compare_devices(report, devices, dtype=peak_key, batch=loaded.batch or b, required_bytes=required,
                             required_basis=basis, **kw)
        per.append((loaded.batch or b, rr))
        if first_report is None:
            first_report = report
        if args.shape:
            break  # --shape fixes the inputs: no sweep
    main = per[0][1]
    sweep = None
    if len(per) > 1:
        sweep = sweep_from_rooflines([(b, rr.devices) for b, rr in per], main.dtype)
    notes += list(first_report.notes)
    out = RooflineReport(model=main.model, dtype=main.dtype, devices=main.devices, sweep=sweep, notes=notes)
    return out, first_report


def _decode(args: Any, devices: list[Any], run_dtype: str | None, peak_key: str | None, kw: dict[str, Any]) -> Any:
    from ..analysis.memory import is_decoder_lm
    from ..analysis.roofline import (
        KVCacheShape,
        kv_cache_shape,
        lm_estimate,
        profile_lm,
        sweep_from_rooflines,
    )
    from ..errors import InputError
    from ..report.roofline import RooflineReport

    ests = []
    per: list[tuple[int, list[Any]]] = []
    first_report = None
    for b in args.batch:
        loaded = _load(args, b, None, run_dtype)  # the model only: profile_lm builds the token inputs
        if loaded.kind != "language" or loaded.num_layers is None or not is_decoder_lm(loaded.model):
            raise InputError(f"--decode needs a decoder language model (one that generates with a KV cache); "
                             f"{args.spec} is not one: drop --decode")
        model = loaded.model
        try:
            kv = kv_cache_shape(model.config)
        except (AttributeError, InputError):
            kv = KVCacheShape(loaded.num_layers, loaded.num_attention_heads, loaded.num_kv_heads or
                              loaded.num_attention_heads, loaded.head_dim)
        prefill, step = profile_lm(model, batch=b, context=args.context, dtype=run_dtype, name=loaded.name)
        rows = []
        for d in devices:
            est, _, dec = lm_estimate(prefill, step, kv, d, batch=b, context=args.context, dtype=peak_key, **kw)
            ests.append(est)
            rows.append(dec)
        per.append((b, rows))
        if first_report is None:
            first_report = prefill
    main_rows = per[0][1]
    key = main_rows[0].device.dtype
    sweep = sweep_from_rooflines(per, key, kind="decode") if len(per) > 1 else None
    notes = [f"per-module and per-op tables show one decode step at batch {per[0][0]} with a {args.context}-token "
             f"KV cache"]
    out = RooflineReport(model=main_rows[0].model, dtype=key, devices=main_rows, sweep=sweep, lm=ests, notes=notes)
    return out, first_report

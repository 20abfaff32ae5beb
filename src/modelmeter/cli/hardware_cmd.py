"""modelmeter hardware list | show NAME | detect | calibrate: the device catalog and this machine."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _add_files(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hardware-file", action="append", default=[], metavar="PATH",
                   help="extra device entries (JSON or TOML) that add or override catalog devices; repeatable "
                   "(also $MODELMETER_HARDWARE_FILE)")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("hardware", help="list, show, detect and calibrate devices (peaks, bandwidth, memory)",
                       description="The hardware catalog: dense and sparse peak FLOP/s per dtype, memory bandwidth, "
                       "capacity, caches and power of each device, with sources. 'calibrate' measures this machine.")
    hs = p.add_subparsers(dest="hw_command", metavar="ACTION")

    ls = hs.add_parser("list", help="one line per device")
    ls.add_argument("--kind", choices=["gpu", "tpu", "cpu", "npu", "other"], help="only devices of this kind")
    ls.add_argument("--dtype", default=None, help="show the dense peak and ridge at this dtype (default: fp32, "
                    "16-bit and 8-bit columns)")
    ls.add_argument("--json", action="store_true", help="print the entries as JSON")
    _add_files(ls)

    sh = hs.add_parser("show", help="every figure of one device, with confidence and sources")
    sh.add_argument("name", metavar="NAME", help="device name or alias (see 'modelmeter hardware list'); 'local' = this machine")
    sh.add_argument("--json", action="store_true", help="print the entry as JSON")
    _add_files(sh)

    de = hs.add_parser("detect", help="this machine's CPU and CUDA GPUs, and the catalog entry of each")
    de.add_argument("--json", action="store_true", help="print as JSON")
    _add_files(de)

    ca = hs.add_parser("calibrate", help="measure this machine's matmul FLOP/s, memory bandwidth and per-op overhead",
                       description="Measure matrix-multiply FLOP/s per dtype (torch.mm), memory bandwidth (a large copy, "
                       "bytes read + written) and per-kernel overhead, and save them as a device entry so that "
                       "predictions for this machine ('--hardware local') use measured, not datasheet, rates.")
    ca.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    ca.add_argument("--seconds", type=float, default=4.0, help="measurement time in seconds (default 4)")
    ca.add_argument("--dtypes", default=None, help="dtypes to measure, comma-separated (default: fp32, plus bf16/fp16 "
                    "where the device has a fast path)")
    ca.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    ca.add_argument("--cpu-time", action="store_true", help="time with the thread's CPU time instead of wall time "
                    "(CPU, with --threads 1): ignores other processes competing for the cores")
    ca.add_argument("--name", default=None, help="entry name (default local-<device name>)")
    ca.add_argument("--output", default=None, metavar="PATH",
                    help="hardware JSON file to save into (default ~/.config/modelmeter/hardware.json)")
    ca.add_argument("--no-save", action="store_true", help="measure and print only")
    ca.add_argument("--json", action="store_true", help="print the entry as JSON")
    return p


def run(args: Any, console: Any) -> int:
    cmd = getattr(args, "hw_command", None)
    if cmd is None:
        console.print("usage: modelmeter hardware {list,show,detect,calibrate} (see --help)")
        return 2
    return {"list": _list, "show": _show, "detect": _detect, "calibrate": _calibrate}[cmd](args, console)


def _catalog(args: Any) -> Any:
    from ..hardware import load_catalog

    return load_catalog(getattr(args, "hardware_file", []) or [])


def _origin(spec: Any) -> str:
    if spec.calibrated:
        return "calibrated"
    return "user file" if spec.origin.startswith("user:") else "catalog"


def _tf(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x / 1e12:,.1f}" if x >= 1e11 else f"{x / 1e12:.3g}"


def _list(args: Any, console: Any) -> int:
    from rich import box
    from rich.table import Table

    from ..hardware.spec import dtype_key, format_memory

    cat = _catalog(args)
    specs = [s for s in cat if args.kind is None or s.kind == args.kind]
    order = {"gpu": 0, "tpu": 1, "npu": 2, "cpu": 3, "other": 4}
    vendor = {"nvidia": 0, "amd": 1, "google": 2, "apple": 3, "intel": 4}
    specs.sort(key=lambda s: (s.calibrated, order.get(s.kind, 9), vendor.get(s.vendor, 9), s.name))
    if args.json:
        console.file.write(json.dumps([s.to_dict() for s in specs], indent=2) + "\n")
        return 0
    tab = Table(title=f"{len(specs)} devices (dense peaks, TFLOP/s; int: TOPS)", box=box.SIMPLE_HEAD,
                title_justify="left")
    tab.add_column("name", no_wrap=True)
    tab.add_column("device")
    if args.dtype:
        key = dtype_key(args.dtype)
        tab.add_column(f"{key} peak", justify="right")
        tab.add_column(f"ridge {key}", justify="right")
    else:
        for c in ("fp32", "tf32", "bf16/fp16", "fp8", "int8"):
            tab.add_column(c, justify="right")
    for c in ("bandwidth", "memory", "ridge 16-bit", "TDP", "source"):
        if args.dtype and c == "ridge 16-bit":
            continue
        tab.add_column(c, justify="right" if c not in ("source",) else "left")
    for s in specs:
        row = [s.name, s.display_name]
        if args.dtype:
            peak = s.peak_flops_per_s(key)
            row += [_tf(peak), f"{peak / s.memory_bandwidth_bytes_per_s:.0f}" if peak else "-"]
        else:
            half = s.peak_flops_per_s("bf16") or s.peak_flops_per_s("fp16")
            row += [_tf(s.peak_flops_per_s("fp32")), _tf(s.matrix_flop_per_s.get("tf32")), _tf(half),
                    _tf(s.matrix_flop_per_s.get("fp8")), _tf(s.peak_flops_per_s("int8"))]
        bw = s.memory_bandwidth_bytes_per_s
        row += [f"{bw / 1e12:.2f} TB/s" if bw >= 1e12 else f"{bw / 1e9:.0f} GB/s",
                format_memory(s.memory_bytes)]
        if not args.dtype:
            half = s.peak_flops_per_s("bf16") or s.peak_flops_per_s("fp16")
            row.append(f"{half / bw:.0f}" if half else "-")
        row += [f"{s.tdp_w:.0f} W" if s.tdp_w else "-", _origin(s)]
        tab.add_row(*row)
    tab.caption = ("dense = without 2:4 sparsity ('modelmeter hardware show NAME' lists sparse figures, sources and "
                   "confidence); GeForce 16-bit figures are the fp32-accumulate rate; memory as published (GB decimal, GiB binary)")
    tab.caption_justify = "left"
    console.print(tab)
    return 0


def _show(args: Any, console: Any) -> int:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from ..hardware import resolve_devices
    from ..hardware.spec import DTYPES, format_memory
    from ..units import human_bytes

    spec = resolve_devices(args.name, _catalog(args))[0]
    if args.json:
        console.file.write(json.dumps(spec.to_dict(), indent=2) + "\n")
        return 0
    head = Table(title=f"{spec.display_name} ({spec.name})", box=box.SIMPLE_HEAD, title_justify="left",
                 show_header=False)
    head.add_column("field")
    head.add_column("value")
    head.add_column("confidence", style="dim")
    bw = spec.memory_bandwidth_bytes_per_s
    head.add_row("kind / vendor", f"{spec.kind} / {spec.vendor or '?'}", "")
    head.add_row("memory bandwidth", f"{bw / 1e9:,.1f} GB/s ({bw:.4g} bytes/s)",
                 spec.confidence_of("memory_bandwidth_bytes_per_s"))
    if spec.memory_bytes:
        head.add_row("memory", f"{format_memory(spec.memory_bytes)} ({spec.memory_bytes:,} B) {spec.memory_type or ''}",
                     spec.confidence_of("memory_bytes"))
    for level, b in spec.cache_bytes.items():
        head.add_row(f"cache {level}", human_bytes(b), spec.confidence_of(f"cache_bytes.{level}"))
    if spec.tdp_w:
        head.add_row("TDP", f"{spec.tdp_w:g} W", spec.confidence_of("tdp_w"))
    for k, v in spec.measured_power_w.items():
        head.add_row(f"measured power ({k})", f"{v:g} W", spec.confidence_of(f"measured_power_w.{k}"))
    if spec.launch_overhead_s is not None:
        head.add_row("per-op overhead", f"{spec.launch_overhead_s * 1e6:.2f} µs", spec.confidence_of("launch_overhead_s"))
    if spec.aliases:
        head.add_row("aliases", ", ".join(spec.aliases), "")
    head.add_row("entry from", spec.origin, "")
    peaks = Table(title="peaks (TFLOP/s; integer types: TOPS)", box=box.SIMPLE_HEAD, title_justify="left")
    for c in ("dtype", "matrix (dense)", "matrix (sparse)", "vector", "ridge (FLOP/B)", "confidence"):
        peaks.add_column(c, justify="left" if c in ("dtype", "confidence") else "right")
    for d in DTYPES:
        m = spec.matrix_flop_per_s.get(d)
        sp = spec.sparse_matrix_flop_per_s.get(d)
        v = spec.vector_flop_per_s.get(d)
        if m is None and sp is None and v is None:
            continue
        conf = sorted({spec.confidence_of(f"{t}.{d}") for t, x in (("matrix_flop_per_s", m),
                       ("sparse_matrix_flop_per_s", sp), ("vector_flop_per_s", v)) if x is not None})
        peaks.add_row(d, _tf(m), _tf(sp), _tf(v), f"{spec.ridge_flop_per_byte(d):.1f}", ", ".join(conf))
    parts: list[Any] = [head, peaks]
    if spec.caveats:
        parts.append(Text("caveats:", style="bold"))
        parts += [Text(f"  - {c}") for c in spec.caveats]
    if spec.sources:
        parts.append(Text("sources:", style="bold"))
        parts += [Text(f"  {s}", style="dim") for s in spec.sources]
    from rich.console import Group

    console.print(Group(*parts))
    return 0


def _detect(args: Any, console: Any) -> int:
    from rich import box
    from rich.table import Table

    from ..hardware.detect import describe, detect_local
    from ..units import human_bytes

    devs = detect_local(_catalog(args))
    if args.json:
        console.file.write(json.dumps([describe(d) for d in devs], indent=2) + "\n")
        return 0
    tab = Table(title="this machine", box=box.SIMPLE_HEAD, title_justify="left")
    for c in ("device", "name", "cores / SMs", "memory", "fast paths", "catalog entry", "calibrated entry"):
        tab.add_column(c)
    for d in devs:
        tab.add_row(d.torch_device, d.name, str(d.cores or "?"), human_bytes(d.memory_bytes) if d.memory_bytes else "?",
                    " ".join(d.flags) or "-", d.catalog_name or "[dim]none[/]",
                    d.calibrated_name or "[dim]none: run 'modelmeter hardware calibrate'[/]")
    tab.caption = "predictions for '--hardware local' use the calibrated entry when there is one"
    tab.caption_justify = "left"
    console.print(tab)
    return 0


def _calibrate(args: Any, console: Any) -> int:
    import torch

    from ..errors import InputError
    from ..hardware import save_entry
    from ..hardware.calibrate import calibrate

    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()] if args.dtypes else None
    saved_threads = torch.get_num_threads()
    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, not {args.threads}")
        torch.set_num_threads(args.threads)
    try:
        with console.status(f"measuring {args.device} for about {args.seconds:g} s ..."):
            cal = calibrate(args.device, dtypes=dtypes, seconds=args.seconds, name=args.name, cpu_time=args.cpu_time)
    finally:
        torch.set_num_threads(saved_threads)
    if args.json:
        console.file.write(json.dumps(cal.entry, indent=2) + "\n")
    else:
        from rich import box
        from rich.table import Table

        tab = Table(title=f"calibrated {cal.device.name} ({cal.device.torch_device}, "
                          f"{cal.entry['measured']['threads']} threads)", box=box.SIMPLE_HEAD, title_justify="left")
        tab.add_column("figure")
        tab.add_column("measured", justify="right")
        tab.add_column("how", style="dim")
        for r in cal.matmul:
            tab.add_row(f"matmul {r.dtype}", f"{r.flop_per_s / 1e9:,.1f} GFLOP/s",
                        f"torch.mm {r.n}x{r.n}, best of sizes {', '.join(map(str, r.sizes_tried))}")
        tab.add_row("memory bandwidth", f"{cal.bandwidth_bytes_per_s / 1e9:,.1f} GB/s",
                    f"copy_ of {cal.copy_bytes / 2**20:.0f} MiB, read + write counted")
        if cal.launch_overhead_s is not None:
            tab.add_row("per-op overhead", f"{cal.launch_overhead_s * 1e6:.2f} µs", "one-element torch.add")
        best = max(cal.matmul, key=lambda r: r.flop_per_s)
        tab.add_row("ridge", f"{best.flop_per_s / cal.bandwidth_bytes_per_s:.1f} FLOP/B", f"{best.dtype} peak / bandwidth")
        tab.caption = f"measured in {cal.wall_s:.1f} s"
        tab.caption_justify = "left"
        console.print(tab)
        for n in cal.notes:
            console.print(f"[dim]note: {n}[/]")
    if not args.no_save:
        path = save_entry(cal.entry, args.output)
        msg = f"saved device '{cal.entry['name']}' to {path}"
        if args.json:
            console.file.flush()
            from .. import cli

            cli.make_console(stderr=True).print(msg)
        else:
            console.print(msg + "; use it with --hardware local" +
                          ("" if args.output is None else f" (with --hardware-file {path})"))
    return 0

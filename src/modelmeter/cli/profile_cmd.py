"""modelmeter profile SPEC: parameters, sizes, MACs, FLOPs, bytes; per module and per op."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_count_args, add_model_args, load_model, profile_loaded, write_text


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("profile", help="count parameters, MACs, FLOPs and bytes per op and per module",
                       description="Count parameters, sizes per precision, MACs, FLOPs and bytes moved of a model, "
                       "per aten op, per module and in total.")
    add_model_args(p)
    add_count_args(p)
    p.add_argument("--depth", type=int, default=2, help="module tree depth in the table (default 2)")
    p.add_argument("--top", type=int, default=10, help="number of top ops to list (default 10)")
    p.add_argument("--format", choices=["table", "json", "markdown", "csv"], default="table",
                   help="what to print on standard output (default table)")
    p.add_argument("--json", metavar="PATH", help="also write the JSON report here ('-' for stdout)")
    p.add_argument("--events", action="store_true", help="include every op call in the JSON report")
    p.add_argument("--csv", metavar="PATH", help="also write one CSV row per module here")
    p.add_argument("--markdown", metavar="PATH", help="also write a Markdown report here")
    p.add_argument("--hardware", default=None, metavar="DEV[,DEV...]",
                   help="add roofline-predicted latency on these devices (see `modelmeter hardware list`)")
    p.add_argument("--hardware-file", action="append", default=[], metavar="PATH",
                   help="extra device entries (JSON/TOML), e.g. from `modelmeter hardware calibrate`")
    return p


def run(args: Any, console: Any) -> int:
    from ..report.export import modules_csv, to_markdown
    from ..report.render import report_renderable

    loaded = load_model(args)
    report = profile_loaded(loaded, args)
    if args.hardware:
        from ..analysis.roofline import attach, compare_devices
        from ..hardware import load_catalog, resolve_devices

        devices = resolve_devices(args.hardware, load_catalog(args.hardware_file))
        report = attach(report, compare_devices(report, devices, batch=loaded.batch))
    if args.format == "table":
        console.print(report_renderable(report, depth=args.depth, top=args.top))
    elif args.format == "json":
        write_text("-", report.to_json(include_events=args.events), console)
    elif args.format == "markdown":
        write_text("-", to_markdown(report, depth=args.depth, top=args.top), console)
    else:
        write_text("-", modules_csv(report), console)
    if args.json:
        write_text(args.json, report.to_json(include_events=args.events), console)
    if args.csv:
        write_text(args.csv, modules_csv(report), console)
    if args.markdown:
        write_text(args.markdown, to_markdown(report, depth=args.depth, top=args.top), console)
    return 0

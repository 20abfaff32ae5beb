"""modelmeter compare SPEC SPEC ...: models side by side with cost relative to the first."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .common import add_count_args, add_model_args, load_model, profile_loaded, write_text


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="compare models side by side, relative to the first",
                       description="Profile several models with the same settings and print them side by side, "
                       "each figure also relative to the first model.")
    add_model_args(p, many=True)
    add_count_args(p)
    p.add_argument("--json", metavar="PATH", help="write the comparison as JSON ('-' for stdout)")
    return p


def compare_rows(reports: list[Any]) -> list[dict[str, Any]]:
    base = reports[0].totals
    rows = []
    for r in reports:
        t = r.totals
        rows.append({
            "model": r.provenance.model,
            "params": t.params,
            "param_bytes": t.param_bytes,
            "macs": t.macs,
            "flops": t.flops,
            "bytes_moved": t.bytes_moved,
            "arithmetic_intensity": t.arithmetic_intensity,
            "uncounted_ops": t.uncounted_ops,
            "relative_params": t.params / base.params if base.params else None,
            "relative_macs": t.macs / base.macs if base.macs else None,
            "relative_flops": t.flops / base.flops if base.flops else None,
            "relative_bytes_moved": t.bytes_moved / base.bytes_moved if base.bytes_moved else None,
        })
    return rows


def run(args: Any, console: Any) -> int:
    from rich import box
    from rich.table import Table

    from ..units import human_bytes, human_count

    reports = [profile_loaded(load_model(args, s), args) for s in args.specs]
    rows = compare_rows(reports)
    if args.json:
        write_text(args.json, json.dumps({"schema": "modelmeter.compare/1", "baseline": rows[0]["model"], "models": rows},
                                         indent=2), console)
        if args.json == "-":
            return 0

    def rel(x: float | None) -> str:
        return "—" if x is None else f"{x:.2f}x"

    tab = Table(title=f"{'training step' if args.train else 'inference'}; x = relative to {rows[0]['model']}",
                box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    show_unc = any(r["uncounted_ops"] for r in rows)
    cols = ["model", "params", "size", "MACs", "FLOPs", "bytes", "FLOP/B", "x params", "x MACs", "x bytes"]
    for col in cols + (["uncounted"] if show_unc else []):
        tab.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for r in rows:
        cells = [r["model"], human_count(r["params"]), human_bytes(r["param_bytes"], 1), human_count(r["macs"]),
                 human_count(r["flops"]), human_bytes(r["bytes_moved"], 1), f"{r['arithmetic_intensity']:.1f}",
                 rel(r["relative_params"]), rel(r["relative_macs"]), rel(r["relative_bytes_moved"])]
        if show_unc:
            cells.append(str(r["uncounted_ops"]))
        tab.add_row(*cells)
    console.print(tab)
    return 0

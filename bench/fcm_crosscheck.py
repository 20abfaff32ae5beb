"""Matrix-product FLOPs against PyTorch's FlopCounterMode, model by model, op by op.

PyTorch's ``torch.utils.flop_counter.FlopCounterMode`` (FCM) counts matrix products only, at 2 FLOPs per
MAC: modelmeter's ``matmul_flops`` is the figure to set beside its total. For every model of
``bench/meta_vs_cpu.py`` (inference, real tensors on CPU, ``no_grad``), both count the same forward with
attention forced to the math backend (FCM then sees its products as ``bmm``) and modelmeter counting
every attention pair (``causal="dense"``, as the math backend multiplies full matrices). Where the totals
differ, the per-op figures of both tools are listed side by side (op packets, e.g. ``aten.mm``;
modelmeter's fused ops by their own names), so that each difference shows where it comes from rather
than being explained after the fact.

    .venv/bin/python bench/fcm_crosscheck.py                  # every case; writes bench/results/fcm_crosscheck.json
    .venv/bin/python bench/fcm_crosscheck.py --cases gpt2,lstm --no-write
    .venv/bin/python bench/fcm_crosscheck.py --train          # a training step; writes fcm_crosscheck_train.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import defaultdict
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _benchlib import console, machine_info, write_results  # noqa: E402
from meta_vs_cpu import cases  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

import modelmeter as mm  # noqa: E402
from modelmeter.capture.run import default_loss  # noqa: E402


def _call(model: torch.nn.Module, x: Any) -> Any:
    if isinstance(x, dict):
        return model(**x)
    return model(*x) if isinstance(x, tuple) else model(x)


def _packet(op: str) -> str:
    return op.rsplit(".", 1)[0] if op.count(".") >= 2 else op


def _conv_backward_groups_fixed() -> dict[Any, Any]:
    """FCM's ``convolution_backward`` formula with its weight-gradient term divided by ``groups``.

    In torch 2.14 FCM counts a grouped convolution's weight gradient as if ``groups`` were 1 (fixed
    upstream in pytorch/pytorch#183405); with this mapping a second FCM run shows whether that is the
    whole of a difference.
    """
    from torch.utils.flop_counter import flop_registry

    base = flop_registry[torch.ops.aten.convolution_backward]

    def fixed(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        head, groups, mask = args[:10], int(args[9]), list(args[10])
        total = base(*head, [True, False, False], out_val=out_val) if mask[0] else 0
        if mask[1]:
            total += base(*head, [False, True, False], out_val=out_val) // groups
        return total

    fixed._get_raw = True  # type: ignore[attr-defined]
    return {torch.ops.aten.convolution_backward: fixed}


def run_case(build: Any, inputs: Any, train: bool = False) -> dict[str, Any]:
    torch.manual_seed(0)
    model, x = build().eval(), inputs()
    ours: dict[str, int] = defaultdict(int)
    with sdpa_kernel(SDPBackend.MATH):
        r = mm.profile(model, x, device="cpu", causal="dense", train=train)
        for e in r.events:
            if e.macs:
                ours[_packet(e.op)] += 2 * e.macs
        fcm = FlopCounterMode(display=False)
        fixed = FlopCounterMode(display=False, custom_mapping=_conv_backward_groups_fixed())
        try:
            for counter in (fcm, fixed) if train else (fcm,):
                torch.manual_seed(0)
                if train:  # as modelmeter's step: train mode, the sum of the first floating output, backward
                    model.train()
                    with counter:
                        default_loss(_call(model, x)).backward()
                    model.eval()
                    model.zero_grad(set_to_none=True)
                else:
                    with torch.no_grad(), counter:
                        _call(model, x)
        except Exception as exc:  # noqa: BLE001 - FCM's own failure is a finding, reported in the table
            return {"ours": r.totals.matmul_flops, "fcm_error": f"{type(exc).__name__}: {exc}".splitlines()[0][:160]}
    theirs = {str(k): int(v) for k, v in fcm.get_flop_counts().get("Global", {}).items() if v}
    row: dict[str, Any] = {"ours": r.totals.matmul_flops, "fcm": fcm.get_total_flops()}
    if train:
        row["fcm_groups_fixed"] = fixed.get_total_flops()
    if row["ours"] != row["fcm"]:
        row["by_op"] = {op: [ours.get(op, 0), theirs.get(op, 0)] for op in sorted(set(ours) | set(theirs))
                        if ours.get(op, 0) != theirs.get(op, 0)}
    return row


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="all")
    ap.add_argument("--train", action="store_true", help="a training step (forward, loss, backward) instead")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = console()
    table = cases()
    names = list(table) if args.cases == "all" else args.cases.split(",")
    rows, t0 = [], time.perf_counter()
    for name in names:
        row = run_case(*table[name], train=args.train)
        row["model"] = name
        rows.append(row)
        if "fcm_error" in row:
            status = f"FlopCounterMode failed: {row['fcm_error']}"
        elif row["ours"] == row["fcm"]:
            status = f"identical, {row['ours']:,}"
        else:
            ops = "; ".join(f"{op} {a:,} vs {b:,}" for op, (a, b) in row["by_op"].items())
            status = f"{row['ours']:,} vs {row['fcm']:,}: {ops}"
            if "fcm_groups_fixed" in row and row["fcm_groups_fixed"] != row["fcm"]:
                status += f" (FCM with grouped weight gradients fixed: {row['fcm_groups_fixed']:,}" + (
                    ", identical)" if row["fcm_groups_fixed"] == row["ours"] else ")")
        out.print(f"| {name} | {status} |", highlight=False, soft_wrap=True)
    same = sum(1 for r in rows if r.get("ours") == r.get("fcm"))
    out.print(f"{same} of {len(rows)} identical; {time.perf_counter() - t0:.0f} s", highlight=False)
    if not args.no_write:
        path = write_results("fcm_crosscheck_train" if args.train else "fcm_crosscheck",
                             {"machine": machine_info(), "train": args.train, "rows": rows})
        out.print(f"wrote {path}")


if __name__ == "__main__":
    main()

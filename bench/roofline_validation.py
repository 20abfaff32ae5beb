"""Roofline prediction vs measured CPU latency on this machine, after calibration.

1. ``calibrate("cpu")`` measures this machine's matmul FLOP/s (fp32), copy bandwidth and per-op overhead;
   the entry is used in memory (nothing is written to the user's config unless --save).
2. For each model and batch size: count the forward pass on meta tensors (``modelmeter.profile``) and predict
   it on the calibrated entry (pure roofline: sum over ops of max(FLOPs / peak, bytes / bandwidth); the same
   plus the calibrated per-op overhead; and the fused lower bound).
3. Build the same model with real (random) weights on the CPU and time ``model(inputs)`` under
   ``torch.inference_mode`` with the project's timing harness (warm-up, median of samples).
4. Print a Markdown table of measured / predicted ratios and write the raw figures as JSON.

    .venv/bin/python bench/roofline_validation.py                      # defaults: 7 models x batch 1, 8
    .venv/bin/python bench/roofline_validation.py --models torchvision:resnet18 --batches 1 --budget-s 1

Nothing is downloaded: torchvision models use weights=None, Hugging Face models are built from configs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

DEFAULT_MODELS = [
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:mobilenet_v3_large",
    "torchvision:convnext_tiny",
    "torchvision:vit_b_16",
    "hf:bert-base",
    "hf:gpt2",
]


class ThreadClock:
    """The calling thread's CPU time (with one torch thread, the model runs on it)."""

    def now_ns(self) -> int:
        return time.thread_time_ns()


def _load_avg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover
        return None


def _family_of_profiled(name: str) -> str:
    """The op family of a profiler key such as 'aten::addmm' (the same families as the roofline's)."""
    from modelmeter.analysis.roofline import op_family

    base = name.split("::", 1)[-1]
    if "conv" in base:
        return "conv"
    if "attention" in base:
        return "attention"
    fam = op_family(f"aten.{base}")
    if fam == "other" and base in ("linear", "matmul", "mm", "addmm", "bmm", "baddbmm"):
        return "matmul"
    return fam


def measured_families(call: Any, repeats: int = 3) -> dict[str, float]:
    """Self CPU seconds per op family of one call (median of ``repeats`` profiled calls)."""
    import statistics

    import torch
    from torch.profiler import ProfilerActivity, profile

    runs: list[dict[str, float]] = []
    for _ in range(repeats):
        with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        fam: dict[str, float] = {}
        for ev in prof.key_averages():
            if not ev.key.startswith("aten::"):
                continue
            f = _family_of_profiled(ev.key)
            fam[f] = fam.get(f, 0.0) + ev.self_cpu_time_total / 1e6
        runs.append(fam)
    keys = {k for r in runs for k in r}
    return {k: statistics.median(r.get(k, 0.0) for r in runs) for k in keys}


def run(models: list[str], batches: list[int], *, threads: int, calibrate_s: float, budget_s: float, seq: int,
        save: bool, families: bool = False) -> dict[str, Any]:
    import torch

    import modelmeter as mm
    from modelmeter.analysis.roofline import roofline
    from modelmeter.hardware import save_entry
    from modelmeter.hardware.calibrate import calibrate
    from modelmeter.hardware.spec import DeviceSpec
    from modelmeter.measure.timer import DeviceTimer, HarnessSettings, measure
    from modelmeter.models import load

    torch.set_num_threads(threads)
    load_before = _load_avg()
    # one thread: time with the thread's CPU time, so other processes sharing the cores do not count
    cpu_time = threads == 1
    cal = calibrate("cpu", dtypes=["fp32"], seconds=calibrate_s, cpu_time=cpu_time)
    if save:
        save_entry(cal.entry)
    dev = DeviceSpec.from_dict(cal.entry, origin="calibrated in this run")
    print(f"calibrated: fp32 matmul {cal.matmul[0].flop_per_s / 1e9:.1f} GFLOP/s (n={cal.matmul[0].n}), "
          f"copy bandwidth {cal.bandwidth_bytes_per_s / 1e9:.2f} GB/s, per-op overhead "
          f"{cal.launch_overhead_s * 1e6:.2f} us, {threads} thread(s)", file=sys.stderr)
    rows = []
    settings = HarnessSettings(budget_s=budget_s, warmup_s=0.2, warmup_calls=2, min_samples=7,
                               target_rel_precision=None)
    for spec in models:
        for b in batches:
            s = seq if spec.startswith("hf:") else None
            meta = load(spec, batch=b, seq=s, device="meta")
            report = mm.profile(meta.model, meta.inputs, name=meta.name)
            pure = roofline(report, dev, batch=b)
            with_ovh = roofline(report, dev, batch=b, launch_overhead_s="device")
            real = load(spec, batch=b, seq=s, device="cpu")
            model = real.model.eval()
            inputs = real.inputs
            if isinstance(inputs, dict):
                call = lambda m=model, x=inputs: m(**x)  # noqa: E731
            elif isinstance(inputs, tuple):
                call = lambda m=model, x=inputs: m(*x)  # noqa: E731
            else:
                call = lambda m=model, x=inputs: m(x)  # noqa: E731
            with torch.inference_mode():
                timing = measure(call, settings=settings, label=f"{meta.name} b{b}", threads=threads,
                                 timer=DeviceTimer(ThreadClock()) if cpu_time else None)
                wall = measure(call, settings=HarnessSettings(budget_s=min(budget_s, 1.0), warmup_s=0, warmup_calls=0,
                                                              min_samples=3, target_rel_precision=None),
                               label=f"{meta.name} b{b} wall", threads=threads)
            measured = timing.stats.p50_s
            fam_measured = measured_families(call) if families else {}
            fam_predicted: dict[str, float] = {}
            for k in pure.op_kinds:
                fam_predicted[k.family] = fam_predicted.get(k.family, 0.0) + k.time_s
            row = {
                "model": meta.name, "spec": spec, "batch": b, "seq": s,
                "gflops": report.totals.flops / 1e9, "gmacs": report.totals.macs / 1e9,
                "bytes_moved_mb": report.totals.bytes_moved / 1e6, "kernels": pure.kernels,
                "compute_s": pure.compute_s, "memory_s": pure.memory_s,
                "predicted_s": pure.predicted_s, "predicted_overhead_s": with_ovh.predicted_s,
                "fused_lower_bound_s": pure.fused_lower_bound_s, "compute_bound_fraction": pure.compute_bound_fraction,
                "clock": "thread CPU time" if cpu_time else "wall time", "wall_p50_s": wall.stats.p50_s,
                "measured_p50_s": measured, "measured_min_s": timing.stats.min_s, "samples": timing.stats.n,
                "rel_iqr": timing.stats.rel_iqr, "warnings": timing.warnings,
                "ratio": measured / pure.predicted_s, "ratio_overhead": measured / with_ovh.predicted_s,
                "ratio_fused": measured / pure.fused_lower_bound_s,
                "ratio_min": timing.stats.min_s / pure.predicted_s,
                "achieved_gflop_per_s": report.totals.flops / measured / 1e9,
                "families_predicted_s": fam_predicted, "families_measured_self_s": fam_measured,
            }
            rows.append(row)
            print(f"{meta.name:>22} b{b:<3} measured p50 {measured * 1e3:9.2f} ms  (wall {wall.stats.p50_s * 1e3:9.2f} ms)"
                  f"  predicted {pure.predicted_s * 1e3:9.2f} ms  p50/predicted {row['ratio']:.2f}", file=sys.stderr)
            del model, real
    return {
        "machine": {"cpu": cal.device.name, "cores": cal.device.cores, "threads": threads,
                    "python": platform.python_version(), "torch": torch.__version__,
                    "load_avg_before": load_before, "load_avg_after": _load_avg()},
        "calibration": {"clock": "thread CPU time" if cpu_time else "wall time",
                        "matmul_fp32_flop_per_s": cal.matmul[0].flop_per_s, "matmul_n": cal.matmul[0].n,
                        "rates_by_size": {str(k): v for k, v in cal.matmul[0].rates_by_size.items()},
                        "bandwidth_bytes_per_s": cal.bandwidth_bytes_per_s, "copy_bytes": cal.copy_bytes,
                        "launch_overhead_s": cal.launch_overhead_s, "wall_s": cal.wall_s},
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "rows": rows,
    }


def markdown(result: dict[str, Any]) -> str:
    c = result["calibration"]
    m = result["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} thread(s), torch {m['torch']}; load average before "
        f"{m['load_avg_before']}, after {m['load_avg_after']}.",
        f"Calibrated: fp32 matmul {c['matmul_fp32_flop_per_s'] / 1e9:.1f} GFLOP/s (torch.mm {c['matmul_n']}^2), "
        f"copy bandwidth {c['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s (read + write), per-op overhead "
        f"{c['launch_overhead_s'] * 1e6:.2f} µs.",
        "",
        f"Measured: {result['rows'][0]['clock'] if result['rows'] else ''} per forward call (median and minimum of "
        f"the samples; wall-clock median beside it for reference).",
        "",
        "| model | batch | GFLOPs | MB moved | ops | time in compute-bound ops | predicted | + per-op overhead "
        "| fused bound | measured min | measured p50 | wall p50 | **p50 / predicted** | min / predicted | "
        "achieved GFLOP/s (p50) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['gflops']:.2f} | {r['bytes_moved_mb']:.0f} | {r['kernels']} | "
            f"{100 * r['compute_bound_fraction']:.0f}% | {r['predicted_s'] * 1e3:.1f} ms | "
            f"{r['predicted_overhead_s'] * 1e3:.1f} ms | {r['fused_lower_bound_s'] * 1e3:.1f} ms | "
            f"{r['measured_min_s'] * 1e3:.1f} ms | {r['measured_p50_s'] * 1e3:.1f} ms | {r['wall_p50_s'] * 1e3:.1f} ms | "
            f"**{r['ratio']:.2f}** | {r['ratio_min']:.2f} | {r['gflops'] / r['measured_p50_s']:.1f} |"
        )
    fam_rows = [r for r in result["rows"] if r.get("families_measured_self_s")]
    if fam_rows:
        lines += ["", "Per op family: measured time / predicted roofline time, and in parentheses the family's share of "
                  "the measured time. The profiler (torch.profiler, median of 3 calls) gives each family's share of "
                  "the call; the share times the measured p50 above is the family's measured time (this removes a "
                  "slowdown common to all ops, e.g. from other processes).", "",
                  "| model | batch | matmul | conv | attention | norm | elementwise | reduction | pool | data | other |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in fam_rows:
            meas, pred = r["families_measured_self_s"], r["families_predicted_s"]
            tot = sum(meas.values()) or 1.0
            cells = []
            for f in ("matmul", "conv", "attention", "norm", "elementwise", "reduction", "pool", "data", "other"):
                share = meas.get(f, 0.0) / tot
                m, p = share * r["measured_p50_s"], pred.get(f, 0.0)
                if share < 1e-3 and p == 0:
                    cells.append("–")
                elif p == 0:
                    cells.append(f"n/a ({100 * share:.0f}%)")
                else:
                    cells.append(f"{m / p:.2f} ({100 * share:.0f}%)")
            lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(cells) + " |")
    for key, what in (("ratio", "measured p50 / predicted"), ("ratio_min", "measured min / predicted"),
                      ("ratio_overhead", "measured p50 / (predicted + per-op overhead)")):
        ratios = sorted(r[key] for r in result["rows"])
        if ratios:
            n = len(ratios)
            mid = ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2
            lines.append("")
            lines.append(f"{what}: median {mid:.2f}, range {ratios[0]:.2f} - {ratios[-1]:.2f} over {n} runs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model specs")
    ap.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length of language models (default 128)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: then calibration and timing read "
                    "the thread's CPU time, which other processes sharing the machine do not disturb)")
    ap.add_argument("--calibrate-s", type=float, default=6.0, help="calibration time (default 6 s)")
    ap.add_argument("--budget-s", type=float, default=2.0, help="timing budget per model and batch (default 2 s)")
    ap.add_argument("--json", default=None, help="write the raw results here")
    ap.add_argument("--save", action="store_true", help="also save the calibrated entry to the user hardware file")
    ap.add_argument("--families", action="store_true", help="also profile each run per op family (torch.profiler)")
    args = ap.parse_args(argv)
    result = run([m.strip() for m in args.models.split(",") if m.strip()],
                 [int(b) for b in args.batches.split(",") if b.strip()], threads=args.threads,
                 calibrate_s=args.calibrate_s, budget_s=args.budget_s, seq=args.seq, save=args.save,
                 families=args.families)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

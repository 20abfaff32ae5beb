"""modelmeter bench SPEC: measured latency per batch size, throughput, training-step time, MFU/HFU and
energy, next to the counted and predicted figures."""

from __future__ import annotations

import argparse
from typing import Any

from .common import batch_list


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="measure latency, throughput, MFU and energy on this machine",
        description="Run the model for real: latency percentiles per batch size (a throughput sweep when several), "
        "a training step with --train, MFU/HFU against the device's dense peak, energy with --energy (measured "
        "where a meter exists, else estimated), beside the counted FLOPs and the roofline prediction.")
    p.add_argument("spec", metavar="SPEC", help="torchvision:NAME | hf:PRESET | path/config.json | file.py:factory")
    p.add_argument("--batch", type=batch_list, default=None, metavar="B[,B...]",
                   help="batch sizes, comma-separated (default 1, or the batch of --shape); the sweep stops at the "
                   "first out-of-memory")
    p.add_argument("--seq", type=int, default=None, help="sequence length for language models (default 128)")
    p.add_argument("--shape", help="input shape(s) instead of --batch/--seq, e.g. 1x3x224x224 or 1x128:int64")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: the model's own dtype)")
    p.add_argument("--train", action="store_true", help="time a training step (forward, loss, backward, optimizer)")
    p.add_argument("--optimizer", default="sgd", help="optimizer of the training step: sgd (default), sgd-momentum, "
                   "adam, adamw, or none")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads during the run (restored after)")
    p.add_argument("--budget-s", type=float, default=2.0, help="timed seconds per batch size (default 2)")
    p.add_argument("--warmup-s", type=float, default=0.05, help="minimum warm-up seconds (default 0.05)")
    p.add_argument("--precision", type=float, default=0.01,
                   help="stop early when the median's 95%% interval half-width is below this fraction (default 0.01; "
                   "0 = run the whole budget)")
    p.add_argument("--energy", action="store_true", help="measure energy (NVML on NVIDIA GPUs, RAPL on CPUs), "
                   "else estimate it")
    p.add_argument("--energy-window-s", type=float, default=1.0, help="minimum energy window (default 1 s)")
    p.add_argument("--idle-s", type=float, default=0.5, help="idle baseline before measuring energy (default 0.5 s; 0 = off)")
    p.add_argument("--tdp-w", type=float, default=None, help="device TDP in W for the TDP x time bound")
    p.add_argument("--grid-intensity", type=float, default=None, metavar="G_PER_KWH",
                   help="grid carbon intensity in g CO2e/kWh (default: the labelled 475 g/kWh world average)")
    p.add_argument("--pue", type=float, default=1.0, help="data-centre PUE applied to CO2e (default 1.0)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense peak TFLOP/s for MFU (overrides the catalog)")
    p.add_argument("--hardware", default=None, help="catalog device whose peak MFU uses (default: detect this machine)")
    p.add_argument("--no-count", action="store_true", help="only time: skip counting, MFU, prediction and estimate")
    p.add_argument("--json", metavar="PATH", help="write the JSON report with the benchmark and raw samples ('-' = stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is off anyway when not a TTY)")
    return p


class _ProgressBar:
    """A rich progress bar fed by the harness's callback (only on a terminal)."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[n]} samples"),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.task: Any = None
        self.key: tuple[str, str] | None = None

    def __enter__(self) -> _ProgressBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, p: Any) -> None:
        key = (p.label, p.phase)
        if key != self.key:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"{p.label} {p.phase}", total=max(p.budget_s, 1e-9), n=0)
            self.key = key
        self.progress.update(self.task, completed=min(p.elapsed_s, p.budget_s), n=p.samples)


def run(args: Any, console: Any) -> int:
    import contextlib
    import dataclasses

    from ..errors import InputError
    from ..measure import EnergySettings, HarnessSettings, benchmark
    from ..measure.bench import scale_batch
    from ..models import load
    from .common import write_text

    if args.budget_s <= 0:
        raise InputError(f"--budget-s must be > 0, not {args.budget_s}")
    if args.precision < 0:
        raise InputError(f"--precision must be >= 0 (0 = run the whole budget), not {args.precision}")
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, not {args.threads}")
    optimizer = None if str(args.optimizer).lower() == "none" else args.optimizer
    from ..measure.bench import base_batch

    first = args.batch[0] if args.batch else 1
    loaded = load(args.spec, batch=first, seq=args.seq, shape=args.shape, device="cpu", dtype=args.dtype)
    inputs = loaded.inputs
    batches = list(args.batch) if args.batch else [base_batch(inputs)]
    harness = HarnessSettings(budget_s=args.budget_s, warmup_s=args.warmup_s,
                              target_rel_precision=args.precision or None)
    es = EnergySettings(window_s=args.energy_window_s, idle_s=args.idle_s, tdp_w=args.tdp_w,
                        grid_g_per_kwh=args.grid_intensity, grid_source="--grid-intensity" if args.grid_intensity else "",
                        pue=args.pue)
    show_progress = console.is_terminal and not args.no_progress
    bar = _ProgressBar(console) if show_progress else None
    with bar if bar is not None else contextlib.nullcontext():
        b = benchmark(
            loaded.model, inputs, batches=batches,
            inputs_for_batch=lambda n: scale_batch(inputs, n),
            device=args.device, dtype=args.dtype, train=args.train, optimizer=optimizer, threads=args.threads,
            harness=harness, energy=args.energy, energy_settings=es, peak_tflops=args.peak_tflops,
            hardware=args.hardware, count=not args.no_count, name=loaded.name, progress=bar,
        )
    console.print(b)
    if args.json:
        from ..api import profile

        report = profile(loaded.model, scale_batch(inputs, batches[0]), train=args.train, device="meta",
                         dtype=args.dtype, optimizer=optimizer if args.train else None, name=loaded.name)
        report = dataclasses.replace(report, benchmark=b)
        write_text(args.json, report.to_json(), console)
    return 0

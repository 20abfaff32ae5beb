"""Where one ``modelmeter.profile(model, x, device="cpu")`` call spends its time, phase by phase.

Interleaved with a plain ``no_grad`` forward (so both see the same cache and load conditions), each
call is cut at these points by timestamps taken in wrappers around modelmeter's own functions (the
wrappers add a few microseconds; they are not in the package):

* ``setup``: from the call to the model's ``forward`` being entered (argument checks, the module
  walk, parameter and buffer tables, stand-ins, the hooks and modes installed, the root module's
  pre-hook);
* ``forward``: the model's ``forward`` under the capture (the kernels, PyTorch's dispatch to the
  mode, recording every op, the module hooks);
* ``after``: from the forward's return to the end of the capture (modes restored, module table);
* ``costs``: every event's cost rule (``cost_events``);
* ``report``: the rest of the report (per op, phase and module figures, parameter table, totals);
* ``exit``: after the report is built until ``profile()`` returns (the trace freed, the garbage
  collector back).

    .venv/bin/python bench/profile_phases.py                          # the small convnets and T5
    .venv/bin/python bench/profile_phases.py --models gpt2 --threads 1 --no-write
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _benchlib import console, machine_info, write_results  # noqa: E402
from counting_overhead import model_builders  # noqa: E402

import modelmeter  # noqa: E402
from modelmeter.analysis import totals  # noqa: E402
from modelmeter.capture import run  # noqa: E402

PHASES = ("setup", "forward", "after", "costs", "report", "exit")


def measure(name: str, rounds: int) -> dict:
    case = model_builders(128)[name]()
    model, inputs = case.model, case.mm_inputs()
    stamps: dict[str, float] = {}
    pc = time.perf_counter
    forward = model.forward

    def timed_forward(*a, **k):  # noqa: ANN002, ANN003, ANN202
        stamps["f0"] = pc()
        out = forward(*a, **k)
        stamps["f1"] = pc()
        return out

    orig_capture, orig_costs, orig_report = run.run_capture, totals.cost_events, totals.build_report

    def capture(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = orig_capture(*a, **k)
        stamps["r1"] = pc()
        return out

    def costs(*a, **k):  # noqa: ANN002, ANN003, ANN202
        stamps["c0"] = pc()
        out = orig_costs(*a, **k)
        stamps["c1"] = pc()
        return out

    def report(*a, **k):  # noqa: ANN002, ANN003, ANN202
        out = orig_report(*a, **k)
        stamps["b1"] = pc()
        return out

    model.forward = timed_forward
    run.run_capture, totals.cost_events, totals.build_report = capture, costs, report
    rows, plain = [], []
    try:
        for i in range(rounds + 1):
            t0 = pc()
            with torch.no_grad():
                case.call()
            t1 = pc()
            report_ = modelmeter.profile(model, inputs, device="cpu")
            t2 = pc()
            if i == 0:  # warm-up
                continue
            plain.append(t1 - t0)
            rows.append({
                "setup": stamps["f0"] - t1, "forward": stamps["f1"] - stamps["f0"], "after": stamps["r1"] - stamps["f1"],
                "costs": stamps["c1"] - stamps["c0"], "report": (stamps["c0"] - stamps["r1"]) + (stamps["b1"] - stamps["c1"]),
                "exit": t2 - stamps["b1"], "total": t2 - t1,
            })
    finally:
        del model.forward
        run.run_capture, totals.cost_events, totals.build_report = orig_capture, orig_costs, orig_report
    med = {k: statistics.median(r[k] for r in rows) for k in (*PHASES, "total")}
    return {"name": name, "ops": report_.totals.ops, "modules": len(report_.modules),
            "plain_median_s": statistics.median(plain), "median_s": med}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0,densenet121,t5-small")
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    machine = machine_info()
    results = [measure(n, a.rounds) for n in a.models.split(",")]
    from rich.table import Table

    tab = Table(title="profile(device='cpu'), median ms per phase (plain = a no_grad forward)")
    for c in ("model", "ops", "modules", "plain", *PHASES, "total", "total / plain"):
        tab.add_column(c, justify="left" if c == "model" else "right")
    for r in results:
        m = r["median_s"]
        tab.add_row(r["name"], str(r["ops"]), str(r["modules"]), f"{r['plain_median_s'] * 1e3:.2f}",
                    *[f"{m[p] * 1e3:.2f}" for p in PHASES], f"{m['total'] * 1e3:.2f}",
                    f"{m['total'] / r['plain_median_s']:.2f}x")
    console().print(tab)
    if not a.no_write:
        payload = {"benchmark": "profile_phases", "command": " ".join(["python", "bench/profile_phases.py",
                   *(argv if argv is not None else sys.argv[1:])]), "machine": machine,
                   "settings": {"rounds": a.rounds, "threads": a.threads}, "models": results}
        print(f"wrote {write_results('profile_phases', payload)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

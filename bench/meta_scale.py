"""Analysis without weights: Llama-3-8B and Llama-3-70B on the meta device.

Each case runs in a fresh Python process (so that peak RSS belongs to that case alone and no import
is shared): the child imports torch, transformers and modelmeter, builds the model from its config
under ``with torch.device("meta")`` (no weights), then times ``modelmeter.profile(model, input_ids)``
and ``Report.to_json()``, and reads its peak RSS (``VmHWM`` from ``/proc/self/status``). The parent
also times the whole child process from start to exit.

    .venv/bin/python bench/meta_scale.py                 # all cases, 3 runs each; writes bench/results/meta_scale.json
    .venv/bin/python bench/meta_scale.py --cases llama-3-8b --runs 1 --no-write

Targets (issue 2): Llama-3-8B at batch 1, sequence 2048 in < 5 s and < 1.5 GiB peak RSS; Llama-3-70B
in < 15 s. The time that is checked against the target is the ``profile()`` call; the process wall
time (imports of torch and transformers included) is recorded beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _benchlib import console, fmt_count, machine_info, write_results  # noqa: E402

GIB = 2**30

# Llama-3 configurations as given in the brief (the values of Meta's published config.json files)
LLAMA3 = {
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
    "70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0),
}

#: name -> (config key, batch, seq, train, optimizer, target seconds or None, target peak RSS GiB or None)
CASES: dict[str, tuple[str, int, int, bool, str | None, float | None, float | None]] = {
    "llama-3-8b": ("8b", 1, 2048, False, None, 5.0, 1.5),
    "llama-3-70b": ("70b", 1, 2048, False, None, 15.0, None),
    "llama-3-8b-train-adamw": ("8b", 1, 2048, True, "adamw", None, None),
}


def _rss_now() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def child(case: str) -> dict[str, Any]:
    """Run one case in this process and return its measurements (called in a fresh subprocess)."""
    from _benchlib import peak_rss_bytes

    key, batch, seq, train, optimizer, _, _ = CASES[case]
    t0 = time.perf_counter()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import modelmeter

    t1 = time.perf_counter()
    cfg = LlamaConfig(**LLAMA3[key])
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    ids = torch.zeros(batch, seq, dtype=torch.long, device="meta")
    t2 = time.perf_counter()
    rss_before = _rss_now()
    report = modelmeter.profile(model, ids, train=train, optimizer=optimizer)
    t3 = time.perf_counter()
    text = report.to_json()
    t4 = time.perf_counter()
    tot = report.totals
    return {
        "case": case,
        "import_s": t1 - t0,
        "build_s": t2 - t1,
        "profile_s": t3 - t2,
        "to_json_s": t4 - t3,
        "json_chars": len(text),
        "rss_before_profile_bytes": rss_before,
        "peak_rss_bytes": peak_rss_bytes(),
        "params": tot.params,
        "macs": tot.macs,
        "flops": tot.flops,
        "matmul_flops": tot.matmul_flops,
        "bytes_moved": tot.bytes_moved,
        "ops": tot.ops,
        "modules": len(report.modules),
        "uncounted_ops": [[u.op, u.calls] for u in report.uncounted_ops],
        "phases": {k: {"macs": v.macs, "flops": v.flops} for k, v in tot.phases.items()} if tot.phases else {},
        "torch_version": torch.__version__,
    }


#: end-to-end CLI runs (built-in presets, which carry the model's own dtype, bf16): name -> argv after "modelmeter"
CLI_CASES: dict[str, list[str]] = {
    "cli: profile hf:llama-3-8b --seq 2048": ["profile", "hf:llama-3-8b", "--seq", "2048", "--format", "json"],
    "cli: profile hf:llama-3-70b --seq 2048": ["profile", "hf:llama-3-70b", "--seq", "2048", "--format", "json"],
}


def run_cli_case(name: str, threads: int) -> dict[str, Any]:
    """Wall time and peak RSS (from ``wait4``: that child alone) of one CLI run, JSON on stdout."""
    import tempfile

    exe = os.path.join(os.path.dirname(sys.executable), "modelmeter")
    argv = [exe] if os.path.exists(exe) else [sys.executable, "-m", "modelmeter"]
    argv += CLI_CASES[name]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, etext = out.read().decode(), err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = (etext.strip().splitlines() or ["?"])[-1]
        return {"case": name, "error": f"exit {proc.returncode}: {tail}", "process_wall_s": wall}
    rep = json.loads(text)
    tot = rep["totals"]
    return {"case": name, "argv": ["modelmeter", *CLI_CASES[name]], "process_wall_s": wall,
            "peak_rss_bytes": usage.ru_maxrss * 1024, "params": tot["params"], "macs": tot["macs"],
            "flops": tot["flops"], "ops": tot.get("ops"), "dtype": rep["provenance"]["dtype"]}


def run_case(case: str, threads: int) -> dict[str, Any]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", case], capture_output=True,
                          text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"case": case, "error": f"exit {proc.returncode}: {tail}", "process_wall_s": wall}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="all", help=f"comma-separated subset of: {', '.join(CASES)}")
    ap.add_argument("--no-cli", action="store_true", help="skip the end-to-end `modelmeter profile hf:...` runs")
    ap.add_argument("--runs", type=int, default=3, help="fresh processes per case (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the child (default 2)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child)))
        return 0

    machine = machine_info(child_omp_num_threads=a.threads)  # the load average the run started under
    names = list(CASES) if a.cases == "all" else a.cases.split(",")
    results = []
    for label in names:
        n = label
        runs = []
        for _ in range(a.runs):
            r = run_case(n, a.threads)
            runs.append(r)
            msg = r.get("error") or f"profile {r['profile_s']:.2f} s, peak RSS {r['peak_rss_bytes'] / GIB:.2f} GiB"
            print(f"  {label}: {msg}", file=sys.stderr, flush=True)
        ok = [r for r in runs if "error" not in r]
        _, batch, seq, train, opt, t_target, rss_target = CASES[n]
        entry: dict[str, Any] = {"case": label, "batch": batch, "seq": seq, "train": train,
                                 "optimizer": opt, "target_profile_s": t_target, "target_peak_rss_gib": rss_target,
                                 "runs": runs}
        if ok:
            med = {k: statistics.median(r[k] for r in ok)
                   for k in ("import_s", "build_s", "profile_s", "to_json_s", "process_wall_s")}
            entry["median"] = med
            entry["max_peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in ok)
            entry["max_rss_before_profile_bytes"] = max(r["rss_before_profile_bytes"] for r in ok)
            entry["counts"] = {k: ok[0][k] for k in ("params", "macs", "flops", "matmul_flops", "bytes_moved", "ops",
                                                     "modules", "uncounted_ops", "phases")}
            entry["meets_time_target"] = None if t_target is None else med["profile_s"] < t_target
            entry["meets_rss_target"] = (None if rss_target is None
                                         else entry["max_peak_rss_bytes"] < rss_target * GIB)
        results.append(entry)

    cli_results = []
    for n in ([] if a.no_cli else CLI_CASES):
        runs = [run_cli_case(n, a.threads) for _ in range(a.runs)]
        ok = [r for r in runs if "error" not in r]
        entry = {"case": n, "runs": runs}
        if ok:
            entry["median_process_wall_s"] = statistics.median(r["process_wall_s"] for r in ok)
            entry["max_peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in ok)
        msg = runs[-1].get("error") or (f"{entry['median_process_wall_s']:.2f} s, "
                                        f"peak RSS {entry['max_peak_rss_bytes'] / GIB:.2f} GiB")
        print(f"  {n}: {msg}", file=sys.stderr, flush=True)
        cli_results.append(entry)

    render(results, cli_results)
    payload = {
        "benchmark": "meta_scale",
        "command": " ".join(["python", "bench/meta_scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine,
        "loadavg_at_end": list(os.getloadavg()),
        "settings": {"runs": a.runs, "threads": a.threads, "configs": LLAMA3},
        "cases": results,
        "cli": cli_results,
    }
    if not a.no_write:
        name = "meta_scale"
        print(f"wrote {write_results(name, payload)}", file=sys.stderr)
    return 0


def render(results: list[dict[str, Any]], cli_results: list[dict[str, Any]]) -> None:
    from rich.table import Table

    tab = Table(title="Analysis without weights (meta device), median of fresh processes")
    for col in ("case", "profile() s", "peak RSS GiB", "process s", "import s", "params", "MACs", "FLOPs", "ops"):
        tab.add_column(col, justify="left" if col == "case" else "right")
    for e in results:
        if "median" not in e:
            tab.add_row(e["case"], "error", *[""] * 7)
            continue
        m, c = e["median"], e["counts"]
        tt = "" if e["target_profile_s"] is None else f" (<{e['target_profile_s']:g} {'ok' if e['meets_time_target'] else 'MISSED'})"
        rt = "" if e["target_peak_rss_gib"] is None else f" (<{e['target_peak_rss_gib']:g} {'ok' if e['meets_rss_target'] else 'MISSED'})"
        tab.add_row(e["case"], f"{m['profile_s']:.2f}{tt}", f"{e['max_peak_rss_bytes'] / GIB:.2f}{rt}",
                    f"{m['process_wall_s']:.2f}", f"{m['import_s']:.2f}",
                    fmt_count(c["params"]), fmt_count(c["macs"]), fmt_count(c["flops"]), str(c["ops"]))
    con = console()
    con.print(tab)
    if cli_results:
        ct = Table(title="End to end through the CLI (process start to exit, median)")
        for col in ("command", "wall s", "peak RSS GiB", "MACs", "dtype"):
            ct.add_column(col, justify="left" if col == "command" else "right")
        for e in cli_results:
            if "median_process_wall_s" not in e:
                ct.add_row(e["case"], e["runs"][-1].get("error", "error"), "", "", "")
                continue
            r = e["runs"][0]
            ct.add_row(e["case"], f"{e['median_process_wall_s']:.2f}", f"{e['max_peak_rss_bytes'] / GIB:.2f}",
                       fmt_count(r["macs"]), r["dtype"])
        con.print(ct)


if __name__ == "__main__":
    sys.exit(main())

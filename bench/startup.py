"""CLI start-up time: ``modelmeter --help`` must answer in under 1 s (heavy modules imported lazily).

Each command runs as a fresh subprocess, ``--reps`` times after one untimed run (so the page cache
is warm), and the median wall time is reported. ``python -c "pass"`` and ``python -c "import torch"``
are timed alongside as the floor and as what an eager ``import torch`` would cost. ``python -X
importtime`` names the slowest imports behind ``import modelmeter`` and ``modelmeter --help``, and the
benchmark checks that neither pulls in torch.

    .venv/bin/python bench/startup.py                 # writes bench/results/startup.json
    .venv/bin/python bench/startup.py --reps 5 --no-write
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _benchlib import console, machine_info, summarize, write_results  # noqa: E402

TARGET_S = 1.0


def commands() -> dict[str, list[str]]:
    py = sys.executable
    exe = Path(py).with_name("modelmeter")
    cli = [str(exe)] if exe.exists() else [py, "-m", "modelmeter"]
    return {
        "python -c pass": [py, "-c", "pass"],
        "modelmeter --help": [*cli, "--help"],
        "modelmeter --version": [*cli, "--version"],
        "modelmeter profile --help": [*cli, "profile", "--help"],
        "python -m modelmeter --help": [py, "-m", "modelmeter", "--help"],
        'python -c "import modelmeter"': [py, "-c", "import modelmeter"],
        'python -c "import torch"': [py, "-c", "import torch"],
    }


FIRST_CALL = (
    "import sys, time; sys.path.insert(0, {bench!r})\n"
    "import torch\nfrom torch import nn\nimport modelmeter\n{patch}"
    "t0 = time.perf_counter()\n"
    "modelmeter.profile(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), torch.randn(2, 8), device={device!r})\n"
    "print(time.perf_counter() - t0)\n"
)


def first_call_commands() -> dict[str, list[str]]:
    """The first ``profile()`` call of a process (torch already imported), on a two-layer model."""
    py = sys.executable
    bench = os.path.dirname(os.path.abspath(__file__))
    return {f"first profile(), device={d}": [py, "-c", FIRST_CALL.format(bench=bench, patch="", device=d)]
            for d in ("cpu", "meta")}


def time_first_call(argv: list[str], reps: int) -> dict[str, Any]:
    """Time the profile() call inside the child (printed by it), not the child's start-up."""
    samples = []
    for _ in range(reps):
        p = subprocess.run(argv, capture_output=True, text=True, check=False)
        if p.returncode != 0:
            return {"error": (p.stderr.strip().splitlines() or ["?"])[-1], "returncode": p.returncode}
        samples.append(float(p.stdout.strip().splitlines()[-1]))
    out = summarize(samples)
    out["returncode"] = 0
    return out


def time_command(argv: list[str], reps: int) -> dict[str, Any]:
    env = dict(os.environ)
    subprocess.run(argv, capture_output=True, env=env, check=False)  # warm the page cache
    samples = []
    rc = 0
    for _ in range(reps):
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, env=env, check=False)
        samples.append(time.perf_counter() - t0)
        rc = rc or p.returncode
    out = summarize(samples)
    out["returncode"] = rc
    return out


def import_profile(code: str, top: int = 8) -> dict[str, Any]:
    """Slowest imports (cumulative microseconds) under ``python -X importtime``, and whether torch is among them."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=False)
    rows = []
    for line in p.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        head, cum_us, name = line.split("|", 2)
        rows.append((name.strip(), int(head.split(":", 1)[1]), int(cum_us)))
    names = {r[0] for r in rows}
    rows.sort(key=lambda r: -r[2])
    return {
        "imports_torch": "torch" in names,
        "imports_rich": "rich" in names,
        "modules_imported": len(rows),
        "slowest_cumulative_us": [[n, c] for n, _, c in rows[:top]],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=9, help="timed runs per command (default 9)")
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args(argv)
    machine = machine_info()  # the load average the run started under

    results = {}
    for name, cmd in commands().items():
        results[name] = time_command(cmd, a.reps)
        results[name]["argv"] = cmd
        print(f"  {name}: {results[name]['median_s']:.3f} s", file=sys.stderr, flush=True)
    first = {}
    for name, cmd in first_call_commands().items():
        first[name] = time_first_call(cmd, max(3, a.reps // 2))
        msg = first[name].get("error") or f"{first[name]['median_s']:.3f} s"
        print(f"  {name}: {msg}", file=sys.stderr, flush=True)
    imports = {
        "import modelmeter": import_profile("import modelmeter"),
        "modelmeter --help": import_profile(
            "import sys; sys.argv=['modelmeter','--help']\n"
            "from modelmeter.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass"
        ),
    }
    helps = results["modelmeter --help"]["median_s"]
    summary = {"target_s": TARGET_S, "help_median_s": helps, "meets_target": helps < TARGET_S,
               "help_minus_bare_python_s": helps - results["python -c pass"]["median_s"]}
    render(results, imports, summary, first)
    payload = {
        "benchmark": "startup",
        "command": " ".join(["python", "bench/startup.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine,
        "loadavg_at_end": list(os.getloadavg()),
        "settings": {"reps": a.reps},
        "summary": summary,
        "commands": results,
        "first_profile_call": first,
        "imports": imports,
    }
    if not a.no_write:
        print(f"wrote {write_results('startup', payload)}", file=sys.stderr)
    return 0


def render(results: dict[str, Any], imports: dict[str, Any], summary: dict[str, Any], first: dict[str, Any]) -> None:
    from rich.table import Table

    tab = Table(title="Start-up time (fresh process, median)")
    for col in ("command", "median s", "p25-p75 s", "min s", "rc"):
        tab.add_column(col, justify="left" if col == "command" else "right")
    for name, r in results.items():
        tab.add_row(name, f"{r['median_s']:.3f}", f"{r['p25_s']:.3f}-{r['p75_s']:.3f}", f"{r['min_s']:.3f}",
                    str(r["returncode"]))
    for name, r in first.items():
        if "error" in r:
            tab.add_row(name, "error", r["error"], "", str(r["returncode"]))
        else:
            tab.add_row(name, f"{r['median_s']:.3f}", f"{r['p25_s']:.3f}-{r['p75_s']:.3f}", f"{r['min_s']:.3f}", "0")
    con = console()
    con.print(tab)
    ok = "ok" if summary["meets_target"] else "MISSED"
    con.print(f"modelmeter --help: {summary['help_median_s']:.3f} s (target < {summary['target_s']:g} s: {ok})")
    for k, v in imports.items():
        slow = ", ".join(f"{n} {us / 1e3:.0f} ms" for n, us in v["slowest_cumulative_us"][:5])
        con.print(f"{k}: {v['modules_imported']} modules, torch imported: {v['imports_torch']}; slowest: {slow}",
                  highlight=False)


if __name__ == "__main__":
    sys.exit(main())

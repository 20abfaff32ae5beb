"""Print the Markdown tables of ``docs/benchmarks.md`` from the recorded results in ``bench/results/``.

    .venv/bin/python bench/to_markdown.py counting_overhead    # or: counts, meta_scale, startup, prototype,
                                                               # compare, repeats, phases, attribution,
                                                               # dispatch_floor

The figures in the docs are pasted from this output, so that no number is transcribed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchlib import RESULTS_DIR as RESULTS  # noqa: E402
from _benchlib import fmt_count, mac_equivalent  # noqa: E402

GIB = 2**30


def load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def machine_line(d: dict[str, Any]) -> str:
    m = d["machine"]
    return (f"{m['cpu_model']}, {m['usable_cores']} cores, {m.get('memory_gib', '?')} GiB, torch {m.get('torch_version')}, "
            f"Python {m['python_version']}, {m['date_utc']}, load average (1 min) {m['loadavg_at_start'][0]:.2f} at start"
            + (f", {d['loadavg_at_end'][0]:.2f} at end" if d.get("loadavg_at_end") else ""))


def overhead(name: str = "counting_overhead") -> None:
    d = load(name)
    tools = [t for t in d["settings"]["tools"] if t != "plain"]
    print(f"`{d['command']}` — {machine_line(d)}\n")
    print("| model | input | plain forward (ms) | " + " | ".join(tools) + " |")
    print("| --- | --- | ---: | " + " | ".join("---:" for _ in tools) + " |")
    for m in d["models"]:
        cells = []
        for t in tools:
            r = m["ratio_to_plain"].get(t)
            cells.append("fails" if r is None else f"{r:.2f}×" + ("*" if m["timing"][t]["wide_spread"] else ""))
        print(f"| {m['name']} | {m['input']} | {m['timing']['plain']['median_s'] * 1e3:.1f} | " + " | ".join(cells) + " |")
    s = d["summary"]
    print("| **geometric mean** | | | " + " | ".join(f"**{s['geomean_ratio'][t]:.2f}×**" for t in tools) + " |")
    print("\n`*`: interquartile range above 25 % of the median.")
    print("Geometric mean of the per-round paired ratios (each tool / the plain forward of the same round): "
          + ", ".join(f"{t} {s['geomean_paired_ratio'][t]:.2f}×" for t in tools) + ".")


def counts(name: str = "counting_overhead") -> None:
    d = load(name)
    peers = [t for t in ("fcm", "fvcore", "ptflops", "ptflops-aten", "thop") if t in d["settings"]["tools"]]
    print("| model | modelmeter MACs | modelmeter FLOPs | " + " | ".join(
        {"fcm": "FlopCounterMode FLOPs / 2", "fvcore": "fvcore \"flops\"", "ptflops": "ptflops MACs",
         "ptflops-aten": "ptflops (aten) MACs", "thop": "thop MACs"}[t] for t in peers) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in peers) + " |")
    for m in d["models"]:
        mm = m["counts"]["modelmeter"]
        cells = []
        for t in peers:
            c = m["counts"].get(t)
            if c is None:
                cells.append("fails")
                continue
            v = mac_equivalent(t, c)
            cells.append(f"{fmt_count(v)} ({v / mm['macs']:.3f})")
        print(f"| {m['name']} | {fmt_count(mm['macs'])} | {fmt_count(mm['flops'])} | " + " | ".join(cells) + " |")
    print("\nParameters as reported (modelmeter / ptflops / thop):")
    for m in d["models"]:
        c = m["counts"]
        print(f"- {m['name']}: {c['modelmeter']['params']:,} / {c.get('ptflops', {}).get('params', '-'):,} / "
              f"{c.get('thop', {}).get('params', '-'):,}")


def meta_scale(name: str = "meta_scale") -> None:
    d = load(name)
    print(f"`{d['command']}` — {machine_line(d)}\n")
    print("| case | `profile()` s (median) | runs (s) | peak RSS GiB (max) | RSS before `profile()` GiB | whole process s | "
          "import s | params | MACs | FLOPs | ops | target |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for e in d["cases"]:
        m, c = e["median"], e["counts"]
        runs = ", ".join(f"{r['profile_s']:.2f}" for r in e["runs"] if "profile_s" in r)
        tgt = []
        if e["target_profile_s"] is not None:
            tgt.append(f"< {e['target_profile_s']:g} s: {'met' if e['meets_time_target'] else 'MISSED'}")
        if e["target_peak_rss_gib"] is not None:
            tgt.append(f"< {e['target_peak_rss_gib']:g} GiB: {'met' if e['meets_rss_target'] else 'MISSED'}")
        print(f"| {e['case']} | {m['profile_s']:.2f} | {runs} | {e['max_peak_rss_bytes'] / GIB:.2f} | "
              f"{e['max_rss_before_profile_bytes'] / GIB:.2f} | {m['process_wall_s']:.2f} | {m['import_s']:.2f} | "
              f"{c['params']:,} | {fmt_count(c['macs'])} | {fmt_count(c['flops'])} | {c['ops']} | {'; '.join(tgt) or '-'} |")
    if d.get("cli"):
        print("\n| command (end to end, fresh process) | wall s (median) | runs (s) | peak RSS GiB | MACs | dtype |")
        print("| --- | ---: | --- | ---: | ---: | --- |")
        for e in d["cli"]:
            r0 = e["runs"][0]
            runs = ", ".join(f"{r['process_wall_s']:.2f}" for r in e["runs"])
            print(f"| `{' '.join(r0['argv'])}` | {e['median_process_wall_s']:.2f} | {runs} | "
                  f"{e['max_peak_rss_bytes'] / GIB:.2f} | {fmt_count(r0['macs'])} | {r0['dtype']} |")


def startup(name: str = "startup") -> None:
    d = load(name)
    print(f"`{d['command']}` — {machine_line(d)}\n")
    print("| command | median s | p25–p75 s | min s |")
    print("| --- | ---: | --- | ---: |")
    for k, r in {**d["commands"], **d.get("first_profile_call", {})}.items():
        print(f"| `{k}` | {r['median_s']:.3f} | {r['p25_s']:.3f}–{r['p75_s']:.3f} | {r['min_s']:.3f} |")
    for k, v in d["imports"].items():
        print(f"\n`{k}` imports {v['modules_imported']} modules; torch imported: {v['imports_torch']}; "
              f"rich imported: {v['imports_rich']}")


def prototype(name: str = "counting_overhead_prototype") -> None:
    overhead(name)
    d = load(name)
    info = d["settings"].get("prototype")
    if isinstance(info, dict):
        print(f"\nPrototype parts applied on top of the package: {', '.join(info['applied']) or 'none'} "
              f"(already in the package: {', '.join(info['already_in_package']) or 'none'}).")
    same = all(m["counts"].get("mm-proto", {}).get("identical_to_modelmeter") for m in d["models"])
    print(f"\nmm-proto's report (every event included, SHA-1 of its JSON) identical to modelmeter's on every model: {same}")


def compare(before: str = "counting_overhead_before_fastpath", after: str = "counting_overhead") -> None:
    """modelmeter's ratio per model in two recorded runs (FlopCounterMode beside it, as a yardstick of the load)."""
    b, a = load(before), load(after)
    print(f"Before: `{b['command']}` at {b['machine']['git_commit']} ({b['machine']['date_utc']}); "
          f"after: `{a['command']}` at {a['machine']['git_commit']} ({a['machine']['date_utc']}).\n")
    print("| model | modelmeter before | modelmeter after | FlopCounterMode before | FlopCounterMode after |")
    print("| --- | ---: | ---: | ---: | ---: |")
    am = {m["name"]: m for m in a["models"]}
    for m in b["models"]:
        n = m["name"]
        r1, r2 = m["ratio_to_plain"], am[n]["ratio_to_plain"]
        print(f"| {n} | {r1['modelmeter']:.2f}× | {r2['modelmeter']:.2f}× | {r1['fcm']:.2f}× | {r2['fcm']:.2f}× |")
    g1, g2 = b["summary"]["geomean_ratio"], a["summary"]["geomean_ratio"]
    print(f"| **geometric mean** | **{g1['modelmeter']:.2f}×** | **{g2['modelmeter']:.2f}×** | **{g1['fcm']:.2f}×** | "
          f"**{g2['fcm']:.2f}×** |")


def repeats(*names: str) -> None:
    """Geometric means of several recorded runs of the counting-overhead benchmark, side by side."""
    names = names or ("counting_overhead", "counting_overhead_repeat2", "counting_overhead_repeat3")
    runs = [load(n) for n in names]
    tools = list(dict.fromkeys(t for d in runs for t in d["settings"]["tools"] if t != "plain"))
    print("| run | commit | date (UTC) | load average at start / end | " + " | ".join(tools) + " |")
    print("| --- | --- | --- | --- | " + " | ".join("---:" for _ in tools) + " |")
    for n, d in zip(names, runs):
        g = d["summary"]["geomean_ratio"]
        load_s, load_e = d["machine"]["loadavg_at_start"][0], d["loadavg_at_end"][0]
        print(f"| `{n}.json` | {d['machine']['git_commit']} | {d['machine']['date_utc'][:19]} | {load_s:.2f} / {load_e:.2f} | "
              + " | ".join(f"{g[t]:.2f}×" if t in g else "-" for t in tools) + " |")


def phases(name: str = "profile_phases") -> None:
    d = load(name)
    cols = ("setup", "forward", "after", "costs", "report", "exit")
    print(f"`{d['command']}` — {machine_line(d)}\n")
    print("| model | ops | modules | plain forward ms | " + " | ".join(cols) + " | total ms | total / plain |")
    print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in cols) + " | ---: | ---: |")
    for r in d["models"]:
        m = r["median_s"]
        print(f"| {r['name']} | {r['ops']} | {r['modules']} | {r['plain_median_s'] * 1e3:.2f} | "
              + " | ".join(f"{m[c] * 1e3:.2f}" for c in cols) + f" | {m['total'] * 1e3:.2f} | "
              f"{m['total'] / r['plain_median_s']:.2f}× |")
    print("\n(median ms per phase over the rounds; one round = a plain forward, then `profile()`.)")


def attribution(name: str = "fastpath_attribution") -> None:
    d = load(name)
    models = d["models"]
    parts = list(next(iter(models.values()))["saved_ms"])
    print(f"`python bench/_fastpath_prototype.py` (at commit 55cbb8b) `--models {','.join(models)} --reps {d['reps']} --json "
          f"bench/results/{name}.json` — {machine_line(d)}\n")
    print("| model | ops | plain CPU ms | `profile()` CPU ms | " + " | ".join(f"`{p}`" for p in parts) + " |")
    print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in parts) + " |")
    for n, r in models.items():
        print(f"| {n} | {r['ops']} | {r['plain_cpu_ms']:.1f} | {r['profile_cpu_ms']:.1f} | "
              + " | ".join(f"{r['saved_ms'][p]:+.1f}" for p in parts) + " |")
    print("\n(ms of CPU time saved per call; `walk` includes `setup` and `params`.)")


def dispatch_floor(name: str = "dispatch_floor") -> None:
    d = load(name)
    print(f"`{d['command']}` — {machine_line(d)}; CPU time of the calling thread, 1 torch thread\n")
    print("| call | aten ops | plain µs | under an empty mode µs | added µs |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in d["per_op"]:
        print(f"| `{r['case']}` | {r['aten_ops']} | {r['plain_us']:.2f} | {r['under_empty_mode_us']:.2f} | "
              f"{r['under_empty_mode_us'] - r['plain_us']:.2f} |")
    m = d["model"]
    med = m["median_cpu_s"]
    base = med["plain forward"]
    print(f"\n{m['model']} ({m['ops']} ops, {m['modules']} modules), one call:\n")
    print("| what runs | CPU ms | added ms | / plain |")
    print("| --- | ---: | ---: | ---: |")
    for k, v in med.items():
        print(f"| {k} | {v * 1e3:.2f} | {(v - base) * 1e3:+.2f} | {v / base:.2f}× |")
    print(f"\nRecording, per op: {m['record_live_us_per_op']:.1f} µs during the forward, "
          f"{m['record_replayed_us_per_op']:.1f} µs replayed in a tight loop.\n")
    print("| MiB written between calls | `torch.conv2d` plain µs | under an empty mode µs | added µs |")
    print("| ---: | ---: | ---: | ---: |")
    for r in d.get("cold_caches", []):
        print(f"| {r['flush_mib']} | {r['plain_us']:.2f} | {r['under_empty_mode_us']:.2f} | "
              f"{r['under_empty_mode_us'] - r['plain_us']:.2f} |")


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "counting_overhead"
    {"counting_overhead": overhead, "counts": counts, "meta_scale": meta_scale, "startup": startup,
     "prototype": prototype, "attribution": attribution, "compare": compare, "repeats": repeats,
     "phases": phases, "dispatch_floor": dispatch_floor}[what](*sys.argv[2:])

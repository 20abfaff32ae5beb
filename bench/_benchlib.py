"""Small helpers shared by the benchmarks in ``bench/`` (not part of the package).

Timing follows the house rules: warm up first, keep every raw sample, report the median with the
interquartile range, and flag a wide spread. Results are written as JSON under ``bench/results/``
together with the machine they were taken on.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
REPO_ROOT = BENCH_DIR.parent

#: interquartile range / median above which a timing is flagged as noisy
WIDE_SPREAD = 0.25


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def src_dirty() -> bool | None:
    """Whether ``src/`` has uncommitted changes (then ``git_commit`` alone does not name the code measured)."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def machine_info(*, with_torch: bool = True, **extra: Any) -> dict[str, Any]:
    """The machine and software a result was taken on."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "python_version": platform.python_version(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": git_commit(),
        "src_uncommitted_changes": src_dirty(),
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONDONTWRITEBYTECODE")},
    }
    try:
        mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal"))
        info["memory_gib"] = round(mem_kib / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    if with_torch:
        import torch

        info["torch_version"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    try:
        import modelmeter

        info["modelmeter_version"] = modelmeter.__version__
    except ImportError:
        pass
    info.update(extra)
    return info


def summarize(samples: list[float]) -> dict[str, Any]:
    """Median, quartiles, min and relative spread (IQR / median) of raw samples, in seconds."""
    s = sorted(samples)
    if len(s) >= 4:
        q = statistics.quantiles(s, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25, p75 = s[0], s[-1]
    med = statistics.median(s)
    spread = (p75 - p25) / med if med > 0 else 0.0
    return {
        "median_s": med,
        "p25_s": p25,
        "p75_s": p75,
        "min_s": s[0],
        "max_s": s[-1],
        "n": len(s),
        "iqr_over_median": spread,
        "wide_spread": spread > WIDE_SPREAD,
        "samples_s": list(samples),
    }


def geomean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not vals:
        return float("nan")
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (VmHWM; ru_maxrss as a fallback), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * (1 if sys.platform == "darwin" else 1024)


def fmt_count(n: float | None) -> str:
    """1.82e9 -> '1.820 G' (SI prefixes, three decimals)."""
    if n is None:
        return "-"
    for div, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3f} {unit}"
    return f"{n:.0f}"


def mac_equivalent(tool: str, c: dict[str, Any]) -> float | None:
    """Each tool's headline number converted to MACs (FlopCounterMode counts 2 per MAC)."""
    if tool == "fcm":
        return c["flops"] / 2
    if tool == "fvcore":
        return c["flops_label_but_macs"]
    if tool in ("ptflops", "ptflops-aten", "thop", "modelmeter", "mm-meta"):
        return c.get("macs")
    return None


def console():  # noqa: ANN201
    from rich.console import Console

    return Console(no_color=bool(os.environ.get("NO_COLOR")) or None, width=max(120, Console().width))

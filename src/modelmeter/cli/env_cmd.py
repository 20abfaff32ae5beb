"""modelmeter env: versions and devices, for bug reports and provenance."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("env", help="show versions and devices", description="Show versions and devices.")
    p.add_argument("--json", action="store_true", help="print as JSON")
    return p


def collect() -> dict[str, Any]:
    import importlib.metadata as md
    import os
    import platform

    import torch

    from .. import __version__
    from ..capture import native

    def version(pkg: str) -> str | None:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return None

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            pr = torch.cuda.get_device_properties(i)
            cuda.append({"index": i, "name": pr.name, "memory_bytes": pr.total_memory,
                         "capability": f"{pr.major}.{pr.minor}"})
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    return {
        "modelmeter": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "torchvision": version("torchvision"),
        "transformers": version("transformers"),
        "rich": version("rich"),
        "matplotlib": version("matplotlib"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": cuda,
        "mps": mps,
        "native_recorder": native.status(),
    }


def run(args: Any, console: Any) -> int:
    info = collect()
    if args.json:
        console.file.write(json.dumps(info, indent=2) + "\n")
        return 0
    from rich import box
    from rich.table import Table

    tab = Table(box=box.SIMPLE_HEAD, show_header=False)
    tab.add_column("key")
    tab.add_column("value")
    for k, v in info.items():
        if k == "cuda_devices":
            v = "; ".join(f"{d['index']}: {d['name']} ({d['memory_bytes'] / 2**30:.0f} GiB, sm {d['capability']})"
                          for d in v) or "none"
        tab.add_row(k, "not installed" if v is None else str(v))
    console.print(tab)
    return 0

"""What a dispatch-mode counter cannot avoid, and what each layer of modelmeter's capture adds.

Three measurements, all in CPU time of the calling thread on one torch thread (``time.thread_time``,
far steadier on a shared machine than wall time), medians over interleaved rounds:

1. **PyTorch's cost per op of an empty ``TorchDispatchMode``** (one that only calls the op), for ops
   with few and many arguments: what PyTorch itself spends handing an op to Python and back, and how
   much of that is the schema-based argument parsing of ``OpOverload`` (``op._op(...)``) next to the
   same call through its ``torch.*`` function.
2. **A model's forward under each layer of the capture**: an empty mode; modelmeter's capture
   recording nothing (its dispatch mode, attention wrapper and module hooks); the same with
   ``nn.Module.__call__`` patched instead of global module hooks (an alternative that was measured,
   not adopted); the capture recording every op; the whole ``profile()`` call with the Python capture;
   the native recorder alone (no hooks, no events made); the whole ``profile()`` call with it.
3. **Recording live vs replayed**: the same ops recorded during the forward (interleaved with the
   kernels) and replayed from a list in a tight loop afterwards.
4. **The empty mode's cost per op with the caches flushed between ops**: a small conv in a loop, with
   a NumPy array of 0-16 MiB written between calls (NumPy is not dispatched), as a model's kernels
   overwrite the caches between its ops: how much of the per-op cost is waiting for memory.

    .venv/bin/python bench/dispatch_floor.py                      # mobilenet_v2, writes bench/results/dispatch_floor.json
    .venv/bin/python bench/dispatch_floor.py --model densenet121 --rounds 30 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _benchlib import console, machine_info, write_results  # noqa: E402
from counting_overhead import EmptyMode, NoRecordState  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import modelmeter  # noqa: E402
from modelmeter.capture import native  # noqa: E402
from modelmeter.capture.tracer import _plan, _Recorder, _sdpa_wrapped, _State, capturing  # noqa: E402


def _median_cpu(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Median thread CPU seconds of each function, the functions interleaved in alternating order."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for k in names:  # warm-up
        fns[k]()
    for r in range(rounds):
        for k in names if r % 2 else reversed(names):
            t0 = time.thread_time()
            fns[k]()
            samples[k].append(time.thread_time() - t0)
    return {k: statistics.median(v) for k, v in samples.items()}


# 1. per op -----------------------------------------------------------------------------------------
def per_op(rounds: int) -> list[dict[str, Any]]:
    a, b = torch.randn(4), torch.randn(4)
    x, w = torch.randn(1, 3, 16, 16), torch.randn(8, 3, 3, 3)
    rm, rv, g, bb = torch.zeros(3), torch.ones(3), torch.ones(3), torch.zeros(3)
    lw, lx = torch.randn(16, 16), torch.randn(2, 16)
    conv = torch.ops.aten.convolution.default
    cases: dict[str, tuple[Callable[[], Any], int]] = {
        # name: (one call, aten ops it dispatches)
        "torch.add (4 elements)": (lambda: torch.add(a, b), 1),
        "torch.conv2d (1x3x16x16, 8 filters 3x3)": (lambda: torch.conv2d(x, w), 1),
        "F.batch_norm, eval (1x3x16x16)": (lambda: torch.nn.functional.batch_norm(x, rm, rv, g, bb), 2),
        "F.linear (2x16 @ 16x16)": (lambda: torch.nn.functional.linear(lx, lw), 2),
        "torch.convolution, all 9 arguments": (lambda: torch.convolution(x, w, None, [1, 1], [0, 0], [1, 1], False,
                                                                          [0, 0], 1), 1),
        "aten.convolution.default._op, same arguments": (lambda: conv._op(x, w, None, [1, 1], [0, 0], [1, 1], False,
                                                                          [0, 0], 1), 1),
    }
    n = 200
    out = []
    with torch.no_grad():
        for name, (call, ops) in cases.items():
            def plain(call: Callable[[], Any] = call) -> None:
                for _ in range(n):
                    call()

            def moded(call: Callable[[], Any] = call) -> None:
                with EmptyMode():
                    for _ in range(n):
                        call()

            med = _median_cpu({"plain": plain, "mode": moded}, rounds)
            out.append({"case": name, "aten_ops": ops, "plain_us": med["plain"] / n * 1e6,
                        "under_empty_mode_us": med["mode"] / n * 1e6})
    return out


# 4. per op, with the caches flushed between calls ---------------------------------------------------
def cold_caches(rounds: int) -> list[dict[str, Any]]:
    try:
        import numpy as np
    except ImportError:
        return []
    x, w = torch.randn(1, 3, 16, 16), torch.randn(8, 3, 3, 3)
    n = 100
    out = []
    with torch.no_grad():
        for mib in (0, 1, 4, 16):
            buf = np.ones(max(1, mib * (1 << 20) // 4), dtype=np.float32)

            def loop(buf: Any = buf, mib: int = mib) -> None:
                for _ in range(n):
                    torch.conv2d(x, w)
                    if mib:
                        buf *= 1.0

            def moded(loop: Callable[[], None] = loop) -> None:
                with EmptyMode():
                    loop()

            med = _median_cpu({"plain": loop, "mode": moded}, rounds)
            out.append({"flush_mib": mib, "plain_us": med["plain"] / n * 1e6, "under_empty_mode_us": med["mode"] / n * 1e6})
    return out


# 2. and 3. a model ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _patched_call(state: _State) -> Iterator[None]:
    """The alternative to global module hooks: ``nn.Module.__call__`` pushes and pops the path."""
    original = torch.nn.Module.__call__
    names, stack = state.names, state.stack

    def call(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        stack.append(names.get(id(self), stack[-1]))
        try:
            return original(self, *args, **kwargs)
        finally:
            stack.pop()

    torch.nn.Module.__call__ = call
    try:
        yield
    finally:
        torch.nn.Module.__call__ = original


def model_layers(name: str, rounds: int) -> dict[str, Any]:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    names = {id(m): p for p, m in model.named_modules()}

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def empty_mode() -> None:
        with torch.no_grad(), EmptyMode():
            model(x)

    def capture_no_record() -> None:
        with torch.no_grad(), capturing(model, NoRecordState(names, {}), function_mode=False):
            model(x)

    def patched_no_record() -> None:
        st = NoRecordState(names, {})
        with torch.no_grad(), _patched_call(st), _sdpa_wrapped(st), _Recorder(st):
            model(x)

    def capture_record() -> None:
        st = _State(names, {})
        gc.disable()  # as profile() does
        try:
            with torch.no_grad(), capturing(model, st, function_mode=False):
                model(x)
            del st
        finally:
            gc.enable()

    def profile_python() -> None:
        os.environ["MODELMETER_NATIVE"] = "0"  # the layers above are the Python capture's
        try:
            modelmeter.profile(model, x, device="cpu")
        finally:
            del os.environ["MODELMETER_NATIVE"]

    def native_no_hooks() -> None:
        rec = native.load()
        if rec is None or not rec.start():
            return
        try:
            with torch.no_grad():
                model(x)
        finally:
            rec.stop()
            rec.clear()

    def profile() -> None:
        modelmeter.profile(model, x, device="cpu")

    fns = {"plain forward": plain, "empty dispatch mode": empty_mode, "capture, recording nothing": capture_no_record,
           "capture with patched Module.__call__, recording nothing": patched_no_record,
           "capture, recording every op": capture_record,
           "profile(device='cpu'), Python capture (MODELMETER_NATIVE=0)": profile_python,
           "native recorder alone (no module hooks, no events made)": native_no_hooks,
           "profile(device='cpu'), native recorder": profile}
    med = _median_cpu(fns, rounds)

    # 3. the same recording replayed: every op's (op, args, kwargs, output) kept from one forward
    calls: list[tuple[Any, tuple, dict | None, Any]] = []

    class Keep(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
            out = func(*args, **(kwargs or {}))
            calls.append((func, args, kwargs, out))
            return out

    with torch.no_grad(), Keep():
        model(x)

    def replay() -> None:
        st = _State(names, {})
        for func, args, kwargs, out in calls:
            st.record_op(_plan(func), "", "forward", args, kwargs, out)

    gc.disable()
    try:
        replay_s = _median_cpu({"replay": replay}, rounds)["replay"]
    finally:
        gc.enable()
    live_s = med["capture, recording every op"] - med["capture, recording nothing"]
    return {"model": name, "ops": len(calls), "modules": len(names), "median_cpu_s": med,
            "record_live_us_per_op": live_s / len(calls) * 1e6, "record_replayed_us_per_op": replay_s / len(calls) * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenet_v2", help="a torchvision model name (default mobilenet_v2)")
    ap.add_argument("--rounds", type=int, default=40, help="interleaved rounds (default 40)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/dispatch_floor.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    machine = machine_info()
    ops = per_op(a.rounds)
    layers = model_layers(a.model, a.rounds)
    cold = cold_caches(a.rounds)
    from rich.table import Table

    t1 = Table(title="1. CPU time per call, plain and under an empty TorchDispatchMode (1 thread)")
    for c in ("call", "aten ops", "plain us", "under the mode us", "added us"):
        t1.add_column(c, justify="left" if c == "call" else "right")
    for r in ops:
        t1.add_row(r["case"], str(r["aten_ops"]), f"{r['plain_us']:.2f}", f"{r['under_empty_mode_us']:.2f}",
                   f"{r['under_empty_mode_us'] - r['plain_us']:.2f}")
    med = layers["median_cpu_s"]
    base = med["plain forward"]
    t2 = Table(title=f"2. {a.model} ({layers['ops']} ops, {layers['modules']} modules): CPU ms of one call (1 thread)")
    for c in ("what runs", "ms", "added ms", "/ plain"):
        t2.add_column(c, justify="left" if c == "what runs" else "right")
    for k, v in med.items():
        t2.add_row(k, f"{v * 1e3:.2f}", f"{(v - base) * 1e3:+.2f}", f"{v / base:.3f}x")
    t4 = Table(title="4. torch.conv2d (1x3x16x16) per call, with N MiB written between calls (1 thread)")
    for c in ("MiB written between calls", "plain us", "under the mode us", "added us"):
        t4.add_column(c, justify="right")
    for r in cold:
        t4.add_row(str(r["flush_mib"]), f"{r['plain_us']:.2f}", f"{r['under_empty_mode_us']:.2f}",
                   f"{r['under_empty_mode_us'] - r['plain_us']:.2f}")
    c = console()
    c.print(t1)
    c.print(t2)
    c.print(f"3. recording, per op: {layers['record_live_us_per_op']:.2f} us live (during the forward), "
            f"{layers['record_replayed_us_per_op']:.2f} us replayed in a tight loop")
    if cold:
        c.print(t4)
    if not a.no_write:
        payload = {"benchmark": "dispatch_floor", "command": " ".join(["python", "bench/dispatch_floor.py",
                   *(argv if argv is not None else sys.argv[1:])]), "machine": machine,
                   "settings": {"rounds": a.rounds, "threads": 1, "clock": "time.thread_time"},
                   "per_op": ops, "model": layers, "cold_caches": cold}
        print(f"wrote {write_results('dispatch_floor', payload)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

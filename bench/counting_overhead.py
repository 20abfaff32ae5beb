"""Counting overhead: what does it cost to count a model with real tensors on CPU?

For each model, on the same input, this times

* ``plain``        a ``torch.no_grad()`` forward (the reference),
* ``modelmeter``   ``modelmeter.profile(model, x, device="cpu")`` (real tensors, full report),
* ``mm-python``    the same with ``MODELMETER_NATIVE=0``: the Python dispatch-mode capture instead of the
                   native recorder (same counts; checked),
* ``mm-meta``      ``modelmeter.profile(model, x)`` (the default: meta tensors, no weights touched),
* ``fcm``          PyTorch's ``FlopCounterMode(display=False)`` around a ``no_grad`` forward,
* ``fvcore``       ``FlopCountAnalysis(model, inputs).total()``            (if installed),
* ``ptflops``      ``get_model_complexity_info(..., backend="pytorch")``   (if installed; its default),
* ``ptflops-aten`` ``get_model_complexity_info(..., backend="aten")``      (if installed),
* ``thop``         ``thop.profile(model, inputs)``                          (if installed),

each as the median of ``--reps`` runs after a warm-up round. Runs are interleaved (one of each tool per
round, in a rotating order) so that load from other processes hits every tool alike. The ratio of
each median to the plain forward's median is reported, with the geometric mean over models, and the
counts every tool reports are put side by side with modelmeter's MACs and FLOPs.

    .venv/bin/python bench/counting_overhead.py            # all models, writes bench/results/counting_overhead.json
    .venv/bin/python bench/counting_overhead.py --models resnet18,gpt2 --reps 5 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _benchlib import console, fmt_count, geomean, mac_equivalent, machine_info, summarize, write_results  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import modelmeter  # noqa: E402
from modelmeter.capture.tracer import _State, capturing  # noqa: E402

TARGET_RATIO = 1.3  # issue 2: counting costs at most 1.3x a plain no_grad forward (geomean)


# --------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    family: str
    model: nn.Module
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    input_desc: str = ""

    def call(self, model: nn.Module | None = None) -> Any:
        return (model or self.model)(*self.args, **self.kwargs)

    def positional(self) -> tuple[nn.Module, tuple[Any, ...]]:
        """The model and inputs for tools that only take positional inputs (thop, fvcore)."""
        if not self.kwargs:
            return self.model, self.args
        return _Positional(self.model, list(self.kwargs)), tuple(self.kwargs.values())

    def mm_inputs(self) -> Any:
        return self.kwargs if self.kwargs else self.args


class _Positional(nn.Module):
    """Calls a keyword-argument model with positional tensors (for thop and fvcore)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> Any:
        return self.model(**dict(zip(self.names, tensors)))


def _tv(name: str) -> Callable[[], Case]:
    def build() -> Case:
        import torchvision

        m = getattr(torchvision.models, name)(weights=None).eval()
        return Case(name, "torchvision", m, (torch.randn(1, 3, 224, 224),), input_desc="1x3x224x224")

    return build


def _ids(vocab: int, seq: int) -> torch.Tensor:
    return torch.randint(0, vocab, (1, seq))


def _gpt2(seq: int) -> Case:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(use_cache=False)  # GPT-2 small: 12 layers, 768 hidden, 12 heads, vocab 50257
    return Case("gpt2", "transformers", GPT2LMHeadModel(cfg).eval(), kwargs={"input_ids": _ids(cfg.vocab_size, seq)},
                input_desc=f"ids 1x{seq}")


def _bert(seq: int) -> Case:
    from transformers import BertConfig, BertModel

    cfg = BertConfig()  # BERT-base: 12 layers, 768 hidden, 12 heads
    return Case("bert-base", "transformers", BertModel(cfg).eval(), kwargs={"input_ids": _ids(cfg.vocab_size, seq)},
                input_desc=f"ids 1x{seq}")


def _llama_small(seq: int) -> Case:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8,
                      num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048, use_cache=False)
    return Case("llama-4L-512", "transformers", LlamaForCausalLM(cfg).eval(),
                kwargs={"input_ids": _ids(cfg.vocab_size, seq)}, input_desc=f"ids 1x{seq}")


def _t5_small(seq: int) -> Case:
    from transformers import T5Config, T5Model

    cfg = T5Config(use_cache=False)  # defaults are t5-small: d_model 512, 6+6 layers, 8 heads, d_ff 2048
    return Case("t5-small", "transformers", T5Model(cfg).eval(),
                kwargs={"input_ids": _ids(cfg.vocab_size, seq), "decoder_input_ids": _ids(cfg.vocab_size, seq)},
                input_desc=f"ids 1x{seq} + dec 1x{seq}")


def _distilbert(seq: int) -> Case:
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig()  # 6 layers, 768 hidden, 12 heads
    return Case("distilbert", "transformers", DistilBertModel(cfg).eval(),
                kwargs={"input_ids": _ids(cfg.vocab_size, seq)}, input_desc=f"ids 1x{seq}")


def model_builders(seq: int) -> dict[str, Callable[[], Case]]:
    tv = ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16", "convnext_tiny", "densenet121"]
    out: dict[str, Callable[[], Case]] = {n: _tv(n) for n in tv}
    out.update({
        "gpt2": lambda: _gpt2(seq),
        "bert-base": lambda: _bert(seq),
        "llama-4L-512": lambda: _llama_small(seq),
        "t5-small": lambda: _t5_small(seq),
        "distilbert": lambda: _distilbert(seq),
    })
    return out


# --------------------------------------------------------------------------------------------------
# tools: each returns the counts it reports; timing wraps the same call
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Any:
    """Peers print and warn freely; keep the benchmark's output readable."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        prev = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(prev)


def t_plain(case: Case, detail: bool) -> dict[str, Any]:
    with torch.no_grad():
        case.call()
    return {}


def t_modelmeter(case: Case, detail: bool) -> dict[str, Any]:
    r = modelmeter.profile(case.model, case.mm_inputs(), device="cpu")
    t = r.totals
    out = {"macs": t.macs, "flops": t.flops, "matmul_flops": t.matmul_flops, "params": t.params, "ops": t.ops,
           "bytes_read": t.bytes_read, "bytes_written": t.bytes_written,
           "uncounted_ops": [[u.op, u.calls] for u in r.uncounted_ops], "capture": r.provenance.capture}
    if detail:  # a digest of the whole report with every event
        import hashlib
        import json

        text = json.dumps(r.to_dict(include_events=True), sort_keys=True, default=str)
        out["report_sha1"] = hashlib.sha1(text.encode()).hexdigest()
    return out


def t_modelmeter_python(case: Case, detail: bool) -> dict[str, Any]:
    """``modelmeter`` with the native recorder off (``MODELMETER_NATIVE=0``): the Python capture."""
    saved = os.environ.get("MODELMETER_NATIVE")
    os.environ["MODELMETER_NATIVE"] = "0"
    try:
        r = modelmeter.profile(case.model, case.mm_inputs(), device="cpu")
    finally:
        if saved is None:
            del os.environ["MODELMETER_NATIVE"]
        else:
            os.environ["MODELMETER_NATIVE"] = saved
    t = r.totals
    return {"macs": t.macs, "flops": t.flops, "matmul_flops": t.matmul_flops, "params": t.params, "ops": t.ops,
            "bytes_read": t.bytes_read, "bytes_written": t.bytes_written, "capture": r.provenance.capture}


def t_modelmeter_meta(case: Case, detail: bool) -> dict[str, Any]:
    r = modelmeter.profile(case.model, case.mm_inputs(), device="meta")
    t = r.totals
    return {"macs": t.macs, "flops": t.flops, "matmul_flops": t.matmul_flops, "params": t.params}


def t_fcm(case: Case, detail: bool) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fcm:
        case.call()
    out: dict[str, Any] = {"flops": fcm.get_total_flops()}
    if detail:
        out["by_op"] = {str(k): v for k, v in fcm.get_flop_counts().get("Global", {}).items()}
    return out


def t_fvcore(case: Case, detail: bool) -> dict[str, Any]:
    from fvcore.nn import FlopCountAnalysis

    model, args = case.positional()
    with _quiet(), torch.no_grad():
        a = FlopCountAnalysis(model, args)
        a.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        total = a.total()
        out: dict[str, Any] = {"flops_label_but_macs": total}
        if detail:
            out["by_operator"] = dict(a.by_operator())
            out["unsupported_ops"] = dict(a.unsupported_ops())
    return out


def _ptflops(case: Case, backend: str) -> dict[str, Any]:
    from ptflops import get_model_complexity_info

    batch: Any = case.kwargs if case.kwargs else case.args[0]
    if case.kwargs and case.args:
        raise RuntimeError("ptflops takes a tensor or keyword arguments, not both")
    sink = io.StringIO()
    with _quiet(), torch.no_grad():
        macs, params = get_model_complexity_info(case.model, (1,), input_constructor=lambda _res: batch,
                                                 as_strings=False, print_per_layer_stat=False, ost=sink,
                                                 backend=backend)
    if macs is None:
        raise RuntimeError("ptflops returned None (it caught an exception)")
    return {"macs": int(macs), "params": int(params)}


def t_ptflops(case: Case, detail: bool) -> dict[str, Any]:
    return _ptflops(case, "pytorch")


def t_ptflops_aten(case: Case, detail: bool) -> dict[str, Any]:
    return _ptflops(case, "aten")


def t_thop(case: Case, detail: bool) -> dict[str, Any]:
    from thop import profile

    model, args = case.positional()
    with _quiet():
        macs, params = profile(model, inputs=args, verbose=False)
    return {"macs": int(macs), "params": int(params)}


class _NoEvent:
    """What ``_State.sdpa`` needs from a recorded event, for the recording-free floor below."""

    index = 0
    outputs: tuple = ()
    created: tuple = ()


class EmptyMode(TorchDispatchMode):
    """A dispatch mode that only calls each op: PyTorch's own cost of one, the least any
    dispatch-mode counter can cost."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # as modelmeter's recorder: without this PyTorch wraps __torch_dispatch__ in
        # torch._disable_dynamo, which adds frames to every op
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        return func(*args, **kwargs) if kwargs else func(*args)


class NoRecordState(_State):
    """modelmeter's capture state, recording nothing (every event, synthetic ones too, goes through
    ``record_op``)."""

    def record_op(self, *args: Any, **kwargs: Any) -> Any:
        return _NoEvent()


def t_floor_dispatch(case: Case, detail: bool) -> dict[str, Any]:
    """Diagnostic: a no_grad forward under :class:`EmptyMode`."""
    with torch.no_grad(), EmptyMode():
        case.call()
    return {}


def t_floor_capture(case: Case, detail: bool) -> dict[str, Any]:
    """Diagnostic: modelmeter's dispatch mode, attention wrapper and module hooks, recording nothing.

    The least any capture built this way can cost; the rest of ``modelmeter`` minus this is what
    recording the events, the per-module set-up and building the report cost.
    """
    st = NoRecordState({id(m): p for p, m in case.model.named_modules()}, {})
    with torch.no_grad(), capturing(case.model, st, function_mode=False):  # as profile(device="cpu")
        case.call()
    return {}


TOOLS: dict[str, tuple[Callable[[Case, bool], dict[str, Any]], str | None]] = {
    # name: (function, module that must be importable)
    "plain": (t_plain, None),
    "modelmeter": (t_modelmeter, None),
    "mm-python": (t_modelmeter_python, None),
    "mm-meta": (t_modelmeter_meta, None),
    "fcm": (t_fcm, None),
    "fvcore": (t_fvcore, "fvcore"),
    "ptflops": (t_ptflops, "ptflops"),
    "ptflops-aten": (t_ptflops_aten, "ptflops"),
    "thop": (t_thop, "thop"),
    "floor-dispatch": (t_floor_dispatch, None),  # only with --diagnostics
    "floor-capture": (t_floor_capture, None),  # only with --diagnostics
}
OPTIONAL = ("floor-dispatch", "floor-capture")

#: what each tool's headline number is, as the tool labels it and as it really is
LABELS = {
    "modelmeter": "macs and flops, labelled as such (flops = 2 x macs + non-matmul arithmetic)",
    "fcm": "'flops' = 2 x MACs of mm/bmm/conv/SDPA only; nothing else",
    "fvcore": "'flops' that are MACs (one fused multiply-add = 1), from a jit trace",
    "ptflops": "'MACs' (GMac) from module hooks + patched functionals (pytorch backend, its default)",
    "ptflops-aten": "'MACs' from its aten dispatch backend (mm/bmm/addmm/conv/... only)",
    "thop": "'MACs' from module hooks only (no functional matmul, no SDPA)",
}


def available_tools(names: list[str]) -> list[str]:
    import importlib.util

    out = []
    for n in names:
        mod = TOOLS[n][1]
        if mod is None or importlib.util.find_spec(mod) is not None:
            out.append(n)
    return out


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
def bench_model(case: Case, tools: list[str], reps: int, warmup: int) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    errors: dict[str, str] = {}
    # thop leaves buffers on modules it has no rule for; give it its own copy so the others see the
    # model as built.
    copies = {"thop": copy.deepcopy(case)} if "thop" in tools else {}
    live = []
    for t in tools:
        fn = TOOLS[t][0]
        try:
            counts[t] = fn(copies.get(t, case), True)
            live.append(t)
        except Exception as exc:  # a peer that cannot handle a model is a result, not a crash
            errors[t] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]
    samples: dict[str, list[float]] = {t: [] for t in live}
    for r in range(warmup + reps):
        k = r % len(live)
        order = live[k:] + live[:k]
        for t in order:
            fn = TOOLS[t][0]
            c = copies.get(t, case)
            t0 = time.perf_counter()
            fn(c, False)
            dt = time.perf_counter() - t0
            if r >= warmup:
                samples[t].append(dt)
    timing = {t: summarize(v) for t, v in samples.items()}
    plain = timing["plain"]["median_s"]
    ratios = {t: timing[t]["median_s"] / plain for t in live}
    paired = {}
    for t in live:
        rs = sorted(a / b for a, b in zip(samples[t], samples["plain"]))
        paired[t] = rs[len(rs) // 2] if len(rs) % 2 else 0.5 * (rs[len(rs) // 2 - 1] + rs[len(rs) // 2])
    return {"name": case.name, "family": case.family, "input": case.input_desc, "counts": counts,
            "errors": errors, "timing": timing, "ratio_to_plain": ratios, "paired_ratio_median": paired}


def render(results: list[dict[str, Any]], tools: list[str], summary: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    timed = [t for t in tools if t != "plain"]
    tab = Table(title="Counting overhead: time / plain no_grad forward (median of reps; CPU)")
    tab.add_column("model")
    tab.add_column("plain ms", justify="right")
    for t in timed:
        tab.add_column(t, justify="right")
    for r in results:
        cells = [r["name"], f"{r['timing']['plain']['median_s'] * 1e3:.1f}"]
        for t in timed:
            if t in r["ratio_to_plain"]:
                flag = "*" if r["timing"][t]["wide_spread"] else ""
                cells.append(f"{r['ratio_to_plain'][t]:.2f}x{flag}")
            else:
                cells.append("fail")
        tab.add_row(*cells)
    tab.add_row("geomean", "", *[f"{summary['geomean_ratio'][t]:.2f}x ({summary['geomean_n'][t]})" for t in timed],
                style="bold")
    con.print(tab)
    con.print("* = interquartile range above 25% of the median (noisy)")

    ctab = Table(title="Counts each tool reports, in MACs (FlopCounterMode's FLOPs / 2); ratio to modelmeter MACs")
    ctab.add_column("model")
    ctab.add_column("mm MACs", justify="right")
    ctab.add_column("mm FLOPs", justify="right")
    peers = [t for t in tools if t not in ("plain", "modelmeter", "mm-python", "mm-meta", *OPTIONAL)]
    for t in peers:
        ctab.add_column(t, justify="right")
    for r in results:
        mmc = r["counts"].get("modelmeter")
        if not mmc:
            continue
        cells = [r["name"], fmt_count(mmc["macs"]), fmt_count(mmc["flops"])]
        for t in peers:
            c = r["counts"].get(t)
            if c is None:
                cells.append("fail")
                continue
            v = mac_equivalent(t, c)
            cells.append(f"{fmt_count(v)} ({v / mmc['macs']:.3f})" if v is not None and mmc["macs"] else "-")
        ctab.add_row(*cells)
    con.print(ctab)
    for r in results:
        for t, e in r["errors"].items():
            con.print(f"[yellow]{r['name']}: {t} failed: {e}[/]", highlight=False)


def main(argv: list[str] | None = None) -> int:
    builders = model_builders(128)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="all", help=f"comma-separated subset of: {', '.join(builders)}")
    ap.add_argument("--tools", default="all", help=f"comma-separated subset of: {', '.join(TOOLS)}")
    ap.add_argument("--reps", type=int, default=7, help="timed rounds per model (default 7)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length of the language models (default 128)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--diagnostics", action="store_true", help="also time 'floor-dispatch' (an empty "
                    "TorchDispatchMode) and 'floor-capture' (modelmeter's modes and hooks, recording nothing)")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/counting_overhead.json")
    ap.add_argument("--out", help="results name under bench/results/ (default counting_overhead; "
                    "counting_overhead_diagnostics with --diagnostics)")
    a = ap.parse_args(argv)

    torch.set_num_threads(a.threads)
    builders = model_builders(a.seq)
    names = list(builders) if a.models == "all" else a.models.split(",")
    default_tools = [t for t in TOOLS if t not in OPTIONAL]
    tools = available_tools(default_tools if a.tools == "all" else ["plain", *[t for t in a.tools.split(",") if t != "plain"]])
    if a.diagnostics:
        tools += [t for t in ("floor-dispatch", "floor-capture") if t not in tools]
    missing = sorted(set(default_tools) - set(tools)) if a.tools == "all" else []
    machine = machine_info()  # taken first: the load average is the one the run started under
    started = time.perf_counter()
    results = []
    for n in names:
        torch.manual_seed(0)
        case = builders[n]()
        t0 = time.perf_counter()
        results.append(bench_model(case, tools, a.reps, a.warmup))
        print(f"  {n}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        del case
    gm = {t: geomean([r["ratio_to_plain"].get(t) for r in results]) for t in tools}
    gm_paired = {t: geomean([r["paired_ratio_median"].get(t) for r in results]) for t in tools}
    gn = {t: sum(1 for r in results if t in r["ratio_to_plain"]) for t in tools}
    # the native recorder and the Python capture must count the same (and the native one must have run)
    same = {}
    for r in results:
        a_, b_ = r["counts"].get("modelmeter"), r["counts"].get("mm-python")
        if a_ and b_:
            keys = ("macs", "flops", "bytes_read", "bytes_written")
            same[r["name"]] = all(a_[k] == b_[k] for k in keys) and (a_["capture"], b_["capture"]) == (
                "native", "dispatch-mode")
    summary = {
        "geomean_ratio": gm, "geomean_paired_ratio": gm_paired, "geomean_n": gn,
        "native_counts_equal_python": same,
        "target_ratio": TARGET_RATIO,
        "modelmeter_meets_target": gm.get("modelmeter", float("inf")) <= TARGET_RATIO,
        "wall_s": time.perf_counter() - started,
    }
    import importlib.metadata as md

    versions = {}
    for pkg in ("torchvision", "transformers", "fvcore", "ptflops", "thop"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    machine["package_versions"] = versions
    payload = {
        "benchmark": "counting_overhead",
        "command": " ".join(["python", "bench/counting_overhead.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine,
        "loadavg_at_end": list(os.getloadavg()),
        "settings": {"reps": a.reps, "warmup": a.warmup, "seq": a.seq, "threads": a.threads, "tools": tools,
                     "diagnostics": a.diagnostics,
                     "tools_not_installed": missing, "labels": LABELS},
        "summary": summary,
        "models": results,
    }
    render(results, tools, summary)
    differ = [n for n, ok in same.items() if not ok]
    if differ:
        console().print(f"[red]modelmeter and mm-python differ (or the native recorder did not run) on: "
                        f"{', '.join(differ)}[/]")
    elif same:
        console().print(f"modelmeter (native recorder) and mm-python (Python capture): the same MACs, FLOPs and "
                        f"bytes on all {len(same)} models")
    if not a.no_write:
        default = "counting_overhead_diagnostics" if a.diagnostics else "counting_overhead"
        path = write_results(a.out or default, payload)
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

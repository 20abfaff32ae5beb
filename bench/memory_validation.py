"""Validate the memory estimate against PyTorch's own allocator accounting on CPU (and CUDA).

For each model and mode (inference; training step = forward, loss, backward, AdamW step):

* estimate: ``modelmeter.analysis.memory.memory_profile`` on meta tensors (no weights), the default;
* measured: a plain PyTorch run of the same step on CPU with real weights, no modelmeter code in the
  loop, under ``torch.profiler.profile(profile_memory=True)``. Every allocation event of the CPU
  allocator carries ``total_allocated`` (the allocator's running total of bytes it handed out since
  profiling began); the measured peak is the memory alive before the step (parameters, buffers,
  inputs: their storages' bytes) plus ``max(total_allocated)`` over the step minus its value at the
  start. On CUDA (``--cuda``): ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats``.

Each measurement runs in a fresh subprocess (the profiler's allocator counter is process-wide).

    python bench/memory_validation.py                 # all models, both modes, CPU; prints Markdown,
                                                      # writes bench/results/memory_validation.json
    python bench/memory_validation.py --cuda          # compare with torch.cuda.max_memory_allocated
    python bench/memory_validation.py --llama         # Llama-3-8B AdamW training step at seq 2048 on meta
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

# name -> (spec, load kwargs, measured batch description)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet18": ("torchvision:resnet18", {"batch": 8}),
    "resnet50": ("torchvision:resnet50", {"batch": 8}),
    "mobilenet_v2": ("torchvision:mobilenet_v2", {"batch": 8}),
    "vit_b_16": ("torchvision:vit_b_16", {"batch": 4}),
    "gpt2": ("hf:gpt2", {"batch": 2, "seq": 512}),
    "bert-base": ("hf:bert-base", {"batch": 4, "seq": 256}),
    # the factory makes its own inputs (ids 8x64), the batch given here only labels the table
    "lstm-tagger": (os.path.join(os.path.dirname(os.path.abspath(__file__)), "_rnn_models.py:lstm_tagger"),
                    {"batch": 8, "seq": 64}),
}


def first_float(out: Any) -> Any:
    """The loss modelmeter takes by default: the sum of the first floating-point output."""
    import torch
    from torch.utils._pytree import tree_leaves

    if hasattr(out, "to_tuple"):
        out = out.to_tuple()
    for t in tree_leaves(out):
        if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
            return t
    raise RuntimeError("no floating output")


def loss_of(out: Any) -> Any:
    return first_float(out).sum()


def storages_bytes(tensors: list[Any]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def run_step(model: Any, inputs: Any, train: bool, optimizer: str | None) -> Any:
    import torch

    from modelmeter.measure.bench import _call  # how modelmeter's own benchmark calls a model

    model.train(train)
    with torch.set_grad_enabled(train):
        out = _call(model, inputs)
        if train:
            loss = loss_of(out)
            loss.backward()
            if optimizer is not None:
                from modelmeter.capture.run import make_optimizer  # the same settings as the capture

                opt = make_optimizer(optimizer, [p for p in model.parameters() if p.requires_grad])
                opt.step()
    return out


def measure_cpu(name: str, train: bool, optimizer: str | None) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from modelmeter.models import load

    spec, kw = MODELS[name]
    torch.manual_seed(0)
    loaded = load(spec, device="cpu", **kw)
    model, inputs = loaded.model, loaded.inputs
    flat = [t for t in _leaves(inputs)]
    baseline = storages_bytes([*model.parameters(), *model.buffers(), *flat])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = run_step(model, inputs, train, optimizer)
    del out
    alloc_tag = torch._C._profiler._EventType.Allocation
    events: list[tuple[Any, Any]] = []  # (allocation event, the outermost aten op it happened in)

    def walk(nodes: Any, outer: Any) -> None:
        for n in nodes:
            if n.tag == alloc_tag:
                if str(n.extra_fields.device) == "cpu":
                    events.append((n, outer))
                continue
            is_aten = n.name.startswith("aten::")
            walk(n.children, outer if (outer is not None and is_aten) else (n if is_aten else None))

    walk(prof.profiler.kineto_results.experimental_event_tree(), None)
    events.sort(key=lambda e: e[0].start_time_ns)
    first = events[0][0].extra_fields
    start = first.total_allocated - first.alloc_size
    totals = [e[0].extra_fields.total_allocated for e in events]
    at = max(range(len(totals)), key=totals.__getitem__)

    # what the kernel running at the peak holds beyond tensors: buffers it allocates and frees itself
    def inst(outer: Any) -> Any:
        return None if outer is None else (outer.start_time_ns, outer.name)

    peak_op = inst(events[at][1])
    freed_in: dict[int, Any] = {}
    live: dict[int, tuple[int, Any, int]] = {}
    for k, (n, outer) in enumerate(events):
        f = n.extra_fields
        if f.alloc_size > 0:
            live[f.ptr] = (f.alloc_size, inst(outer), k)
        elif f.ptr in live:
            k0 = live.pop(f.ptr)[2]
            freed_in[k0] = (inst(outer), k)
    workspace = 0
    for k, (n, outer) in enumerate(events[: at + 1]):
        f = n.extra_fields
        if f.alloc_size > 0 and inst(outer) == peak_op and peak_op is not None and k in freed_in:
            where, k_free = freed_in[k]
            if where == peak_op and k_free > at:
                workspace += f.alloc_size
    return {"baseline_bytes": baseline, "step_bytes": totals[at] - start, "peak_bytes": baseline + totals[at] - start,
            "allocations": sum(1 for n, _ in events if n.extra_fields.alloc_size > 0),
            "peak_op": peak_op[1] if peak_op else "", "kernel_workspace_at_peak_bytes": workspace}


def measure_cuda(name: str, train: bool, optimizer: str | None) -> dict[str, Any]:
    import torch

    from modelmeter.models import load

    spec, kw = MODELS[name]
    torch.manual_seed(0)
    loaded = load(spec, device="cpu", **kw)
    model = loaded.model.cuda()
    inputs = _map(loaded.inputs, lambda t: t.cuda())
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = run_step(model, inputs, train, optimizer)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del out
    return {"baseline_bytes": baseline, "step_bytes": peak - baseline, "peak_bytes": peak}


def estimate(name: str, train: bool, optimizer: str | None, device: str = "meta",
             attention: str = "auto") -> dict[str, Any]:
    from modelmeter.analysis.memory import memory_profile
    from modelmeter.models import load

    spec, kw = MODELS[name]
    loaded = load(spec, device="meta" if device == "meta" else "cpu", **kw)
    t0 = time.perf_counter()
    r = memory_profile(loaded.model, loaded.inputs, train=train, optimizer=optimizer, device=device,
                       loss_fn=loss_of, name=name, attention=attention)
    dt = time.perf_counter() - t0
    static = r.params_bytes + r.buffers_bytes + r.inputs_bytes
    return {"peak_bytes": r.peak_bytes, "step_bytes": r.peak_bytes - static, "baseline_bytes": static,
            "peak_op": r.peak.op, "peak_module": r.peak.module, "peak_phase": r.peak.phase, "ops": r.ops,
            "seconds": dt}


def _leaves(x: Any) -> list[Any]:
    import torch
    from torch.utils._pytree import tree_leaves

    return [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]


def _map(x: Any, fn: Any) -> Any:
    import torch
    from torch.utils._pytree import tree_map

    return tree_map(lambda t: fn(t) if isinstance(t, torch.Tensor) else t, x)


def llama() -> dict[str, Any]:
    """Llama-3-8B (config built here), AdamW training step at batch 1, seq 2048, bf16, on meta."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from modelmeter.analysis.memory import memory_profile

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000)
    t0 = time.perf_counter()
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    ids = torch.zeros(1, 2048, dtype=torch.long)
    r = memory_profile(model, {"input_ids": ids}, train=True, optimizer="adamw", dtype="bf16", fits="80GB")
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "seconds": dt, "peak_rss_bytes": rss, "ops": r.ops, "params_bytes": r.params_bytes,
        "gradients_bytes": r.gradients_bytes, "optimizer_state_bytes": r.optimizer_state_bytes,
        "steady_optimizer_state_bytes": r.steady_optimizer_state_bytes,
        "master_weights_bytes": r.master_weights_bytes, "activation_peak_bytes": r.activation_peak_bytes,
        "peak_bytes": r.peak_bytes, "steady_peak_bytes": r.steady_peak_bytes,
        "peak": f"{r.peak.op} in {r.peak.module or '(root)'} ({r.peak.phase})",
        "kv_bytes_per_token": r.kv_cache.bytes_per_token if r.kv_cache else None,
        "max_batch_80GB": r.fit.max_batch if r.fit else None,
    }


def one(args: argparse.Namespace) -> None:
    train = args.mode == "train"
    opt = "adamw" if train else None
    if args.what == "measure":
        res = measure_cuda(args.one, train, opt) if args.cuda else measure_cpu(args.one, train, opt)
    elif args.what == "estimate":
        res = estimate(args.one, train, opt)
    elif args.what == "estimate-as-run":
        res = estimate(args.one, train, opt, attention="as-run")
    else:  # the same capture on real CPU tensors: the CPU's own kernels, every storage they create
        res = estimate(args.one, train, opt, device="cpu", attention="as-run")
    print(json.dumps(res))


def sub(what: str, name: str, mode: str, cuda: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--one", name, "--mode", mode, "--what", what] + (["--cuda"] if cuda else [])
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"{what} {name} {mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1])


RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "memory_validation.json")


def machine() -> dict[str, Any]:
    import platform

    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "platform": platform.platform(), "cpus": os.cpu_count(),
                            "command": " ".join([os.path.relpath(sys.executable), *sys.argv])}
    for mod in ("torchvision", "transformers"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = None
    return info


def write_results(key: str, value: Any, path: str = RESULTS) -> None:
    """Merge ``value`` under ``key`` into the results file (with the machine it ran on)."""
    data: dict[str, Any] = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data[key] = {"machine": machine(), "results": value}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=2)


def mib(b: float) -> str:
    return f"{b / 2**20:,.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--one")
    ap.add_argument("--mode", choices=["inference", "train"], default="inference")
    ap.add_argument("--what", choices=["measure", "estimate", "estimate-as-run", "capture-cpu"], default="measure")
    ap.add_argument("--cuda", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--json", help=f"results file (default {os.path.relpath(RESULTS)})", default=RESULTS)
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--llama", action="store_true")
    args = ap.parse_args()
    if args.one:
        one(args)
        return
    if args.llama:
        res = llama()
        print(json.dumps(res, indent=2))
        if not args.no_write:
            write_results("llama3_8b_adamw_meta", res, args.json)
        return
    rows = []
    print("| model | inputs | mode | estimate (meta) | measured (CPU allocator) | diff | estimate, attention "
          "as-run | diff | capture on CPU tensors | diff | CPU kernel workspace at the measured peak |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for name in args.models.split(","):
        for mode in ("inference", "train"):
            est = sub("estimate", name, mode, False)
            run = sub("estimate-as-run", name, mode, False)
            cpu = sub("capture-cpu", name, mode, False)
            mea = sub("measure", name, mode, args.cuda)

            def diff(e: dict[str, Any], m: dict[str, Any] = mea) -> float:
                return (e["peak_bytes"] - m["peak_bytes"]) / m["peak_bytes"]

            kw = MODELS[name][1]
            shape = f"batch {kw['batch']}" + (f", seq {kw['seq']}" if "seq" in kw else "")
            label = "training step (AdamW)" if mode == "train" else "inference"
            ws = mea.get("kernel_workspace_at_peak_bytes", 0)
            print(f"| {name} | {shape} | {label} | {mib(est['peak_bytes'])} | {mib(mea['peak_bytes'])} | "
                  f"{100 * diff(est):+.1f}% | {mib(run['peak_bytes'])} | {100 * diff(run):+.1f}% | "
                  f"{mib(cpu['peak_bytes'])} | {100 * diff(cpu):+.1f}% | {mib(ws)} in {mea.get('peak_op', '')} |",
                  flush=True)
            rows.append({"model": name, "mode": mode, "inputs": shape, "estimate": est, "estimate_as_run": run,
                         "capture_cpu": cpu, "measured": mea, "peak_diff": diff(est)})
    if not args.no_write:
        write_results("cuda" if args.cuda else "cpu", rows, args.json)


if __name__ == "__main__":
    main()

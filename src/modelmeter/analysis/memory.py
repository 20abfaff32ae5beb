"""Memory from real storage lifetimes: timeline, peaks, training budget, largest batch, KV cache.

The capture runs the model once (meta tensors by default: no weights, no memory) with a
:class:`~modelmeter.capture.lifetimes.LifetimeTracker` observing every op. Each storage lives from the
op that allocated it to the death of its last reference (tensor, view or tensor saved for backward).
Live bytes after each op, split by category, make the timeline; its maximum is the peak.

Conventions (see docs/memory.md):

* live memory after op *i* counts every storage allocated at or before *i* and not yet dead when op
  *i* returned; a storage that dies between op *i* and op *i+1* counts at *i*, not at *i+1*;
* categories (``CATEGORIES``): parameters, buffers and inputs exist from the start of the run;
  gradients and optimizer state are the ``.grad`` and optimizer tensors present at the end of the
  step; activations are the tensors created in the forward pass and the loss; everything else made
  in backward or in the optimizer step is a temporary (including recomputed activations);
* a traced training step is the first one: optimizer state is allocated in its optimizer phase. The
  steady-state peak (a later step) keeps the optimizer state alive from the start;
* training in 16-bit precision (``dtype=bf16/fp16`` with ``train=True``, no autocast) keeps fp32
  master weights (4 bytes per trainable parameter) and an fp32 optimizer state, as mixed-precision
  trainers do; both are added to the steady-state peak and the budget (``master_weights=False``
  turns this off).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..capture.events import Trace
from ..capture.lifetimes import END_SUB, LifetimeTracker, StorageRecord
from ..errors import InputError
from ..report.memory import (
    CATEGORIES,
    BatchProbe,
    BudgetRow,
    FitSearch,
    KVCacheEstimate,
    LiveTensor,
    MemoryPoint,
    MemoryReport,
    MemoryTimeline,
    PhaseSpan,
)

_LOW = (torch.float16, torch.bfloat16)
_STATIC = ("parameters", "buffers", "inputs")

FIT_METHOD = (
    "each probe is a meta capture of the step at that batch (its steady-state peak); memory is close to affine "
    "in the batch, so the next batch to try is extrapolated from the two largest fitting probes, then "
    "interpolated between the largest fitting and the smallest failing one; each guess is checked with its "
    "neighbour, and the answer is a batch that fits next to one that does not"
)


# -- capture --------------------------------------------------------------------------------------
def capture_with_lifetimes(
    model: nn.Module,
    inputs: Any,
    *,
    train: bool = False,
    device: str = "meta",
    dtype: torch.dtype | None = None,
    optimizer: str | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    autocast: torch.dtype | None = None,
    attention: str = "auto",
) -> tuple[Trace, list[StorageRecord]]:
    """Run the capture with a lifetime tracker; returns the trace and one record per storage.

    ``attention``: "fused" counts what a flash / memory-efficient kernel keeps (its output, and its
    query, key and value held until its backward), whatever kernel ran; "as-run" tracks the storages of the kernels that ran
    inside it (on meta tensors PyTorch's math kernel: the attention weights saved for backward, as
    CPU training with attention dropout does); "auto" is "fused" on meta and "as-run" on real devices.
    """
    from ..capture.autocast import autocast_forward
    from ..capture.lifetimes import InnerStorages
    from ..capture.run import run_capture

    inner = _attention_mode(attention, device) == "as-run"
    tracker = LifetimeTracker(fused_attention=not inner)
    # the kernels inside ops recorded as one event (attention as run, recurrent layers) keep storages
    # of their own (saved for backward); with fused attention the tracker skips attention's
    below = InnerStorages(tracker)
    eager = getattr(model, "_orig_mod", model)  # a torch.compile'd module: the capture runs the eager one
    with autocast_forward(eager, autocast, device), below:
        trace = run_capture(model, inputs, train=train, device=device, dtype=dtype, optimizer=optimizer,
                            loss_fn=loss_fn, observers=[tracker])
    return trace, tracker.finish()


ATTENTION_MODES = ("auto", "fused", "as-run")


def _attention_mode(attention: str, device: str) -> str:
    if attention not in ATTENTION_MODES:
        raise InputError(f"attention must be one of {', '.join(ATTENTION_MODES)}, not {attention!r}")
    if attention == "auto":
        return "fused" if torch.device(device).type == "meta" else "as-run"
    return attention


# -- analysis of one trace ------------------------------------------------------------------------
def _complete(records: list[StorageRecord], trace: Trace) -> list[StorageRecord]:
    """Add the parameters, buffers and inputs no op touched (they occupy memory all the same)."""
    seen = {r.key for r in records if r.start < 0}
    extra = []
    for table in (trace.param_storages, trace.buffer_storages, trace.input_storages):
        for key, nbytes in table.items():
            if key not in seen:
                seen.add(key)
                extra.append(StorageRecord(key=key, nbytes=nbytes, start=-1, end=None, op="", module="", phase="",
                                           shape=(), dtype="", seen_as="unused"))
    return records + extra


def classify(records: list[StorageRecord], trace: Trace) -> list[str]:
    """The category of each record (see the module docstring)."""
    last = len(trace.events) - 1
    out = []
    for r in records:
        at_end = r.end is None or r.end >= last
        if r.key in trace.param_storages and r.start < 0:
            out.append("parameters")
        elif r.key in trace.buffer_storages and r.start < 0:
            out.append("buffers")
        elif r.key in trace.input_storages and r.start < 0:
            out.append("inputs")
        elif r.start < 0:
            out.append("buffers")  # a tensor that existed before the run (model state that is not a buffer)
        elif at_end and r.key in trace.grad_storages:
            out.append("gradients")
        elif at_end and r.key in trace.optimizer_storages:
            out.append("optimizer_state")
        elif r.phase in ("forward", "loss"):
            out.append("activations")
        else:
            out.append("temporaries")
    return out


class _Steps:
    """Fine positions of the run: each event is one step, plus one per inner kernel call of a fused op
    whose storages are tracked (``attention="as-run"``), so memory made and freed inside a fused op
    counts at its own moment instead of all at once."""

    def __init__(self, records: list[StorageRecord], n: int) -> None:
        subs = [0] * n
        for r in records:
            if 0 <= r.start < n and r.start_sub > subs[r.start]:
                subs[r.start] = r.start_sub
            if r.end is not None and 0 <= r.end < n and r.end_sub < END_SUB and r.end_sub > subs[r.end]:
                subs[r.end] = r.end_sub
        self.subs = subs
        self.offset = []
        g = 0
        for k in range(n):
            self.offset.append(g)
            g += subs[k] + 1
        self.count = g

    def span(self, r: StorageRecord) -> tuple[int, int]:
        """First and last step ``r`` is alive at (last < first: never alive during the run)."""
        n = len(self.subs)
        if r.start >= n:
            return 0, -1
        first = 0 if r.start < 0 else self.offset[r.start] + min(r.start_sub, self.subs[r.start])
        if r.end is None or r.end >= n:
            last = self.count - 1
        elif r.end < 0:
            last = -1
        else:
            last = self.offset[r.end] + min(r.end_sub, self.subs[r.end])
        return first, last


def build_timeline(records: list[StorageRecord], cats: list[str], n: int) -> tuple[dict[str, list[int]], list[int]]:
    """Live bytes after each of the ``n`` ops, per category, and the fine step each value was read at.

    Difference arrays over the fine steps (O(records + steps)); an event with inner steps reports its
    largest one.
    """
    steps = _Steps(records, n)
    g = steps.count
    diff = {c: [0] * (g + 1) for c in CATEGORIES}
    for r, c in zip(records, cats):
        a, b = steps.span(r)
        if b < a:
            continue
        d = diff[c]
        d[a] += r.nbytes
        d[b + 1] -= r.nbytes
    fine: dict[str, list[int]] = {}
    for c in CATEGORIES:
        acc = 0
        row = []
        d = diff[c]
        for i in range(g):
            acc += d[i]
            row.append(acc)
        fine[c] = row
    if g == n:
        return fine, list(range(n))
    total = [sum(fine[c][i] for c in CATEGORIES) for i in range(g)]
    at = []
    for k in range(n):
        lo = steps.offset[k]
        at.append(max(range(lo, lo + steps.subs[k] + 1), key=total.__getitem__))
    return {c: [fine[c][j] for j in at] for c in CATEGORIES}, at


def _phases(trace: Trace) -> list[PhaseSpan]:
    spans: list[PhaseSpan] = []
    for ev in trace.events:
        if spans and spans[-1].phase == ev.phase:
            spans[-1] = PhaseSpan(ev.phase, spans[-1].first, ev.index)
        else:
            spans.append(PhaseSpan(ev.phase, ev.index, ev.index))
    return spans


def _point(trace: Trace, by_cat: dict[str, list[int]], i: int, static: dict[str, int]) -> MemoryPoint:
    if i < 0:  # a model that ran no op
        return MemoryPoint(-1, "", "", "", sum(static.values()), dict(static))
    ev = trace.events[i]
    cats = {c: by_cat[c][i] for c in CATEGORIES}
    return MemoryPoint(i, ev.op, ev.module, ev.phase, sum(cats.values()), cats)


def _argmax(xs: list[int]) -> int:
    best, at = -1, -1
    for i, x in enumerate(xs):
        if x > best:
            best, at = x, i
    return at


def analyze_memory(
    model: nn.Module,
    trace: Trace,
    records: list[StorageRecord],
    *,
    name: str | None = None,
    autocast: torch.dtype | None = None,
    master_weights: bool | None = None,
    top: int = 10,
    attention: str | None = None,
) -> MemoryReport:
    """Timeline, peaks and largest tensors of one captured run (pure: reads the trace and records)."""
    records = _complete(records, trace)
    cats = classify(records, trace)
    n = len(trace.events)
    by_cat, fine_at = build_timeline(records, cats, n)
    steps = _Steps(records, n)
    total = [sum(by_cat[c][i] for c in CATEGORIES) for i in range(n)]
    sizes = {c: 0 for c in CATEGORIES}
    for r, c in zip(records, cats):
        if c in _STATIC or c in ("gradients", "optimizer_state"):
            sizes[c] += r.nbytes

    i_peak = _argmax(total)
    act = [by_cat["activations"][i] + by_cat["temporaries"][i] for i in range(n)]
    i_act = _argmax(act)
    static = {c: sizes[c] if c in _STATIC else 0 for c in CATEGORIES}
    peak = _point(trace, by_cat, i_peak, static)
    act_point = _point(trace, by_cat, i_act, static)

    # steady state: optimizer state (and fp32 master weights) alive through the whole step ------------
    param_dtype = getattr(torch, trace.dtype, torch.float32)
    if master_weights is None:
        master_weights = trace.train and autocast is None and param_dtype in _LOW
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if trace.train else 0
    master = 4 * trainable if (master_weights and trace.train) else 0
    opt_fp32_extra = 0
    if master:
        for r, c in zip(records, cats):
            if c == "optimizer_state" and r.dtype in ("float16", "bfloat16"):
                opt_fp32_extra += r.nbytes  # the same state at 4 bytes instead of 2
    opt_total = sizes["optimizer_state"]
    if n:
        steady = max(total[i] + opt_total - by_cat["optimizer_state"][i] for i in range(n))
    else:
        steady = peak.total_bytes
    steady += master + opt_fp32_extra

    # largest tensors alive at the peak --------------------------------------------------------------
    alive = []
    g_peak = fine_at[i_peak] if i_peak >= 0 else -1
    for r, c in zip(records, cats):
        if c in ("parameters", "buffers"):
            continue
        a, b = steps.span(r)
        if a <= g_peak <= b:
            alive.append((r, c))
    alive.sort(key=lambda rc: -rc[0].nbytes)
    largest = [
        LiveTensor(size_bytes=r.nbytes, category=c, shape=list(r.shape), dtype=r.dtype, op=r.op, module=r.module,
                   phase=r.phase, created_at=r.start, released_after=None if (r.end is None or r.end >= n - 1) else r.end)
        for r, c in alive[:top]
    ]

    notes = []
    if autocast is not None and trace.mode == "meta":
        notes.append("autocast on meta tensors is emulated with the CUDA autocast policy at the Python call level "
                     "(see docs/memory.md)")
    if attention == "fused" and any(ev.op == "modelmeter.sdpa" for ev in trace.events):
        notes.append("attention counted as a fused kernel (flash / memory-efficient: it keeps q, k, v and its "
                     "output); a math kernel (CPU training with attention dropout) also keeps the attention "
                     "weights: attention='as-run' (--attention as-run) counts them")
    if master:
        notes.append(f"training in {trace.dtype}: fp32 master weights ({trainable:,} x 4 B) and fp32 optimizer "
                     "state are added to the steady-state peak and the budget")
    batch = None
    if trace.input_shapes and trace.input_shapes[0]:
        batch = trace.input_shapes[0][0]
    return MemoryReport(
        model=name or trace.root_type, mode=trace.mode, device=trace.device, dtype=trace.dtype, train=trace.train,
        optimizer=trace.settings.get("optimizer"), autocast=str(autocast).replace("torch.", "") if autocast else None,
        batch=batch, ops=n, params_bytes=sizes["parameters"], buffers_bytes=sizes["buffers"],
        inputs_bytes=sizes["inputs"], gradients_bytes=sizes["gradients"],
        optimizer_state_bytes=opt_total, steady_optimizer_state_bytes=opt_total + opt_fp32_extra,
        master_weights_bytes=master,
        peak_bytes=peak.total_bytes, peak=peak, activation_peak_bytes=act_point.by_category_bytes["activations"]
        + act_point.by_category_bytes["temporaries"], activation_peak=act_point, steady_peak_bytes=steady,
        largest_at_peak=largest,
        timeline=MemoryTimeline(categories=list(CATEGORIES), bytes_by_category=by_cat, total_bytes=total,
                                phases=_phases(trace)),
        notes=notes,
    )


def budget_row(r: MemoryReport, batch: int, memory_bytes: int | None = None) -> BudgetRow:
    """One row of the budget table from a memory report of a step at ``batch``."""
    opt = r.steady_optimizer_state_bytes
    total = (r.params_bytes + r.buffers_bytes + r.inputs_bytes + r.gradients_bytes + opt + r.master_weights_bytes
             + r.activation_peak_bytes)
    return BudgetRow(
        batch=batch, params_bytes=r.params_bytes, buffers_bytes=r.buffers_bytes, inputs_bytes=r.inputs_bytes,
        gradients_bytes=r.gradients_bytes, optimizer_state_bytes=opt, master_weights_bytes=r.master_weights_bytes,
        activations_peak_bytes=r.activation_peak_bytes, sum_bytes=total, peak_bytes=r.steady_peak_bytes,
        fits=None if memory_bytes is None else r.steady_peak_bytes <= memory_bytes,
    )


# -- batch sizes ------------------------------------------------------------------------------------
def batch_size_of(inputs: Any) -> int | None:
    """The leading dimension of the first tensor in ``inputs``."""
    from torch.utils._pytree import tree_leaves

    for t in tree_leaves(inputs):
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return None


def inputs_at_batch(inputs: Any, batch: int, base: int) -> Any:
    """``inputs`` with every tensor whose leading dimension is ``base`` rebuilt at ``batch`` (on meta)."""
    from torch.utils._pytree import tree_map

    def resize(t: Any) -> Any:
        if isinstance(t, torch.Tensor) and t.dim() > 0 and t.shape[0] == base:
            return torch.empty((batch, *t.shape[1:]), dtype=t.dtype, device="meta")
        return t

    return tree_map(resize, inputs)


def search_max_batch(peak_at: Callable[[int], int], memory_bytes: int, known: dict[int, int] | None = None,
                     max_probes: int = 40) -> FitSearch:
    """The largest batch ``b`` with ``peak_at(b) <= memory_bytes`` (``peak_at`` non-decreasing in ``b``).

    Extrapolate from the two largest fitting batches until a batch fails, then interpolate (secant)
    between the largest fitting and the smallest failing batch; every guess is checked together with
    its neighbour, so an exact affine stretch is settled in one or two captures. The interval shrinks
    at every step, by bisection when the secant guess would not move it.
    """
    probes: dict[int, int] = dict(known or {})
    left = [max_probes]

    def probe(b: int) -> int:
        if b not in probes:
            if left[0] <= 0:
                raise InputError(f"no largest batch found within {max_probes} captures: memory does not grow "
                                 "with the batch size of these inputs (is the leading dimension the batch?)")
            left[0] -= 1
            probes[b] = peak_at(b)
        return probes[b]

    def bracket() -> tuple[int, int | None]:
        lo = max(b for b, p in probes.items() if p <= memory_bytes)
        above = [b for b, p in probes.items() if p > memory_bytes and b > lo]
        return lo, (min(above) if above else None)

    if probe(1) > memory_bytes:
        best = 0
    else:
        while True:
            lo, hi = bracket()
            if hi is not None and hi == lo + 1:
                best = lo
                break
            if hi is None:
                fitting = sorted(b for b, p in probes.items() if p <= memory_bytes)
                if len(fitting) < 2:
                    probe(2 * lo)
                    continue
                b1, b2 = fitting[-2], fitting[-1]
                slope = (probes[b2] - probes[b1]) / (b2 - b1)
                guess = b2 + int((memory_bytes - probes[b2]) // slope) if slope > 0 else 2 * b2
                guess = max(guess, lo + 1)
            else:
                slope = (probes[hi] - probes[lo]) / (hi - lo)
                guess = lo + int((memory_bytes - probes[lo]) // slope) if slope > 0 else (lo + hi) // 2
                guess = min(max(guess, lo + 1), hi - 1)
                if guess in probes:
                    guess = (lo + hi) // 2
            if probe(guess) <= memory_bytes:
                probe(guess + 1)
            elif guess - 1 > lo:
                probe(guess - 1)
    rows = [BatchProbe(b, p, p <= memory_bytes) for b, p in sorted(probes.items())]
    return FitSearch(memory_bytes=memory_bytes, max_batch=best, probes=rows, method=FIT_METHOD)


# -- KV cache ---------------------------------------------------------------------------------------
def _config_of(obj: Any) -> Any:
    cfg = getattr(obj, "config", obj)
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    return cfg


def kv_geometry(config: Any) -> tuple[int, int, int]:
    """(layers, kv_heads, head_dim) of a decoder config (Hugging Face attribute names)."""
    cfg = _config_of(config)
    if getattr(cfg, "kv_lora_rank", None):
        raise InputError("this model compresses its KV cache (multi-head latent attention): the per-head formula "
                         "does not apply; pass layers, kv_heads and head_dim to kv_cache() explicitly")
    layers = getattr(cfg, "num_hidden_layers", None)
    heads = getattr(cfg, "num_attention_heads", None)
    if not layers or not heads:
        raise InputError("cannot read num_hidden_layers / num_attention_heads from this config: pass layers, "
                         "kv_heads and head_dim to kv_cache() explicitly")
    kv_heads = getattr(cfg, "num_key_value_heads", None) or (1 if getattr(cfg, "multi_query", False) else heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return int(layers), int(kv_heads), int(head_dim)


def _weights_at(model: nn.Module, dtype: torch.dtype | None) -> int:
    total = 0
    for p in model.parameters():
        total += p.numel() * (dtype.itemsize if (dtype is not None and p.dtype.is_floating_point) else p.element_size())
    return total


def kv_cache(
    model_or_config: Any,
    *,
    batch: int = 1,
    context: int | None = None,
    dtype: str | torch.dtype | None = None,
    memory: int | str | None = None,
    weights_bytes: int | None = None,
    layers: int | None = None,
    kv_heads: int | None = None,
    head_dim: int | None = None,
) -> KVCacheEstimate:
    """KV cache of a decoder LM: ``layers x 2 x kv_heads x head_dim x itemsize`` bytes per token.

    ``model_or_config`` is a Hugging Face model (meta is fine) or its config. ``context`` defaults to
    the config's ``max_position_embeddings``. With ``memory`` (bytes or '24GiB'), the longest context
    per sequence that fits beside the weights is given: ``(memory - weights) // (bytes_per_token x
    batch)``. The weights are the model's parameters at ``dtype`` (or ``weights_bytes``); from a bare
    config the model is built on meta to count them.
    """
    from ..api import parse_dtype
    from ..units import parse_bytes

    if batch < 1:
        raise InputError(f"batch must be a positive integer, not {batch}")
    dt = parse_dtype(dtype)
    model = model_or_config if isinstance(model_or_config, nn.Module) else None
    cfg = _config_of(model_or_config)
    if layers is None or kv_heads is None or head_dim is None:
        gl, gk, gh = kv_geometry(cfg)
        layers, kv_heads, head_dim = layers or gl, kv_heads or gk, head_dim or gh
    if dt is None:
        if model is not None:
            floats = [p.dtype for p in model.parameters() if p.dtype.is_floating_point]
            dt = max(set(floats), key=floats.count) if floats else torch.float32
        else:
            dt = torch.bfloat16
    itemsize = dt.itemsize
    per_token = layers * 2 * kv_heads * head_dim * itemsize
    max_pos = getattr(cfg, "max_position_embeddings", None)
    if context is None:
        if not max_pos:
            raise InputError("no context length given and the config has no max_position_embeddings: pass context")
        context = int(max_pos)
    if context < 1:
        raise InputError(f"context must be a positive number of tokens, not {context}")
    notes = []
    window = getattr(cfg, "sliding_window", None)
    if window and getattr(cfg, "use_sliding_window", True) is not False:
        notes.append(f"the config has a {window}-token sliding window: a rolling cache would hold at most "
                     f"{window} tokens per layer (not applied here)")
    mem = parse_bytes(memory) if isinstance(memory, str) else memory
    max_ctx = None
    if mem is not None:
        if weights_bytes is None:
            if model is None:
                model = _meta_model(cfg)
            weights_bytes = _weights_at(model, dt)
        max_ctx = max((mem - weights_bytes) // (per_token * batch), 0)
        if max_pos and max_ctx > max_pos:
            notes.append(f"the memory would hold {max_ctx:,} tokens, beyond the model's {int(max_pos):,}")
    per_seq = per_token * context
    return KVCacheEstimate(
        layers=layers, kv_heads=kv_heads, head_dim=head_dim, dtype=str(dt).replace("torch.", ""), itemsize_bytes=itemsize,
        bytes_per_token=per_token, batch=batch, context=context, bytes_per_sequence=per_seq, total_bytes=per_seq * batch,
        weights_bytes=weights_bytes, memory_bytes=mem, max_context=max_ctx,
        model_max_context=int(max_pos) if max_pos else None, notes=notes,
    )


def _meta_model(cfg: Any) -> nn.Module:
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from ..errors import OptionalDependencyError

        raise OptionalDependencyError("transformers", "hf", "counting the weights of a config") from exc
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def is_decoder_lm(model: nn.Module) -> bool:
    """A Hugging Face model that generates text with a KV cache (decoder-only)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "is_encoder_decoder", False):
        return False
    can = getattr(model, "can_generate", None)
    try:
        return bool(can()) if callable(can) else False
    except Exception:  # noqa: BLE001 - a model's own method; treat any failure as "no"
        return False


# -- the public entry point -------------------------------------------------------------------------
def memory_profile(
    model: nn.Module,
    inputs: Any,
    *,
    train: bool = False,
    optimizer: str | None = None,
    dtype: str | torch.dtype | None = None,
    autocast: str | torch.dtype | None = None,
    batch_sizes: list[int] | None = None,
    fits: int | str | None = None,
    device: str = "meta",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    master_weights: bool | None = None,
    inputs_for_batch: Callable[[int], Any] | None = None,
    kv_context: int | None = None,
    attention: str = "auto",
    top: int = 10,
    name: str | None = None,
) -> MemoryReport:
    """Memory of ``model(inputs)`` from real storage lifetimes: inference, or a training step.

    ``train=True`` traces forward with autograd, loss, backward and, with ``optimizer`` (sgd,
    sgd-momentum, adam, adamw), one optimizer step. ``dtype`` runs the model at fp32/fp16/bf16;
    ``autocast`` (fp16/bf16) runs its forward under autocast. ``batch_sizes`` adds a budget row per
    batch (each a meta capture; tensors whose leading dimension is the inputs' batch are resized, or
    ``inputs_for_batch(b)`` builds them). ``fits`` (bytes or '24GiB') marks the rows that fit and
    searches the largest batch that fits. Decoder LMs also get a KV-cache estimate (context
    ``kv_context``, default the model's maximum). ``attention`` says what scaled-dot-product
    attention keeps: "fused" (a flash / memory-efficient kernel: its output), "as-run" (every storage
    of the kernels that ran; on meta the math kernel, as CPU training with attention dropout) or "auto"
    (fused on meta, as-run on real devices). The model is left as it was.
    """
    from ..api import parse_dtype
    from ..units import parse_bytes

    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    if top < 0:
        raise InputError(f"top must be >= 0, not {top}")
    dt = parse_dtype(dtype)
    ac = parse_dtype(autocast)
    if ac is not None and ac not in _LOW:
        raise InputError(f"autocast dtype must be fp16 or bf16, not {autocast!r}")
    if ac is not None and dt in _LOW:
        raise InputError("autocast needs fp32 weights: drop --dtype (the weights stay fp32 under autocast)")
    mem = parse_bytes(fits) if isinstance(fits, str) else fits
    if mem is not None and mem <= 0:
        raise InputError(f"memory size must be positive, not {fits!r}")
    sizes = list(batch_sizes or [])
    for b in sizes:
        if not isinstance(b, int) or isinstance(b, bool) or b < 1:
            raise InputError(f"batch sizes must be positive integers, not {b!r}")
    _attention_mode(attention, device)
    base = batch_size_of(inputs)
    if (sizes or mem is not None) and inputs_for_batch is None and base is None:
        raise InputError("the inputs have no batch dimension to vary: pass inputs_for_batch")

    def capture(inp: Any, dev: str) -> MemoryReport:
        mode = _attention_mode(attention, device)  # the per-batch captures on meta keep the main run's choice
        trace, records = capture_with_lifetimes(model, inp, train=train, device=dev, dtype=dt, optimizer=optimizer,
                                                loss_fn=loss_fn, autocast=ac, attention=mode)
        return analyze_memory(model, trace, records, name=name, autocast=ac, master_weights=master_weights, top=top,
                              attention=mode)

    report = capture(inputs, device)

    at_batch: dict[int, MemoryReport] = {}
    if base is not None and torch.device(device).type == "meta":
        at_batch[base] = report

    def report_at(b: int) -> MemoryReport:
        if b not in at_batch:
            inp = inputs_for_batch(b) if inputs_for_batch is not None else inputs_at_batch(inputs, b, base or 1)
            at_batch[b] = capture(inp, "meta")
        return at_batch[b]

    rows = [budget_row(report_at(b), b, mem) for b in sizes]
    fit = None
    if mem is not None:
        known = {b: r.steady_peak_bytes for b, r in at_batch.items()}
        fit = search_max_batch(lambda b: report_at(b).steady_peak_bytes, mem, known)
    kv = None
    if is_decoder_lm(model):
        kv = kv_cache(model, batch=base or 1, context=kv_context, dtype=dt or _dtype_named(report.dtype), memory=mem)
    return dataclasses.replace(report, budget=rows, fit=fit, kv_cache=kv)


def _dtype_named(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    return dt if isinstance(dt, torch.dtype) else torch.float32


def training_memory_per_param(optimizer: str | None, *, master_weights: bool = False, dtype_bytes: int = 4) -> int:
    """Bytes per trainable parameter of weights + gradients + optimizer state (+ fp32 master weights).

    sgd: none; sgd-momentum: 1 buffer; adam/adamw: 2 moments, each at the weights' precision (fp32 when
    master weights are kept). A closed form to check the traced numbers against.
    """
    states = {None: 0, "sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2}
    if optimizer not in states:
        raise InputError(f"unknown optimizer {optimizer!r}")
    state_bytes = 4 if master_weights else dtype_bytes
    return dtype_bytes * 2 + states[optimizer] * state_bytes + (4 if master_weights else 0)


__all__ = [
    "FIT_METHOD", "analyze_memory", "batch_size_of", "budget_row", "build_timeline", "capture_with_lifetimes",
    "classify", "inputs_at_batch", "is_decoder_lm", "kv_cache", "kv_geometry", "memory_profile",
    "search_max_batch", "training_memory_per_param",
]

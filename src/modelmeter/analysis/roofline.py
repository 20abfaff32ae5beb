"""Roofline time of every op of a counted run on a device, rolled up per module and model.

For each op (an :class:`~modelmeter.report.model.EventRow`) on a device at a dtype::

    compute_s = flops / (peak x compute_efficiency)
    memory_s  = (bytes_read + bytes_written) / (bandwidth x memory_efficiency)
    time_s    = max(compute_s, memory_s) + launch_overhead_s      # overhead only for ops that do work
    bound     = "compute" if compute_s > memory_s else "memory"

``peak`` is the device's matrix peak at the dtype (Tensor Cores, MXU, AMX; the vector units where the
dtype has no matrix path) for ops with MACs: matrix products, convolutions, attention. Every other op
(elementwise, normalization, softmax, pooling, reductions, copies) is held to the vector peak: the
vector units' figure at the dtype, else their fp32 figure, else the matrix figure (see
:meth:`DeviceSpec.vector_peak`). The model's predicted latency is the sum over ops (unfused: each op
its own kernel, run one after another); the fused lower bound is max(total compute time, (weights +
inputs + outputs) / bandwidth). Peaks are dense unless ``sparse=True``.

The module is pure: it reads a Report and device entries. :func:`profile_lm` and
:func:`sweep_batches` take callables or models and call :func:`modelmeter.profile` for the caller.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import HardwareError, InputError
from ..hardware.spec import ITEMSIZE, DeviceSpec, dtype_key
from ..report.model import Report
from ..report.roofline import (
    BatchSweep,
    DeviceRoofline,
    DeviceSummary,
    LMEstimate,
    ModuleTime,
    OpKindTime,
    OpTime,
    RooflineReport,
    RooflineSettings,
    SweepPoint,
)

_REPORT_DTYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}


# -- op families ---------------------------------------------------------------------------------------

def op_family(op: str) -> str:
    """The family of an aten op: the cost-rule file its rule lives in (matmul, conv, attention, norm,
    elementwise, reduction, pool, data, optim), "data" for ops without arithmetic, else "other"."""
    from ..costs.registry import is_no_arithmetic, rule_for

    rule = rule_for(op)
    if rule is not None:
        mod = getattr(rule, "__module__", "") or ""
        if mod.startswith("modelmeter.costs."):
            return mod.rsplit(".", 1)[-1]
        return "other"
    if is_no_arithmetic(op):
        return "data"
    return "other"


# -- settings and helpers ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Ceilings:
    matrix: float
    vector: float
    bandwidth: float


def _run_dtype(report: Report) -> str | None:
    return _REPORT_DTYPES.get(report.provenance.dtype)


def weights_bytes(report: Report) -> int:
    """Parameter bytes at the dtype the run used (a run cast to bf16 reads bf16 weights)."""
    sizes = report.totals.param_sizes
    by = {"fp32": sizes.fp32_bytes, "fp16": sizes.fp16_bytes, "bf16": sizes.bf16_bytes}
    key = _run_dtype(report)
    return int(by.get(key or "", sizes.own_bytes))


def fused_bytes(report: Report) -> int:
    """Weights + buffers + inputs + outputs, once each, with weights at the run dtype."""
    t = report.totals
    return int(t.fused_bytes_lower_bound - t.param_sizes.own_bytes + weights_bytes(report))


def _validate_settings(compute_efficiency: float, memory_efficiency: float, launch_overhead_s: float) -> None:
    for name, v in (("compute_efficiency", compute_efficiency), ("memory_efficiency", memory_efficiency)):
        if not (isinstance(v, (int, float)) and 0 < v <= 1):
            raise InputError(f"{name} must be in (0, 1] (1.0 = pure roofline), not {v!r}")
    if not (isinstance(launch_overhead_s, (int, float)) and 0 <= launch_overhead_s < 1):
        raise InputError(f"launch_overhead_s must be >= 0 seconds (e.g. 5e-6), not {launch_overhead_s!r}")


def _overhead_for(device: DeviceSpec, launch_overhead_s: float | str) -> float:
    if isinstance(launch_overhead_s, str):
        if launch_overhead_s != "device":
            raise InputError(f"launch_overhead_s must be seconds or 'device', not {launch_overhead_s!r}")
        return float(device.launch_overhead_s or 0.0)
    return float(launch_overhead_s)


def _summary(device: DeviceSpec, key: str, sparse: bool) -> tuple[DeviceSummary, _Ceilings]:
    matrix = device.matrix_peak(key, sparse=sparse)
    vector = device.vector_peak(key)
    bw = device.memory_bandwidth_bytes_per_s
    summ = DeviceSummary(
        name=device.name, display_name=device.display_name, dtype=key, matrix_flop_per_s=matrix,
        vector_flop_per_s=vector, memory_bandwidth_bytes_per_s=bw, ridge_flop_per_byte=matrix / bw,
        memory_bytes=device.memory_bytes, sparse=sparse, calibrated=device.calibrated,
        sources=[str(s) for s in device.sources],
    )
    return summ, _Ceilings(matrix, vector, bw)


def op_time(
    flops: int,
    bytes_moved: int,
    *,
    matrix: bool,
    device: DeviceSpec,
    dtype: Any,
    compute_efficiency: float = 1.0,
    memory_efficiency: float = 1.0,
    launch_overhead_s: float = 0.0,
    sparse: bool = False,
) -> tuple[float, float, float, str]:
    """(compute_s, memory_s, time_s, bound) of one op: the formula of this module, for one op."""
    key = dtype_key(dtype)
    peak = device.matrix_peak(key, sparse=sparse) if matrix else device.vector_peak(key)
    c = flops / (peak * compute_efficiency)
    m = bytes_moved / (device.memory_bandwidth_bytes_per_s * memory_efficiency)
    works = flops > 0 or bytes_moved > 0
    return c, m, max(c, m) + (launch_overhead_s if works else 0.0), "compute" if c > m else "memory"


# -- one device ----------------------------------------------------------------------------------------

def roofline(
    report: Report,
    device: DeviceSpec | str,
    *,
    dtype: Any = None,
    sparse: bool = False,
    compute_efficiency: float = 1.0,
    memory_efficiency: float = 1.0,
    launch_overhead_s: float | str = 0.0,
    batch: int | None = None,
    required_bytes: int | None = None,
    required_basis: str | None = None,
    phases: Iterable[str] | None = None,
) -> DeviceRoofline:
    """Roofline of ``report`` on ``device`` (an entry or a catalog name) at ``dtype``.

    ``dtype`` defaults to the run's dtype; it picks the peak (``"tf32"`` runs fp32 products on TF32
    Tensor Cores). Bytes are those counted in the run: profile at the dtype you predict for.
    ``launch_overhead_s`` is added per op that does work; ``"device"`` uses the device's measured value
    (from ``modelmeter hardware calibrate``). ``required_bytes`` is the memory the run needs on the device
    (default: weights + inputs + outputs, a lower bound without activations). ``phases`` restricts to
    some phases of a training step.
    """
    if not isinstance(device, DeviceSpec):
        from ..hardware import get_device

        device = get_device(device)
    if not report.events:
        raise InputError("the report has no per-op events (was it read from JSON without --events?): re-profile")
    run_key = _run_dtype(report)
    key = dtype_key(dtype) if dtype is not None else (run_key or "fp32")
    overhead = _overhead_for(device, launch_overhead_s)
    _validate_settings(compute_efficiency, memory_efficiency, overhead)
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise InputError(f"batch must be an integer >= 1, not {batch!r}")
    summ, ceil = _summary(device, key, sparse)
    settings = RooflineSettings(float(compute_efficiency), float(memory_efficiency), overhead, bool(sparse))
    notes: list[str] = []
    if run_key is not None and ITEMSIZE.get(key) != ITEMSIZE.get(run_key):
        notes.append(f"bytes were counted at {report.provenance.dtype} but the peak is for {key}: profile the model "
                     f"at {key} to count its bytes")
    if sparse and not device.sparse_matrix_flop_per_s.get(key):
        notes.append(f"{device.name} publishes no sparse {key} figure: dense peak used")
    if ceil.vector == ceil.matrix and not device.vector_flop_per_s:
        notes.append(f"{device.name} publishes no vector-unit rate: non-matrix ops held to the matrix peak")
    keep = set(phases) if phases is not None else None
    peak_c = {True: ceil.matrix * compute_efficiency, False: ceil.vector * compute_efficiency}
    bw = ceil.bandwidth * memory_efficiency
    families: dict[str, str] = {}

    ops: list[OpTime] = []
    for e in report.events:
        if keep is not None and e.phase not in keep:
            continue
        moved = e.bytes_read + e.bytes_written
        if e.flops == 0 and moved == 0:
            continue  # views and metadata ops: no kernel
        fam = families.get(e.op)
        if fam is None:
            fam = families[e.op] = op_family(e.op)
        is_matrix = e.macs > 0
        c = e.flops / peak_c[is_matrix]
        m = moved / bw
        ops.append(OpTime(
            index=e.index, op=e.op, module=e.module, phase=e.phase, family=fam, macs=e.macs, flops=e.flops,
            bytes_moved=moved, intensity_flop_per_byte=e.flops / moved if moved else math.inf,
            peak_flop_per_s=peak_c[is_matrix] / compute_efficiency, compute_s=c, memory_s=m, overhead_s=overhead,
            time_s=max(c, m) + overhead, bound="compute" if c > m else "memory",
        ))
    if keep is not None and not ops:
        raise InputError(f"no ops in phase(s) {', '.join(sorted(keep))}: the run has "
                         f"{', '.join(sorted(report.totals.phases))}")
    return _assemble(report, summ, settings, ops, notes, batch=batch, required_bytes=required_bytes,
                     required_basis=required_basis)


def _assemble(report: Report, summ: DeviceSummary, settings: RooflineSettings, ops: list[OpTime],
              notes: list[str], *, batch: int | None, required_bytes: int | None,
              required_basis: str | None, extra_fused_bytes: int = 0) -> DeviceRoofline:
    comp = sum(o.compute_s for o in ops)
    mem = sum(o.memory_s for o in ops)
    ovh = sum(o.overhead_s for o in ops)
    pred = sum(o.time_s for o in ops)
    cb = sum(o.time_s - o.overhead_s for o in ops if o.bound == "compute")
    mb = sum(o.time_s - o.overhead_s for o in ops if o.bound == "memory")
    phases_s: dict[str, float] = defaultdict(float)
    for o in ops:
        phases_s[o.phase] += o.time_s
    fb_model = fused_bytes(report) + extra_fused_bytes
    moved = sum(o.bytes_moved for o in ops)
    fb = min(fb_model, moved)
    if fb < fb_model:
        notes = [*notes, "weights + inputs + outputs exceed the per-op traffic (a weight only partly read, such as an "
                 "embedding table): the fused bound uses the per-op traffic"]
    fused_mem = fb / (summ.memory_bandwidth_bytes_per_s * settings.memory_efficiency)
    if required_bytes is None:
        required_bytes = fb_model
        required_basis = required_basis or "weights + inputs + outputs (activations not included: a lower bound)"
    fits = None if summ.memory_bytes is None else required_bytes <= summ.memory_bytes
    return DeviceRoofline(
        model=report.provenance.model, device=summ, settings=settings, batch=batch,
        flops=sum(o.flops for o in ops), matmul_flops=2 * sum(o.macs for o in ops),
        bytes_moved=sum(o.bytes_moved for o in ops), kernels=len(ops), compute_s=comp, memory_s=mem, overhead_s=ovh,
        predicted_s=pred, compute_bound_s=cb, memory_bound_s=mb, fused_bytes=fb, fused_memory_s=fused_mem,
        fused_lower_bound_s=max(comp, fused_mem), required_bytes=int(required_bytes),
        required_basis=required_basis or "given by the caller", fits=fits, phases_s=dict(phases_s),
        modules=_modules(report, ops), op_kinds=_op_kinds(ops), ops=ops, notes=notes,
    )


def _modules(report: Report, ops: Sequence[OpTime]) -> list[ModuleTime]:
    parent = {m.path: m.parent for m in report.modules}
    # inclusive and own sums: kernels, flops, bytes, compute, memory, overhead, time, cbound, mbound
    incl: dict[str, list[float]] = defaultdict(lambda: [0.0] * 9)
    own: dict[str, list[float]] = defaultdict(lambda: [0.0] * 4)
    for o in ops:
        row = [1, o.flops, o.bytes_moved, o.compute_s, o.memory_s, o.overhead_s, o.time_s,
               o.time_s - o.overhead_s if o.bound == "compute" else 0.0,
               o.time_s - o.overhead_s if o.bound == "memory" else 0.0]
        path = o.module if o.module in parent else ""
        a = own[path]
        a[0] += o.time_s
        a[1] += row[7]
        a[2] += row[8]
        a[3] += o.overhead_s
        p: str | None = path
        seen = set()
        while p is not None and p not in seen:
            seen.add(p)
            b = incl[p]
            for i, v in enumerate(row):
                b[i] += v
            p = parent.get(p) if p != "" else None
            if p is None and "" not in seen and "" in parent:
                p = ""
    out = []
    for m in report.modules:
        a = incl.get(m.path, [0.0] * 9)
        b = own.get(m.path, [0.0] * 4)
        out.append(ModuleTime(
            path=m.path, type=m.type, parent=m.parent, depth=m.depth, kernels=int(a[0]), flops=int(a[1]),
            bytes_moved=int(a[2]), compute_s=a[3], memory_s=a[4], overhead_s=a[5], time_s=a[6],
            compute_bound_s=a[7], memory_bound_s=a[8], own_time_s=b[0], own_compute_bound_s=b[1],
            own_memory_bound_s=b[2], own_overhead_s=b[3],
        ))
    return out


def _op_kinds(ops: Sequence[OpTime]) -> list[OpKindTime]:
    agg: dict[tuple[str, str], list[Any]] = {}
    for o in ops:
        a = agg.setdefault((o.op, o.phase), [o.family, 0, 0, 0, 0.0, 0, 0])
        a[1] += 1
        a[2] += o.flops
        a[3] += o.bytes_moved
        a[4] += o.time_s
        a[5] += o.bound == "compute"
        a[6] += o.bound == "memory"
    rows = [OpKindTime(op, ph, a[0], a[1], a[2], a[3], a[4], a[5], a[6]) for (op, ph), a in agg.items()]
    rows.sort(key=lambda r: -r.time_s)
    return rows


# -- several devices ---------------------------------------------------------------------------------------

def compare_devices(
    report: Report,
    devices: Sequence[DeviceSpec | str],
    *,
    dtype: Any = None,
    batch: int | None = None,
    **kwargs: Any,
) -> RooflineReport:
    """The same run on several devices side by side (see :func:`roofline` for the keyword arguments)."""
    if not devices:
        raise HardwareError("name at least one device")
    rows = [roofline(report, d, dtype=dtype, batch=batch, **kwargs) for d in devices]
    key = rows[0].device.dtype
    return RooflineReport(model=report.provenance.model, dtype=key, devices=rows)


def attach(report: Report, rr: RooflineReport) -> Report:
    """``report`` with ``rr`` in its ``roofline`` field (the JSON report then carries it)."""
    import dataclasses

    return dataclasses.replace(report, roofline=rr)


# -- batch sweep ---------------------------------------------------------------------------------------------

def ridge_crossing(points: Sequence[tuple[int, float]]) -> tuple[float | None, int | None]:
    """(interpolated batch where the compute-bound share reaches 0.5, first swept batch at or past it).

    ``points`` are (batch, compute-bound fraction) sorted by batch. Interpolation is linear in log(batch)
    between the last point below 0.5 and the first at or above it.
    """
    pts = sorted(points)
    for i, (b, f) in enumerate(pts):
        if f >= 0.5:
            if i == 0:
                return None, b
            b0, f0 = pts[i - 1]
            if f == f0:
                return float(b), b
            t = (0.5 - f0) / (f - f0)
            return math.exp(math.log(b0) + t * (math.log(b) - math.log(b0))), b
    return None, None


def sweep_from_rooflines(per_batch: Sequence[tuple[int, Sequence[DeviceRoofline]]], dtype: str,
                         kind: str = "forward") -> BatchSweep:
    """A :class:`BatchSweep` from rooflines computed at each batch size."""
    points: list[SweepPoint] = []
    for b, rows in per_batch:
        for d in rows:
            points.append(SweepPoint(
                batch=b, device=d.device.name, predicted_s=d.predicted_s, fused_lower_bound_s=d.fused_lower_bound_s,
                throughput_per_s=b / d.predicted_s if d.predicted_s else 0.0, compute_s=d.compute_s,
                memory_s=d.memory_s, compute_bound_fraction=d.compute_bound_fraction, bound=d.bound,
                required_bytes=d.required_bytes, fits=d.fits,
            ))
    names = list(dict.fromkeys(p.device for p in points))
    ridge: dict[str, float | None] = {}
    first: dict[str, int | None] = {}
    for n in names:
        r, f = ridge_crossing([(p.batch, p.compute_bound_fraction) for p in points if p.device == n])
        ridge[n], first[n] = r, f
    return BatchSweep(dtype=dtype, batches=sorted({b for b, _ in per_batch}), points=points, ridge_batch=ridge,
                      first_compute_bound_batch=first, kind=kind)


def sweep_batches(
    make_report: Callable[[int], Report],
    batches: Sequence[int],
    devices: Sequence[DeviceSpec | str],
    *,
    dtype: Any = None,
    **kwargs: Any,
) -> tuple[BatchSweep, dict[int, RooflineReport]]:
    """Re-profile at each batch size (``make_report(batch)``, e.g. ``lambda b: profile(model, inputs_for(b))``)
    and predict each on every device. Returns the sweep and the per-batch roofline reports."""
    if not batches or any((not isinstance(b, int)) or b < 1 for b in batches):
        raise InputError(f"batch sizes must be integers >= 1, not {list(batches)}")
    per: dict[int, RooflineReport] = {}
    for b in sorted(set(batches)):
        per[b] = compare_devices(make_report(b), devices, dtype=dtype, batch=b, **kwargs)
    key = next(iter(per.values())).dtype
    return sweep_from_rooflines([(b, rr.devices) for b, rr in per.items()], key), per


# -- decoder language models --------------------------------------------------------------------------------

@dataclass(frozen=True)
class KVCacheShape:
    """What sizes a KV cache: per token, ``layers x 2 (K and V) x kv_heads x head_dim x itemsize`` bytes."""

    layers: int
    heads: int  # query heads (attention FLOPs count query heads)
    kv_heads: int
    head_dim: int

    def bytes_per_token(self, itemsize: float) -> int:
        return int(self.layers * 2 * self.kv_heads * self.head_dim * itemsize)


def kv_cache_shape(config: Any) -> KVCacheShape:
    """Read layers, heads, KV heads and head size from a Hugging Face config (Llama/Mistral/GPT-2 names)."""
    def first(*names: str) -> Any:
        for n in names:
            v = getattr(config, n, None)
            if v is not None:
                return v
        return None

    text = getattr(config, "text_config", None)
    if text is not None and first("num_hidden_layers", "n_layer") is None:
        config = text
    layers = first("num_hidden_layers", "n_layer", "num_layers")
    heads = first("num_attention_heads", "n_head", "num_heads")
    hidden = first("hidden_size", "n_embd", "d_model")
    if layers is None or heads is None:
        raise InputError("cannot read the layer and head counts from the model config: give a KVCacheShape")
    kv = first("num_key_value_heads", "n_kv_heads", "multi_query_group_num") or heads
    head_dim = first("head_dim")
    if head_dim is None:
        if hidden is None:
            raise InputError("cannot read head_dim or hidden_size from the model config: give a KVCacheShape")
        head_dim = hidden // heads
    return KVCacheShape(int(layers), int(heads), int(kv), int(head_dim))


def lm_estimate(
    prefill: Report,
    step: Report,
    kv: KVCacheShape,
    device: DeviceSpec | str,
    *,
    batch: int,
    context: int,
    dtype: Any = None,
    **kwargs: Any,
) -> tuple[LMEstimate, DeviceRoofline, DeviceRoofline]:
    """Prefill and decode of a decoder LM on one device.

    ``prefill`` is a run of ``batch`` x ``context`` tokens (time to first token); ``step`` a run of
    ``batch`` x 1 token without a cache. Decode adds, per layer, reading the K and V caches of
    ``context`` tokens (``kv.bytes_per_token(itemsize) x context x batch`` bytes) and the two attention
    products over them (2 x batch x heads x context x head_dim MACs), as one op each layer.
    """
    if not isinstance(device, DeviceSpec):
        from ..hardware import get_device

        device = get_device(device)
    if batch < 1 or context < 1:
        raise InputError(f"batch and context must be >= 1, not {batch} and {context}")
    pre = roofline(prefill, device, dtype=dtype, batch=batch, **kwargs)
    st = roofline(step, device, dtype=dtype, batch=batch, **kwargs)
    key = st.device.dtype
    itemsize = ITEMSIZE.get(_run_dtype(step) or key, ITEMSIZE[key])
    per_token = kv.bytes_per_token(itemsize)
    kv_bytes = per_token * context * batch
    attn_macs_layer = 2 * batch * kv.heads * context * kv.head_dim
    s = st.settings
    # attribute each layer's cache read to that layer's attention module when they can be found
    attn = [m.path for m in step.modules if m.type.endswith("Attention") and m.path]
    owners = attn if len(attn) == kv.layers else [""] * kv.layers
    extra: list[OpTime] = []
    for layer in range(kv.layers):
        c, m, t, bound = op_time(2 * attn_macs_layer, kv_bytes // kv.layers, matrix=True, device=device, dtype=key,
                                 compute_efficiency=s.compute_efficiency, memory_efficiency=s.memory_efficiency,
                                 launch_overhead_s=s.launch_overhead_s, sparse=False)
        moved = kv_bytes // kv.layers
        extra.append(OpTime(
            index=-1 - layer, op="kv-cache attention (analytic)", module=owners[layer], phase="forward",
            family="kv-cache",
            macs=attn_macs_layer, flops=2 * attn_macs_layer, bytes_moved=moved,
            intensity_flop_per_byte=2 * attn_macs_layer / moved if moved else math.inf,
            peak_flop_per_s=st.device.matrix_flop_per_s, compute_s=c, memory_s=m, overhead_s=s.launch_overhead_s,
            time_s=t, bound=bound,
        ))
    w = weights_bytes(step)
    required = w + per_token * (context + 1) * batch
    dec = _assemble(step, st.device, s, [*st.ops, *extra], list(st.notes), batch=batch, required_bytes=required,
                    required_basis="weights + KV cache of context + 1 tokens per sequence",
                    extra_fused_bytes=kv_bytes)
    est = LMEstimate(
        device=device.name, dtype=key, batch=batch, context=context, prefill_s=pre.predicted_s,
        prefill_tokens_per_s=batch * context / pre.predicted_s if pre.predicted_s else 0.0, prefill_bound=pre.bound,
        decode_s=dec.predicted_s, decode_tokens_per_s=batch / dec.predicted_s if dec.predicted_s else 0.0,
        decode_bound=dec.bound, decode_compute_s=dec.compute_s, decode_memory_s=dec.memory_s,
        decode_fused_lower_bound_s=dec.fused_lower_bound_s, weights_bytes=w, kv_bytes_per_token=per_token,
        kv_cache_bytes=kv_bytes, kv_attention_flops=2 * attn_macs_layer * kv.layers,
        kv_read_s=sum(o.time_s for o in extra), required_bytes=required, fits=dec.fits,
    )
    return est, pre, dec


def lm_inputs(model: Any, batch: int, tokens: int, *, last_logits_only: bool = True) -> dict[str, Any]:
    """``input_ids`` of zeros, plus ``logits_to_keep=1`` (or ``num_logits_to_keep``) when the model's forward
    takes it, so prefill computes the last position's logits only, as generation does."""
    import torch

    inputs: dict[str, Any] = {"input_ids": torch.zeros(batch, tokens, dtype=torch.long)}
    if last_logits_only:
        try:
            params = inspect.signature(model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - exotic forward
            params = {}
        for name in ("logits_to_keep", "num_logits_to_keep"):
            if name in params:
                inputs[name] = 1
                break
    return inputs


def profile_lm(model: Any, *, batch: int, context: int, dtype: Any = None, **kwargs: Any) -> tuple[Report, Report]:
    """Profile a decoder LM for :func:`lm_estimate`: prefill of ``context`` tokens and one decode-step
    token (without cache; the cache is added analytically). Runs on meta tensors by default."""
    from ..api import profile

    pre = profile(model, lm_inputs(model, batch, context), dtype=dtype, **kwargs)
    step_inputs = lm_inputs(model, batch, 1)
    try:
        if "use_cache" in inspect.signature(model.forward).parameters:
            step_inputs["use_cache"] = False
    except (TypeError, ValueError):  # pragma: no cover
        pass
    step = profile(model, step_inputs, dtype=dtype, **kwargs)
    return pre, step


def decode_sweep(
    step_for_batch: Callable[[int], Report],
    kv: KVCacheShape,
    batches: Sequence[int],
    devices: Sequence[DeviceSpec | str],
    *,
    context: int,
    prefill_for_batch: Callable[[int], Report] | None = None,
    dtype: Any = None,
    **kwargs: Any,
) -> tuple[BatchSweep, list[LMEstimate]]:
    """Decode step time per batch size (with a KV cache of ``context``): where decode turns compute-bound.
    Without ``prefill_for_batch`` the step run stands in for prefill (its prefill figures are then not
    meaningful and are not returned)."""
    if not batches or any((not isinstance(b, int)) or b < 1 for b in batches):
        raise InputError(f"batch sizes must be integers >= 1, not {list(batches)}")
    per: list[tuple[int, list[DeviceRoofline]]] = []
    ests: list[LMEstimate] = []
    key = None
    for b in sorted(set(batches)):
        step = step_for_batch(b)
        pre = prefill_for_batch(b) if prefill_for_batch is not None else step
        rows = []
        for d in devices:
            est, _, dec = lm_estimate(pre, step, kv, d, batch=b, context=context, dtype=dtype, **kwargs)
            rows.append(dec)
            if prefill_for_batch is not None:
                ests.append(est)
            key = est.dtype
        per.append((b, rows))
    return sweep_from_rooflines(per, key or "fp32", kind="decode"), ests


__all__ = [
    "KVCacheShape",
    "attach",
    "compare_devices",
    "decode_sweep",
    "fused_bytes",
    "kv_cache_shape",
    "lm_estimate",
    "lm_inputs",
    "op_family",
    "op_time",
    "profile_lm",
    "ridge_crossing",
    "roofline",
    "sweep_batches",
    "sweep_from_rooflines",
    "weights_bytes",
]

"""Costs of a trace: per event, per op, per module (own and inclusive), per phase, and in total."""

from __future__ import annotations

import platform

import torch
from torch import nn

from ..capture.events import Trace
from ..capture.tracer import walk_modules
from ..costs import CountSettings, using_settings
from ..costs.registry import cost_values
from ..report.model import (
    EventRow,
    ModuleRow,
    OpRow,
    PhaseTotals,
    Provenance,
    Report,
    Totals,
    UncountedOp,
    rows,
)
from .params import param_table

CONVENTIONS = {
    "mac": "one multiply-accumulate inside a matrix-like product (mm, bmm, conv, attention products)",
    "flop": "one floating-point operation; matmul_flops = 2 x macs; flops adds documented per-element costs",
    "bytes": "numel x itemsize of every tensor an op reads plus every tensor it writes; views move nothing",
    "attention": "Q.K^T and P.V are B.H.Lq.Lk.d MACs each; query heads counted (GQA)",
    "sdpa": "F.scaled_dot_product_attention is counted as one fused op, identically on every backend",
}


def cost_events(trace: Trace, settings: CountSettings) -> list[EventRow]:
    """Every event of the trace with its cost, in order."""
    out: list[EventRow] = []
    append = out.append
    new = tuple.__new__
    with using_settings(settings):
        for ev in trace.events:
            macs, flops, r, w, counted = cost_values(ev)
            append(new(EventRow, (ev.index, ev.op, ev.module, ev.phase, macs, flops, r or 0, w or 0, counted)))
    return out


def build_report(
    model: nn.Module,
    trace: Trace,
    *,
    name: str | None = None,
    settings: CountSettings | None = None,
    group_size: int = 128,
) -> Report:
    from .. import __version__

    settings = settings or CountSettings()
    events = cost_events(trace, settings)

    # per op, per phase and per module (own), in one pass over the plain values ------------------
    by_op: dict[tuple[str, str], list[int]] = {}
    unc: dict[str, list] = {}
    ph: dict[str, list[int]] = {}
    own: dict[str, list[int]] = {}
    for _, op, module, phase, macs, flops, br, bw, counted in events:
        a = by_op.get((op, phase))
        if a is None:
            a = by_op[(op, phase)] = [0, 0, 0, 0, 0, 1]
        a[0] += 1
        a[1] += macs
        a[2] += flops
        a[3] += br
        a[4] += bw
        if not counted:
            a[5] = 0
            u = unc.setdefault(op, [0, [], 0])
            u[0] += 1
            if module not in u[1]:
                u[1].append(module)
            u[2] += br + bw
        a = ph.get(phase)
        if a is None:
            a = ph[phase] = [0, 0, 0, 0, 0]
        a[0] += macs
        a[1] += flops
        a[2] += br
        a[3] += bw
        a[4] += 1
        a = own.get(module)
        if a is None:
            a = own[module] = [0, 0, 0, 0]
        a[0] += macs
        a[1] += flops
        a[2] += br
        a[3] += bw
    ops = [OpRow(op, phase, a[0], a[1], a[2], a[3], a[4], bool(a[5])) for (op, phase), a in by_op.items()]
    ops.sort(key=lambda r: (-r.flops, -(r.bytes_read + r.bytes_written), r.op))
    uncounted = [UncountedOp(op, u[0], u[1], u[2]) for op, u in sorted(unc.items(), key=lambda kv: -kv[1][0])]
    phases = {k: PhaseTotals(*v) for k, v in ph.items()}

    walk = trace.walk or walk_modules(model)
    table = param_table(model, walk, group_size)
    mparams = table.per_module
    # inclusive figures: the walk is in named_modules() order (parents first), so one pass
    # backwards adds every module into its parent
    zero = (0, 0, 0, 0)
    incl = {path: list(own.get(path, zero)) for path, _, _ in walk}
    root = incl.setdefault("", [0, 0, 0, 0])
    for path, a in own.items():
        if path not in incl:  # ops under a path the walk lacks count toward the root
            for i in range(4):
                root[i] += a[i]
    for path, parent, _ in reversed(walk):
        if parent is not None:
            a, b = incl[path], incl[parent]
            b[0] += a[0]
            b[1] += a[1]
            b[2] += a[2]
            b[3] += a[3]
    calls = trace.calls
    values = []
    for path, parent, mod in walk:
        o = own.get(path, zero)
        i = incl[path]
        ip, op_ = mparams.get(path, (0, 0))
        values.append((path, type(mod).__name__, parent, 0 if path == "" else path.count(".") + 1, calls.get(path, 0),
                       ip, op_, i[0], i[1], i[2], i[3], o[0], o[1], o[2], o[3]))
    modules = rows(ModuleRow, values)

    # totals ------------------------------------------------------------------------------------
    total, trainable, nbuf, bbytes, sizes = table.params, table.trainable, table.buffers, table.buffer_bytes, table.sizes
    # bytes as run: the stand-ins' storages are at the run dtype (e.g. --dtype bf16 on an fp32 model)
    run_param_bytes = sum(trace.param_storages.values()) if trace.param_storages else sizes.own_bytes
    run_buffer_bytes = sum(trace.buffer_storages.values()) if trace.buffer_storages else bbytes
    macs = sum(a[0] for a in ph.values())
    flops = sum(a[1] for a in ph.values())
    br = sum(a[2] for a in ph.values())
    bw = sum(a[3] for a in ph.values())
    input_bytes = sum(trace.input_storages.values())
    totals = Totals(
        params=total, trainable_params=trainable, frozen_params=total - trainable, buffers=nbuf,
        param_bytes=run_param_bytes, buffer_bytes=run_buffer_bytes, macs=macs, flops=flops, matmul_flops=2 * macs,
        bytes_read=br, bytes_written=bw, bytes_moved=br + bw,
        arithmetic_intensity=(flops / (br + bw)) if br + bw else 0.0,
        fused_bytes_lower_bound=run_param_bytes + run_buffer_bytes + input_bytes + trace.output_bytes,
        ops=len(events), uncounted_ops=sum(u.calls for u in uncounted), phases=phases, param_sizes=sizes,
    )
    conventions = dict(CONVENTIONS)
    conventions["causal"] = (
        "only unmasked query/key pairs of a causal mask are counted" if settings.causal == "unmasked"
        else "causal attention counted dense (every query/key pair)"
    )
    prov = Provenance(
        modelmeter_version=__version__, torch_version=torch.__version__, python_version=platform.python_version(),
        model=name or trace.root_type, mode=trace.mode, device=trace.device, dtype=trace.dtype, train=trace.train,
        optimizer=trace.settings.get("optimizer"), input_shapes=trace.input_shapes, input_dtypes=trace.input_dtypes,
        conventions=conventions, capture=trace.settings.get("capture", "dispatch-mode"),
    )
    notes = []
    dd = trace.settings.get("data_dependent_reads") or []
    if dd:
        where = sorted(set(dd))
        notes.append(
            f"{len(dd)} data-dependent read(s) of meta tensors (e.g. .item(), if tensor:, x[mask]) were answered "
            f"True/0 (a boolean mask: every element selected) in: {', '.join(w or '(root)' for w in where[:5])}; run with --device cpu to use real values"
        )
    return Report(provenance=prov, totals=totals, modules=modules, ops=ops, uncounted_ops=uncounted,
                  events=events, notes=notes)

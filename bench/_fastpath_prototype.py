"""Prototype of the capture/report fast path proposed for ``src/modelmeter`` (NOT the package's code).

The benchmarks measure the installed package. ``counting_overhead.py --prototype PARTS`` first calls
:func:`apply` here, which monkeypatches the proposed changes into the imported package, so that the
before/after figures of each proposal come from the same benchmark on the same machine. Every patch
keeps the recorded trace identical (same events, same arguments, same costs); ``--check`` in
``counting_overhead.py`` verifies that on every model.

Parts (comma-separated, or ``all``):

* ``nodynamo``  ``_Recorder._should_skip_dynamo`` returns False: ``TorchDispatchMode.__init_subclass__``
  then does not wrap ``__torch_dispatch__`` in ``torch._disable_dynamo`` (two extra Python frames and
  an eval-frame swap on every op, and an import of ``torch._dynamo`` on the first op).
* ``names``     cache ``str(func)`` per ``OpOverload`` (``OpOverload.__str__`` formats a string each call).
* ``meta``      ``TensorMeta.of`` built positionally, device type from ``is_meta``/``is_cpu`` flags.
* ``record``    ``_State.record`` in one pass over the arguments (no second flattening walk).
* ``costs``     ``cost_events`` with rule lookup cached per op name and ``math.prod`` for bytes.
* ``setup``     ``run_capture`` calls ``model.train(train)`` only when some module's flag differs, and
  restores only the flags it changed (``Module.__setattr__`` costs ~2 us per module, twice).
* ``params``    ``count_params`` walks the buffers once instead of twice.
* ``walk``      the module tree is walked once per function instead of once per ``named_parameters()``,
  ``named_buffers()``, ``modules()``, ``parameters()``, ``buffers()`` call (each is a recursive
  generator walk): ``run_capture`` builds names, parameters, buffers and saved modes from one
  ``named_modules()`` list and the modules' ``_parameters``/``_buffers`` dicts (same de-duplication
  and order as ``named_parameters()``); ``count_params``, ``param_sizes`` and ``module_params`` do
  the same. Implies ``setup`` and ``params``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

PARTS = ("nodynamo", "names", "meta", "record", "costs", "setup", "params", "walk")


def landed() -> list[str]:
    """The parts the installed package already does (commits 3d42d55 and 117e664 took most of them
    over); :func:`apply` leaves those alone, so that it only adds what is still pending."""
    import inspect

    from modelmeter.analysis import params as params_mod
    from modelmeter.capture import events, run, tracer
    from modelmeter.costs import registry

    out = []
    if "_should_skip_dynamo" in tracer._Recorder.__dict__:
        out.append("nodynamo")
    if hasattr(tracer, "_op_name"):
        out.append("names")
    if issubclass(events.TensorMeta, tuple) or "is_meta" in inspect.getsource(events.TensorMeta.of):
        out.append("meta")
    if hasattr(tracer, "_convert"):
        out.append("record")
    if hasattr(registry, "_LOOKUP"):
        out.append("costs")
    run_src = inspect.getsource(run.run_capture)
    if "if any(m.training != train" in run_src:
        out.append("setup")
    if inspect.getsource(params_mod.count_params).count("model.buffers()") <= 1:
        out.append("params")
    if "model.named_parameters()" not in run_src and "model.named_buffers()" not in run_src:
        out.append("walk")
    return out


_SAVED: list[tuple[Any, str, Any]] = []


def restore() -> None:
    """Undo :func:`apply` (so that a benchmark can interleave patched and unpatched runs)."""
    while _SAVED:
        obj, attr, value = _SAVED.pop()
        setattr(obj, attr, value)


def apply(parts: str | list[str] = "all") -> list[str]:
    from modelmeter.analysis import totals
    from modelmeter.capture import events, run, tracer
    from modelmeter.costs import registry

    restore()
    for obj, attr in ((tracer._Recorder, "__torch_dispatch__"), (events.TensorMeta, "of"),
                      (events.TensorMeta, "numel"), (events.TensorMeta, "nbytes"), (tracer._State, "record"),
                      (totals, "cost_events"), (run, "run_capture"), (totals, "count_params"),
                      (totals, "param_sizes"), (totals, "module_params")):
        _SAVED.append((obj, attr, obj.__dict__[attr] if isinstance(obj, type) else getattr(obj, attr)))

    if isinstance(parts, str):
        parts = list(PARTS) if parts == "all" else [p for p in parts.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise SystemExit(f"unknown prototype part(s) {sorted(unknown)}: choose from {', '.join(PARTS)}")
    done = set(landed())
    if "walk" in parts and "walk" not in done:
        parts = sorted(set(parts) | {"setup", "params"}, key=PARTS.index)
    parts = [p for p in parts if p not in done]  # never replace the package's own version of a part

    TensorMeta = events.TensorMeta
    OpEvent = events.OpEvent
    Tensor = torch.Tensor

    # -- names + nodynamo: the dispatch entry --------------------------------------------------
    names: dict[Any, str] = {}

    def name_of(func: Any) -> str:
        n = names.get(func)
        if n is None:
            n = names[func] = str(func)
        return n

    raw = tracer._Recorder.__dict__["__torch_dispatch__"]
    raw = getattr(raw, "__wrapped__", raw)  # the function before torch._disable_dynamo wrapped it
    local_scalar = torch.ops.aten._local_scalar_dense.default
    current_node = torch._C._current_autograd_node
    SDPA_KEY, MODULE_KEY = tracer.SDPA_KEY, tracer.MODULE_KEY
    namer = name_of if "names" in parts else str

    def torch_dispatch(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN202
        kwargs = kwargs or {}
        s = self.s
        if func is local_scalar and args[0].device.type == "meta":
            return s.meta_scalar(func, args[0])
        out = func(*args, **kwargs)
        if s.suppress:
            return out
        node = current_node()
        if node is not None:
            md = node.metadata
            group = md.get(SDPA_KEY)
            if group is not None:
                s.emit_sdpa_backward(group)
                return out
            module = md.get(MODULE_KEY)
            if module is None:
                module = s.accumulate_grad_path(node)
            phase = "backward"
        else:
            module = s.stack[-1]
            phase = s.phase
        s.record(namer(func), func, module, phase, args, kwargs, out)
        return out

    if "nodynamo" in parts or "names" in parts:
        # assigning after class creation skips __init_subclass__, i.e. no _disable_dynamo wrapper
        tracer._Recorder.__torch_dispatch__ = torch_dispatch if "nodynamo" in parts else torch._disable_dynamo(
            torch_dispatch, recursive=True)

    # -- meta: TensorMeta.of ------------------------------------------------------------------
    if "meta" in parts:
        def of(cls, t: torch.Tensor) -> Any:
            st = t.untyped_storage()
            dev = "meta" if t.is_meta else ("cpu" if t.is_cpu else t.device.type)
            return cls(tuple(t.shape), t.dtype, dev, st._cdata, st.nbytes(), t.requires_grad)

        TensorMeta.of = classmethod(of)
    meta_of = TensorMeta.of

    # -- record: one pass ---------------------------------------------------------------------
    plain_types = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
                             torch.memory_format})

    def conv(x: Any, inputs: list | None) -> Any:
        """_to_meta and _flat_metas at once: convert x, append the metas found to ``inputs``.

        Same result as the package's two walks: a tensor becomes its TensorMeta; a list/tuple with a
        tensor at its top level is converted element by element (recursively); anything else is
        returned as is (the raw arguments of an op hold no TensorMeta, so an unconverted sequence
        adds nothing to ``inputs``).
        """
        tx = type(x)
        if tx in plain_types:
            return x
        if isinstance(x, Tensor):
            m = meta_of(x)
            if inputs is not None:
                inputs.append(m)
            return m
        if tx is list or tx is tuple or isinstance(x, (list, tuple)):
            for y in x:
                if isinstance(y, Tensor):
                    break
            else:
                return x
            items = [conv(y, inputs) for y in x]
            return type(x)(items) if isinstance(x, list) else tuple(items)
        return x

    def record(self, name, func, module, phase, args, kwargs, out):  # noqa: ANN001, ANN202
        inputs: list = []
        margs = tuple([conv(a, inputs) for a in args])
        if kwargs:
            mkw = {}
            for k, v in kwargs.items():
                mkw[k] = conv(v, None if k == "out" else inputs)
        else:
            mkw = {}
        if isinstance(out, Tensor):
            outputs = [meta_of(out)]
        elif isinstance(out, (list, tuple)):
            outputs = []
            conv(list(out), outputs)
        else:
            outputs = []
        known = self.known_storages
        for t in inputs:
            known.add(t.storage_key)
        created = []
        for t in outputs:
            k = t.storage_key
            if k not in known:
                known.add(k)
                created.append((k, t.storage_nbytes))
        ev = OpEvent(len(self.events), name, module, phase, margs, mkw, tuple(inputs), tuple(outputs),
                     tuple(created), [], func is not None and tracer._is_view_op(func), func)
        self.events.append(ev)
        for obs in self.observers:
            obs(ev)
        return ev

    if "record" in parts:
        tracer._State.record = record

    # -- costs: cost_events -------------------------------------------------------------------
    if "costs" in parts:
        EventRow = totals.EventRow
        Cost = registry.Cost
        rule_for, is_no_arithmetic, default_bytes = registry.rule_for, registry.is_no_arithmetic, registry.default_bytes
        RuleError = registry.RuleError
        prod = math.prod
        TensorMeta.numel = property(lambda self: prod(self.shape))
        TensorMeta.nbytes = property(lambda self: prod(self.shape) * self.dtype.itemsize)

        def cost_events(trace, settings):  # noqa: ANN001, ANN202
            rows = []
            rules: dict[str, Any] = {}
            noarith: dict[str, bool] = {}
            append = rows.append
            with registry.using_settings(settings):
                for ev in trace.events:
                    op = ev.op
                    rule = rules.get(op, rules)
                    if rule is rules:
                        rule = rules[op] = rule_for(op)
                    if rule is None:
                        r, w = default_bytes(ev)
                        counted = ev.is_view
                        if not counted:
                            counted = noarith.get(op)
                            if counted is None:
                                counted = noarith[op] = is_no_arithmetic(op)
                        append(EventRow(ev.index, op, ev.module, ev.phase, 0, 0, r, w, counted))
                        continue
                    try:
                        c = rule(ev)
                    except Exception as exc:
                        raise RuleError(f"the cost rule for {op} failed in module '{ev.module}': "
                                        f"{type(exc).__name__}: {exc}") from exc
                    br, bw = c.bytes_read, c.bytes_written
                    if br is None or bw is None:
                        r, w = default_bytes(ev)
                        br = r if br is None else br
                        bw = w if bw is None else bw
                    append(EventRow(ev.index, op, ev.module, ev.phase, c.macs, c.flops, br, bw, True))
            return rows

        del Cost
        totals.cost_events = cost_events

    # -- setup: run_capture's mode switch ------------------------------------------------------
    if "setup" in parts or "walk" in parts:
        import inspect
        import textwrap

        src = textwrap.dedent(inspect.getsource(_original(run, "run_capture")))
        edits = [
            ("        model.train(train)\n",
             "        if any(m.training != train for m in saved_modes):\n            model.train(train)\n"),
            ("        for m, flag in saved_modes.items():\n            m.training = flag\n",
             "        for m, flag in saved_modes.items():\n            if m.training != flag:\n                m.training = flag\n"),
        ]
        if "walk" in parts:
            edits += [
                ("    names = {id(m): p for p, m in model.named_modules()}\n"
                 "    params = dict(model.named_parameters())\n"
                 "    buffers = dict(model.named_buffers())\n",
                 "    _mods = list(model.named_modules())\n"
                 "    names = {id(m): p for p, m in _mods}\n"
                 "    params = _PROTO_MEMBERS(_mods, '_parameters')\n"
                 "    buffers = _PROTO_MEMBERS(_mods, '_buffers')\n"),
                ("    saved_modes = {m: m.training for m in model.modules()}\n",
                 "    saved_modes = {m: m.training for _, m in _mods}\n"),
            ]
        for old, new in edits:
            if _landed(src, new):  # the package has this change already
                continue
            if src.count(old) == 1:
                src = src.replace(old, new)
            else:
                raise RuntimeError(f"prototype 'setup' no longer matches run_capture's source: {old.strip()!r}")
        ns = dict(run.__dict__)
        ns["_PROTO_MEMBERS"] = _members
        exec(compile(src, run.__file__, "exec"), ns)  # noqa: S102 - a measured prototype, not shipped code
        run.run_capture = ns["run_capture"]

    # -- params: one walk over the buffers --------------------------------------------------------
    if "params" in parts:
        def count_params(model):  # noqa: ANN001, ANN202
            total = trainable = 0
            for p in model.parameters():
                k = p.numel()
                total += k
                if p.requires_grad:
                    trainable += k
            nbuf = bbytes = 0
            for b in model.buffers():
                k = b.numel()
                nbuf += k
                bbytes += k * b.element_size()
            return total, trainable, nbuf, bbytes

        totals.count_params = count_params

    if "walk" in parts:
        from modelmeter.report.model import ParamSizes

        def count_params(model):  # noqa: ANN001, ANN202, F811
            mods = list(model.named_modules())
            total = trainable = 0
            for p in _members(mods, "_parameters").values():
                k = p.numel()
                total += k
                if p.requires_grad:
                    trainable += k
            nbuf = bbytes = 0
            for b in _members(mods, "_buffers").values():
                k = b.numel()
                nbuf += k
                bbytes += k * b.element_size()
            return total, trainable, nbuf, bbytes

        def param_sizes(model, group_size=128):  # noqa: ANN001, ANN202
            if group_size < 1:
                return _original(totals, "param_sizes")(model, group_size)  # raises the package's error
            own = n = int8 = int4 = 0
            for p in _members(list(model.named_modules()), "_parameters").values():
                k = p.numel()
                n += k
                own += k * p.element_size()
                scales = -(-k // group_size) * 2
                int8 += k + scales
                int4 += -(-k // 2) + scales
            return ParamSizes(own_bytes=own, fp32_bytes=4 * n, fp16_bytes=2 * n, bf16_bytes=2 * n, fp8_bytes=n,
                              int8_bytes=int8, int4_bytes=int4, group_size=group_size)

        def module_params(model):  # noqa: ANN001, ANN202
            out: dict[str, tuple[int, int]] = {}
            sizes: dict[int, int] = {}

            def visit(mod, path, seen):  # noqa: ANN001, ANN202
                own_ids = set()
                for p in mod._parameters.values():
                    if p is not None:
                        sizes[id(p)] = p.numel()
                        own_ids.add(id(p))
                ids = set(own_ids)
                for name, child in mod._modules.items():
                    if child is None or id(child) in seen:
                        continue
                    seen.add(id(child))
                    ids |= visit(child, f"{path}.{name}" if path else name, seen)
                out[path] = (sum(sizes[i] for i in ids), sum(sizes[i] for i in own_ids))
                return ids

            visit(model, "", {id(model)})
            return out

        totals.count_params = count_params
        totals.param_sizes = param_sizes
        totals.module_params = module_params
    return parts


def _landed(src: str, new: str) -> bool:
    """Whether the package's source already holds this edit (ignoring comments and blank lines)."""
    def code(text: str) -> list[str]:
        return [ln.split("#")[0].rstrip() for ln in text.splitlines() if ln.split("#")[0].strip()]

    want, have = code(new), code(src)
    return any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))


def _members(mods: list, attr: str) -> dict[str, torch.Tensor]:
    """``dict(model.named_parameters())`` (attr ``_parameters``) or ``named_buffers()`` from a
    ``named_modules()`` list: same order, a tensor shared by several modules once, under its first name."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for prefix, mod in mods:
        for k, v in getattr(mod, attr).items():
            if v is None or id(v) in seen:
                continue
            seen.add(id(v))
            out[prefix + ("." if prefix else "") + k] = v
    return out


def _original(obj: Any, attr: str) -> Any:
    for o, a, v in _SAVED:
        if o is obj and a == attr:
            return v
    return getattr(obj, attr)


def attribute(models: list[str], reps: int, threads: int) -> dict[str, Any]:
    """What each part saves, alone and all together: ``modelmeter.profile(..., device="cpu")`` CPU time
    (``time.process_time``, so that time stolen by other processes is not counted) with and without
    the part, interleaved in one process, median over ``reps`` pairs."""
    import statistics
    import sys
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import counting_overhead as co

    import modelmeter

    torch.set_num_threads(threads)
    builders = co.model_builders(128)
    variants = ["none", *PARTS, "all"]
    out: dict[str, Any] = {}
    for name in models:
        torch.manual_seed(0)
        case = builders[name]()

        def call(case=case):  # noqa: ANN001, ANN202
            return modelmeter.profile(case.model, case.mm_inputs(), device="cpu")

        samples: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(reps + 1):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                restore() if v == "none" else apply(v)
                t0 = time.process_time()
                call()
                dt = time.process_time() - t0
                restore()
                if r:
                    samples[v].append(dt)
        base = statistics.median(samples["none"])
        with torch.no_grad():
            plain = []
            for _ in range(reps):
                t0 = time.process_time()
                case.call()
                plain.append(time.process_time() - t0)
        ops = len(call().events)
        row = {"ops": ops, "plain_cpu_ms": statistics.median(plain) * 1e3, "profile_cpu_ms": base * 1e3,
               "saved_ms": {v: (base - statistics.median(samples[v])) * 1e3 for v in variants if v != "none"}}
        out[name] = row
        saved = " ".join(f"{v}={row['saved_ms'][v]:+.2f}" for v in variants if v != "none")
        print(f"{name:16s} ops {ops:4d} plain {row['plain_cpu_ms']:7.1f} ms profile {row['profile_cpu_ms']:7.1f} ms "
              f"saved ms: {saved}", flush=True)
    return out


if __name__ == "__main__":
    import argparse
    import json
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _benchlib import machine_info

    ap = argparse.ArgumentParser(description="CPU time each prototype part saves per profile() call")
    ap.add_argument("--models", default="mobilenet_v2,efficientnet_b0,densenet121")
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the figures to this path (e.g. bench/results/fastpath_attribution.json)")
    a = ap.parse_args()
    machine = machine_info()  # the load average the run started under
    res = attribute(a.models.split(","), a.reps, a.threads)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"benchmark": "fastpath_attribution", "machine": machine, "loadavg_at_end": list(os.getloadavg()),
                       "threads": a.threads, "reps": a.reps, "models": res}, f, indent=2)

"""Run a model once under a ``TorchDispatchMode`` and record every aten call.

Module attribution, forward: global module pre/post forward hooks (registered for the duration of
the capture only, removed in ``finally``) keep a stack of module paths; an op belongs to the top.
Module attribution, backward: when a module's forward returns, every autograd node it created is
tagged with its path (a walk from its outputs' ``grad_fn`` that stops at nodes already tagged by
inner modules). During backward the dispatch mode asks autograd which node is running
(``torch._C._current_autograd_node``) and reads the tag. This is exact for reused modules and for
functional calls inside ``forward``.

Scaled-dot-product attention is seen one level higher, as ``F.scaled_dot_product_attention``
(a ``TorchFunctionMode`` when training or on meta, a wrapper around the function for a real-tensor
inference run; see :func:`capturing`), and recorded as one fused op (``modelmeter.sdpa``, and
``modelmeter.sdpa_backward`` for its gradient). PyTorch picks a different kernel on each device (the
math decomposition on meta, flash on CPU, flash/efficient/cuDNN on CUDA); counting the call itself
makes the counts identical on every device and in every mode. The aten kernels still run, and each
has its own rule for code that calls them directly. Recurrent layers are recorded the same way
(``modelmeter.rnn`` and ``modelmeter.rnn_backward``), from the ``torch._VF`` functions ``nn.RNNBase``
calls.

On meta, the values of small tensors that do not depend on the weights (inputs, buffers, what is
computed from them) are kept beside them, so that a model reading them takes the path a real run takes
(:mod:`.values`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .events import OpEvent, TensorMeta
from .values import NO_VALUE_OPS, KnownValues

Tensor = torch.Tensor
_meta_of = TensorMeta.of

MODULE_KEY = "modelmeter.module"
#: autograd-node metadata key of the nodes of an op recorded as one event (attention, a recurrent
#: layer): the forward event's index, so its backward is recorded once, as one event too
FUSED_KEY = "modelmeter.fused"
#: the recurrent layers' functions nn.RNNBase calls (torch._VF.lstm etc.), recorded as one op each
RNN_FUNCS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
_RNN_ARG_NAMES = ("input", "hx", "params", "has_biases", "num_layers", "dropout", "train", "bidirectional",
                  "batch_first")
_RNN_PACKED_ARG_NAMES = ("input", "batch_sizes", "hx", "params", "has_biases", "num_layers", "dropout", "train",
                         "bidirectional")
_SDPA_ARG_NAMES = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


_PLAIN_TYPES = frozenset({int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout,
                          torch.memory_format})


def _convert(x: Any, found: list[TensorMeta] | None) -> Any:
    """An argument with every tensor replaced by its TensorMeta; the metas are appended to ``found``.

    A list/tuple is converted element by element when it holds a tensor at its top level; anything
    else is returned as it is. One pass: this runs for every argument of every op.
    """
    tx = type(x)
    if tx in _PLAIN_TYPES:
        return x
    if isinstance(x, torch.Tensor):
        m = TensorMeta.of(x)
        if found is not None:
            found.append(m)
        return m
    if isinstance(x, (list, tuple)):
        for y in x:
            if isinstance(y, torch.Tensor):
                break
        else:
            return x
        items = [_convert(y, found) for y in x]
        return items if isinstance(x, list) else tuple(items)
    return x


def _outputs(out: Any) -> tuple[TensorMeta, ...]:
    """The metadata of the tensors an op returned (a tensor, or a list/tuple holding tensors)."""
    if isinstance(out, Tensor):
        return (_meta_of(out),)
    if isinstance(out, (list, tuple)):
        found: list[TensorMeta] = []
        _convert(list(out), found)
        return tuple(found)
    return ()


class _OpPlan(NamedTuple):
    """What the capture needs to know of an op, worked out once per op from its schema."""

    func: Any  # kept so that the id() key of the cache is never reused
    name: str  # str(OpOverload) formats a new string on every call
    is_view: bool  # every return aliases an input without writing it (view/metadata op)
    positions: tuple[int, ...] | None  # positional arguments that may hold tensors; None: look at all
    keywords: frozenset[str]  # keyword-only arguments that may hold tensors (``out`` is not an input)
    direct: bool  # an OpOverload whose C++ op (``_op``) may be called without ``__call__``
    # no return aliases an argument (no ``Tensor(a)``/``Tensor(a!)`` in the schema's returns): each
    # returned storage that is not one of its inputs' was allocated by the op. True when unknown.
    fresh: bool = True
    # ``lift_fresh``: returns the tensor ``torch.tensor(...)`` has just built outside the dispatcher
    lifts: bool = False
    # for a meta run's known values (capture/values.py): the arguments the op writes (in-place ``self``,
    # ``out=``), by position and name; and whether it may be run on known values (deterministic, and
    # its output not left uninitialized)
    written: tuple[tuple[int, str], ...] = ()
    evaluable: bool = False
    # a CompositeImplicitAutograd op (conv2d, linear): decomposed above autograd, so a dispatch mode sees
    # the ops it calls, except where autograd is off for the tensors (inference_mode), when the mode
    # receives the op itself; it is then decomposed with the mode on (as FakeTensorMode does). The device
    # types where its composite kernel is the one that runs (see decomposes_above_autograd), or False.
    cia: Any = False
    # a profiler annotation (torch.profiler.record_function's enter/exit ops): run, not recorded; the
    # native recorder never sees them either (RecordFunction does not observe them)
    unrecorded: bool = False


_PLANS: dict[int, _OpPlan] = {}


def _plan(func: Any) -> _OpPlan:
    """The op's plan, cached by ``id(func)`` (``OpOverload.__hash__`` is a Python call)."""
    plan = _PLANS.get(id(func))
    if plan is not None:
        return plan
    schema = getattr(func, "_schema", None)
    positions: tuple[int, ...] | None = None
    keywords: frozenset[str] = frozenset()
    is_view = False
    fresh = True
    if schema is not None:
        rets = schema.returns
        is_view = bool(rets) and all(r.alias_info is not None and not r.alias_info.is_write for r in rets)
        fresh = all(r.alias_info is None for r in rets)
        pos, kw = [], []
        for i, a in enumerate(schema.arguments):
            if "Tensor" in str(a.type):  # Tensor, Tensor?, Tensor[], Tensor?[]
                if a.kwarg_only:
                    kw.append(a.name)
                else:
                    pos.append(i)
        positions, keywords = tuple(pos), frozenset(kw)
    direct = hasattr(func, "_op") and hasattr(func, "_pyobj_dispatcher")
    written: tuple[tuple[int, str], ...] = ()
    evaluable = False
    if schema is not None:
        written = tuple((i, a.name) for i, a in enumerate(schema.arguments)
                        if a.alias_info is not None and a.alias_info.is_write)
        evaluable = (torch.Tag.nondeterministic_seeded not in getattr(func, "tags", ())
                     and getattr(func, "__name__", "").split(".")[0] not in NO_VALUE_OPS)
    name = getattr(func, "name", None)
    cia: Any = callable(name) and decomposes_above_autograd(name())
    unrecorded = getattr(func, "namespace", None) == "profiler"
    plan = _PLANS[id(func)] = _OpPlan(func, str(func), is_view, positions, keywords, direct, fresh,
                                      func is _LIFT_FRESH, written, evaluable, cia, unrecorded)
    return plan


_DEVICE_KERNELS = {"cpu": "CPU", "cuda": "CUDA", "meta": "Meta"}


def decomposes_above_autograd(name: str) -> frozenset[str] | bool:
    """Where an op's CompositeImplicitAutograd kernel runs in place of a kernel of its own, so that a
    dispatch mode sees the ops it calls, not the op: False nowhere (no composite kernel, or a
    device-independent one of its own), else the device types on which it does (conv2d and linear: all;
    silu_backward: none of CPU, CUDA and meta, which have kernels; _fused_rms_norm: all but CUDA). The
    native recorder applies the same rule for the CPU (recorder.cpp, ``info_of_handle``)."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    if not has(name, "CompositeImplicitAutograd") or has(name, "CompositeExplicitAutograd") \
            or has(name, "CompositeExplicitAutogradNonFunctional"):
        return False
    devices = frozenset(d for d, key in _DEVICE_KERNELS.items() if not has(name, key))
    return devices or False


def _device_of(args: tuple, kwargs: dict | None) -> str | None:
    for a in (*args, *(kwargs or {}).values()):
        if isinstance(a, Tensor):
            return a.device.type
        if isinstance(a, (list, tuple)):
            for b in a:
                if isinstance(b, Tensor):
                    return b.device.type
    return None


def _is_view_op(func: Any) -> bool:
    """An op whose every return aliases an input without writing it (view/metadata op)."""
    return _plan(func).is_view


class _Recorder(TorchDispatchMode):
    def __init__(self, state: _State) -> None:
        super().__init__()
        self.s = state

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # PyTorch otherwise wraps __torch_dispatch__ in torch._disable_dynamo (extra frames on every op
        # and an import of torch._dynamo on the first); nothing here is ever compiled
        return False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        s = self.s
        plan = _PLANS.get(id(func))
        if plan is None:
            plan = _plan(func)
        if plan.cia and _device_of(args, kwargs) in plan.cia:
            with self:
                return func.decompose(*args, **(kwargs or {}))
        if plan.unrecorded:
            return func(*args, **(kwargs or {}))
        known = False
        if s.values is not None:  # a meta run: values kept where they are known (capture/values.py)
            out, known = s.values.dispatch(func, plan, args, kwargs, s.meta_op)
        elif plan.direct and func._pyobj_dispatcher is None:
            # what OpOverload.__call__ does when no Python dispatcher is installed, one frame less
            op = func._op
            out = op(*args, **kwargs) if kwargs else op(*args)
        else:
            out = func(*args, **kwargs) if kwargs else func(*args)
        if s.suppress:
            return out
        node = _current_node()
        if node is not None:
            md = node.metadata
            group = md.get(FUSED_KEY)
            if group is not None:
                s.emit_fused_backward(group)
                return out
            module = md.get(MODULE_KEY)
            if module is None:
                module = s.accumulate_grad_path(node)
            phase = "backward"
        else:
            module = s.stack[-1]
            phase = s.phase
        ev = s.record_op(plan, module, phase, args, kwargs, out)
        if known:
            s.known_events.add(ev.index)
        return out


_LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default
_LIFT_FRESH = torch.ops.aten.lift_fresh.default
_BOOL_OF_VALUES = frozenset({torch.ops.aten.equal.default, torch.ops.aten.allclose.default})
_SDPA = torch._C._nn.scaled_dot_product_attention  # what F.scaled_dot_product_attention is
_current_node = torch._C._current_autograd_node
_INDEXING = frozenset({"__getitem__", "__setitem__"})
_FROM_DATA = frozenset({torch.tensor, torch.as_tensor, torch.asarray})


class _SdpaMode(TorchFunctionMode):
    def __init__(self, state: _State) -> None:
        super().__init__()
        self.s = state

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        s = self.s
        if func is _SDPA and not s.suppress:
            return s.sdpa(func, args, kwargs)
        if s.values is not None:  # a meta run
            name = getattr(func, "__name__", None)
            if len(args) > 1 and name in _INDEXING:
                args = (args[0], s.list_indices(args[1]), *args[2:])
            elif name == "tolist" and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return s.meta_tolist(args[0])
            elif name == "__format__" and args and isinstance(args[0], torch.Tensor) and args[0].is_meta \
                    and args[0].dim() == 0:
                # f"expert_{idx}": a real 0-dim tensor formats as its value (PyTorch reads it with .item())
                return format(s.meta_tolist(args[0]), args[1] if len(args) > 1 else "")
            elif func in _FROM_DATA:
                # torch.tensor(data, device="meta") makes its tensor out of the dispatcher's sight: the
                # values are the data's
                out = func(*args, **kwargs)
                if isinstance(out, torch.Tensor) and out.is_meta:
                    s.values.add_from_data(out, func, args, kwargs)
                return out
        out = func(*args, **kwargs)
        if s.tag_nodes and isinstance(out, torch.Tensor):
            fn = out.grad_fn
            if fn is not None and MODULE_KEY not in fn.metadata:
                # every autograd node this call created belongs to the module running now; tagging
                # here (not when a module returns) keeps a parent's ops made before it calls a child
                # with the parent in backward
                _tag_graph(fn, MODULE_KEY, s.stack[-1], set())
        return out


class _State:
    """Mutable bookkeeping of one capture."""

    def __init__(self, names: dict[int, str], param_paths: dict[int, str]) -> None:
        self.names = names
        self.param_paths = param_paths  # id(param tensor) -> owning module path
        self.stack: list[str] = [""]
        self.phase = "forward"
        self.events: list[OpEvent] = []
        self.suppress = 0
        # forward event index -> (the event, the inputs its backward makes gradients for)
        self.fused_groups: dict[int, tuple[OpEvent, tuple[TensorMeta, ...]]] = {}
        self.fused_emitted: set[int] = set()
        self.calls: dict[str, int] = {}
        self.failed_path: str | None = None
        self.data_dependent: list[str] = []
        # a meta run's known values (None on real tensors), and the events they answered exactly
        self.values: KnownValues | None = None
        self.known_events: set[int] = set()
        self.observers: list[Callable[[OpEvent], None]] = []
        self.tag_nodes = False  # set while autograd records (training forward)
        # the native recorder (capture/native) when it records this run's aten ops: module ids it is
        # handed, and where each event recorded here (a fused op) falls among its records
        self.native: Any = None
        self.native_ids: dict[int, int] = {}
        self.native_paths: list[str] = [""]
        self.native_positions: list[int] = []
        self.native_used = False

    # -- events -------------------------------------------------------------------------------
    def record_op(self, plan: _OpPlan, module: str, phase: str, args: tuple, kwargs: dict | None, out: Any) -> OpEvent:
        """Record one aten call. The capture's hot path: only the arguments the op's schema types as
        tensors are looked at, and each tensor becomes a :class:`TensorMeta` once."""
        positions = plan.positions
        inputs: list[TensorMeta] = []
        if positions is None:  # no schema: every argument is looked at
            margs = tuple([_convert(a, inputs) for a in args])
            mkw = {k: _convert(v, None if k == "out" else inputs) for k, v in kwargs.items()} if kwargs else {}
        else:
            margs = args
            if positions:
                margs = list(args)
                n = len(args)
                for i in positions:
                    if i < n:
                        a = args[i]
                        if isinstance(a, Tensor):
                            m = _meta_of(a)
                            inputs.append(m)
                            margs[i] = m
                        elif a is not None:
                            margs[i] = _convert(a, inputs)
                margs = tuple(margs)
            mkw = {}
            if kwargs:
                kws = plan.keywords
                for k, v in kwargs.items():
                    mkw[k] = _convert(v, None if k == "out" else inputs) if k in kws else v
        if isinstance(out, Tensor):
            # an in-place op returns its first argument, whose metadata was taken just now (after the op)
            outputs = (inputs[0],) if positions and positions[0] == 0 and args and out is args[0] else (_meta_of(out),)
        else:
            outputs = _outputs(out)
        # the storages the op allocated: by the schema, not by "not seen before" (a storage freed
        # during the run and a new one made at the same address share a key); fused_outputs applies
        # the same rule to fused ops, written out here as this runs for every op
        created: Any = ()
        if plan.fresh and outputs:
            keys = {t[3] for t in inputs}
            for t in outputs:
                key = t[3]
                if key not in keys:  # e.g. _unsafe_view: declared fresh, returns its input's storage
                    keys.add(key)
                    created = (*created, (key, t[4]))
        elif plan.lifts:
            created = tuple((t[3], t[4]) for t in outputs)
        events = self.events
        ev = OpEvent(len(events), plan.name, module, phase, margs, mkw, tuple(inputs), outputs, created, (),
                     plan.is_view, plan.func)
        events.append(ev)
        if self.observers:
            for obs in self.observers:
                obs(ev)
        return ev

    def record(self, name: str, func: Any, module: str, phase: str, args: Any, kwargs: Any, out: Any) -> OpEvent:
        """Record one call whose arguments are all looked at (synthetic events such as ``modelmeter.sdpa``)."""
        plan = _OpPlan(func, name, func is not None and _is_view_op(func), None, frozenset(), False,
                       func is None or _plan(func).fresh)
        if self.native is not None:
            self.native_positions.append(self.native.position())
        return self.record_op(plan, module, phase, args, kwargs, out)

    def list_indices(self, index: Any) -> Any:
        """``x[:, [3, 0]]`` on meta: each flat list of ints or bools made a CPU tensor here, whose value
        is known, not by PyTorch's indexing code, which makes a meta tensor out of sight of the
        dispatcher (e.g. transformers' padding check, ``pad_token_id in input_ids[:, [-1, 0]]``). A
        list index and a tensor index select the same elements."""
        def convert(i: Any) -> Any:
            if type(i) is list and i and all(type(v) in (int, bool) for v in i) and len({type(v) for v in i}) == 1:
                return torch.tensor(i)  # recorded as on CPU, where PyTorch's indexing lifts the list (lift_fresh)
            return i
        if type(index) is tuple:
            return tuple(convert(i) for i in index)
        return convert(index)

    def meta_tolist(self, t: torch.Tensor) -> Any:
        """``t.tolist()`` on meta (no aten op: a real run reads the memory directly): the known values,
        else the answer a data-dependent read gets, True or 0 for every element, listed in the report."""
        value = self.values.get(t) if self.values is not None else None
        if value is not None:
            return value.tolist()
        fill = self.meta_scalar(None, t)  # the answer (and the note) a read of one element gets

        def nested(shape: tuple[int, ...]) -> Any:
            return [nested(shape[1:]) for _ in range(shape[0])] if shape else fill

        return nested(tuple(t.shape))

    def meta_op(self, func: Any, args: tuple, kwargs: dict) -> Any:
        """An op of a meta run whose arguments' values are not all known."""
        if func is _LOCAL_SCALAR and args[0].is_meta:
            # no value to read: answered, and recorded as the read a real run makes
            return self.meta_scalar(func, args[0])
        if func in _BOOL_OF_VALUES and any(isinstance(a, torch.Tensor) and a.is_meta for a in args):
            # torch.equal / torch.allclose return a Python bool their meta kernels cannot compute: "equal"
            self.data_dependent.append(self.stack[-1])
            return True
        if func is _GROUPED_MM and args[0].is_meta and args[0].dtype not in _HALF:
            return _meta_grouped_mm(args, kwargs)
        try:
            return func(*args, **kwargs)
        except RuntimeError:
            # a CPU 0-dim tensor beside meta tensors (x.masked_fill(mask, torch.tensor(-1e9))): real
            # kernels take it as a scalar on any device, some meta kernels refuse it (masked_fill). The
            # event keeps the call's own arguments, so it is counted as on CPU.
            moved = _cpu_scalars_to_meta(args, kwargs)
            if moved is None:
                raise
            return func(*moved[0], **moved[1])

    def meta_scalar(self, func: Any, t: torch.Tensor) -> Any:
        """A data-dependent read (``.item()``, ``bool(t)``) of a meta tensor whose value is not known
        (one that depends on the weights or on random numbers; see capture/values.py) has no value to give.

        The answer that keeps a model on its dense, unpadded path is returned: True for bools (e.g.
        "all tokens are real"), 0 for numbers. Each such read is listed in the report.
        """
        self.data_dependent.append(self.stack[-1])
        if t.dtype == torch.bool:
            return True
        if t.dtype.is_floating_point or t.dtype.is_complex:
            return 0.0
        return 0

    # -- attention ----------------------------------------------------------------------------
    def sdpa(self, func: Any, args: tuple, kwargs: dict) -> Any:
        bound = dict(zip(_SDPA_ARG_NAMES, args))
        bound.update(kwargs)
        q, k, v = bound["query"], bound["key"], bound["value"]
        ev = self.record(
            "modelmeter.sdpa", None, self.stack[-1], self.phase, (), bound, None
        )
        self.suppress += 1
        native = self.native
        if native is not None:
            native.pause()
        try:
            out = _meta_fused_sdpa(bound) if q.device.type == "meta" else None
            if out is None:
                out = func(*args, **kwargs)
        finally:
            self.suppress -= 1
            if native is not None:
                native.resume()
        self.fused_outputs(ev, (out,))
        if out.grad_fn is not None:
            stops = {id(t.grad_fn) for t in (q, k, v, bound.get("attn_mask")) if isinstance(t, torch.Tensor) and t.grad_fn is not None}
            self.fused_group(ev, ev.inputs[:3], [out.grad_fn], stops)  # q, k, v get gradients
        return out

    def fused_outputs(self, ev: OpEvent, results: Any) -> None:
        """Fill in the outputs of an event recorded before its kernels ran, and the storages it made (those
        that are not one of its inputs' storages)."""
        ev.outputs = tuple(TensorMeta.of(t) for t in results)
        keys = {t[3] for t in ev.inputs}
        created: list[tuple[int, int]] = []
        for m in ev.outputs:
            if m[3] not in keys:
                keys.add(m[3])
                created.append((m[3], m[4]))
        ev.created = tuple(created)

    def fused_group(self, ev: OpEvent, grad_inputs: tuple[TensorMeta, ...], roots: list[Any], stops: set[int]) -> None:
        """Tag the autograd nodes the fused op made (from its outputs' ``grad_fn`` up to ``stops``, the
        nodes of its inputs; not its parameters' gradient accumulation) with the event's index."""
        self.fused_groups[ev.index] = (ev, grad_inputs)
        for root in roots:
            _tag_graph(root, FUSED_KEY, ev.index, stops, leaves=False)

    def emit_fused_backward(self, gid: int) -> None:
        """Record the backward of a fused op (``modelmeter.sdpa_backward``, ``modelmeter.rnn_backward``)
        once, at the first of its kernels; the rest of its kernels run unrecorded."""
        if gid in self.fused_emitted:
            return
        self.fused_emitted.add(gid)
        fwd, grad_inputs = self.fused_groups[gid]
        ev = OpEvent(
            index=len(self.events),
            op=fwd.op + "_backward",
            module=fwd.module,
            phase="backward",
            args=(),
            kwargs=dict(fwd.kwargs),
            inputs=fwd.inputs + fwd.outputs,  # what the forward read, and gradients shaped like its outputs
            outputs=tuple(t for t in grad_inputs if t.requires_grad),  # the gradients it makes
        )
        self.events.append(ev)
        for obs in self.observers:
            obs(ev)

    # -- recurrent layers ---------------------------------------------------------------------
    def rnn(self, mode: str, func: Any, args: tuple, kwargs: dict) -> Any:
        """``torch._VF.lstm/gru/rnn_tanh/rnn_relu`` (a whole ``nn.LSTM``/``nn.GRU``/``nn.RNN``, every layer
        and direction) recorded as one op, ``modelmeter.rnn``, its kernels run unrecorded.

        PyTorch runs these as oneDNN's fused LSTM layer on CPU, as a cell loop elsewhere (meta, CUDA
        without cuDNN), and even the loop differs per device (CPU projects the whole input sequence
        before it); counting the call makes MACs, FLOPs and bytes the same everywhere.
        """
        packed = len(args) > 3 and isinstance(args[3], (list, tuple))  # (data, batch_sizes, hx, params, ...)
        bound = dict(zip(_RNN_PACKED_ARG_NAMES if packed else _RNN_ARG_NAMES, args))
        bound.update(kwargs)
        bound["mode"] = mode
        ev = self.record("modelmeter.rnn", None, self.stack[-1], self.phase, (), bound, None)
        self.suppress += 1
        native = self.native
        if native is not None:
            native.pause()
        try:
            out = func(*args, **kwargs)
        finally:
            self.suppress -= 1
            if native is not None:
                native.resume()
        results = [t for t in out if isinstance(t, torch.Tensor)]
        self.fused_outputs(ev, results)
        roots = [t.grad_fn for t in results if t.grad_fn is not None]
        if roots:
            stops = {id(t.grad_fn) for t in tree_leaves((bound["input"], bound["hx"], bound["params"]))
                     if isinstance(t, torch.Tensor) and t.grad_fn is not None}
            self.fused_group(ev, ev.inputs, roots, stops)  # input, initial state and weights
        return out

    def accumulate_grad_path(self, node: Any) -> str:
        var = getattr(node, "variable", None)
        if var is not None:
            return self.param_paths.get(id(var), "")
        return ""

    # -- module hooks -------------------------------------------------------------------------
    def pre_hook(self, module: torch.nn.Module, args: Any) -> None:
        stack = self.stack
        path = self.names.get(id(module))
        if path is None:  # a module that is not a submodule of the model (e.g. built in forward)
            path = stack[-1]
        else:
            calls = self.calls
            calls[path] = calls.get(path, 0) + 1
        stack.append(path)

    def pre_hook_native(self, module: torch.nn.Module, args: Any) -> None:
        """:meth:`pre_hook`, and the module's id handed to the native recorder (-1: not a submodule)."""
        self.pre_hook(module, args)
        self.native.push(self.native_ids.get(id(module), -1))

    def post_hook_native(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.native.pop()
        self.post_hook(module, args, output)

    def start_native(self, native: Any) -> bool:
        """Hand this run's aten ops to the native recorder; False if it cannot record now."""
        if not native.start():
            return False
        self.native = native
        self.native_used = True
        ids = self.native_ids
        paths = self.native_paths
        for key, path in self.names.items():
            ids[key] = len(paths)
            paths.append(path)
        return True

    def finish_native(self) -> None:
        """The native recorder's records, made events, in order with the ones recorded here (fused ops).

        Raises :class:`NativeUnsupported` when a record holds a value the native recorder does not
        describe (a sparse tensor, a tensor subclass): the run is then done again with the Python capture.
        """
        native = self.native
        table = native.ops()
        plans = _NATIVE_PLANS.setdefault(id(native), [])
        for name, overload in table[len(plans):]:
            plan = _plan(_overload(name, overload))
            plans.append((plan.name, plan.func, plan.is_view, plan.fresh, plan.lifts))
        recorded = native.drain(plans, self.native_paths)
        if recorded is None:
            raise NativeUnsupported()
        mine, positions = self.events, self.native_positions
        if mine:
            events: list[OpEvent] = []
            j = 0
            for k, ev in enumerate(recorded):
                while j < len(mine) and positions[j] <= k:
                    events.append(mine[j])
                    j += 1
                events.append(ev)
            events.extend(mine[j:])
            for i, ev in enumerate(events):
                ev.index = i
            recorded = events
        mine[:] = recorded

    def post_hook(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        path = self.stack.pop() if len(self.stack) > 1 else ""
        if sys.exc_info()[1] is not None:
            if self.failed_path is None:
                self.failed_path = path
            return
        if self.tag_nodes and torch.is_grad_enabled():
            for t in tree_leaves(output):
                if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                    _tag_graph(t.grad_fn, MODULE_KEY, path, set())


def _meta_fused_sdpa(bound: dict[str, Any]) -> torch.Tensor | None:
    """On meta, run the kernel a real CPU run would pick, not the math decomposition meta falls to.

    PyTorch's CPU dispatch picks ``_scaled_dot_product_flash_attention_for_cpu`` for 4-D inputs with
    equal head dims, unit last stride, floating dtype and no dropout (else the math path). Running
    its meta kernel gives the output and gradient layouts (those of the query) and the saved tensors
    of a real run, so bytes and memory agree between meta and CPU. Returns None to use the math path.
    """
    q, k, v = bound["query"], bound["key"], bound["value"]
    mask = bound.get("attn_mask")
    if not (q.dim() == k.dim() == v.dim() == 4):
        return None
    if float(bound.get("dropout_p", 0.0) or 0.0) != 0.0:
        return None
    if not (q.size(-1) == k.size(-1) == v.size(-1)) or q.dtype not in _FLASH_DTYPES:
        return None
    if q.stride(-1) != 1 or k.stride(-1) != 1 or v.stride(-1) != 1 or 0 in (q.size(2), k.size(2)):
        return None
    if q.size(1) != k.size(1) and not bound.get("enable_gqa", False):
        return None
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(mask.logical_not(), float("-inf"))
    try:
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, bool(bound.get("is_causal", False)), attn_mask=mask, scale=bound.get("scale")
        )[0]
    except (RuntimeError, NotImplementedError):
        return None


def _cpu_scalars_to_meta(args: tuple, kwargs: dict | None) -> tuple[tuple, dict] | None:
    """The arguments with each CPU 0-dim tensor made a meta tensor, or None when there is none."""
    def is_scalar(x: Any) -> bool:
        return isinstance(x, Tensor) and x.dim() == 0 and x.device.type == "cpu"

    kwargs = kwargs or {}
    if not any(is_scalar(a) for a in (*args, *kwargs.values())):
        return None

    def move(x: Any) -> Any:
        return x.to("meta") if is_scalar(x) else x

    return tuple(move(a) for a in args), {k: move(v) for k, v in kwargs.items()}


_FLASH_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_GROUPED_MM = torch.ops.aten._grouped_mm.default
_HALF = (torch.bfloat16, torch.float16)


def _meta_grouped_mm(args: tuple, kwargs: dict | None) -> torch.Tensor:
    """``aten._grouped_mm`` on meta tensors of a dtype its meta kernel refuses.

    The CPU and CUDA kernels multiply fp32 (a mixture-of-experts model built at fp32 in
    transformers 5 runs its experts through it), while PyTorch's meta kernel accepts only bf16/fp16.
    The output's shape and strides do not depend on the dtype: they come from the meta kernel run on
    bf16 stand-ins, and the output is made at the dtype the real kernel returns (``out_dtype``, else
    the input's). The event keeps the call's own arguments, so its counts are those of a real run.
    """
    bound = dict(zip(("self", "mat2", "offs", "bias", "out_dtype"), args))
    if kwargs:
        bound.update(kwargs)
    dtype = bound.get("out_dtype") or bound["self"].dtype
    half = {k: v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in bound.items() if k != "out_dtype"}
    shaped = _GROUPED_MM(**half)
    return torch.empty_strided(shaped.shape, shaped.stride(), dtype=dtype, device="meta")


def _tag_graph(root: Any, key: str, value: Any, stops: set[int], leaves: bool = True) -> None:
    """Tag every autograd node reachable from ``root`` that carries no ``key`` yet (with
    ``leaves=False``, not the nodes that accumulate a leaf's gradient: a fused op's parameters)."""
    todo = [root]
    while todo:
        node = todo.pop()
        if node is None or id(node) in stops:
            continue
        if not leaves and type(node).__name__ == "AccumulateGrad":
            continue
        md = node.metadata
        if key in md:
            continue
        md[key] = value
        for nxt, _ in node.next_functions:
            if nxt is not None:
                todo.append(nxt)


@contextlib.contextmanager
def capturing(model: torch.nn.Module, state: _State, *, function_mode: bool = True,
              native: Any = None) -> Iterator[None]:
    """Install the hooks and modes; remove them whatever happens.

    Attention is caught by wrapping ``torch.nn.functional.scaled_dot_product_attention`` for the
    duration. That catches every call made through the module attribute, including those inside
    functions that PyTorch runs with torch-function handling switched off
    (``F.multi_head_attention_forward`` under a ``TorchFunctionMode``).

    ``function_mode=True`` also watches every torch function call (a ``TorchFunctionMode``): it
    tags autograd nodes with their module for the backward pass, and catches attention reached by a
    reference taken before the capture (``from torch.nn.functional import
    scaled_dot_product_attention``), which on meta would otherwise run the math decomposition. It
    costs a Python call per torch function, tensor method and attribute read (``x.shape``,
    ``x.view``): 2-8% of a CPU forward. A real-tensor inference run needs neither (an early
    reference reaches the aten kernel, which has its own rule with the same formula) and passes False.

    In an inference run on CPU or meta, ``torch.batch_norm`` calls ``native_batch_norm`` directly
    (:func:`_batch_norm_direct`): one op per batch norm instead of two.

    ``nn.MultiheadAttention``'s and ``nn.TransformerEncoderLayer``'s fused inference fast paths are
    turned off for the duration (``torch.backends.mha.set_fastpath_enabled``), so that a real run
    takes the path a meta run must take (PyTorch has no fast path on meta) and the two agree.
    """
    from torch.nn.modules import module as module_mod

    if native is not None and (function_mode or not state.start_native(native)):
        native = None
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    pre, post = (state.pre_hook_native, state.post_hook_native) if native is not None else (state.pre_hook, state.post_hook)
    h1 = module_mod.register_module_forward_pre_hook(pre)
    h2 = module_mod.register_module_forward_hook(post, always_call=True)
    try:
        with contextlib.ExitStack() as stack:
            for wrapped in (_sdpa_wrapped(state), _rnn_wrapped(state), _batch_norm_direct(state)):
                stack.enter_context(wrapped)
            if native is not None:
                stack.enter_context(_python_dispatched_ops_recorded(state))
                stack.callback(native.stop)
            else:
                if function_mode:
                    stack.enter_context(_SdpaMode(state))
                stack.enter_context(_Recorder(state))
            yield
        if native is not None:
            state.finish_native()
    finally:
        if native is not None:
            native.clear()  # nothing is kept after a failed run
            state.native = None
        h1.remove()
        h2.remove()
        torch.backends.mha.set_fastpath_enabled(fastpath)


@contextlib.contextmanager
def _sdpa_wrapped(state: _State) -> Iterator[None]:
    """``F.scaled_dot_product_attention`` replaced by a wrapper that records it as one op; restored
    after. Calls from other threads (the module attribute is global) go straight through."""
    original = F.scaled_dot_product_attention
    owner = threading.get_ident()

    def scaled_dot_product_attention(*args: Any, **kwargs: Any) -> Any:
        if state.suppress or threading.get_ident() != owner:
            return original(*args, **kwargs)
        return state.sdpa(original, args, kwargs)

    F.scaled_dot_product_attention = scaled_dot_product_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


_NATIVE_BATCH_NORM = torch.native_batch_norm


def _direct_batch_norm_ok(args: tuple) -> bool:
    """``torch.batch_norm``'s arguments on which it would run ``native_batch_norm`` with the same
    arguments: a plain strided CPU or meta input with elements, weight/bias/running statistics of
    one element per channel (``native_batch_norm`` itself does not check their sizes)."""
    x = args[0]
    if type(x) is not Tensor or x.layout != torch.strided or not (x.is_cpu or x.is_meta) or x.dim() < 2 \
            or x.numel() == 0:
        return False
    c = x.shape[1]
    for t in args[1:5]:
        if t is not None and not (isinstance(t, Tensor) and t.dim() == 1 and t.shape[0] == c):
            return False
    return True


@contextlib.contextmanager
def _batch_norm_direct(state: _State) -> Iterator[None]:
    """``torch.batch_norm`` (what ``F.batch_norm`` and every ``nn.BatchNorm*`` call) replaced, in an
    inference run on CPU or meta, by the ``native_batch_norm`` call it makes there; put back after.

    On CPU and meta ``aten.batch_norm`` allocates an empty byte tensor (the ``reserve`` a cuDNN or
    MIOpen kernel would fill) and then calls ``native_batch_norm`` with its own arguments. The empty
    tensor moves nothing and holds nothing, but it is one more op through the dispatch mode: 52 of
    MobileNet-V2's 205 ops, 121 of DenseNet-121's 553, each costing a round trip into Python and an
    event. Calling ``native_batch_norm`` directly runs the same kernel on the same arguments and
    returns the same tensor. Anything else goes to the original: CUDA (cuDNN), other layouts,
    tensor subclasses, empty inputs, arguments of the wrong size (for PyTorch's own error), calls
    from other threads, and training steps (whose autograd nodes are tagged at the function level,
    where ``native_batch_norm``'s tuple would escape the tagging).
    """
    original = torch.batch_norm
    owner = threading.get_ident()

    def batch_norm(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 9 and not kwargs and not state.tag_nodes and not state.suppress \
                and threading.get_ident() == owner and _direct_batch_norm_ok(args):
            return _NATIVE_BATCH_NORM(*args[:8])[0]
        return original(*args, **kwargs)

    torch.batch_norm = batch_norm
    try:
        yield
    finally:
        torch.batch_norm = original


@contextlib.contextmanager
def _rnn_wrapped(state: _State) -> Iterator[None]:
    """``torch._VF.lstm``, ``gru``, ``rnn_tanh`` and ``rnn_relu`` (what ``nn.RNNBase`` calls) replaced by
    wrappers that record each call as one op; put back after (the module then forwards to
    ``torch._C._VariableFunctions`` again). Calls from other threads go straight through."""
    from torch import _VF

    owner = threading.get_ident()
    saved: dict[str, Any] = {}
    for name in RNN_FUNCS:
        original = getattr(_VF, name)
        if name in _VF.__dict__:
            saved[name] = original

        def wrapper(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            if state.suppress or threading.get_ident() != owner:
                return _original(*args, **kwargs)
            return state.rnn(_name, _original, args, kwargs)

        setattr(_VF, name, wrapper)
    try:
        yield
    finally:
        for name in RNN_FUNCS:
            if name in saved:
                setattr(_VF, name, saved[name])
            else:
                _VF.__dict__.pop(name, None)


#: per native recorder (by id): its op table's plans, (name, OpOverload, is_view, fresh, lifts) by op id
_NATIVE_PLANS: dict[int, list[tuple[str, Any, bool, bool, bool]]] = {}


class NativeUnsupported(Exception):
    """The native recorder met a value it does not describe; the run is done again in Python."""


@contextlib.contextmanager
def _python_dispatched_ops_recorded(state: _State) -> Iterator[None]:
    """For the native recorder: an op PyTorch dispatches in Python (a ``torch.library.custom_op``
    defined in Python, whose ``OpOverload`` has a ``_pyobj_dispatcher``) never reaches the C++
    dispatcher's RecordFunction, only the ops its implementation calls do. ``OpOverload.__call__`` is
    wrapped for the duration: such an op is recorded here, as a dispatch mode sees it (one event, its
    implementation's ops not recorded). Other ops and other threads go straight through."""
    from torch._ops import OpOverload

    original = OpOverload.__call__
    owner = threading.get_ident()

    def __call__(self: Any, /, *args: Any, **kwargs: Any) -> Any:
        if self._pyobj_dispatcher is None or state.suppress or threading.get_ident() != owner:
            return original(self, *args, **kwargs)
        native = state.native
        native.pause()
        state.suppress += 1
        try:
            out = original(self, *args, **kwargs)
        finally:
            state.suppress -= 1
            native.resume()
        state.native_positions.append(native.position())
        state.record_op(_plan(self), state.stack[-1], state.phase, args, kwargs, out)
        return out

    OpOverload.__call__ = __call__
    try:
        yield
    finally:
        OpOverload.__call__ = original


def _overload(name: str, overload: str) -> Any:
    """``("aten::add", "Tensor")`` -> ``torch.ops.aten.add.Tensor``."""
    ns, _, op = name.partition("::")
    return getattr(getattr(getattr(torch.ops, ns), op), overload or "default")


def walk_modules(model: torch.nn.Module) -> list[tuple[str, str | None, torch.nn.Module]]:
    """``(path, parent path, module)`` for every module once, in ``model.named_modules()`` order.

    An explicit stack instead of ``named_modules``' generator per module (a tenth of the time on a
    model with hundreds of modules). A module registered twice is listed under the path a
    depth-first walk meets first, as ``named_modules`` does; the root's parent is None.
    """
    out: list[tuple[str, str | None, torch.nn.Module]] = []
    seen: set[int] = set()
    stack: list[tuple[str, str | None, torch.nn.Module]] = [("", None, model)]
    while stack:
        item = stack.pop()
        mod = item[2]
        if id(mod) in seen:
            continue
        seen.add(id(mod))
        out.append(item)
        children = mod._modules
        if children:  # leaves (most modules) have none
            path = item[0]
            kids = [(f"{path}.{name}" if path else name, path, child) for name, child in children.items()
                    if child is not None]
            kids.reverse()
            stack.extend(kids)
    return out


def capture(*args: Any, **kwargs: Any):  # noqa: ANN201
    """See :func:`modelmeter.capture.run.run_capture` (imported lazily to keep import light)."""
    from .run import run_capture

    return run_capture(*args, **kwargs)

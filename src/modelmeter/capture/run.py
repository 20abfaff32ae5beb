"""Drive one captured run: forward (and loss, backward, optimizer step) on meta or real tensors.

The user's model is never modified: its parameters and buffers are swapped for stand-ins with
``torch.func.functional_call`` (meta tensors, or copies on another device/dtype, or clones when a
training step would write into them), and every module's ``training`` flag is restored in
``finally``. The capture's hooks are global and removed in ``finally`` too.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import InputError, ModelmeterError, ModelRunError
from .events import TensorMeta, Trace
from .tracer import NativeUnsupported, _State, capturing, walk_modules
from .values import KnownValues

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def normalize_inputs(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A tensor, a tuple/list of positional args, or a dict of keyword args."""
    if isinstance(inputs, torch.Tensor):
        return (inputs,), {}
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, (tuple, list)):
        return tuple(inputs), {}
    raise InputError(
        f"inputs must be a tensor, a tuple of positional arguments or a dict of keyword arguments, "
        f"not {type(inputs).__name__}"
    )


def _map_tensors(x: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, tuple):
        return tuple(_map_tensors(y, fn) for y in x)
    if isinstance(x, list):
        return [_map_tensors(y, fn) for y in x]
    if isinstance(x, dict):
        return {k: _map_tensors(v, fn) for k, v in x.items()}
    return x


def _tables(mods: list[tuple[str, str | None, nn.Module]]) -> tuple[
    dict[int, str], dict[str, torch.Tensor], dict[str, torch.Tensor], dict[nn.Module, bool]
]:
    """From a :func:`walk_modules` list, in one pass: module id -> path; ``dict(named_parameters())``
    and ``dict(named_buffers())`` (same order, a tensor shared by several modules once, under its
    first name); and every module's ``training`` flag (restored after the run)."""
    names: dict[int, str] = {}
    params: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    modes: dict[nn.Module, bool] = {}
    seen: set[int] = set()
    for prefix, _, mod in mods:
        names[id(mod)] = prefix
        modes[mod] = mod.training
        for table, members in ((params, mod._parameters), (buffers, mod._buffers)):
            if not members:  # most modules (activations, containers) hold neither
                continue
            for k, v in members.items():
                if v is None or id(v) in seen:
                    continue
                seen.add(id(v))
                table[f"{prefix}.{k}" if prefix else k] = v
    return names, params, buffers, modes


def _meta_failure(exc: BaseException) -> str | None:
    """PyTorch's long explanation of an op a meta run cannot run, said in one clause."""
    text = str(exc)
    op = re.match(r"\s*(\w+::\w+)", text)
    name = op.group(1) if op else "an op"
    if "data-dependent shape" in text:
        return f"{name} returns a number of elements that depends on tensor values, which this meta run does not have"
    if "no fake impl or Meta kernel" in text:
        return f"{name} has no meta kernel in PyTorch"
    return None


_MASK_OPS = frozenset({"aten.nonzero.default", "aten.argwhere.default", "aten.index.Tensor",
                       "aten.masked_select.default", "aten._unsafe_index.Tensor"})


def _selects_by_mask(ev: Any) -> bool:
    """An op whose output size depends on a boolean tensor's values (on meta: every element selected)."""
    if ev.op not in _MASK_OPS:
        return False
    if ev.op in ("aten.nonzero.default", "aten.argwhere.default"):
        return True
    return any(t.dtype == torch.bool for t in ev.inputs[1:])


def _first_float_tensor(x: Any) -> torch.Tensor | None:
    from torch.utils._pytree import tree_leaves

    if hasattr(x, "to_tuple"):  # Hugging Face ModelOutput
        x = x.to_tuple()
    for t in tree_leaves(x):
        if isinstance(t, torch.Tensor) and (t.dtype.is_floating_point or t.dtype.is_complex):
            return t
    return None


def make_optimizer(name: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    key = name.lower()
    if key == "sgd":
        return torch.optim.SGD(params, lr=1e-3, foreach=False)
    if key == "sgd-momentum":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=False)
    if key == "adam":
        return torch.optim.Adam(params, lr=1e-3, foreach=False)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=1e-3, foreach=False)
    raise InputError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")


def run_capture(
    model: nn.Module,
    inputs: Any,
    *,
    train: bool = False,
    device: str = "meta",
    dtype: torch.dtype | None = None,
    optimizer: str | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    observers: list[Callable[[Any], None]] | None = None,
    native: bool = True,
) -> Trace:
    """Run ``model`` once under capture and return the :class:`Trace`.

    ``device="meta"`` runs without allocating anything (a 70B model in seconds); ``"cpu"`` or
    ``"cuda"`` runs real tensors. ``train=True`` adds a loss (sum of the first floating output, or
    ``loss_fn(output)``), the backward pass and, with ``optimizer``, one optimizer step.

    A real-tensor inference run on CPU records its ops with the native recorder when it can be built
    (:mod:`.native`; ``native=False`` or ``MODELMETER_NATIVE=0`` for the Python capture). Both record
    the same events.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    # a torch.compile'd module: count the eager module it wraps (the counter must not poison its graph)
    model = getattr(model, "_orig_mod", model)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' asked for but CUDA is not available: use --device cpu or meta")
    if optimizer is not None and not train:
        raise InputError("an optimizer step needs a training step: pass train=True (--train)")
    if optimizer is not None and optimizer.lower() not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    args, kwargs = normalize_inputs(inputs)

    # stand-ins for parameters and buffers -------------------------------------------------------
    # one walk of the module tree serves names, parameters, buffers and modes (each walk is ~1 us/module)
    mods = walk_modules(model)
    names, params, buffers, saved_modes = _tables(mods)
    need_copy = dev.type == "meta" or train or dtype is not None

    def stand_in(t: torch.Tensor, is_param: bool) -> torch.Tensor:
        target_dtype = dtype if (dtype is not None and t.dtype.is_floating_point) else t.dtype
        if dev.type == "meta":
            new = torch.empty_like(t, device="meta", dtype=target_dtype)
        elif t.device.type == "meta":
            new = torch.zeros(t.shape, dtype=target_dtype, device=dev)
        else:
            new = t.detach().to(device=dev, dtype=target_dtype, copy=True)
        if is_param:
            # the user's flag in inference too: PyTorch picks kernels by it (matmul folds a batch into one
            # mm only for a weight that requires grad; embedding_bag has a forward-only kernel)
            return nn.Parameter(new, requires_grad=t.requires_grad)
        return new

    if dev.type == "cpu":  # flags, not a torch.device object per tensor
        on_device = all(t.is_cpu for t in params.values()) and all(t.is_cpu for t in buffers.values())
    elif dev.type == "cuda":
        on_device = all(t.is_cuda for t in params.values()) and all(t.is_cuda for t in buffers.values())
    else:
        on_device = all(t.device == dev for t in [*params.values(), *buffers.values()])
    if need_copy or not on_device:
        state = {n: stand_in(p, True) for n, p in params.items()}
        state.update({n: stand_in(b, False) for n, b in buffers.items()})
    else:
        state = None

    used_params = state if state is not None else {**params, **buffers}
    param_paths = {}  # read in backward only, to attribute each parameter's gradient accumulation
    if train:
        for n in params:
            param_paths[id(used_params[n])] = n.rsplit(".", 1)[0] if "." in n else ""

    # on meta, the values of small inputs and buffers are kept beside them (token ids, masks, position
    # ids: what a model reads values of; see capture/values.py)
    values = KnownValues() if dev.type == "meta" else None
    if values is not None and state is not None:
        for n, b in buffers.items():
            values.add(state[n], b)

    def move(t: torch.Tensor) -> torch.Tensor:
        # a fresh leaf: the user's input (and any graph behind it) is never written to by backward
        target_dtype = dtype if (dtype is not None and t.dtype.is_floating_point) else t.dtype
        new = t.detach().to(device=dev, dtype=target_dtype)
        if t.requires_grad and train and (new.dtype.is_floating_point or new.dtype.is_complex):
            new.requires_grad_(True)
        if values is not None:
            values.add(new, t)
        return new

    args = _map_tensors(args, move)
    kwargs = _map_tensors(kwargs, move)

    st = _State(names, param_paths)
    st.values = values
    if observers:
        st.observers.extend(observers)
    trace = Trace(
        events=st.events, root_type=type(model).__name__, mode="meta" if dev.type == "meta" else "real",
        device=str(dev), train=train,
    )
    dtype_counts: dict[torch.dtype, int] = {}  # the run's dtype: the most common floating one
    for group, target in ((params, trace.param_storages), (buffers, trace.buffer_storages)):
        for n in group:
            t = used_params[n]
            try:  # the storage's key and size, without a whole TensorMeta (hundreds of tensors per call)
                storage = t.untyped_storage()
                target[storage._cdata] = storage.nbytes()
            except NotImplementedError:  # a sparse tensor: by its values' storage
                m = TensorMeta.of(t)
                target[m.storage_key] = m.storage_nbytes
            dt = t.dtype
            if dt.is_floating_point:
                dtype_counts[dt] = dtype_counts.get(dt, 0) + 1
    flat_inputs: list[torch.Tensor] = []
    _map_tensors((args, kwargs), lambda t: flat_inputs.append(t) or t)
    for t in flat_inputs:
        m = TensorMeta.of(t)
        trace.input_storages[m.storage_key] = m.storage_nbytes
        trace.input_shapes.append(list(t.shape))
        trace.input_dtypes.append(str(t.dtype).replace("torch.", ""))
    trace.dtype = str(max(dtype_counts, key=dtype_counts.__getitem__)).replace("torch.", "") if dtype_counts else "float32"

    try:
        if any(m.training != train for m in saved_modes):
            model.train(train)
        # The stand-ins stay swapped in for the whole step, not just the forward: activation
        # checkpointing re-runs parts of the forward during backward, and must see them there too.
        # (torch.func.functional_call restores the originals as soon as the forward returns.)
        swap = contextlib.ExitStack()
        if state is not None:
            from torch.nn.utils.stateless import _reparametrize_module

            swap.enter_context(_reparametrize_module(model, state, tie_weights=True, strict=False))
        # the function mode is needed to tag autograd nodes (training) and is kept on meta, where an
        # attention call that escapes the wrapper would run the math decomposition
        if dev.type == "meta":
            # a boolean mask has no values on meta: PyTorch's meta kernels may take every element as
            # selected (x[mask], nonzero); without this they raise. Listed with the data-dependent reads.
            from torch.fx.experimental import _config as fx_config

            swap.enter_context(fx_config.patch(meta_nonzero_assume_all_nonzero=True))
        recorder = _native_recorder() if native and dev.type == "cpu" and not train and not observers else None
        with swap, capturing(model, st, function_mode=train or dev.type == "meta", native=recorder):
            try:
                st.tag_nodes = train
                with torch.set_grad_enabled(train):
                    out = model(*args, **kwargs)
                trace.output_bytes = sum(
                    t.numel() * t.element_size() for t in _tensor_leaves(out)
                )
                if train:
                    st.phase = "loss"
                    loss = loss_fn(out) if loss_fn is not None else _default_loss(out)
                    st.phase = "backward"
                    loss.backward()
                    grads = [p.grad for p in used_params.values() if isinstance(p, nn.Parameter) and p.grad is not None]
                    trace.grad_storages = {TensorMeta.of(g).storage_key for g in grads}
                    if optimizer is not None:
                        st.phase = "optimizer"
                        trainable = [p for n, p in used_params.items() if n in params and p.requires_grad]
                        opt = make_optimizer(optimizer, trainable)
                        opt.step()
                        for s in opt.state.values():
                            for v in s.values():
                                if isinstance(v, torch.Tensor):
                                    trace.optimizer_storages.add(TensorMeta.of(v).storage_key)
            except ModelmeterError:
                raise
            except Exception as exc:
                where = st.failed_path if st.failed_path is not None else st.stack[-1]
                types = {path: type(m).__name__ for path, _, m in mods}
                label = f"module '{where}' ({types.get(where, type(model).__name__)})" if where else f"the model ({type(model).__name__})"
                what, hint = type(exc).__name__ + (f": {_one_line(exc)}" if str(exc).strip() else ""), ""
                if dev.type == "meta" and ("meta" in str(exc).lower() or isinstance(exc, NotImplementedError)):
                    what = _meta_failure(exc) or what
                    hint = "; this model needs real tensor values here: run with --device cpu (device='cpu')"
                elif dev.type == "meta" and st.data_dependent:
                    # the failure may follow from a read answered without a value (a length read back as 0)
                    first = st.data_dependent[0] or "(root)"
                    hint = (f"; before it, {len(st.data_dependent)} read(s) of tensor values this meta run does not "
                            f"have were answered True/0 (first in '{first}'), which may have led here: run with "
                            f"--device cpu (device='cpu'), or build the model so that its buffers hold values")
                raise ModelRunError(f"the {st.phase} pass failed in {label}: {what}{hint}", where,
                                    len(st.data_dependent)) from exc  # reads are answered on meta only
    except NativeUnsupported:
        redo = True  # a value the native recorder does not describe (a sparse tensor, a subclass)
    else:
        redo = False
    finally:
        for m, flag in saved_modes.items():
            if m.training != flag:  # Module.__setattr__ is slow: touch only what changed
                m.training = flag
    if redo:  # again with the Python capture, the model as the user left it
        return run_capture(model, inputs, train=train, device=device, dtype=dtype, optimizer=optimizer,
                           loss_fn=loss_fn, observers=observers, native=False)
    trace.walk = mods
    trace.calls = st.calls
    if dev.type == "meta":
        known = st.known_events
        st.data_dependent.extend(ev.module for ev in trace.events if ev.index not in known and _selects_by_mask(ev))
    trace.settings["data_dependent_reads"] = list(st.data_dependent)
    trace.settings["optimizer"] = optimizer
    trace.settings["capture"] = "native" if st.native_used else "dispatch-mode"
    return trace


def _native_recorder() -> Any:
    """The native recorder when this run may use it: built, and nothing active that changes which ops a
    dispatch mode would see (another dispatch mode, autocast)."""
    from . import native

    rec = native.load()
    if rec is None:
        return None
    if torch._C._len_torch_dispatch_stack() or torch.is_autocast_enabled("cpu"):
        return None
    return rec


def _tensor_leaves(x: Any) -> list[torch.Tensor]:
    from torch.utils._pytree import tree_leaves

    if hasattr(x, "to_tuple"):
        x = x.to_tuple()
    return [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]


def _default_loss(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor) and out.dim() == 0:
        return out
    loss = getattr(out, "loss", None)
    if isinstance(loss, torch.Tensor):
        return loss
    t = _first_float_tensor(out)
    if t is None:
        raise InputError("a training step needs a floating-point output to take a loss of; pass loss_fn")
    return t.sum()


default_loss = _default_loss
map_tensors = _map_tensors

__all__ = ["OPTIMIZERS", "TensorMeta", "default_loss", "make_optimizer", "map_tensors", "normalize_inputs",
           "run_capture"]

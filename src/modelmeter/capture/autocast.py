"""Mixed precision (autocast) around the model's forward, on real devices and on meta tensors.

On CPU and CUDA the real ``torch.autocast`` is entered for the duration of the root module's
forward (the usual ``with torch.autocast(...): out = model(x)``; the loss and backward run outside it).

Meta tensors carry no autocast dispatch key, so ``torch.autocast`` leaves them alone. On meta the
forward runs instead under :class:`AutocastEmulation`, a ``TorchFunctionMode`` that applies the
CUDA autocast policy at the Python call level (the device a meta analysis usually stands in for):

* ``LOWER`` ops (matmul family, linear, convolutions, prelu, scaled-dot-product attention) run in the
  autocast dtype: floating arguments are cast with ``Tensor.to`` (recorded like autocast's own casts);
  casts of leaf fp32 tensors that require grad (trainable weights) are cached for the whole forward,
  as autocast does, so one low-precision copy per weight is alive and saved for backward;
* ``FP32`` ops (exp, log, pow, norms, losses, ...) run in fp32: low-precision arguments are cast up;
* ``FP32_DTYPE`` ops (softmax, log_softmax, sum, prod, cumsum, cumprod) get ``dtype=torch.float32``
  when called on a low-precision tensor without a dtype, as autocast does (no input copy).

Limits of the emulation, stated in the report notes: casts inside C++ composites that never reach
Python (e.g. the ``bmm`` inside ``torch.einsum``) are not applied, "promote to widest" ops rely on
eager type promotion, and a checkpointed recomputation is re-cast only inside submodule calls (the
unit checkpointing wraps in practice).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_unflatten

T = torch.Tensor

LOWER = (
    torch.mm, T.mm, torch.bmm, T.bmm, torch.addmm, T.addmm, torch.baddbmm, T.baddbmm, torch.addbmm, T.addbmm,
    torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.mv, T.mv, torch.addmv, T.addmv, torch.addr,
    T.addr, torch.chain_matmul, torch.linalg.multi_dot, F.linear, F.conv1d, F.conv2d, F.conv3d,
    F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.prelu, F.scaled_dot_product_attention,
)
FP32 = (
    torch.acos, T.acos, torch.asin, T.asin, torch.cosh, T.cosh, torch.erfinv, T.erfinv, torch.exp, T.exp,
    torch.expm1, T.expm1, torch.log, T.log, torch.log10, T.log10, torch.log1p, T.log1p, torch.log2, T.log2,
    torch.reciprocal, T.reciprocal, torch.rsqrt, T.rsqrt, torch.sinh, T.sinh, torch.tan, T.tan, torch.pow,
    T.pow, T.__pow__, T.__rpow__, T.__rtruediv__, T.__rdiv__, F.softplus, F.layer_norm, F.group_norm,
    torch.norm, T.norm, F.normalize, F.cosine_similarity, F.poisson_nll_loss, F.cosine_embedding_loss,
    F.nll_loss, F.hinge_embedding_loss, F.kl_div, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.mse_loss,
    F.margin_ranking_loss, F.multilabel_margin_loss, F.soft_margin_loss, F.triplet_margin_loss,
    F.multi_margin_loss, F.binary_cross_entropy_with_logits, F.cross_entropy, torch.dist, T.dist,
    F.pdist, torch.cdist, torch.renorm, T.renorm, torch.logsumexp, T.logsumexp,
)
FP32_DTYPE = (
    F.softmax, torch.softmax, T.softmax, F.log_softmax, torch.log_softmax, T.log_softmax, F.softmin,
    torch.sum, T.sum, torch.prod, T.prod, torch.cumsum, T.cumsum, torch.cumprod, T.cumprod,
)

_POLICY: dict[Any, str] = {}
for _f in LOWER:
    _POLICY[_f] = "lower"
for _f in FP32:
    _POLICY[_f] = "fp32"
for _f in FP32_DTYPE:
    _POLICY[_f] = "fp32_dtype"

_LOW = (torch.float16, torch.bfloat16)


def _eligible(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64


class AutocastEmulation(TorchFunctionMode):
    """The CUDA autocast policy applied at the Python call level (for meta tensors).

    ``params_require_grad``: the user's parameters require grad. Autocast caches the cast of every
    fp32 leaf tensor that requires grad, in inference too (``no_grad`` does not clear the flag), but
    the capture's inference stand-ins do not require grad; with this flag the casts of parameters are
    cached under ``no_grad`` as they would be for the user's model.
    """

    def __init__(self, dtype: torch.dtype, *, params_require_grad: bool = True) -> None:
        super().__init__()
        if dtype not in _LOW:
            raise ValueError(f"autocast dtype must be float16 or bfloat16, not {dtype}")
        self.dtype = dtype
        self.params_require_grad = params_require_grad
        self._cache: dict[int, torch.Tensor] = {}

    def _cacheable(self, x: torch.Tensor) -> bool:
        if x.dtype != torch.float32 or not x.is_leaf or x._is_view():
            return False
        if x.requires_grad:
            return True
        return self.params_require_grad and not torch.is_grad_enabled() and isinstance(x, torch.nn.Parameter)

    def _to_low(self, x: Any) -> Any:
        if not _eligible(x) or x.dtype == self.dtype:
            return x
        cacheable = self._cacheable(x)
        if cacheable:
            hit = self._cache.get(id(x))
            if hit is not None:
                return hit
        y = x.to(self.dtype)
        if cacheable:
            self._cache[id(x)] = y
        return y

    @staticmethod
    def _to_fp32(x: Any) -> Any:
        if _eligible(x) and x.dtype in _LOW:
            return x.to(torch.float32)
        return x

    @staticmethod
    def _cast_all(cast: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        # autocast's C++ kernels cast their arguments right to left (the argument evaluation order of
        # the compilers PyTorch is built with); the same order gives the same trace as on CPU/CUDA
        leaves, spec = tree_flatten((args, kwargs))
        out = list(leaves)
        for j in range(len(leaves) - 1, -1, -1):
            out[j] = cast(leaves[j])
        return tree_unflatten(out, spec)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        kind = _POLICY.get(func)
        if kind == "lower":
            args, kwargs = self._cast_all(self._to_low, args, kwargs)
        elif kind == "fp32":
            args, kwargs = self._cast_all(self._to_fp32, args, kwargs)
        elif kind == "fp32_dtype" and kwargs.get("dtype") is None:
            if any(_eligible(a) and a.dtype in _LOW for a in args if isinstance(a, torch.Tensor)):
                kwargs = {**kwargs, "dtype": torch.float32}
        return func(*args, **kwargs)

    def clear(self) -> None:
        self._cache.clear()


@contextlib.contextmanager
def autocast_forward(model: torch.nn.Module, dtype: torch.dtype | None, device: str) -> Iterator[None]:
    """Run ``model``'s forward under autocast at ``dtype`` (nothing when ``dtype`` is None).

    Hooks on the root module enter autocast when its forward starts and leave it when it returns (or
    raises); they are removed in ``finally``. With the emulation (meta), a submodule whose forward runs
    inside backward (a ``torch.utils.checkpoint`` recomputation) runs under the emulation too, as
    checkpointing re-enters the real autocast for its recomputation.
    """
    if dtype is None:
        yield
        return
    from torch.nn.modules import module as module_mod

    dev = torch.device(device).type
    active: list[Any] = []
    params_require_grad = any(p.requires_grad for p in model.parameters())
    members = {id(m) for m in model.modules()}
    recompute: list[Any] = []  # (module id, emulation) while a recomputation runs

    def enter(_mod: Any, _args: Any) -> None:
        ctx: Any
        if dev in ("cpu", "cuda"):
            ctx = torch.autocast(dev, dtype=dtype)
        else:
            ctx = AutocastEmulation(dtype, params_require_grad=params_require_grad)
        ctx.__enter__()
        active.append(ctx)

    def leave(_mod: Any, _args: Any, _out: Any) -> None:
        if active:
            ctx = active.pop()
            ctx.__exit__(None, None, None)
            if isinstance(ctx, AutocastEmulation):
                ctx.clear()

    def enter_recompute(mod: Any, _args: Any) -> None:
        if recompute or id(mod) not in members or torch._C._current_autograd_node() is None:
            return
        ctx = AutocastEmulation(dtype, params_require_grad=params_require_grad)
        ctx.__enter__()
        recompute.append((id(mod), ctx))

    def leave_recompute(mod: Any, _args: Any, _out: Any) -> None:
        if recompute and recompute[-1][0] == id(mod):
            _, ctx = recompute.pop()
            ctx.__exit__(None, None, None)
            ctx.clear()

    handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave, always_call=True)]
    if dev not in ("cpu", "cuda"):
        handles.append(module_mod.register_module_forward_pre_hook(enter_recompute))
        handles.append(module_mod.register_module_forward_hook(leave_recompute, always_call=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        while active:
            active.pop().__exit__(None, None, None)
        while recompute:
            recompute.pop()[1].__exit__(None, None, None)


__all__ = ["FP32", "FP32_DTYPE", "LOWER", "AutocastEmulation", "autocast_forward"]

"""Pooling and interpolation.

* max pooling: one comparison per window element per output: numel(out) x prod(kernel).
* average pooling: one add per window element per output, and a divide: numel(out) x (prod(kernel) + 1).
* adaptive pooling: the window of output i along a dim of size ``n -> m`` spans
  ``ceil((i+1)n/m) - floor(i n/m)`` inputs; the cost is the exact sum over windows (+1 divide for avg).
* backward: max pooling scatters the gradient (no arithmetic, bytes only... but overlapping windows
  add: one FLOP per grad-output element); average pooling spreads each grad-output element over its
  window: numel(grad_out) x prod(kernel).
* interpolation: nearest 0; linear 3, bilinear 7, bicubic 31, trilinear 15 FLOPs per output element
  (weights times neighbours, summed); backward the same per grad-output element.
"""

from __future__ import annotations

from ..capture.events import OpEvent
from .registry import Cost, register_rule


def _prod(xs) -> int:  # noqa: ANN001
    n = 1
    for x in xs:
        n *= int(x)
    return n


def _kernel(ev: OpEvent, rank: int) -> list[int]:
    k = ev.args[1]
    k = [int(k)] * rank if isinstance(k, int) else [int(x) for x in k]
    return k * rank if len(k) == 1 else k


def _window_sum(n: int, m: int) -> int:
    """Sum of adaptive window sizes along one dim (input n, output m)."""
    return sum(-(-(i + 1) * n // m) - (i * n // m) for i in range(m))


def _make_pool(rank: int, kind: str):
    def rule(ev: OpEvent) -> Cost:
        out = ev.outputs[0]
        per = _prod(_kernel(ev, rank))
        return Cost(flops=out.numel * (per + (1 if kind == "avg" else 0)))

    rule.__name__ = f"{kind}_pool{rank}d"
    return rule


for _r in (1, 2, 3):
    register_rule(f"aten.max_pool{_r}d_with_indices", f"aten.max_pool{_r}d")(_make_pool(_r, "max"))
    register_rule(f"aten.avg_pool{_r}d")(_make_pool(_r, "avg"))
register_rule("aten.mkldnn_max_pool2d", "aten.mkldnn_max_pool3d", "aten.quantized_max_pool2d")(_make_pool(2, "max"))


def _adaptive(kind: str):
    def rule(ev: OpEvent) -> Cost:
        x, out = ev.inputs[0], ev.outputs[0]
        rank = len(ev.args[1]) if isinstance(ev.args[1], (list, tuple)) else 1
        lead = _prod(x.shape[:-rank])
        windows = lead
        for n, m in zip(x.shape[-rank:], out.shape[-rank:]):
            windows *= _window_sum(n, m)
        # product of per-dim window sums = sum over output cells of the window volume
        return Cost(flops=windows + (out.numel if kind == "avg" else 0))

    rule.__name__ = f"adaptive_{kind}_pool"
    return rule


register_rule("aten._adaptive_avg_pool2d", "aten._adaptive_avg_pool3d", "aten.adaptive_avg_pool1d",
              "aten._adaptive_avg_pool1d")(_adaptive("avg"))
register_rule("aten.adaptive_max_pool2d", "aten.adaptive_max_pool3d", "aten.adaptive_max_pool1d")(_adaptive("max"))


@register_rule("aten.max_pool2d_with_indices_backward", "aten.max_pool3d_with_indices_backward")
def max_pool_backward(ev: OpEvent) -> Cost:
    return Cost(flops=ev.args[0].numel)


@register_rule("aten.avg_pool2d_backward", "aten.avg_pool3d_backward")
def avg_pool_backward(ev: OpEvent) -> Cost:
    g = ev.args[0]
    k = ev.args[2]
    k = [int(k)] if isinstance(k, int) else list(k)
    rank = 2 if "2d" in ev.op else 3
    per = _prod(k * rank if len(k) == 1 else k)
    return Cost(flops=g.numel * per)


@register_rule("aten._adaptive_avg_pool2d_backward", "aten._adaptive_avg_pool3d_backward",
               "aten.adaptive_max_pool2d_backward", "aten.adaptive_max_pool3d_backward")
def adaptive_pool_backward(ev: OpEvent) -> Cost:
    # each input position receives the gradient of every window covering it: ~ numel(input) adds
    return Cost(flops=ev.outputs[0].numel)


INTERP_FLOPS = {"nearest": 0, "linear": 3, "bilinear": 7, "bicubic": 31, "trilinear": 15}


def _interp(mode: str, backward: bool = False):
    def rule(ev: OpEvent) -> Cost:
        n = ev.inputs[0].numel if backward else ev.outputs[0].numel
        return Cost(flops=n * INTERP_FLOPS[mode])

    rule.__name__ = f"upsample_{mode}{'_backward' if backward else ''}"
    return rule


for _mode, _ops in {
    "nearest": ["upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
                "_upsample_nearest_exact2d", "_upsample_nearest_exact3d"],
    "linear": ["upsample_linear1d"],
    "bilinear": ["upsample_bilinear2d", "_upsample_bilinear2d_aa"],
    "bicubic": ["upsample_bicubic2d", "_upsample_bicubic2d_aa"],
    "trilinear": ["upsample_trilinear3d"],
}.items():
    register_rule(*[f"aten.{o}" for o in _ops])(_interp(_mode))
    register_rule(*[f"aten.{o}_backward" for o in _ops])(_interp(_mode, backward=True))

"""Pooling and interpolation.

* max pooling: one comparison per window element per output: numel(out) x prod(kernel).
* average pooling: one add per window element per output, and a divide: numel(out) x (prod(kernel) + 1).
* adaptive pooling: the window of output i along a dim of size ``n -> m`` spans
  ``ceil((i+1)n/m) - floor(i n/m)`` inputs; the cost is the exact sum over windows (+1 divide for avg).
* backward: max pooling routes each grad-output element to its argmax, where overlapping windows
  add: one FLOP per grad-output element. Average pooling spreads each grad-output element over its
  window: numel(grad_out) x prod(kernel); adaptive average pooling: the same window sum as its
  forward, + 1 divide per grad-output element.
* windows are counted whole, padding included (the dense work, as for convolutions).
* interpolation: nearest 0; linear 3, bilinear 7, bicubic 31, trilinear 15 FLOPs per output element
  (2, 4, 16, 8 neighbours times their weight, summed: n multiplies + n - 1 adds); backward the same
  per grad-output element. ``grid_sample`` costs the same per output element as the matching
  interpolation mode (bilinear 7, nearest 0, bicubic 31; trilinear 15 in 3-D), plus 2 per grid
  coordinate of each output location to turn it into a source position (scale and shift).
"""

from __future__ import annotations

from ..capture.events import OpEvent, TensorMeta
from .registry import Cost, arguments, register_rule


def _prod(xs) -> int:  # noqa: ANN001
    n = 1
    for x in xs:
        n *= int(x)
    return n


def _kernel(k: object, rank: int) -> list[int]:
    k = [int(k)] * rank if isinstance(k, int) else [int(x) for x in k]  # type: ignore[union-attr]
    return k * rank if len(k) == 1 else k


def _window_sum(n: int, m: int) -> int:
    """Sum of adaptive window sizes along one dim (input n, output m)."""
    return sum(-(-(i + 1) * n // m) - (i * n // m) for i in range(m))


def _make_pool(rank: int, kind: str):
    def rule(ev: OpEvent) -> Cost:
        out = ev.outputs[0]
        per = _prod(_kernel(arguments(ev)["kernel_size"], rank))
        return Cost(flops=out.numel * (per + (1 if kind == "avg" else 0)))

    rule.__name__ = f"{kind}_pool{rank}d"
    return rule


for _r in (1, 2, 3):
    register_rule(f"aten.max_pool{_r}d_with_indices", f"aten.max_pool{_r}d")(_make_pool(_r, "max"))
    register_rule(f"aten.avg_pool{_r}d")(_make_pool(_r, "avg"))
register_rule("aten.mkldnn_max_pool2d", "aten.quantized_max_pool2d")(_make_pool(2, "max"))
register_rule("aten.mkldnn_max_pool3d")(_make_pool(3, "max"))


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


register_rule("aten._adaptive_avg_pool2d", "aten._adaptive_avg_pool3d", "aten.adaptive_avg_pool1d")(_adaptive("avg"))
register_rule("aten.adaptive_max_pool2d", "aten.adaptive_max_pool3d", "aten.adaptive_max_pool1d")(_adaptive("max"))


@register_rule("aten.max_pool2d_with_indices_backward", "aten.max_pool3d_with_indices_backward",
               "aten.adaptive_max_pool2d_backward", "aten.adaptive_max_pool3d_backward",
               "aten.mkldnn_max_pool2d_backward", "aten.mkldnn_max_pool3d_backward")
def max_pool_backward(ev: OpEvent) -> Cost:
    # (grad_output, ...): one add per grad-output element at its argmax
    return Cost(flops=ev.inputs[0].numel)


@register_rule("aten.avg_pool2d_backward", "aten.avg_pool3d_backward")
def avg_pool_backward(ev: OpEvent) -> Cost:
    # (grad_output, self, kernel_size, ...)
    a = arguments(ev)
    rank = 2 if "2d" in ev.op else 3
    return Cost(flops=a["grad_output"].numel * _prod(_kernel(a["kernel_size"], rank)))


@register_rule("aten._adaptive_avg_pool2d_backward", "aten._adaptive_avg_pool3d_backward")
def adaptive_avg_pool_backward(ev: OpEvent) -> Cost:
    # (grad_output, self): each grad-output element divided once and added over its window
    a = arguments(ev)
    g, x = a["grad_output"], a["self"]
    rank = 2 if "2d" in ev.op else 3
    windows = _prod(x.shape[:-rank])
    for n, m in zip(x.shape[-rank:], g.shape[-rank:]):
        windows *= _window_sum(n, m)
    return Cost(flops=windows + g.numel)


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


_GRID_MODES = {0: "bilinear", 1: "nearest", 2: "bicubic"}


def _grid_cost(n_out: int, grid: TensorMeta, mode: int) -> int:
    dims = grid.shape[-1]  # 2 for grid_sampler_2d, 3 for 3d
    name = _GRID_MODES.get(mode, "bilinear")
    if dims == 3 and name == "bilinear":
        name = "trilinear"
    return n_out * INTERP_FLOPS[name] + grid.numel // dims * 2 * dims


@register_rule("aten.grid_sampler_2d", "aten.grid_sampler_3d", "aten.cudnn_grid_sampler",
               "aten._grid_sampler_2d_cpu_fallback")
def grid_sampler(ev: OpEvent) -> Cost:
    # (input (N, C, *in), grid (N, *out, dims), interpolation_mode, padding_mode, align_corners)
    a = arguments(ev)
    return Cost(flops=_grid_cost(ev.outputs[0].numel, a["grid"], int(a.get("interpolation_mode") or 0)))


@register_rule("aten.grid_sampler_2d_backward", "aten.grid_sampler_3d_backward", "aten.cudnn_grid_sampler_backward")
def grid_sampler_backward(ev: OpEvent) -> Cost:
    a = arguments(ev)
    return Cost(flops=_grid_cost(a["grad_output"].numel, a["grid"], int(a.get("interpolation_mode") or 0)))

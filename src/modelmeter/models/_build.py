"""Building modules without memory: the meta-device context, and a fallback for code it breaks.

``torch.device("meta")`` makes every tensor created while a model is built a meta tensor. That is the
cheapest way (Llama-3-70B in about a second), but constructors that compute something from tensor
values while they run (torchvision's RegNet derives its widths with ``torch.arange(...)`` and reads
them back) fail with "Cannot copy out of meta tensor". :func:`empty_weights` is the fallback: tensors
are created on the CPU as usual, and each parameter and buffer is replaced by a meta tensor the
moment a module registers it, so value computations in ``__init__`` work, initializers run on meta
tensors (no cost), and at most one layer's storage is ever held on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")


@contextlib.contextmanager
def empty_weights(keep_buffers_up_to: int = -1) -> Iterator[None]:
    """Within the context, parameters and buffers registered on any module are moved to meta.

    ``keep_buffers_up_to``: buffers of at most that many elements stay where they were made, with their
    values (see :func:`weightless`).
    """
    reg_param = nn.Module.register_parameter
    reg_buffer = nn.Module.register_buffer

    def register_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        reg_param(self, name, param)
        p = self._parameters.get(name)
        if p is not None and p.device.type != "meta":
            self._parameters[name] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)

    def register_buffer(self: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        reg_buffer(self, name, tensor, persistent=persistent)
        b = self._buffers.get(name)
        if b is not None and b.device.type != "meta" and b.numel() > keep_buffers_up_to:
            self._buffers[name] = b.to("meta")

    nn.Module.register_parameter = register_parameter  # type: ignore[method-assign]
    nn.Module.register_buffer = register_buffer  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = reg_param  # type: ignore[method-assign]
        nn.Module.register_buffer = reg_buffer  # type: ignore[method-assign]


def weightless() -> contextlib.AbstractContextManager[None]:
    """Build a model with every parameter on meta and its small buffers real, on the CPU.

    Parameters become meta tensors the moment a module registers them, so their initializers cost
    nothing; buffers of at most :data:`~modelmeter.capture.values.MAX_ELEMENTS` elements (rotary
    frequencies, position ids, a convolution's stride and kernel size as tensors) keep the values the
    constructor gave them, which a meta run then knows (``capture/values.py``). Under
    ``torch.device("meta")`` those values are lost when they are made: a model that reads them in its
    forward (the audio codecs' padding) takes a wrong branch or fails. Larger buffers go to meta.
    """
    from ..capture.values import MAX_ELEMENTS

    return empty_weights(keep_buffers_up_to=MAX_ELEMENTS)


def _needs_values(exc: BaseException) -> bool:
    """True for the errors a constructor raises when it reads values of a meta tensor."""
    text = str(exc)
    return isinstance(exc, (NotImplementedError, RuntimeError)) and (
        "meta tensor" in text or "'Meta' backend" in text or "meta device" in text
    )


def build_on(device: str, build: Callable[[], T]) -> tuple[T, bool]:
    """Run ``build`` so that the module it returns holds no memory when ``device`` is "meta".

    Returns the result and whether the :func:`empty_weights` fallback was needed. On any other
    device ``build`` simply runs on the CPU.
    """
    if device != "meta":
        with torch.device("cpu"):
            return build(), False
    try:
        with torch.device("meta"):
            return build(), False
    except Exception as exc:  # noqa: BLE001
        if not _needs_values(exc):
            raise
    with empty_weights():
        return build(), True


def to_meta(x: Any) -> Any:
    """Move every tensor of ``x`` (tensor / tuple / list / dict) to the meta device."""
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, tuple):
        return tuple(to_meta(y) for y in x)
    if isinstance(x, list):
        return [to_meta(y) for y in x]
    if isinstance(x, dict):
        return {k: to_meta(v) for k, v in x.items()}
    return x


__all__ = ["build_on", "empty_weights", "to_meta", "weightless"]

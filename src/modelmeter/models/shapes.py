"""Input shape strings: ``1x3x224x224``, ``1x3x224x224:fp16``, ``1x128:int64``, several comma-separated.

A shape string describes example inputs, never their values. :func:`parse_shapes` turns it into
:class:`InputSpec` values; :func:`make_tensor` builds one tensor from a spec on a device (meta: no
memory; cpu: deterministic values, see there).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError

#: dtype suffixes accepted after ``:`` in a shape string.
DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32, "f32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16, "f16": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp64": torch.float64, "float64": torch.float64, "double": torch.float64, "f64": torch.float64,
    "int64": torch.int64, "long": torch.int64, "i64": torch.int64,
    "int32": torch.int32, "int": torch.int32, "i32": torch.int32,
    "int16": torch.int16, "i16": torch.int16,
    "int8": torch.int8, "i8": torch.int8,
    "uint8": torch.uint8, "u8": torch.uint8,
    "bool": torch.bool,
}

_CANONICAL = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
    torch.uint8: "uint8", torch.bool: "bool",
}


@dataclass(frozen=True)
class InputSpec:
    """One example input: its shape and, when the shape string named one, its dtype."""

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None

    def __str__(self) -> str:
        text = "x".join(str(d) for d in self.shape)
        return f"{text}:{_CANONICAL[self.dtype]}" if self.dtype is not None else text


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a dtype as written in shape strings (``fp16``, ``int64``)."""
    return _CANONICAL.get(dtype, str(dtype).replace("torch.", ""))


def parse_dtype_name(text: str, *, what: str = "dtype") -> torch.dtype:
    key = text.strip().lower().replace("torch.", "")
    if key not in DTYPE_NAMES:
        names = "fp32, fp16, bf16, fp64, int64, int32, int16, int8, uint8, bool"
        raise InputError(f"unknown {what} {text!r}: use one of {names}")
    return DTYPE_NAMES[key]


def parse_shape(text: str) -> InputSpec:
    """Parse one shape: ``1x3x224x224`` or ``1x3x224x224:fp16``. A scalar input is not supported."""
    raw = text.strip()
    if not raw:
        raise InputError("empty input shape: write it like 1x3x224x224 or 1x128:int64")
    body, sep, suffix = raw.partition(":")
    dtype = None
    if sep:
        if not suffix.strip():
            raise InputError(f"input shape {raw!r} ends with ':' but names no dtype: write e.g. {body}:fp16")
        dtype = parse_dtype_name(suffix, what=f"dtype in input shape {raw!r}")
    dims: list[int] = []
    for part in body.lower().split("x"):
        part = part.strip()
        if not part.isdigit():
            raise InputError(
                f"malformed input shape {raw!r}: dimensions are positive integers joined by 'x', "
                f"e.g. 1x3x224x224 or 1x128:int64"
            )
        value = int(part)
        if value <= 0:
            raise InputError(f"input shape {raw!r} has a zero dimension: every dimension must be at least 1")
        dims.append(value)
    return InputSpec(tuple(dims), dtype)


def parse_shapes(text: str) -> list[InputSpec]:
    """Parse a comma-separated list of shapes, one per positional input."""
    if text is None or not str(text).strip():
        raise InputError("empty input shape: write it like 1x3x224x224 or 1x128:int64 (several: comma-separated)")
    return [parse_shape(part) for part in str(text).split(",")]


def make_tensor(
    spec: InputSpec, *, device: str | torch.device, default_dtype: torch.dtype = torch.float32,
    high: int | None = None,
) -> torch.Tensor:
    """A tensor of ``spec``'s shape on ``device``.

    Values are never part of a count; on a real device they are deterministic so that runs repeat:
    floating tensors are normal samples from a generator seeded with 0, integer tensors hold
    ``i mod high`` for element ``i`` (all zeros without ``high``, a valid index for any embedding),
    booleans are all True.
    """
    dtype = spec.dtype or default_dtype
    dev = torch.device(device)
    if dev.type == "meta":
        return torch.empty(spec.shape, dtype=dtype, device=dev)
    if dtype == torch.bool:
        return torch.ones(spec.shape, dtype=dtype, device=dev)
    if dtype.is_floating_point or dtype.is_complex:
        gen = torch.Generator(device="cpu").manual_seed(0)
        return torch.randn(spec.shape, generator=gen, dtype=torch.float32).to(device=dev, dtype=dtype)
    n = 1
    for d in spec.shape:
        n *= d
    bound = max(1, high if high is not None else 1)
    return (torch.arange(n, dtype=torch.int64) % bound).reshape(spec.shape).to(device=dev, dtype=dtype)


__all__ = ["DTYPE_NAMES", "InputSpec", "dtype_name", "make_tensor", "parse_dtype_name", "parse_shape", "parse_shapes"]

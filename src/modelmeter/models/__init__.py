"""Model specs → an ``nn.Module`` and example inputs, built without weights by default.

Spec forms (see docs/models.md):

* ``torchvision:NAME`` — any name in ``torchvision.models.list_models()``, ``weights=None``;
* ``hf:PRESET`` — a built-in Hugging Face configuration (:func:`preset_names`), e.g. ``hf:llama-3-8b``;
* ``hf:path/to/config.json`` or a bare ``path/to/config.json`` (or a folder holding one);
* ``path/to/file.py:function`` — a Python factory returning a module or ``(module, inputs)``.

With ``device="meta"`` (the default) the model is built inside ``torch.device("meta")``: no memory,
no initialization cost, so Llama-3-70B builds in about a second. Any other device builds on the CPU
(``modelmeter.profile`` then moves the model where it runs). Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, ModelmeterError, SpecError
from .shapes import InputSpec, parse_dtype_name, parse_shape, parse_shapes

KINDS = ("vision", "language", "custom")


@dataclass(frozen=True)
class LoadedModel:
    """A built model, its example inputs, and what is known about it.

    ``inputs`` is a tensor, a tuple of positional arguments or a dict of keyword arguments, as
    :func:`modelmeter.profile` accepts. The language-model facts (``num_layers`` ... ``max_position_embeddings``)
    come from the config and are None for models without one.
    """

    model: torch.nn.Module
    inputs: Any
    name: str
    kind: str  # "vision" | "language" | "custom"
    spec: str = ""
    source: str = ""  # what the model was built from: preset citation, config path, factory
    batch: int | None = None
    seq: int | None = None
    num_layers: int | None = None
    num_attention_heads: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    hidden_size: int | None = None
    vocab_size: int | None = None
    max_position_embeddings: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ParsedSpec:
    """A spec string taken apart: ``source`` is torchvision | preset | config | factory."""

    source: str
    target: str
    function: str | None = None


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.endswith(".json") or text.startswith((".", "~"))


def parse_spec(spec: str) -> ParsedSpec:
    """Take a spec string apart without building anything (only the file system is looked at)."""
    if not isinstance(spec, str) or not spec.strip():
        raise SpecError("empty model spec: give torchvision:NAME, hf:PRESET, path/to/config.json or file.py:function")
    text = spec.strip()
    prefix, sep, rest = text.partition(":")
    low = prefix.lower()
    if sep and low in ("torchvision", "tv"):
        if not rest.strip():
            raise SpecError(f"model spec {text!r} names no model: write torchvision:NAME, e.g. torchvision:resnet50")
        return ParsedSpec("torchvision", rest.strip())
    if sep and low in ("hf", "huggingface"):
        value = rest.strip()
        if not value:
            raise SpecError(f"model spec {text!r} names nothing: write hf:PRESET (e.g. hf:gpt2) or hf:path/to/config.json")
        if _looks_like_path(value):
            return ParsedSpec("config", value)
        if not _is_preset(value) and Path(value).expanduser().exists():  # a local folder holding config.json
            return ParsedSpec("config", value)
        return ParsedSpec("preset", value)
    # path/to/file.py:function (rsplit keeps drive letters like C:\ in the path)
    head, sep2, func = text.rpartition(":")
    if sep2 and head.endswith(".py"):
        if not func.strip():
            raise SpecError(f"model spec {text!r} names no function: write {head}:function")
        return ParsedSpec("factory", head, func.strip())
    if text.endswith(".py"):
        raise SpecError(f"model spec {text!r} names no factory function: write {text}:function")
    if text.endswith(".json") or Path(text).expanduser().is_dir() and (Path(text).expanduser() / "config.json").is_file():
        return ParsedSpec("config", text)
    raise SpecError(f"malformed model spec {text!r}: {_bare_hint(text)}")


def _bare_hint(text: str) -> str:
    forms = "use torchvision:NAME, hf:PRESET, path/to/config.json or path/to/file.py:function"
    if ":" in text:
        return forms
    if _is_preset(text):
        return f"did you mean hf:{text.lower()}? ({forms})"
    try:
        from .vision import list_names

        if text in list_names():
            return f"did you mean torchvision:{text}? ({forms})"
    except ModelmeterError:  # torchvision not installed: no hint from it
        pass
    return forms


def _is_preset(name: str) -> bool:
    from .hf import presets

    low = name.strip().lower()
    return low in presets() or any(low in p.aliases for p in presets().values())


def preset_names(*, include_test: bool = True) -> list[str]:
    """Names of the built-in Hugging Face presets (``hf:NAME``)."""
    from .hf import presets

    return sorted(n for n, p in presets().items() if include_test or not p.test_only)


def _check_int(value: Any, what: str, flag: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{what} must be a positive integer, not {value!r}: pass {flag} 1 or more")
    return value


def _resolve_dtype(dtype: Any) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            raise InputError(f"the model dtype must be a floating type, not {dtype}: use fp32, fp16 or bf16")
        return dtype
    value = parse_dtype_name(str(dtype), what="model dtype")
    if not value.is_floating_point:
        raise InputError(f"the model dtype must be a floating type, not {dtype!r}: use fp32, fp16 or bf16")
    return value


def _cast_floats(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, tuple):
        return tuple(_cast_floats(y, dtype) for y in x)
    if isinstance(x, list):
        return [_cast_floats(y, dtype) for y in x]
    if isinstance(x, dict):
        return {k: _cast_floats(v, dtype) for k, v in x.items()}
    return x


def load(
    spec: str,
    *,
    batch: int = 1,
    seq: int | None = None,
    shape: str | None = None,
    device: str = "meta",
    dtype: str | torch.dtype | None = None,
    weightless: bool = False,
) -> LoadedModel:
    """Build the model a spec names, with example inputs, on ``device`` ("meta": no weights, no memory).

    ``weightless`` (Hugging Face specs on meta): parameters on meta, small buffers real, for a model whose
    forward reads values its constructor put in buffers (see :func:`modelmeter.models._build.weightless`;
    the CLI builds this way again when a meta run fails after reads it had to answer).

    ``batch`` and ``seq`` size the default inputs (``seq``: language models only, default 128);
    ``shape`` replaces them, e.g. ``"1x3x224x224"``, ``"1x3x224x224:fp16"``, ``"4x512"`` (token ids of
    a language model), several inputs comma-separated. ``dtype`` ("fp32", "fp16", "bf16" or a
    ``torch.dtype``) builds the model in that dtype; by default a Hugging Face config's own dtype is
    used and torchvision models are fp32.
    """
    batch = _check_int(batch, "batch size", "--batch") or 1
    seq = _check_int(seq, "sequence length", "--seq")
    try:
        dev = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InputError(f"unknown device {device!r}: use meta, cpu or cuda") from exc
    device_kind = "meta" if dev.type == "meta" else "cpu"
    model_dtype = _resolve_dtype(dtype)
    shapes = parse_shapes(shape) if shape is not None else None
    parsed = parse_spec(spec)

    if parsed.source == "torchvision":
        from .vision import build_torchvision

        if seq is not None:
            raise InputError(f"torchvision:{parsed.target} is a vision model: a sequence length does not apply; "
                             f"drop --seq (use --batch or --shape)")
        vb = build_torchvision(parsed.target, batch=batch, shapes=shapes, device=device_kind, dtype=model_dtype)
        return LoadedModel(model=vb.model, inputs=vb.inputs, name=parsed.target, kind="vision", spec=spec,
                           source=f"torchvision.models.get_model({parsed.target!r}, weights=None)", batch=vb.batch)

    if parsed.source in ("preset", "config"):
        from .hf import build_hf, get_preset, read_config_file

        if parsed.source == "preset":
            preset = get_preset(parsed.target)
            values, label, name = dict(preset.config), f"preset hf:{preset.name}", preset.name
            src = preset.source
            source = "; ".join(str(src[k]) for k in ("config_json", "paper") if src.get(k)) or str(src.get("note", ""))
        else:
            values = read_config_file(parsed.target)
            label = f"config {parsed.target!r}"
            name = _config_name(values, parsed.target)
            source = str(Path(parsed.target).expanduser())
        hb = build_hf(values, label=label, batch=batch, seq=seq, shapes=shapes, device=device_kind, dtype=model_dtype,
                      weightless=weightless)
        return LoadedModel(model=hb.model, inputs=hb.inputs, name=name, kind=hb.kind, spec=spec, source=source,
                           batch=hb.batch, seq=hb.seq, notes=hb.notes, **hb.facts)

    from .factory import build_factory
    from .shapes import make_tensor

    fb = build_factory(parsed.target, parsed.function or "", batch=batch, seq=seq, device=device_kind, dtype=model_dtype)
    inputs = fb.inputs
    if shapes is not None:
        tensors = [make_tensor(s, device=device_kind, default_dtype=model_dtype or torch.float32) for s in shapes]
        inputs = tensors[0] if len(tensors) == 1 else tuple(tensors)
    elif inputs is None:
        raise InputError(
            f"factory {parsed.target}:{parsed.function} returned only a module: give the input shape "
            f"(shape='1x3x224x224' / --shape) or return (module, inputs)"
        )
    elif model_dtype is not None:
        inputs = _cast_floats(inputs, model_dtype)
    first = _first_tensor(inputs)
    return LoadedModel(model=fb.model, inputs=inputs, name=f"{Path(parsed.target).stem}:{parsed.function}",
                       kind="custom", spec=spec, source=f"{parsed.target}:{parsed.function}",
                       batch=int(first.shape[0]) if first is not None and first.dim() > 0 else None)


def _first_tensor(x: Any) -> torch.Tensor | None:
    from torch.utils._pytree import tree_leaves

    for t in tree_leaves(x):
        if isinstance(t, torch.Tensor):
            return t
    return None


def _config_name(values: dict[str, Any], path: str) -> str:
    name = values.get("_name_or_path")
    if isinstance(name, str) and name.strip():
        return name.strip()
    p = Path(path).expanduser()
    folder = p if p.is_dir() else p.parent
    if folder.name and folder.name not in (".", ""):
        return folder.name
    archs = values.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        return archs[0]
    return str(values.get("model_type", p.stem))


__all__ = ["KINDS", "InputSpec", "LoadedModel", "ParsedSpec", "load", "parse_shape", "parse_shapes",
           "parse_spec", "preset_names"]

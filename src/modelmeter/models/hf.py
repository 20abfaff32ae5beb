"""Hugging Face models built from a ``config.json`` (a local file or a built-in preset); never downloaded.

Which class is built from a config (no weights are ever loaded, no ``from_pretrained``):

* encoder-decoder configs (``is_encoder_decoder``) with a seq2seq LM class → ``AutoModelForSeq2SeqLM``
  (e.g. ``T5ForConditionalGeneration``); inputs ``input_ids`` and ``decoder_input_ids``; speech
  encoder-decoders → ``AutoModelForSpeechSeq2Seq`` (Whisper: ``input_features`` and ``decoder_input_ids``);
  any other encoder-decoder → ``AutoModel`` (never its decoder alone, which some register as a causal LM);
* decoder-only language models → ``AutoModelForCausalLM`` (the ``*ForCausalLM`` / ``*LMHeadModel``
  class with its LM head; a tied head is one tensor and counts once). A config is a causal LM when
  its ``architectures`` name a ``*ForCausalLM`` / ``*LMHeadModel`` class, or, without
  ``architectures``, when its ``model_type`` has a causal-LM class and no masked-LM class;
* everything else → ``AutoModel``, the bare model (BERT → ``BertModel`` with its pooler, the model
  whose 110M parameters the paper quotes).

Presets are JSON files in ``presets/`` holding the ``config.json`` values of the real model plus a
``_source`` entry citing the config URL and the paper; keys starting with ``_`` are modelmeter's own
and are dropped before the config is built.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, SpecError, require
from ._build import weightless as weightless_build
from .shapes import InputSpec, make_tensor

DEFAULT_SEQ = 128
_OWN_KEYS = ("_source", "_aliases", "_test_only", "_description")


# -- presets -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A built-in configuration: ``name``, the config values, where they come from."""

    name: str
    config: dict[str, Any]
    source: dict[str, Any]
    aliases: tuple[str, ...] = ()
    test_only: bool = False

    @property
    def published_params(self) -> int | None:
        value = self.source.get("published_params")
        return int(value) if value is not None else None


@lru_cache(maxsize=1)
def _preset_table() -> dict[str, Preset]:
    table: dict[str, Preset] = {}
    folder = resources.files(__package__).joinpath("presets")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        name = entry.name[: -len(".json")]
        data = json.loads(entry.read_text(encoding="utf-8"))
        preset = Preset(
            name=name,
            config={k: v for k, v in data.items() if k not in _OWN_KEYS},
            source=dict(data.get("_source") or {}),
            aliases=tuple(data.get("_aliases") or ()),
            test_only=bool(data.get("_test_only", False)),
        )
        table[name] = preset
    return table


def presets() -> dict[str, Preset]:
    """Every built-in preset by name (aliases not repeated)."""
    return dict(_preset_table())


def get_preset(name: str) -> Preset:
    table = _preset_table()
    key = name.strip().lower()
    if key in table:
        return table[key]
    for preset in table.values():
        if key in preset.aliases:
            return preset
    names = sorted(table) + sorted(a for p in table.values() for a in p.aliases)
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join('hf:' + c for c in close)}? " if close else ""
    raise SpecError(
        f"unknown Hugging Face preset {name!r}: {hint}presets are {', '.join(sorted(table))}; "
        f"or give a local config.json (hf:path/to/config.json)"
    )


# -- config.json ---------------------------------------------------------------------------------
def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``config.json`` (or a folder holding one) into a dict, with one-line errors."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise SpecError(f"folder {str(p)!r} holds no config.json: give the path of a Hugging Face config.json")
        p = p / "config.json"
    if not p.is_file():
        raise SpecError(f"config file {str(p)!r} not found: give the path of a Hugging Face config.json")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read config file {str(p)!r}: {exc}; give a readable JSON file") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"config file {str(p)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            f"fix the file"
        ) from exc
    if not isinstance(data, dict):
        raise SpecError(f"config file {str(p)!r} holds a JSON {type(data).__name__}, not an object; give a config.json")
    return data


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own logging while a model is built (the library never prints)."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


def build_config(values: dict[str, Any], *, label: str) -> Any:
    """A ``transformers.PretrainedConfig`` from config.json values (nothing is downloaded)."""
    require("transformers", "hf", "Hugging Face model specs")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    values = {k: v for k, v in values.items() if k not in _OWN_KEYS}
    model_type = values.get("model_type")
    if not model_type or not isinstance(model_type, str):
        raise SpecError(f"{label} has no \"model_type\": add the model_type of the architecture (e.g. \"llama\")")
    if model_type not in CONFIG_MAPPING:
        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise SpecError(
            f"{label}: model_type {model_type!r} is unknown to the installed transformers{hint}; "
            f"fix model_type or upgrade transformers"
        )
    if "torch_dtype" in values and "dtype" not in values:  # the name config.json files used before v5
        values["dtype"] = values.pop("torch_dtype")
    try:
        with _quiet_transformers():
            return CONFIG_MAPPING[model_type].from_dict(values)
    except Exception as exc:  # noqa: BLE001 - any failure of a user's config is a spec error
        raise SpecError(
            f"{label} is not a valid {model_type} config: {_first_line(exc)}; fix the value in the config"
        ) from exc


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line (multi-line messages joined), at most ``limit`` characters."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    if not text:
        return type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def model_role(config: Any) -> str:
    """"seq2seq", "speech_seq2seq", "causal" or "base": which auto class builds this config (see the module
    docstring)."""
    from transformers.models.auto import modeling_auto as ma

    mt = config.model_type
    archs = [a for a in (getattr(config, "architectures", None) or []) if isinstance(a, str)]
    if getattr(config, "is_encoder_decoder", False):
        if mt in ma.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
            return "seq2seq"
        if mt in ma.MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES:  # Whisper, Speech2Text: audio in, text out
            return "speech_seq2seq"
        return "base"  # not its decoder alone (WhisperForCausalLM is registered as a causal LM)
    if mt in ma.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        if archs:
            if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
                return "causal"
        elif mt not in ma.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
            return "causal"
    return "base"


# -- building ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HFBuild:
    model: Any
    inputs: dict[str, torch.Tensor]
    kind: str
    facts: dict[str, int | None]
    notes: tuple[str, ...]
    batch: int | None
    seq: int | None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def config_facts(config: Any) -> dict[str, int | None]:
    """Config facts later analyses need (KV cache, per-token figures); None where a config has none."""
    hidden = _int_or_none(getattr(config, "hidden_size", None))
    heads = _int_or_none(getattr(config, "num_attention_heads", None))
    kv = _int_or_none(getattr(config, "num_key_value_heads", None)) or heads
    head_dim = _int_or_none(getattr(config, "head_dim", None)) or _int_or_none(getattr(config, "d_kv", None))
    if head_dim is None and hidden and heads:
        head_dim = hidden // heads
    layers = _int_or_none(getattr(config, "num_hidden_layers", None))
    if getattr(config, "is_encoder_decoder", False):  # the decoder keeps the KV cache
        layers = _int_or_none(getattr(config, "num_decoder_layers", None)) or layers
    return {
        "num_layers": layers,
        "num_attention_heads": heads,
        "num_kv_heads": kv,
        "head_dim": head_dim,
        "hidden_size": hidden,
        "vocab_size": _int_or_none(getattr(config, "vocab_size", None)),
        "max_position_embeddings": _int_or_none(getattr(config, "max_position_embeddings", None)),
    }


def _token_ids(shape: tuple[int, ...], config: Any, device: str, dtype: torch.dtype | None) -> torch.Tensor:
    """Token ids: ``i mod vocab`` with the pad id replaced, so no token reads as padding.

    For a meta run they are made on the CPU all the same, when no larger than the values a meta run keeps
    (``capture/values.py``): ``profile`` moves them to meta and keeps their values, so that a model reading
    its ids (transformers' padding check, a mask built from them) takes the path a real run takes instead of
    having the read answered and noted. Larger ones are meta tensors (their values would not be kept).
    """
    from ..capture.values import MAX_ELEMENTS

    vocab = _int_or_none(getattr(config, "vocab_size", None)) or 2
    if device == "meta" and math.prod(shape) <= MAX_ELEMENTS:
        device = "cpu"
    ids = make_tensor(InputSpec(shape, dtype or torch.int64), device=device, high=vocab)
    pad = _int_or_none(getattr(config, "pad_token_id", None))
    if ids.device.type != "meta" and pad is not None and vocab > 1:
        ids = torch.where(ids == pad, (pad + 1) % vocab, ids)
    return ids


def _audio_shape(main: str, config: Any, batch: int) -> InputSpec | None:
    """The default input of a speech model, from its config, or None when the config does not size it.

    * ``input_values`` (wav2vec2, HuBERT, WavLM, the audio codecs): one second of waveform at the config's
      ``sampling_rate`` (16,000 when it has none), ``batch x samples``, or ``batch x channels x samples`` for
      a model whose config names its ``audio_channels`` (EnCodec) or is an audio codec (a ``codebook_size``:
      DAC, X-Codec; one channel);
    * ``input_features`` as Whisper takes them: ``batch x num_mel_bins x (2 x max_source_positions)``,
      the 30-second window of log-mel frames its encoder's two convolutions halve to its positions.
    """
    if main == "input_values":
        rate = _int_or_none(getattr(config, "sampling_rate", None)) or 16000
        channels = _int_or_none(getattr(config, "audio_channels", None))
        if channels is None and getattr(config, "codebook_size", None) is not None:
            channels = 1  # an audio codec (DAC, X-Codec): mono audio with its channel dimension
        return InputSpec((batch, channels, rate) if channels else (batch, rate))
    if main == "input_features":
        mels = _int_or_none(getattr(config, "num_mel_bins", None))
        positions = _int_or_none(getattr(config, "max_source_positions", None))
        if mels and positions:
            return InputSpec((batch, mels, 2 * positions))
    return None


def build_hf(
    values: dict[str, Any], *, label: str, batch: int, seq: int | None, shapes: list[InputSpec] | None,
    device: str, dtype: torch.dtype | None, weightless: bool = False,
) -> HFBuild:
    """Build the model for config values ``values`` on ``device`` (meta: no memory) and its inputs.

    ``weightless`` (meta only): parameters on meta but small buffers real, with the values the constructor
    gave them (:func:`~modelmeter.models._build.weightless`), for a model whose forward reads them.
    """
    transformers = require("transformers", "hf", "Hugging Face model specs")
    config = build_config(values, label=label)
    role = model_role(config)
    auto = {"seq2seq": transformers.AutoModelForSeq2SeqLM, "causal": transformers.AutoModelForCausalLM,
            "speech_seq2seq": transformers.AutoModelForSpeechSeq2Seq, "base": transformers.AutoModel}[role]
    notes: list[str] = []
    build_dtype = dtype or getattr(config, "dtype", None)
    if isinstance(build_dtype, str):
        build_dtype = getattr(torch, build_dtype, None)
    if not isinstance(build_dtype, torch.dtype):
        build_dtype = None
    build_device = "meta" if device == "meta" else "cpu"
    kwargs = {"dtype": build_dtype} if build_dtype is not None else {}
    where = weightless_build() if weightless and build_device == "meta" else torch.device(build_device)
    try:
        with _quiet_transformers(), where:
            model = auto.from_config(config, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise SpecError(
            f"building {type(config).__name__} from {label} failed: {type(exc).__name__}: {_first_line(exc)}; "
            f"check the config values"
        ) from exc
    model.eval()
    facts = config_facts(config)
    main = getattr(model, "main_input_name", "input_ids")
    inputs: dict[str, torch.Tensor]
    if main == "input_ids":
        kind = "language"
        names = ["input_ids", "decoder_input_ids"] if role == "seq2seq" else ["input_ids"]
        if shapes is not None:
            if seq is not None:
                raise InputError("give either a sequence length (--seq) or input shapes (--shape), not both")
            if len(shapes) > len(names):
                raise InputError(
                    f"{label} takes {len(names)} token input(s) ({', '.join(names)}) but --shape gives {len(shapes)}; "
                    f"give one shape like 1x128"
                )
            for s in shapes:
                if len(s.shape) != 2:
                    raise InputError(f"token ids have shape batch x sequence, not {s}: write e.g. {batch}x128")
                if s.dtype is not None and (s.dtype.is_floating_point or s.dtype == torch.bool):
                    raise InputError(f"token ids are integers, not {s.dtype}: write e.g. {s.shape[0]}x{s.shape[1]}:int64")
            specs = list(shapes)
            if len(specs) < len(names):  # decoder ids default to the encoder's shape
                specs.append(specs[0])
        else:
            specs = [InputSpec((batch, seq if seq is not None else DEFAULT_SEQ), None)] * len(names)
        max_pos = facts["max_position_embeddings"]
        for s in specs:
            if max_pos is not None and s.shape[1] > max_pos:
                raise InputError(
                    f"sequence length {s.shape[1]} exceeds max_position_embeddings {max_pos} of {label}: "
                    f"use a sequence length of at most {max_pos}"
                )
        inputs = {n: _token_ids(s.shape, config, build_device, s.dtype) for n, s in zip(names, specs)}
        out_batch, out_seq = specs[0].shape
    elif main == "pixel_values":
        kind = "vision"
        if seq is not None:
            raise InputError(f"{label} is a vision model: a sequence length does not apply; give --shape or --batch")
        if shapes is None:
            size = _int_or_none(getattr(config, "image_size", None)) or 224
            channels = _int_or_none(getattr(config, "num_channels", None)) or 3
            frames = _int_or_none(getattr(config, "num_frames", None))
            # a video model (VideoMAE, TimeSformer, ViViT) takes clips: batch x frames x channels x S x S
            shapes = [InputSpec((batch, frames, channels, size, size) if frames else (batch, channels, size, size))]
        if len(shapes) != 1:
            raise InputError(f"{label} takes one pixel_values input, --shape gives {len(shapes)}")
        inputs = {"pixel_values": make_tensor(shapes[0], device=build_device, default_dtype=build_dtype or torch.float32)}
        out_batch, out_seq = shapes[0].shape[0], None
    else:
        kind = "custom"
        if shapes is None:
            default = _audio_shape(main, config, batch)
            if default is None:
                raise InputError(
                    f"{label} ({type(model).__name__}) takes {main!r} as input: give its shape with --shape, "
                    f"e.g. 1x16000"
                )
            shapes = [default]
        if len(shapes) != 1:
            raise InputError(f"{label} ({type(model).__name__}) takes one {main!r} input, --shape gives {len(shapes)}")
        inputs = {main: make_tensor(shapes[0], device=build_device, default_dtype=build_dtype or torch.float32)}
        out_batch, out_seq = shapes[0].shape[0], None
        if getattr(config, "is_encoder_decoder", False):  # speech_seq2seq, or an encoder-decoder's base model
            # the decoder's token ids (Whisper): --seq of them, 128 by default, within its positions
            dec = seq if seq is not None else DEFAULT_SEQ
            limit = _int_or_none(getattr(config, "max_target_positions", None))
            if limit is not None and dec > limit:
                raise InputError(f"decoder sequence length {dec} exceeds max_target_positions {limit} of {label}: "
                                 f"use --seq of at most {limit}")
            inputs["decoder_input_ids"] = _token_ids((out_batch, dec), config, build_device, None)
            out_seq = dec
        elif seq is not None:
            raise InputError(f"{label} takes {main!r}, not token ids: a sequence length does not apply; give --shape")
    return HFBuild(model=model, inputs=inputs, kind=kind, facts=facts, notes=tuple(notes),
                   batch=out_batch, seq=out_seq)


__all__ = ["DEFAULT_SEQ", "HFBuild", "Preset", "build_config", "build_hf", "config_facts", "get_preset",
           "model_role", "presets", "read_config_file"]

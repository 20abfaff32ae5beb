"""Every transformers architecture, full size, without weights: does the meta path run it, and count it all?

For each model type transformers registers with ``AutoModel``, the model is built from its default config
(the architecture's reference size) under ``torch.device("meta")`` and profiled on the default meta device
(``modelmeter.profile(model, inputs)``) with the input its config describes:

* ``input_ids``, with a vocabulary (``vocab_size``, or its text config's): a batch of 32 token ids;
* ``pixel_values``: one image of ``num_channels`` x ``image_size``, or, with ``num_frames`` in the config,
  one video clip of 1 x frames x channels x height x width;
* ``input_values`` and ``input_features`` as ``modelmeter profile`` sizes them from the config
  (``modelmeter.models.hf._audio_shape``): one second of waveform at the config's sampling rate (with a
  channel dimension for the audio codecs; a waveform without one is tried with one too), Whisper's
  ``num_mel_bins`` x twice ``max_source_positions`` log-mel frames;

and an encoder-decoder (``is_encoder_decoder``) also 32 decoder token ids.

The input is the first parameter of the model's ``forward``; a model whose first input is none of these,
or whose config does not give its size, is skipped.

Each row says whether it ran, on which input, its MACs, how many data-dependent reads were answered without
a value (the report's notes), and which ops had no rule. Failures are listed with their one-line error:
most are models whose forward needs more than that one input (decoder inputs, prompts, an image beside
the text), which is the input's fault, not the capture's. A model gets 60 s.

    .venv/bin/python bench/hf_meta_sweep.py                 # writes bench/results/hf_meta_sweep.json (~5 min)
    .venv/bin/python bench/hf_meta_sweep.py --types llama,vit,videomae --no-write
    .venv/bin/python bench/hf_meta_sweep.py --train         # a training step each: hf_meta_sweep_train.json
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import sys
import time
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from _benchlib import console, machine_info, write_results  # noqa: E402

import modelmeter as mm  # noqa: E402
from modelmeter.models._build import weightless  # noqa: E402
from modelmeter.models.hf import _audio_shape  # noqa: E402

LIMIT_S = 60
BUILD = "meta"  # or "weightless": parameters on meta, small buffers real (--build)
# A meta run that fails after reads it had to answer is built again weightless, as `modelmeter profile` does.


class _TimedOut(Exception):
    pass


def _alarm(*_: Any) -> None:
    raise _TimedOut


def model_inputs(cfg: Any, model: Any) -> tuple[str | None, Any]:
    """The input the model's ``forward`` takes first, sized from its default config: ``("ids", ...)``,
    ``("image", ...)``, ``("video", ...)``, ``("audio", ...)``, or ``(None, None)`` when the config does not
    say how large it is. An encoder-decoder also gets 32 decoder token ids."""
    params = inspect.signature(model.forward).parameters
    kind, inputs = _first_input(cfg, next(iter(params), None))
    vocab = _vocab(cfg)
    if inputs is not None and getattr(cfg, "is_encoder_decoder", False) and "decoder_input_ids" in params and vocab:
        inputs = {**inputs, "decoder_input_ids": _ids(vocab)}
    return kind, inputs


def _vocab(cfg: Any) -> int | None:
    return getattr(cfg, "vocab_size", None) or getattr(getattr(cfg, "text_config", None), "vocab_size", None)


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(min(5, vocab - 1), min(vocab, 1000), (1, 32))


def _first_input(cfg: Any, first: str | None) -> tuple[str | None, dict[str, torch.Tensor] | None]:
    vocab = _vocab(cfg)
    if first == "input_ids" and vocab:
        return "ids", {first: _ids(vocab)}
    if first in ("pixel_values", "pixel_values_videos"):
        size, channels = getattr(cfg, "image_size", None), getattr(cfg, "num_channels", None)
        if not size or not isinstance(channels, int):
            return None, None
        h, w = (size[-2], size[-1]) if isinstance(size, (list, tuple)) else (size, size)
        frames = getattr(cfg, "num_frames", None)
        if isinstance(frames, int) and frames > 0:
            return "video", {first: torch.randn(1, frames, channels, h, w)}
        return "image", {first: torch.randn(1, channels, h, w)}
    if first in ("input_values", "input_features"):  # sized as `modelmeter profile` sizes them
        spec = _audio_shape(first, cfg, 1)
        if spec is not None:
            return "audio", {first: torch.randn(spec.shape)}
    return None, None


def run_type(model_type: str, train: bool = False) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModel

    t0 = time.perf_counter()
    kind = None
    signal.alarm(LIMIT_S)
    try:
        cfg = AutoConfig.for_model(model_type)
        build = BUILD

        def built() -> Any:
            with (weightless() if build == "weightless" else torch.device("meta")):
                return AutoModel.from_config(cfg)

        model = built()
        kind, inputs = model_inputs(cfg, model)
        if inputs is None:
            return {"status": "skipped", "why": "its forward's first input is not one the sweep can size from the config"}
        # a waveform the config does not mark as a codec's may still want a channel dimension: (batch, 1, samples)
        variants = [inputs] + ([{**inputs, "input_values": inputs["input_values"][:, None]}]
                               if "input_values" in inputs and inputs["input_values"].dim() == 2 else [])
        r, first, answered = None, None, False
        for attempt in ("meta", "weightless") if build == "meta" else ("weightless",):
            if attempt != build:
                if not answered:
                    break
                # what `modelmeter profile` does: built again with its small buffers real
                build = attempt
                model = built()
            for x in variants:
                try:
                    r = mm.profile(model, x, train=train)
                    break
                except mm.ModelmeterError as exc:
                    first = first or exc
                    answered = answered or bool(getattr(exc, "answered_reads", 0))
            if r is not None:
                break
        if r is None:
            raise first
        return {"status": "ok", "input": kind, "build": build, "macs": r.totals.macs, "notes": len(r.notes),
                "uncounted": [u.op for u in r.uncounted_ops], "seconds": round(time.perf_counter() - t0, 2)}
    except _TimedOut:
        return {"status": "error", "input": kind, "error": f"over {LIMIT_S} s"}
    except Exception as exc:  # noqa: BLE001 - the row reports it
        return {"status": "error", "input": kind, "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:240]}
    finally:
        signal.alarm(0)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    transformers.logging.set_verbosity_error()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--types", default="all", help="comma-separated model types (default: every one)")
    ap.add_argument("--train", action="store_true", help="a training step (loss, backward) instead of a forward; "
                    "writes hf_meta_sweep_train.json")
    ap.add_argument("--build", choices=("meta", "weightless"), default="meta",
                    help="build under torch.device('meta') (default; again weightless when the run fails after "
                         "reads it had to answer, as `modelmeter profile` does), or always with parameters on meta "
                         "and small buffers real (modelmeter.models._build.weightless)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    global BUILD
    BUILD = args.build
    torch.set_num_threads(2)
    signal.signal(signal.SIGALRM, _alarm)
    out = console()
    types = sorted(MODEL_MAPPING_NAMES) if args.types == "all" else args.types.split(",")
    rows, t0 = [], time.perf_counter()
    for model_type in types:
        row = {"type": model_type, **run_type(model_type, args.train)}
        rows.append(row)
        if row["status"] == "ok":
            extra = (", built again weightless" if row["build"] == "weightless" else "") + (
                f", {row['notes']} note(s)" if row["notes"] else "") + (
                f", uncounted {row['uncounted']}" if row["uncounted"] else "")
            out.print(f"{model_type}: ok ({row['input']}), {row['macs']:,} MACs{extra}", highlight=False)
        elif row["status"] == "error":
            out.print(f"{model_type}: {row['error']}", highlight=False, soft_wrap=True)
    ok = [r for r in rows if r["status"] == "ok"]
    tried = [r for r in rows if r["status"] != "skipped"]
    summary = {
        "types": len(rows), "with_input": len(tried), "ran": len(ok),
        "by_input": {kind: {"tried": len([r for r in tried if r.get("input") == kind]),
                            "ran": len([r for r in ok if r["input"] == kind])} for kind in ("ids", "image", "video", "audio")},
        "built_weightless": sorted(r["type"] for r in ok if r["build"] == "weightless"),
        "with_notes": sorted(r["type"] for r in ok if r["notes"]),
        "with_uncounted_ops": sorted(r["type"] for r in ok if r["uncounted"]),
    }
    by = ", ".join(f"{k} {v['ran']}/{v['tried']}" for k, v in summary["by_input"].items())
    out.print(f"{summary['ran']} of {summary['with_input']} ran ({by}); notes in {len(summary['with_notes'])}, "
              f"uncounted ops in {len(summary['with_uncounted_ops'])}; {time.perf_counter() - t0:.0f} s",
              highlight=False)
    if not args.no_write:
        path = write_results("hf_meta_sweep_train" if args.train else "hf_meta_sweep", {
            "train": args.train, "machine": machine_info(), "transformers": transformers.__version__,
            "summary": summary, "rows": rows})
        out.print(f"wrote {path}")


if __name__ == "__main__":
    main()

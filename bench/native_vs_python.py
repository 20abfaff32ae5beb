"""Native vs Python capture: does the C++ recorder record the same events as the TorchDispatchMode capture?

A real-tensor inference run on CPU (``run_capture(model, inputs, device="cpu")``) records its aten ops with
the native recorder (``capture/native/recorder.cpp``); ``native=False`` uses the Python ``TorchDispatchMode``
capture. For each model the two captures are run on the same model object and the same input tensors and
compared event by event with the comparison of ``tests/test_capture_native.py`` (``canon`` and
``first_difference``: every field of every event; storage keys exactly for parameters, buffers and inputs,
otherwise by order of first appearance within the event), together with the trace's other records
(parameter/buffer/input storages, module calls, output bytes, dtype, settings). Then
``modelmeter.profile(model, x, device="cpu")`` is run with ``MODELMETER_NATIVE=0`` and without it, and the
totals (MACs, FLOPs, bytes read, bytes written) and ``report.provenance.capture`` are compared.

A run meant to be native that was recorded by the Python capture is a fallback: the recorder was not built
(``native.status()``), refused to start (another RecordFunction user), was never tried (a dispatch mode or
autocast active), or met a value it does not describe and the run was redone in Python
(``NativeUnsupported``). Spies on ``_State.start_native`` and ``_State.finish_native`` tell which.

Models: every torchvision classification model (``weights=None``; a 1x3x64x64 image, or 1x3x224x224 where a
plain forward fails at 64), torchvision segmentation, detection (one 3x224x224 image in a list) and video
(r3d_18, 1x3x4x64x64), and Hugging Face transformers models built from small configs (token ids 1x16 with an
attention mask where the model takes one; images at the config's size). Each model runs one plain forward
first (under ``no_grad``), which picks the input and fills what a model caches on its first call (torchvision's
``MultiScaleRoIAlign`` sets up its scales once: without it the first capture records ops the second does not).
A model that fails to build, or takes more than ``--limit`` seconds in all, is skipped with its reason.

    .venv/bin/python bench/native_vs_python.py            # every model; writes bench/results/native_vs_python.json
    .venv/bin/python bench/native_vs_python.py --models resnet18,hf_gpt2,fasterrcnn_mobilenet_v3_large_320_fpn --no-write
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
from collections.abc import Callable
from typing import Any

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)
sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tests"))

import torch  # noqa: E402
from _benchlib import console, machine_info, write_results  # noqa: E402
from test_capture_native import FIELDS, canon, first_difference  # noqa: E402

import modelmeter as mm  # noqa: E402
from modelmeter.capture import native, tracer  # noqa: E402
from modelmeter.capture.run import normalize_inputs, run_capture  # noqa: E402

KEYS = ("macs", "flops", "bytes_read", "bytes_written")
LIMIT_S = 60
SEG = ("fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
DET = ("fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "ssdlite320_mobilenet_v3_large",
       "maskrcnn_resnet50_fpn")


class _TimedOut(Exception):
    pass


def _alarm(*_: Any) -> None:
    raise _TimedOut


def _timed_out(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, _TimedOut):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:300]


# -- models -----------------------------------------------------------------------------------------------
# each case: (group, build, candidate inputs); several candidates: the first a plain forward accepts is used
Case = tuple[str, Callable[[], torch.nn.Module], list[Callable[[], Any]]]


def _img(*shape: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(*shape)


def _hf_cases() -> dict[str, Case]:
    import transformers as T

    def text(cls: str, cfg: Callable[[], Any]) -> Case:
        return "hf-text", lambda: getattr(T, cls)(cfg()), [lambda: "ids"]

    def seq2seq(cls: str, cfg: Callable[[], Any]) -> Case:
        return "hf-seq2seq", lambda: getattr(T, cls)(cfg()), [lambda: "ids+decoder"]

    def vision(cls: str, cfg: Callable[[], Any]) -> Case:
        return "hf-vision", lambda: getattr(T, cls)(cfg()), [lambda: "pixels"]

    common = dict(vocab_size=100, max_position_embeddings=64)
    enc = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64, **common)
    dec = dict(enc, num_key_value_heads=2)
    out: dict[str, Case] = {
        "hf_bert": text("BertModel", lambda: T.BertConfig(**enc)),
        "hf_roberta": text("RobertaModel", lambda: T.RobertaConfig(**enc)),
        "hf_distilbert": text("DistilBertModel", lambda: T.DistilBertConfig(
            n_layers=2, dim=32, n_heads=4, hidden_dim=64, **common)),
        "hf_albert": text("AlbertModel", lambda: T.AlbertConfig(embedding_size=16, **enc)),
        "hf_electra": text("ElectraModel", lambda: T.ElectraConfig(embedding_size=16, **enc)),
        "hf_gpt2": text("GPT2LMHeadModel", lambda: T.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=100,
                                                                n_positions=64)),
        "hf_gpt_neox": text("GPTNeoXForCausalLM", lambda: T.GPTNeoXConfig(**enc)),
        "hf_opt": text("OPTForCausalLM", lambda: T.OPTConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32,
            **common)),
        "hf_bloom": text("BloomForCausalLM", lambda: T.BloomConfig(n_layer=2, hidden_size=32, n_head=4,
                                                                   vocab_size=100)),
        "hf_falcon": text("FalconForCausalLM", lambda: T.FalconConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=4, vocab_size=100)),
        "hf_llama": text("LlamaForCausalLM", lambda: T.LlamaConfig(**dec)),
        "hf_mistral": text("MistralForCausalLM", lambda: T.MistralConfig(**dec)),
        "hf_qwen2": text("Qwen2ForCausalLM", lambda: T.Qwen2Config(**dec)),
        "hf_phi": text("PhiForCausalLM", lambda: T.PhiConfig(**enc)),
        "hf_gemma": text("GemmaForCausalLM", lambda: T.GemmaConfig(**dec, head_dim=8)),
        "hf_t5": seq2seq("T5Model", lambda: T.T5Config(
            num_layers=2, num_decoder_layers=2, d_model=32, d_ff=64, num_heads=4, d_kv=8, vocab_size=100)),
        "hf_bart": seq2seq("BartModel", lambda: T.BartConfig(
            encoder_layers=2, decoder_layers=2, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64,
            encoder_attention_heads=4, decoder_attention_heads=4, **common)),
        "hf_whisper": ("hf-seq2seq", lambda: T.WhisperModel(T.WhisperConfig(
            encoder_layers=2, decoder_layers=2, d_model=32, encoder_attention_heads=4, decoder_attention_heads=4,
            encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=64,
            max_target_positions=64, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            decoder_start_token_id=1)), [lambda: "mel+decoder"]),
        "hf_vit": vision("ViTModel", lambda: T.ViTConfig(image_size=32, patch_size=8, num_hidden_layers=2,
                                                         hidden_size=32, num_attention_heads=4,
                                                         intermediate_size=64)),
        "hf_swin": vision("SwinModel", lambda: T.SwinConfig(image_size=32, patch_size=4, embed_dim=16,
                                                            depths=[1, 1], num_heads=[2, 4], window_size=4)),
        "hf_convnext": vision("ConvNextModel", lambda: T.ConvNextConfig(image_size=64, hidden_sizes=[16, 32],
                                                                        depths=[1, 1], num_stages=2)),
        "hf_deit": vision("DeiTModel", lambda: T.DeiTConfig(image_size=32, patch_size=8, num_hidden_layers=2,
                                                            hidden_size=32, num_attention_heads=4,
                                                            intermediate_size=64)),
        "hf_clip_vision": vision("CLIPVisionModel", lambda: T.CLIPVisionConfig(
            image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
            intermediate_size=64)),
    }
    return out


def _hf_inputs(kind: str, model: torch.nn.Module) -> Any:
    """The inputs named by a Hugging Face case's placeholder, sized from the built model's config."""
    cfg = model.config
    params = inspect.signature(model.forward).parameters
    ids = torch.randint(1, 100, (1, 16))
    if kind == "pixels":
        size = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        return {"pixel_values": torch.randn(1, getattr(cfg, "num_channels", 3), size, size)}
    if kind == "mel+decoder":
        return {"input_features": torch.randn(1, cfg.num_mel_bins, 2 * cfg.max_source_positions),
                "decoder_input_ids": torch.randint(1, 100, (1, 8))}
    x: dict[str, Any] = {"input_ids": ids}
    if "attention_mask" in params:
        x["attention_mask"] = torch.ones(1, 16, dtype=torch.long)
    if kind == "ids+decoder":
        x["decoder_input_ids"] = torch.randint(1, 100, (1, 8))
    return x


def cases() -> dict[str, Case]:
    import torchvision

    tv = torchvision.models
    out: dict[str, Case] = {}
    for name in tv.list_models(module=tv):
        out[name] = ("tv-classification", lambda n=name: tv.get_model(n, weights=None),
                     [_img(1, 3, 64, 64), _img(1, 3, 224, 224)])
    for name in SEG:
        out[name] = ("tv-segmentation", lambda n=name: tv.get_model(n, weights=None, weights_backbone=None),
                     [_img(1, 3, 64, 64)])
    for name in DET:
        out[name] = ("tv-detection", lambda n=name: tv.get_model(n, weights=None, weights_backbone=None),
                     [lambda: ([torch.randn(3, 224, 224)],)])
    out["r3d_18"] = ("tv-video", lambda: tv.video.r3d_18(weights=None), [_img(1, 3, 4, 64, 64)])
    try:
        out.update(_hf_cases())
    except ImportError as exc:
        print(f"transformers not available: {exc}")
    return out


# -- one model --------------------------------------------------------------------------------------------
class _Spies:
    """Counts, while installed, the native recorder's starts, refusals, drains and NativeUnsupported retries
    (as the ``native_runs`` fixture of tests/test_capture_native.py)."""

    def __init__(self) -> None:
        self.calls = {"started": 0, "refused": 0, "finished": 0, "unsupported": 0}
        self._start, self._finish = tracer._State.start_native, tracer._State.finish_native

    def reset(self) -> None:
        self.calls.update(started=0, refused=0, finished=0, unsupported=0)

    def __enter__(self) -> _Spies:
        start, finish, calls = self._start, self._finish, self.calls

        def start_spy(state: Any, rec: Any) -> bool:
            ok = start(state, rec)
            calls["started" if ok else "refused"] += 1
            return ok

        def finish_spy(state: Any) -> None:
            calls["finished"] += 1
            try:
                return finish(state)
            except tracer.NativeUnsupported:
                calls["unsupported"] += 1
                raise

        tracer._State.start_native = start_spy
        tracer._State.finish_native = finish_spy
        return self

    def __exit__(self, *exc: Any) -> None:
        tracer._State.start_native, tracer._State.finish_native = self._start, self._finish


def _fallback_reason(calls: dict[str, int]) -> str:
    if calls["unsupported"]:
        return ("NativeUnsupported: the recorder met a value it does not describe (a sparse tensor, a tensor "
                "subclass); the run was redone with the Python capture")
    if calls["refused"]:
        return "the recorder refused to start (another RecordFunction user, e.g. a profiler, is active)"
    if native.load() is None:
        return f"the recorder is not available: {native.status()}"
    if not calls["started"]:
        return "the recorder was never tried (a dispatch mode or autocast was active)"
    return "unknown"


def _difference(py: Any, nat: Any) -> dict[str, Any] | None:
    """The first differing event (structured, and as first_difference's text), or None."""
    text = first_difference(py, nat)
    if text is None:
        return None
    ca, cb = canon(py), canon(nat)
    for i, (p, q) in enumerate(zip(ca, cb)):
        if p != q:
            fields = [f for f, u, v in zip(FIELDS, p, q) if u != v]
            near = {who: [f"{e[0]} {e[1]} @{e[3]!r}" for e in c[max(0, i - 3):i + 6]] for who, c in
                    (("python", ca), ("native", cb))}
            return {"event": i, "python_op": p[1], "native_op": q[1], "module": [p[3], q[3]], "fields": fields,
                    "context": near,
                    "values": {f: {"python": repr(u), "native": repr(v)} for f, u, v in zip(FIELDS, p, q)
                               if u != v},
                    "python_event": dict(zip(FIELDS, map(repr, p))), "native_event": dict(zip(FIELDS, map(repr, q))),
                    "text": text}
    n = min(len(ca), len(cb))
    return {"event": n, "python_op": ca[n][1] if n < len(ca) else None,
            "native_op": cb[n][1] if n < len(cb) else None, "fields": ["length"], "text": text}


def _other_records(py: Any, nat: Any) -> list[str]:
    """The trace's records besides its events that differ (as assert_same_capture checks them)."""
    diffs = []
    for attr in ("param_storages", "buffer_storages", "input_storages", "calls", "output_bytes", "dtype"):
        a, b = getattr(py, attr), getattr(nat, attr)
        if a != b:
            diffs.append(f"{attr}: python={a!r} native={b!r}"[:2000])
    sa = {k: v for k, v in py.settings.items() if k != "capture"}
    sb = {k: v for k, v in nat.settings.items() if k != "capture"}
    if sa != sb:
        diffs.append(f"settings: python={sa!r} native={sb!r}")
    return diffs


def _profile_totals(model: torch.nn.Module, x: Any, native_on: bool) -> dict[str, Any]:
    before = os.environ.get("MODELMETER_NATIVE")
    if native_on:
        os.environ.pop("MODELMETER_NATIVE", None)
    else:
        os.environ["MODELMETER_NATIVE"] = "0"
    try:
        r = mm.profile(model, x, device="cpu")
    finally:
        if before is None:
            os.environ.pop("MODELMETER_NATIVE", None)
        else:
            os.environ["MODELMETER_NATIVE"] = before
    row: dict[str, Any] = {k: getattr(r.totals, k) for k in KEYS}
    row["ops"] = r.totals.ops
    row["capture"] = r.provenance.capture
    return row


def run_model(name: str, case: Case, limit: int) -> dict[str, Any]:
    group, build, candidates = case
    row: dict[str, Any] = {"model": name, "group": group}
    stage = "build"
    t0 = time.perf_counter()
    signal.alarm(limit)
    try:
        torch.manual_seed(0)
        try:
            model = build().eval()
        except _TimedOut:
            raise
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row["skipped"] = f"failed to build: {_one_line(exc)}"
            return row
        row["build_s"] = round(time.perf_counter() - t0, 2)
        # a plain forward first: picks the input, and fills what a model caches on its first call (torchvision's
        # MultiScaleRoIAlign sets its scales up once), which would otherwise be recorded by the first capture only
        stage = "input"
        x, tried = None, []
        for make in candidates:
            x = make()
            if isinstance(x, str):  # a Hugging Face placeholder
                x = _hf_inputs(x, model)
            try:
                a, kw = normalize_inputs(x)
                with torch.no_grad():
                    model(*a, **kw)
                break
            except _TimedOut:
                raise
            except Exception as exc:  # noqa: BLE001 - the next candidate
                tried.append(f"{_describe(x)}: {_one_line(exc)}")
                x = None
        if x is None:
            row["skipped"] = "no input runs: " + "; ".join(tried)
            return row
        row["input"] = _describe(x)
        if tried:
            row["input_fallback"] = tried
        with _Spies() as spies:
            stage = "python capture"
            py = run_capture(model, x, device="cpu", native=False)
            stage = "native capture"
            spies.reset()
            nat = run_capture(model, x, device="cpu")
            row["recorder"] = dict(spies.calls)
            row["trace_capture"] = {"python": py.settings.get("capture"), "native": nat.settings.get("capture")}
            if nat.settings.get("capture") != "native":
                row["fallback"] = _fallback_reason(spies.calls)
            stage = "compare"
            row["events"] = {"python": len(py.events), "native": len(nat.events)}
            diff = _difference(py, nat)
            row["identical"] = diff is None
            if diff is not None:
                row["first_difference"] = diff
            other = _other_records(py, nat)
            if other:
                row["other_records_differ"] = other
            del py, nat
            stage = "profile (MODELMETER_NATIVE=0)"
            spies.reset()
            pyt = _profile_totals(model, x, native_on=False)
            stage = "profile (native)"
            spies.reset()
            nat_t = _profile_totals(model, x, native_on=True)
            row["profile"] = {"python": pyt, "native": nat_t,
                              "differs": [k for k in (*KEYS, "ops") if pyt[k] != nat_t[k]]}
            row["profile"]["match"] = not row["profile"]["differs"]
            if nat_t["capture"] != "native":
                row["profile"]["fallback"] = _fallback_reason(spies.calls)
            if pyt["capture"] != "dispatch-mode":
                row["profile"]["python_not_python"] = pyt["capture"]
    except Exception as exc:  # noqa: BLE001 - reported in the table
        if _timed_out(exc):
            row["skipped"] = f"over {limit} s (in {stage})"
        else:
            row["error"] = f"{stage}: {_one_line(exc)}"
    finally:
        signal.alarm(0)
        row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        dt = "" if x.dtype == torch.float32 else f" {str(x.dtype).replace('torch.', '')}"
        return "x".join(map(str, x.shape)) + dt
    if isinstance(x, dict):
        return ", ".join(f"{k} {_describe(v)}" for k, v in x.items())
    if isinstance(x, list):
        return "[" + ", ".join(_describe(v) for v in x) + "]"
    if isinstance(x, tuple):
        return ", ".join(_describe(v) for v in x)
    return repr(x)


# -- main -------------------------------------------------------------------------------------------------
def _status(row: dict[str, Any]) -> str:
    if "skipped" in row:
        return f"skipped: {row['skipped']}"
    if "error" in row and "identical" not in row:
        return f"error: {row['error']}"
    parts = ["identical" if row["identical"] else "DIFFERS"]
    if row.get("other_records_differ"):
        parts.append("other records differ")
    if "fallback" in row:
        parts.append("FALLBACK")
    if "error" in row:
        parts.append(f"error: {row['error']}")
    return " ".join(parts)


def main() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="all", help="comma-separated names (hf_ prefix for transformers)")
    ap.add_argument("--limit", type=int, default=LIMIT_S, help="seconds per model (build and all runs)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    signal.signal(signal.SIGALRM, _alarm)
    out = console()
    out.print(f"native recorder: {native.status()}", highlight=False)
    table = cases()
    names = list(table) if args.models == "all" else args.models.split(",")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise SystemExit(f"unknown models: {', '.join(unknown)}")
    rows = []
    t0 = time.perf_counter()
    for name in names:
        row = run_model(name, table[name], args.limit)
        rows.append(row)
        out.print(f"{name}: {_status(row)} ({row['seconds']:.1f} s)", highlight=False, soft_wrap=True)
    total_s = time.perf_counter() - t0

    from rich.table import Table

    t = Table(title="native vs Python capture (CPU inference)")
    for col in ("model", "group", "input", "events py/nat", "events", "first difference", "profile totals",
                "capture", "s"):
        t.add_column(col, justify="right" if col in ("s", "events py/nat") else "left")
    for r in rows:
        inp = r.get("input", "-")
        d = r.get("first_difference")
        first = f"@{d['event']} {d['python_op']} | {d['native_op']} ({', '.join(d['fields'])})" if d else ""
        ev = f"{r['events']['python']}/{r['events']['native']}" if "events" in r else "-"
        prof = r.get("profile")
        if prof is None:
            ptxt = "-"
        elif prof["match"]:
            ptxt = f"match ({prof['native']['macs']:,} MACs)"
        else:
            ptxt = "DIFFER: " + ", ".join(f"{k} {prof['python'][k]:,} vs {prof['native'][k]:,}"
                                         for k in prof["differs"])
        cap = "-"
        if "trace_capture" in r:
            cap = r["trace_capture"]["native"] + (f"/{prof['native']['capture']}" if prof else "")
        t.add_row(r["model"], r["group"], inp, ev, _status(r), first, ptxt, cap, f"{r['seconds']:.1f}")
    out.width = max(out.width, 210)
    out.print(t)

    done = [r for r in rows if "identical" in r]
    summary = {
        "models": len(rows),
        "compared": len(done),
        "identical": sum(1 for r in done if r["identical"] and not r.get("other_records_differ")),
        "mismatches": [r["model"] for r in done if not r["identical"] or r.get("other_records_differ")],
        "profile_mismatches": [r["model"] for r in rows if "profile" in r and not r["profile"]["match"]],
        "fallbacks": {r["model"]: r["fallback"] for r in rows if "fallback" in r},
        "profile_fallbacks": {r["model"]: r["profile"]["fallback"] for r in rows
                              if "profile" in r and "fallback" in r["profile"]},
        "skipped": {r["model"]: r["skipped"] for r in rows if "skipped" in r},
        "errors": {r["model"]: r["error"] for r in rows if "error" in r},
        "total_s": round(total_s, 1),
    }
    for r in done:
        if not r["identical"]:
            out.print(f"\n[bold]{r['model']}[/bold]: first difference", highlight=False)
            d = r["first_difference"]
            out.print(d["text"], highlight=False, soft_wrap=True, markup=False)
            for who in ("python", "native"):
                if "context" in d:
                    out.print(f"  {who} ops around it:\n    " + "\n    ".join(d["context"][who]),
                              highlight=False, soft_wrap=True, markup=False)
    out.print(f"{summary['identical']} of {summary['compared']} compared identical ({len(rows)} models; "
              f"{len(summary['skipped'])} skipped, {len(summary['errors'])} errors, "
              f"{len(summary['fallbacks'])} fallbacks, {len(summary['profile_mismatches'])} profile mismatches); "
              f"{total_s:.0f} s", highlight=False)
    if not args.no_write:
        import torchvision
        import transformers

        path = write_results("native_vs_python", {
            "machine": machine_info(torchvision=torchvision.__version__, transformers=transformers.__version__,
                                    native_status=native.status()),
            "command": sys.argv, "limit_s": args.limit, "summary": summary, "rows": rows})
        out.print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Every transformers architecture, full size, without weights: does the meta path run it, and count it all?

For each model type transformers registers with ``AutoModel`` that has a vocabulary, the model is built
from its default config (the architecture's reference size) under ``torch.device("meta")`` and profiled
with a batch of 32 token ids (``modelmeter.profile(model, ids)``, the default meta device). Each row says
whether it ran, its MACs, how many data-dependent reads were answered without a value (the report's
notes), and which ops had no rule. Failures are listed with their one-line error: most are models whose
forward needs more than token ids (images, audio, decoder inputs), which is the input's fault, not the
capture's. A model gets 60 s.

    .venv/bin/python bench/hf_meta_sweep.py                 # writes bench/results/hf_meta_sweep.json (~5 min)
    .venv/bin/python bench/hf_meta_sweep.py --types llama,longformer --no-write
"""

from __future__ import annotations

import argparse
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

LIMIT_S = 60


class _TimedOut(Exception):
    pass


def _alarm(*_: Any) -> None:
    raise _TimedOut


def run_type(model_type: str) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModel

    t0 = time.perf_counter()
    signal.alarm(LIMIT_S)
    try:
        cfg = AutoConfig.for_model(model_type)
        vocab = getattr(cfg, "vocab_size", None) or getattr(getattr(cfg, "text_config", None), "vocab_size", None)
        if not vocab:
            return {"status": "skipped", "why": "no vocabulary"}
        with torch.device("meta"):
            model = AutoModel.from_config(cfg)
        ids = torch.randint(min(5, vocab - 1), min(vocab, 1000), (1, 32))
        r = mm.profile(model, ids)
        return {"status": "ok", "macs": r.totals.macs, "notes": len(r.notes),
                "uncounted": [u.op for u in r.uncounted_ops], "seconds": round(time.perf_counter() - t0, 2)}
    except _TimedOut:
        return {"status": "error", "error": f"over {LIMIT_S} s"}
    except Exception as exc:  # noqa: BLE001 - the row reports it
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:240]}
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
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    signal.signal(signal.SIGALRM, _alarm)
    out = console()
    types = sorted(MODEL_MAPPING_NAMES) if args.types == "all" else args.types.split(",")
    rows, t0 = [], time.perf_counter()
    for model_type in types:
        row = {"type": model_type, **run_type(model_type)}
        rows.append(row)
        if row["status"] == "ok":
            extra = (f", {row['notes']} note(s)" if row["notes"] else "") + (
                f", uncounted {row['uncounted']}" if row["uncounted"] else "")
            out.print(f"{model_type}: ok, {row['macs']:,} MACs{extra}", highlight=False)
        elif row["status"] == "error":
            out.print(f"{model_type}: {row['error']}", highlight=False, soft_wrap=True)
    ok = [r for r in rows if r["status"] == "ok"]
    summary = {
        "types": len(rows), "with_vocabulary": len([r for r in rows if r["status"] != "skipped"]), "ran": len(ok),
        "with_notes": sorted(r["type"] for r in ok if r["notes"]),
        "with_uncounted_ops": sorted(r["type"] for r in ok if r["uncounted"]),
    }
    out.print(f"{summary['ran']} of {summary['with_vocabulary']} ran; notes in {len(summary['with_notes'])}, "
              f"uncounted ops in {len(summary['with_uncounted_ops'])}; {time.perf_counter() - t0:.0f} s",
              highlight=False)
    if not args.no_write:
        path = write_results("hf_meta_sweep", {"machine": machine_info(), "transformers": transformers.__version__,
                                               "summary": summary, "rows": rows})
        out.print(f"wrote {path}")


if __name__ == "__main__":
    main()

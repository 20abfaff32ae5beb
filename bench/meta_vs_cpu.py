"""Meta vs CPU: does counting without weights give the counts of a real run, model by model?

For each model (torchvision with ``weights=None``, Hugging Face built from small config objects,
``torch.nn`` layers and a few hand-made modules that exercise particular paths), inference and a
training step, ``modelmeter.profile`` runs once on meta tensors and once on real CPU tensors, and the
totals are compared: MACs, FLOPs, bytes read, bytes written, parameters. Also listed: ops without a
rule in either run, and the notes of the meta run (data-dependent reads answered without values).
A model that fails on one device is reported with its one-line error.

A difference is a finding: either a device-specific kernel or decomposition the rules must
reconcile (see docs/counting.md, "Meta and real tensors"), or a model whose work depends on values
(random layer dropping, a padding mask read with ``.item()``, a cache filled on the first call),
which the notes name.

    .venv/bin/python bench/meta_vs_cpu.py              # every case; writes bench/results/meta_vs_cpu.json
    .venv/bin/python bench/meta_vs_cpu.py --cases lstm,gru --no-write
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _benchlib import console, machine_info, write_results  # noqa: E402
from torch import nn  # noqa: E402

import modelmeter as mm  # noqa: E402

KEYS = ("macs", "flops", "bytes_read", "bytes_written", "params")


def _ids(n: int = 16) -> Callable[[], torch.Tensor]:
    return lambda: torch.randint(3, 500, (1, n))


def _img(size: int = 32) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(1, 3, size, size)


class _Fn(nn.Module):
    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args: Any) -> Any:
        return self.fn(*args)


class _Deformable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        import torchvision

        self.conv = torchvision.ops.DeformConv2d(4, 8, 3, padding=1)
        self.offset = nn.Conv2d(4, 18, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, self.offset(x))


class _Spectral(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 9, dtype=torch.cfloat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(x, dim=-1) * self.w, n=16, dim=-1)


def cases() -> dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]]:
    import torchvision
    import transformers as T

    tv = torchvision.models
    small = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, vocab_size=500)
    out: dict[str, tuple[Callable[[], nn.Module], Callable[[], Any]]] = {}
    for name in ("resnet18", "mobilenet_v3_small", "squeezenet1_0", "shufflenet_v2_x0_5", "regnet_x_400mf",
                 "efficientnet_b0", "densenet121", "convnext_tiny", "swin_t", "maxvit_t"):
        out[name] = (lambda n=name: getattr(tv, n)(weights=None), _img(224 if name == "maxvit_t" else 64))
    out["inception_v3"] = (lambda: tv.inception_v3(weights=None, aux_logits=False, init_weights=False), _img(299))
    out["vit_small"] = (lambda: tv.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4,
                                                      hidden_dim=64, mlp_dim=128), _img())
    out["swin3d_t"] = (lambda: tv.video.swin3d_t(weights=None), lambda: torch.randn(1, 3, 4, 64, 64))
    out["raft_small"] = (lambda: tv.optical_flow.raft_small(weights=None),
                         lambda: (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128)))
    out["r3d_18"] = (lambda: tv.video.r3d_18(weights=None), lambda: torch.randn(1, 3, 8, 56, 56))
    out["deeplabv3_mobilenet"] = (lambda: tv.segmentation.deeplabv3_mobilenet_v3_large(
        weights=None, weights_backbone=None), lambda: torch.randn(2, 3, 64, 64))
    out["gpt2"] = (lambda: T.GPT2LMHeadModel(T.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=500,
                                                          bos_token_id=0, eos_token_id=0)), _ids())
    out["bert"] = (lambda: T.BertModel(T.BertConfig(**small)), _ids())
    out["bert-padded"] = (lambda: T.BertModel(T.BertConfig(**small)), lambda: {
        "input_ids": torch.randint(3, 500, (2, 16)),
        "attention_mask": torch.tensor([[1] * 16, [1] * 11 + [0] * 5])})
    out["longformer"] = (lambda: T.LongformerModel(T.LongformerConfig(**small, attention_window=4)), _ids())
    out["modernbert"] = (lambda: T.ModernBertModel(T.ModernBertConfig(
        **small, global_attn_every_n_layers=2, local_attention=8, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        cls_token_id=1, sep_token_id=2)), _ids())
    out["mistral-swa"] = (lambda: T.MistralForCausalLM(T.MistralConfig(**small, num_key_value_heads=2,
                                                                        sliding_window=8)), _ids())
    out["bloom"] = (lambda: T.BloomForCausalLM(T.BloomConfig(n_layer=2, hidden_size=64, n_head=4, vocab_size=500)),
                    _ids())
    out["xlnet"] = (lambda: T.XLNetModel(T.XLNetConfig(n_layer=2, d_model=64, n_head=4, d_inner=128,
                                                       vocab_size=500)), _ids())
    out["llama-gqa"] = (lambda: T.LlamaForCausalLM(T.LlamaConfig(**small, num_key_value_heads=2)), _ids())
    out["mixtral-fp32"] = (lambda: T.MixtralForCausalLM(T.MixtralConfig(
        **small, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)), _ids())
    out["qwen2-moe"] = (lambda: T.Qwen2MoeForCausalLM(T.Qwen2MoeConfig(
        **small, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        shared_expert_intermediate_size=64)), _ids())
    out["t5"] = (lambda: T.T5Model(T.T5Config(num_layers=2, d_model=64, d_ff=128, num_heads=4, d_kv=16,
                                              vocab_size=500)),
                 lambda: {"input_ids": _ids()(), "decoder_input_ids": _ids()()})
    out["bart"] = (lambda: T.BartModel(T.BartConfig(
        encoder_layers=2, decoder_layers=2, d_model=64, encoder_ffn_dim=128, decoder_ffn_dim=128,
        encoder_attention_heads=4, decoder_attention_heads=4, vocab_size=500)), _ids())
    out["whisper"] = (lambda: T.WhisperModel(T.WhisperConfig(
        encoder_layers=1, decoder_layers=1, d_model=64, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16, max_source_positions=32, vocab_size=500,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)),
        lambda: {"input_features": torch.randn(1, 16, 64), "decoder_input_ids": _ids()()})
    out["mamba"] = (lambda: T.MambaModel(T.MambaConfig(num_hidden_layers=2, hidden_size=64, state_size=8,
                                                       vocab_size=500)), _ids())
    out["deberta-v2"] = (lambda: T.DebertaV2Model(T.DebertaV2Config(**small)), _ids())
    out["gemma2"] = (lambda: T.Gemma2ForCausalLM(T.Gemma2Config(**small, num_key_value_heads=2, head_dim=16)), _ids())
    out["deepseek-v3"] = (lambda: T.DeepseekV3ForCausalLM(T.DeepseekV3Config(
        **small, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
        q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
        first_k_dense_replace=1, n_group=1, topk_group=1)), _ids())
    out["segformer"] = (lambda: T.SegformerModel(T.SegformerConfig(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], num_attention_heads=[1, 2],
        patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2])), _img())
    out["wav2vec2"] = (lambda: T.Wav2Vec2Model(T.Wav2Vec2Config(
        num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=4, conv_dim=(32, 32),
        conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)),
        lambda: torch.randn(1, 1600))
    out["lstm"] = (lambda: nn.LSTM(16, 32, num_layers=2, batch_first=True), lambda: torch.randn(2, 5, 16))
    out["gru-bidirectional"] = (lambda: nn.GRU(16, 32, batch_first=True, bidirectional=True),
                                lambda: torch.randn(2, 5, 16))
    out["transformer"] = (lambda: nn.Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1,
                                                 dim_feedforward=64, batch_first=True),
                          lambda: (torch.randn(2, 6, 32), torch.randn(2, 5, 32)))
    out["embedding-bag"] = (lambda: nn.EmbeddingBag(100, 16, mode="mean"), lambda: torch.randint(0, 100, (4, 6)))
    out["deform-conv"] = (_Deformable, lambda: torch.randn(1, 4, 8, 8))
    out["fft-filter"] = (_Spectral, lambda: torch.randn(2, 8, 16))
    out["interpolate"] = (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), _Fn(lambda x: F.interpolate(
        x, scale_factor=2, mode="bicubic") + F.interpolate(x, scale_factor=2, mode="bilinear", antialias=True))),
        lambda: torch.randn(1, 3, 16, 16))
    return out


def run_case(build: Callable[[], nn.Module], inputs: Callable[[], Any], train: bool) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for device in ("meta", "cpu"):
        torch.manual_seed(0)
        try:
            model = build().eval()
            r = mm.profile(model, inputs(), train=train, device=device)
        except Exception as exc:  # noqa: BLE001 - reported in the table
            row[device] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:200]}
            continue
        row[device] = {k: getattr(r.totals, k) for k in KEYS}
        row[device]["uncounted"] = [f"{u.op} x{u.calls}" for u in r.uncounted_ops]
        row[device]["notes"] = list(r.notes)
    if "error" not in row["meta"] and "error" not in row["cpu"]:
        row["differs"] = [k for k in KEYS if row["meta"][k] != row["cpu"][k]]
    return row


def main() -> None:
    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="all")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out = console()
    table = cases()
    names = list(table) if args.cases == "all" else args.cases.split(",")
    rows = []
    t0 = time.perf_counter()
    for name in names:
        build, inputs = table[name]
        for train in (False, True):
            row = run_case(build, inputs, train)
            row.update(model=name, mode="train" if train else "inference")
            rows.append(row)
            if "differs" not in row:
                status = "; ".join(f"{d}: {row[d]['error']}" for d in ("meta", "cpu") if "error" in row[d])
            elif not row["differs"]:
                status = "identical"
            else:
                status = ", ".join(f"{k} {row['meta'][k]:,} vs {row['cpu'][k]:,}" for k in row["differs"])
            extra = ""
            if "error" not in row["meta"] and (row["meta"]["uncounted"] or row["meta"]["notes"]):
                extra = f" (uncounted: {row['meta']['uncounted']}, notes: {len(row['meta']['notes'])})"
            out.print(f"| {name} | {row['mode']} | {status}{extra} |", highlight=False, soft_wrap=True)
    same = sum(1 for r in rows if r.get("differs") == [])
    out.print(f"{same} of {len(rows)} identical; {time.perf_counter() - t0:.0f} s", highlight=False)
    if not args.no_write:
        path = write_results("meta_vs_cpu", {"machine": machine_info(), "rows": rows})
        out.print(f"wrote {path}")


if __name__ == "__main__":
    main()

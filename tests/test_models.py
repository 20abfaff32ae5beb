"""modelmeter.models: specs, presets, shape strings, meta-device builds, and every error path.

Parameter counts of the presets are derived by hand from the config values in the comments; the
torchvision counts are checked against torchvision's own weight tables (an independent source).
"""

from __future__ import annotations

import functools
import json
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import modelmeter as mm
from modelmeter.errors import InputError, ModelmeterError, OptionalDependencyError, SpecError
from modelmeter.models import LoadedModel, load, parse_spec, preset_names
from modelmeter.models.hf import get_preset, presets
from modelmeter.models.shapes import InputSpec, parse_shape, parse_shapes

transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")

SEQ = 16  # short sequences keep the meta runs fast; parameter counts do not depend on it


@functools.cache
def meta_run(spec: str, seq: int = SEQ) -> tuple[LoadedModel, mm.Report]:
    loaded = load(spec, seq=seq) if spec.startswith("hf:") else load(spec)
    return loaded, mm.profile(loaded.model, loaded.inputs)


def on_meta(model: nn.Module) -> bool:
    return all(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()])


# -- published parameter counts, derived by hand ---------------------------------------------------

# GPT-2 (n_embd 768, n_layer 12, n_positions 1024, vocab 50257, lm_head tied to wte: counted once)
#   wte 50257*768 = 38,597,376; wpe 1024*768 = 786,432
#   per layer: ln_1 2*768 = 1,536; c_attn 768*2304+2304 = 1,771,776; attn c_proj 768*768+768 = 590,592;
#              ln_2 1,536; c_fc 768*3072+3072 = 2,362,368; mlp c_proj 3072*768+768 = 2,360,064
#              = 7,087,872; x12 = 85,054,464
#   ln_f 1,536
#   total 38,597,376 + 786,432 + 85,054,464 + 1,536 = 124,439,808
GPT2 = 124_439_808

# BERT-base (hidden 768, 12 layers, intermediate 3072, vocab 30522, 512 positions, 2 token types), BertModel
#   embeddings 30522*768 + 512*768 + 2*768 + LayerNorm 2*768 = 23,440,896 + 393,216 + 1,536 + 1,536 = 23,837,184
#   per layer: Q, K, V, O 4*(768*768+768) = 2,362,368; LN 1,536; intermediate 768*3072+3072 = 2,362,368;
#              output 3072*768+768 = 2,360,064; LN 1,536 = 7,087,872; x12 = 85,054,464
#   pooler 768*768+768 = 590,592
#   total 23,837,184 + 85,054,464 + 590,592 = 109,482,240
BERT_BASE = 109_482_240

# Llama-3-8B (hidden 4096, 32 layers, 32 query / 8 KV heads of 128, intermediate 14336, vocab 128256, untied)
#   embed_tokens 128256*4096 = 525,336,576; lm_head the same: 1,050,673,152 together
#   per layer: q 4096*4096 = 16,777,216; k, v 4096*(8*128) = 4,194,304 each; o 16,777,216 -> 41,943,040
#              gate, up, down 3*4096*14336 = 176,160,768; 2 RMSNorms 2*4096 = 8,192 -> 218,112,000; x32 = 6,979,584,000
#   final norm 4,096
#   total 1,050,673,152 + 6,979,584,000 + 4,096 = 8,030,261,248
LLAMA3_8B = 8_030_261_248

# Llama-2-7B (hidden 4096, 32 layers, 32 heads, no GQA, intermediate 11008, vocab 32000, untied)
#   embed + lm_head 2*32000*4096 = 262,144,000
#   per layer: attention 4*4096*4096 = 67,108,864; MLP 3*4096*11008 = 135,266,304; norms 8,192 -> 202,383,360
#              x32 = 6,476,267,520
#   total 262,144,000 + 6,476,267,520 + 4,096 = 6,738,415,616
LLAMA2_7B = 6_738_415_616

# Mistral-7B (as Llama-3-8B per layer: GQA 8 KV heads, intermediate 14336; vocab 32000)
#   embed + lm_head 262,144,000; layers 32*218,112,000 = 6,979,584,000; final norm 4,096
#   total 7,241,732,096
MISTRAL_7B = 7_241_732_096

# Mixtral-8x7B (Mistral attention, 8 experts of 3*4096*14336 each, router 4096*8)
#   per layer: attention 41,943,040; experts 8*176,160,768 = 1,409,286,144; router 32,768; norms 8,192
#              = 1,451,270,144; x32 = 46,440,644,608
#   total 262,144,000 + 46,440,644,608 + 4,096 = 46,702,792,704
MIXTRAL_8X7B = 46_702_792_704

# Llama-3-70B (hidden 8192, 80 layers, 64 query / 8 KV heads of 128, intermediate 28672, vocab 128256)
#   embed + lm_head 2*128256*8192 = 2,101,346,304
#   per layer: q, o 2*8192*8192 = 134,217,728; k, v 2*8192*1024 = 16,777,216; MLP 3*8192*28672 = 704,643,072;
#              norms 16,384 -> 855,654,400; x80 = 68,452,352,000
#   total 2,101,346,304 + 68,452,352,000 + 8,192 = 70,553,706,496
LLAMA3_70B = 70_553_706_496

# T5-small (d_model 512, 6+6 layers, 8 heads of 64, d_ff 2048, vocab 32128, lm_head tied to shared)
#   shared 32128*512 = 16,449,536
#   encoder layer: q, k, v, o 4*512*512 = 1,048,576; LN 512; wi 512*2048 + wo 2048*512 = 2,097,152; LN 512
#                  = 3,146,752; x6 = 18,880,512; + relative bias 32*8 = 256 + final LN 512 -> 18,881,280
#   decoder layer: self-attn 1,048,576 + LN 512 + cross-attn 1,048,576 + LN 512 + FF 2,097,152 + LN 512
#                  = 4,195,840; x6 = 25,175,040; + 256 + 512 -> 25,175,808
#   total 16,449,536 + 18,881,280 + 25,175,808 = 60,506,624
T5_SMALL = 60_506_624

PUBLISHED = {
    "hf:gpt2": GPT2,
    "hf:bert-base": BERT_BASE,
    "hf:llama-3-8b": LLAMA3_8B,
    "hf:llama-2-7b": LLAMA2_7B,
    "hf:mistral-7b": MISTRAL_7B,
    "hf:mixtral-8x7b": MIXTRAL_8X7B,
    "hf:llama-3-70b": LLAMA3_70B,
    "hf:t5-small": T5_SMALL,
}


@pytest.mark.parametrize("spec", list(PUBLISHED))
def test_published_parameter_counts_on_meta(spec: str) -> None:
    loaded, report = meta_run(spec)
    assert report.totals.params == PUBLISHED[spec]
    assert on_meta(loaded.model)
    # the preset file cites the same number
    assert get_preset(spec[3:]).published_params == PUBLISHED[spec]


def test_bert_base_alias_and_bare_model() -> None:
    loaded = load("hf:bert-base-uncased", seq=SEQ)
    assert type(loaded.model).__name__ == "BertModel"
    assert loaded.name == "bert-base"
    assert mm.profile(loaded.model, loaded.inputs).totals.params == BERT_BASE


@pytest.mark.parametrize("spec,cls", [
    ("hf:gpt2", "GPT2LMHeadModel"), ("hf:bert-base", "BertModel"), ("hf:llama-3-8b", "LlamaForCausalLM"),
    ("hf:mistral-7b", "MistralForCausalLM"), ("hf:mixtral-8x7b", "MixtralForCausalLM"),
    ("hf:t5-small", "T5ForConditionalGeneration"),
])
def test_model_class_per_config(spec: str, cls: str) -> None:
    assert type(load(spec, seq=SEQ).model).__name__ == cls


def test_llama_3_70b_builds_in_seconds_without_memory() -> None:
    load("hf:llama-tiny")  # import transformers outside the timed part
    start = time.perf_counter()
    loaded = load("hf:llama-3-70b")
    elapsed = time.perf_counter() - start
    assert on_meta(loaded.model)
    assert elapsed < 10.0, f"building Llama-3-70B on meta took {elapsed:.1f}s"


# -- every preset runs on meta with transformers' default settings ----------------------------------

@pytest.mark.parametrize("name", preset_names())
def test_every_preset_profiles_on_meta_with_default_settings(name: str) -> None:
    loaded, report = meta_run(f"hf:{name}")
    assert loaded.kind == "language"
    assert loaded.model.config._attn_implementation == "sdpa"
    assert set(loaded.inputs) <= {"input_ids", "decoder_input_ids"}  # no attention mask
    assert report.totals.macs > 0
    # nothing was guessed: no value of a meta tensor was read during the forward
    assert not any("data-dependent" in n for n in report.notes), report.notes
    assert loaded.notes == ()


def test_preset_files_cite_their_sources() -> None:
    for name, preset in presets().items():
        src = preset.source
        assert src.get("model"), name
        if preset.test_only:
            assert "TEST ONLY" in src.get("note", ""), name
            continue
        assert str(src.get("config_json", "")).startswith("https://huggingface.co/"), name
        assert str(src["config_json"]).endswith("/config.json"), name
        assert "arXiv" in str(src.get("paper", "")) or "OpenAI" in str(src.get("paper", "")), name
        assert preset.published_params, name


def test_language_model_facts() -> None:
    llama = load("hf:llama-3-8b")
    assert (llama.num_layers, llama.num_attention_heads, llama.num_kv_heads, llama.head_dim) == (32, 32, 8, 128)
    assert (llama.hidden_size, llama.vocab_size, llama.max_position_embeddings) == (4096, 128256, 8192)
    gpt2 = load("hf:gpt2")
    assert (gpt2.num_layers, gpt2.num_kv_heads, gpt2.head_dim, gpt2.hidden_size) == (12, 12, 64, 768)
    assert (gpt2.vocab_size, gpt2.max_position_embeddings) == (50257, 1024)
    t5 = load("hf:t5-small")
    assert (t5.num_layers, t5.num_kv_heads, t5.head_dim, t5.hidden_size, t5.vocab_size) == (6, 8, 64, 512, 32128)
    vision = load("torchvision:resnet18")
    assert vision.kind == "vision" and vision.num_layers is None and vision.hidden_size is None


# -- MACs of tiny presets, by hand -------------------------------------------------------------------

def test_llama_tiny_macs_by_hand() -> None:
    # hidden 64, 4 query / 2 KV heads of 16, intermediate 160, 2 layers, vocab 1000; batch 2 x 16 tokens
    # per token per layer: q 64*64 = 4,096; k, v 64*32 = 2,048 each; o 4,096; MLP 3*64*160 = 30,720 -> 43,008
    # per token: 2 layers 86,016 + lm_head 64*1000 = 64,000 -> 150,016; x 32 tokens = 4,800,512
    # attention (causal, unmasked pairs 16*17/2 = 136): QK and PV 2 * 136 * 4 heads * 16 = 17,408
    #   per sequence per layer; x 2 layers x batch 2 = 69,632
    # total 4,870,144
    loaded = load("hf:llama-tiny", batch=2, seq=16)
    assert tuple(loaded.inputs["input_ids"].shape) == (2, 16)
    r = mm.profile(loaded.model, loaded.inputs)
    assert r.totals.macs == 4_870_144
    # params: embed + head 2*64,000; layers 2*(12,288 + 30,720 + 2*64); final norm 64 -> 214,336
    assert r.totals.params == 214_336


@pytest.mark.parametrize("dtype", [None, "fp32"])
def test_mixture_of_experts_macs_by_hand(dtype: str | None) -> None:
    # mixtral-tiny: hidden 64, 4 query / 2 KV heads of 16, 4 experts (intermediate 128), top-2, 2 layers,
    # vocab 1000; 16 tokens
    # per token per layer: attention 4,096 + 2,048 + 2,048 + 4,096 = 12,288; router 64*4 = 256;
    #   2 experts * (gate_up 64*256 + down 128*64) = 2 * 24,576 = 49,152 -> 61,696
    # per token: 2 * 61,696 + lm_head 64,000 = 187,392; x 16 tokens = 2,998,272
    # attention: 2 * 136 pairs * 4 heads * 16 * 2 layers = 34,816
    # total 3,033,088
    # transformers' default grouped_mm experts at either dtype: at fp32 on meta the capture answers
    # aten._grouped_mm itself (PyTorch's meta kernel takes only bf16/fp16; its CPU kernel takes fp32)
    loaded = load("hf:mixtral-tiny", seq=16, dtype=dtype)
    assert loaded.model.config._experts_implementation == "grouped_mm"
    r = mm.profile(loaded.model, loaded.inputs)
    assert r.totals.macs == 3_033_088
    assert r.uncounted_ops == []
    assert [e.op for e in r.events].count("aten._grouped_mm.default") == 2 * 2  # gate_up and down, 2 layers


@pytest.mark.parametrize("train", [False, True])
def test_fp32_mixture_of_experts_counts_equal_on_meta_and_cpu(train: bool) -> None:
    # a user's own fp32 Mixtral (grouped_mm experts): its meta run must not fail on PyTorch's
    # bf16/fp16-only meta kernel of _grouped_mm, and must count what the CPU run counts, bytes included
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.MixtralConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                                     num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                                     num_local_experts=4, num_experts_per_tok=2)
    model = transformers.MixtralForCausalLM(cfg).eval()
    ids = torch.randint(0, 1000, (1, 16))
    meta = mm.profile(model, ids, train=train)
    cpu = mm.profile(model, ids, train=train, device="cpu")
    # the hand count of the test above; training adds the backward, where every product computes the
    # gradients of both its operands (2 x its forward MACs): 3 x in all
    assert meta.totals.macs == (3_033_088 if not train else 3 * 3_033_088)
    for key in ("macs", "flops", "bytes_read", "bytes_written"):
        assert getattr(meta.totals, key) == getattr(cpu.totals, key), key
    grouped = [e for e in meta.events if e.op == "aten._grouped_mm.default"]
    assert grouped and all(e.bytes_read > 0 and e.bytes_written > 0 for e in grouped)


def test_mixtral_8x7b_forward_on_meta_counts_two_experts_per_token() -> None:
    # Per token per layer the experts add 2 * 3 * 4096 * 14336 = 352,321,536 MACs (top-2 of 8), the router
    # 4096 * 8 = 32,768, attention projections 41,943,040; lm_head 32000 * 4096 = 131,072,000.
    # Linear MACs per token: 32 * (41,943,040 + 32,768 + 352,321,536) + 131,072,000
    #   = 32 * 394,297,344 + 131,072,000 = 12,748,587,008.
    # Attention over 16 tokens: 2 * 136 pairs * 32 heads * 128 * 32 layers = 35,651,584.
    # Total for 16 tokens: 16 * 12,748,587,008 + 35,651,584 = 204,013,043,712.
    _, r = meta_run("hf:mixtral-8x7b")
    assert r.totals.macs == 204_013_043_712


def test_gpt2_macs_by_hand() -> None:
    # per token per layer: c_attn 768*2304 + c_proj 768*768 + c_fc 768*3072 + c_proj 3072*768 = 7,077,888
    # per token: 12 layers 84,934,656 + lm_head 50257*768 = 38,597,376 -> 123,532,032; x 128 = 15,812,100,096
    # attention: 2 * (128*129/2 = 8,256 pairs) * 12 heads * 64 * 12 layers = 152,174,592
    # total 15,964,274,688
    loaded = load("hf:gpt2")
    assert tuple(loaded.inputs["input_ids"].shape) == (1, 128)  # default sequence length
    assert mm.profile(loaded.model, loaded.inputs).totals.macs == 15_964_274_688


# -- meta and CPU give the same counts -------------------------------------------------------------------

def _tiny_configs() -> dict[str, dict]:
    return {
        "llama": transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, vocab_size=97,
                                          max_position_embeddings=64).to_dict(),
        "gpt2": transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=97, n_positions=64,
                                        bos_token_id=0, eos_token_id=0).to_dict(),
        "bert": transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, vocab_size=97, max_position_embeddings=64).to_dict(),
    }


def _write_config(tmp_path: Path, name: str, values: dict) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    path = folder / "config.json"
    path.write_text(json.dumps(values))
    return path


def _meta_and_cpu(spec: str) -> tuple[mm.Report, mm.Report]:
    out = []
    for device in ("meta", "cpu"):
        loaded = load(spec, batch=2, seq=12, device=device)
        assert on_meta(loaded.model) == (device == "meta")
        out.append(mm.profile(loaded.model, loaded.inputs, device=device))
    return out[0], out[1]


@pytest.mark.parametrize("name", ["llama", "gpt2", "bert"])
def test_meta_and_cpu_counts_agree_from_config_json(tmp_path: Path, name: str) -> None:
    path = _write_config(tmp_path, name, _tiny_configs()[name])
    meta, cpu = _meta_and_cpu(str(path))
    for field in ("params", "macs", "flops", "matmul_flops"):
        assert getattr(meta.totals, field) == getattr(cpu.totals, field), field
    assert meta.totals.macs > 0
    assert {m.path: m.macs for m in meta.modules} == {m.path: m.macs for m in cpu.modules}


@pytest.mark.parametrize("spec", ["hf:llama-tiny", "hf:mixtral-tiny"])
def test_meta_and_cpu_counts_agree_for_tiny_presets(spec: str) -> None:
    meta, cpu = _meta_and_cpu(spec)
    for field in ("params", "macs", "flops", "matmul_flops"):
        assert getattr(meta.totals, field) == getattr(cpu.totals, field), field


def test_meta_and_cpu_bytes_agree(tmp_path: Path) -> None:
    path = _write_config(tmp_path, "llama", _tiny_configs()["llama"])
    meta, cpu = _meta_and_cpu(str(path))
    assert (meta.totals.bytes_read, meta.totals.bytes_written) == (cpu.totals.bytes_read, cpu.totals.bytes_written)


def test_cpu_token_ids_are_valid_and_avoid_padding(tmp_path: Path) -> None:
    values = _tiny_configs()["bert"]
    values["pad_token_id"] = 5
    loaded = load(str(_write_config(tmp_path, "bert", values)), batch=2, seq=40, device="cpu")
    ids = loaded.inputs["input_ids"]
    assert ids.dtype == torch.int64 and ids.device.type == "cpu"
    # 2 x 40 = 80 tokens hold i mod 97 = 0..79, with the pad id 5 replaced by 6: 79 distinct ids
    assert int(ids.min()) == 0 and int(ids.max()) == 79
    assert not bool((ids == 5).any())
    assert len(set(ids.flatten().tolist())) == 79


def test_meta_build_gives_token_ids_with_values_so_reads_of_them_are_exact(tmp_path: Path) -> None:
    # BigBird reads its token ids (transformers' padding check, pad_token_id in input_ids[:, [-1, 0]]).
    # A meta build makes the ids on the CPU (small), profile keeps their values beside the meta tensors,
    # and the read is answered from them: no note, and the counts of a CPU run
    values = transformers.BigBirdConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, vocab_size=97, max_position_embeddings=64,
                                        attention_type="original_full").to_dict()
    spec = str(_write_config(tmp_path, "bigbird", values))
    loaded = load(spec, batch=2, seq=12)
    assert on_meta(loaded.model)
    ids = loaded.inputs["input_ids"]
    assert ids.device.type == "cpu" and ids.shape == (2, 12)
    meta, cpu = _meta_and_cpu(spec)
    assert not meta.notes
    assert (meta.totals.macs, meta.totals.flops, meta.totals.bytes_read) == (cpu.totals.macs, cpu.totals.flops,
                                                                            cpu.totals.bytes_read)
    assert meta.provenance.mode == "meta"


def test_meta_build_of_very_long_token_ids_keeps_them_on_meta() -> None:
    # above the size a meta run keeps values of (1 Mi elements), ids are not made on the CPU at all
    from modelmeter.capture.values import MAX_ELEMENTS

    loaded = load("hf:llama-tiny", batch=MAX_ELEMENTS // 256 + 1, seq=256)  # 4097 x 256 > 1 Mi
    assert loaded.inputs["input_ids"].is_meta
    assert load("hf:llama-tiny", batch=MAX_ELEMENTS // 256, seq=256).inputs["input_ids"].device.type == "cpu"


# -- speech and video models: inputs sized from the config ----------------------------------------------

def _speech_configs() -> dict[str, dict]:
    ids = {"pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3, "decoder_start_token_id": 2}
    return {
        # real Whisper config.json files name the architecture; the role comes from is_encoder_decoder either way
        "whisper": transformers.WhisperConfig(
            d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=10, max_target_positions=20,
            vocab_size=97, **ids).to_dict(),
        "wav2vec2": transformers.Wav2Vec2Config(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, conv_dim=(8, 8),
            conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2,
            vocab_size=97).to_dict(),
        "videomae": transformers.VideoMAEConfig(
            image_size=16, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2, hidden_size=16,
            num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).to_dict(),
    }


def test_whisper_builds_whole_with_mel_frames_and_decoder_ids(tmp_path: Path) -> None:
    spec = str(_write_config(tmp_path, "whisper", _speech_configs()["whisper"]))
    loaded = load(spec, seq=12)
    assert type(loaded.model).__name__ == "WhisperForConditionalGeneration"  # not its decoder alone
    # 8 mel channels x 2 x 10 positions = 20 frames; 12 decoder tokens (--seq)
    assert {k: tuple(v.shape) for k, v in loaded.inputs.items()} == {"input_features": (1, 8, 20),
                                                                     "decoder_input_ids": (1, 12)}
    meta, cpu = mm.profile(loaded.model, loaded.inputs), mm.profile(*_cpu_build(spec, seq=12), device="cpu")
    assert (meta.totals.macs, meta.totals.flops) == (cpu.totals.macs, cpu.totals.flops)
    rows = {m.path: m.macs for m in meta.modules}
    # conv1: 8 mels -> 16 channels, kernel 3, padding 1, over 20 frames: 20 x 16 x 8 x 3 = 7,680
    # conv2: 16 -> 16, kernel 3, stride 2: 10 frames x 16 x 16 x 3 = 7,680
    assert rows["model.encoder.conv1"] == rows["model.encoder.conv2"] == 7680
    # proj_out (the LM head, tied to the token embedding): 12 tokens x 16 x 97 vocabulary = 18,624
    assert rows["proj_out"] == 18624
    with pytest.raises(InputError, match="max_target_positions 20"):
        load(spec, seq=21)


def test_weightless_build_keeps_small_buffers_real_and_parameters_on_meta(tmp_path: Path) -> None:
    from modelmeter.capture.values import MAX_ELEMENTS

    path = tmp_path / "config.json"
    transformers.MimiConfig().to_json_file(str(path))
    loaded = load(str(path), weightless=True)
    assert all(p.is_meta for p in loaded.model.parameters())
    conv = loaded.model.encoder.encoder_seanet.layers[0]
    # the values its constructor gave them: MimiConfig's first convolution has kernel_size 7 and stride 1,
    # so padding_total = kernel - stride = 6 samples
    assert conv.kernel_size.device.type == "cpu" and (int(conv.kernel_size), int(conv.stride)) == (7, 1)
    assert int(conv.padding_total) == 6
    assert all(b.is_meta == (b.numel() > MAX_ELEMENTS) for b in loaded.model.buffers())
    assert on_meta(load(str(path)).model)  # the default build stays all meta


def _cpu_build(spec: str, **kw: object) -> tuple[nn.Module, dict]:
    loaded = load(spec, device="cpu", **kw)
    return loaded.model, loaded.inputs


def test_waveform_and_video_inputs_from_the_config(tmp_path: Path) -> None:
    configs = _speech_configs()
    wav = str(_write_config(tmp_path, "wav2vec2", configs["wav2vec2"]))
    loaded = load(wav, batch=2)
    assert tuple(loaded.inputs["input_values"].shape) == (2, 16000)  # one second at 16 kHz (no rate in the config)
    meta, cpu = mm.profile(loaded.model, loaded.inputs), mm.profile(*_cpu_build(wav, batch=2), device="cpu")
    assert (meta.totals.macs, meta.totals.bytes_read) == (cpu.totals.macs, cpu.totals.bytes_read)
    # the first feature convolution: 1 -> 8 channels, kernel 10, stride 5 over 16,000 samples:
    # (16000 - 10) // 5 + 1 = 3,199 frames x 8 x 10 = 255,920 per waveform, 2 of them
    assert {m.path: m.macs for m in meta.modules}["feature_extractor.conv_layers.0.conv"] == 2 * 255_920
    with pytest.raises(InputError, match="a sequence length does not apply"):
        load(wav, seq=16)
    # an audio codec (its config has a codebook_size) takes mono audio with its channel dimension, at the
    # config's sampling rate: DAC's default config, 16 kHz
    dac = load(str(_write_config(tmp_path, "dac", transformers.DacConfig().to_dict())))
    assert tuple(dac.inputs["input_values"].shape) == (1, 1, 16000)
    assert mm.profile(dac.model, dac.inputs).totals.macs > 0
    video = load(str(_write_config(tmp_path, "videomae", configs["videomae"])))
    assert tuple(video.inputs["pixel_values"].shape) == (1, 4, 3, 16, 16)  # batch x frames x channels x S x S
    assert mm.profile(video.model, video.inputs).totals.macs > 0


# -- torchvision ---------------------------------------------------------------------------------------

# (name, input shape we build, the torchvision weights whose tables we compare with)
TORCHVISION = [
    ("resnet18", (1, 3, 224, 224), "ResNet18_Weights.IMAGENET1K_V1"),
    ("resnet50", (1, 3, 224, 224), "ResNet50_Weights.IMAGENET1K_V2"),
    ("mobilenet_v3_large", (1, 3, 224, 224), "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
    ("inception_v3", (1, 3, 299, 299), "Inception_V3_Weights.IMAGENET1K_V1"),
    ("googlenet", (1, 3, 224, 224), "GoogLeNet_Weights.IMAGENET1K_V1"),
    ("efficientnet_b3", (1, 3, 300, 300), "EfficientNet_B3_Weights.IMAGENET1K_V1"),
    ("vit_b_16", (1, 3, 224, 224), "ViT_B_16_Weights.IMAGENET1K_V1"),
    ("swin_v2_t", (1, 3, 256, 256), "Swin_V2_T_Weights.IMAGENET1K_V1"),
    ("regnet_y_400mf", (1, 3, 224, 224), "RegNet_Y_400MF_Weights.IMAGENET1K_V2"),
    ("deeplabv3_mobilenet_v3_large", (1, 3, 520, 520), "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1"),
    ("r3d_18", (1, 3, 16, 112, 112), "R3D_18_Weights.KINETICS400_V1"),
]


@pytest.mark.parametrize("name,shape,weights", TORCHVISION, ids=[t[0] for t in TORCHVISION])
def test_torchvision_matches_published_tables(name: str, shape: tuple, weights: str) -> None:
    # torchvision's weight tables list num_params and '_ops' (GMACs at the weights' input size, 3 decimals)
    meta = torchvision.models.get_weight(weights).meta
    loaded, r = meta_run(f"torchvision:{name}")
    assert loaded.kind == "vision" and loaded.name == name
    assert tuple(loaded.inputs.shape) == shape
    assert on_meta(loaded.model)
    assert r.totals.params == meta["num_params"]
    assert round(r.totals.macs / 1e9, 3) == pytest.approx(meta["_ops"], abs=1e-9)


def test_torchvision_batch_dtype_and_shape() -> None:
    loaded = load("torchvision:resnet18", batch=4, dtype="bf16")
    assert tuple(loaded.inputs.shape) == (4, 3, 224, 224) and loaded.inputs.dtype == torch.bfloat16
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.batch == 4
    custom = load("torchvision:resnet18", shape="2x3x64x64:fp16")
    assert tuple(custom.inputs.shape) == (2, 3, 64, 64) and custom.inputs.dtype == torch.float16


def test_torchvision_other_families_inputs() -> None:
    flow = load("torchvision:raft_small")
    assert isinstance(flow.inputs, tuple) and [tuple(t.shape) for t in flow.inputs] == [(1, 3, 224, 224)] * 2
    det = load("torchvision:ssdlite320_mobilenet_v3_large", batch=2)
    (images,) = det.inputs
    assert [tuple(t.shape) for t in images] == [(3, 800, 800)] * 2
    assert on_meta(det.model)


def test_torchvision_on_cpu_has_real_weights() -> None:
    loaded = load("torchvision:squeezenet1_1", device="cpu", shape="1x3x64x64")
    assert not on_meta(loaded.model) and loaded.inputs.device.type == "cpu"
    meta = load("torchvision:squeezenet1_1", shape="1x3x64x64")
    a = mm.profile(loaded.model, loaded.inputs, device="cpu").totals
    b = mm.profile(meta.model, meta.inputs).totals
    assert (a.params, a.macs, a.flops) == (b.params, b.macs, b.flops)


# -- python factories -------------------------------------------------------------------------------------

FACTORY_FILE = '''
import torch
from torch import nn

class Net(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.fc = nn.Linear(4, width)

    def forward(self, x):
        return self.fc(x)

def with_inputs():
    return Net(), torch.randn(3, 4)

def module_only():
    return Net()

def sized(batch, seq=None, device="meta"):
    return Net(width=seq or 5), {"x": torch.zeros(batch, 4)}

class ReadsValues(nn.Module):
    def __init__(self):
        super().__init__()
        width = int(torch.arange(5).sum())  # 10: needs real values while building
        self.fc = nn.Linear(4, width)

    def forward(self, x):
        return self.fc(x)

def reads_values():
    return ReadsValues(), torch.zeros(2, 4)

def broken():
    raise ValueError("no such checkpoint")

def not_a_model():
    return 42

NOT_CALLABLE = 3
'''


@pytest.fixture
def factory_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(textwrap.dedent(FACTORY_FILE))
    return path


def test_factory_returning_module_and_inputs(factory_file: Path) -> None:
    loaded = load(f"{factory_file}:with_inputs")
    assert loaded.kind == "custom" and loaded.name == "my_models:with_inputs"
    assert on_meta(loaded.model) and loaded.inputs.device.type == "meta"
    # 3 rows x 4 x 8 = 96 MACs; params 4*8 + 8 = 40
    r = mm.profile(loaded.model, loaded.inputs)
    assert (r.totals.macs, r.totals.params) == (96, 40)


def test_factory_module_only_takes_shape(factory_file: Path) -> None:
    loaded = load(f"{factory_file}:module_only", shape="5x4")
    assert tuple(loaded.inputs.shape) == (5, 4) and loaded.batch == 5
    assert mm.profile(loaded.model, loaded.inputs).totals.macs == 5 * 4 * 8
    with pytest.raises(InputError, match="returned only a module"):
        load(f"{factory_file}:module_only")


def test_factory_gets_batch_and_seq(factory_file: Path) -> None:
    loaded = load(f"{factory_file}:sized", batch=6, seq=3)
    assert tuple(loaded.inputs["x"].shape) == (6, 4)
    assert loaded.model.fc.out_features == 3


def test_factory_reading_values_falls_back_to_empty_weights(factory_file: Path) -> None:
    loaded = load(f"{factory_file}:reads_values")
    assert loaded.model.fc.out_features == 10
    assert on_meta(loaded.model) and loaded.inputs.device.type == "meta"


def test_factory_on_cpu(factory_file: Path) -> None:
    loaded = load(f"{factory_file}:with_inputs", device="cpu", dtype="fp64")
    assert not on_meta(loaded.model)
    assert loaded.model.fc.weight.dtype == torch.float64 and loaded.inputs.dtype == torch.float64


@pytest.mark.parametrize("func,match", [
    ("nope", "has no function 'nope'.*with_inputs"),
    ("broken", "factory .*broken raised ValueError: no such checkpoint"),
    ("not_a_model", "returned int: return a torch.nn.Module"),
    ("NOT_CALLABLE", "is a int, not a function"),
    ("1bad", "not a Python function name"),
])
def test_factory_errors(factory_file: Path, func: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        load(f"{factory_file}:{func}")


def test_factory_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="factory file .*missing.py' not found"):
        load(f"{tmp_path}/missing.py:make")
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_module_anywhere_xyz\n")
    with pytest.raises(SpecError, match="importing .*bad.py' failed: ModuleNotFoundError"):
        load(f"{bad}:make")
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def make(:\n")
    with pytest.raises(SpecError, match="SyntaxError"):
        load(f"{syntax}:make")
    with pytest.raises(SpecError, match="names no factory function"):
        load(f"{bad}")
    with pytest.raises(SpecError, match="names no function"):
        load(f"{bad}:")


def test_factory_sibling_imports_and_sys_path_restored(tmp_path: Path) -> None:
    (tmp_path / "helper_mod_xyz.py").write_text("WIDTH = 7\n")
    (tmp_path / "f.py").write_text(
        "import torch\nfrom torch import nn\nimport helper_mod_xyz\n"
        "def make():\n    return nn.Linear(2, helper_mod_xyz.WIDTH), torch.zeros(1, 2)\n"
    )
    before = list(sys.path)
    loaded = load(f"{tmp_path}/f.py:make")
    assert loaded.model.out_features == 7
    assert sys.path == before
    sys.modules.pop("helper_mod_xyz", None)


# -- spec parsing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("torchvision:resnet50", ("torchvision", "resnet50", None)),
    ("tv:resnet50", ("torchvision", "resnet50", None)),
    ("hf:gpt2", ("preset", "gpt2", None)),
    ("hf:LLAMA-3-8B", ("preset", "LLAMA-3-8B", None)),
    ("hf:path/to/config.json", ("config", "path/to/config.json", None)),
    ("hf:./cfg.json", ("config", "./cfg.json", None)),
    ("some/dir/config.json", ("config", "some/dir/config.json", None)),
    ("models/net.py:build", ("factory", "models/net.py", "build")),
    (r"C:\work\net.py:build", ("factory", r"C:\work\net.py", "build")),
    ("  torchvision:vit_b_16  ", ("torchvision", "vit_b_16", None)),
])
def test_parse_spec(spec: str, expected: tuple) -> None:
    p = parse_spec(spec)
    assert (p.source, p.target, p.function) == expected


def test_hf_folder_spec(tmp_path: Path) -> None:
    path = _write_config(tmp_path, "tiny-llama-dir", _tiny_configs()["llama"])
    for spec in (f"hf:{path.parent}", str(path.parent), str(path)):
        loaded = load(spec, seq=8)
        assert loaded.name == "tiny-llama-dir" and loaded.kind == "language"
        assert type(loaded.model).__name__ == "LlamaForCausalLM"


def test_hf_relative_folder_and_preset_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config(tmp_path, "mymodel", _tiny_configs()["gpt2"])
    (tmp_path / "gpt2").mkdir()  # a folder that happens to share a preset's name
    monkeypatch.chdir(tmp_path)
    assert parse_spec("hf:mymodel").source == "config"
    assert type(load("hf:mymodel", seq=8).model).__name__ == "GPT2LMHeadModel"
    assert parse_spec("hf:gpt2").source == "preset"


def test_preset_names_case_insensitive() -> None:
    assert load("hf:GPT2", seq=8).name == "gpt2"
    assert set(preset_names(include_test=False)) >= {
        "gpt2", "bert-base", "llama-2-7b", "llama-3-8b", "llama-3-70b", "mistral-7b", "mixtral-8x7b"}
    assert "llama-tiny" in preset_names() and "llama-tiny" not in preset_names(include_test=False)


@pytest.mark.parametrize("spec,match", [
    ("", "empty model spec"),
    ("   ", "empty model spec"),
    ("torchvision:", "names no model"),
    ("hf:", "names nothing"),
    ("foo:bar", "malformed model spec 'foo:bar'"),
    ("resnet50", "did you mean torchvision:resnet50"),
    ("gpt2", "did you mean hf:gpt2"),
    ("whatever", "malformed model spec 'whatever': use torchvision:NAME"),
])
def test_malformed_specs(spec: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        load(spec)


def test_unknown_torchvision_name_suggests_close_names() -> None:
    with pytest.raises(SpecError, match=r"unknown torchvision model 'resnet5': did you mean .*torchvision:resnet50"):
        load("torchvision:resnet5")
    with pytest.raises(SpecError, match="unknown torchvision model 'zzzz'"):
        load("torchvision:zzzz")


def test_unknown_preset_lists_presets() -> None:
    with pytest.raises(SpecError, match=r"unknown Hugging Face preset 'llama-3-9b': did you mean hf:llama-3-8b.*presets are .*gpt2"):
        load("hf:llama-3-9b")


# -- config.json errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,match", [
    ('{"model_type": "llama",', "is not valid JSON \\(line 1"),
    ("[1, 2]", "holds a JSON list, not an object"),
    ('{"hidden_size": 4}', 'has no "model_type"'),
    ('{"model_type": "lama"}', "model_type 'lama' is unknown .*did you mean llama"),
    ('{"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3}',
     "not a valid llama config: .*not a multiple of the number of attention heads"),
    ('{"model_type": "llama", "hidden_size": "big"}', "not a valid llama config: .*hidden_size"),
])
def test_invalid_config_json(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(SpecError, match=match):
        load(str(path))


def test_missing_config_json(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="config file .*nowhere/config.json' not found"):
        load(f"{tmp_path}/nowhere/config.json")
    with pytest.raises(SpecError, match="holds no config.json"):
        load(f"hf:{tmp_path}")


def test_error_messages_are_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3}')
    for spec in (str(path), "torchvision:resnet5", "hf:nope", "x.py"):
        with pytest.raises(ModelmeterError) as info:
            load(spec)
        assert "\n" not in str(info.value)


# -- inputs: shape strings, sequence length, batch ------------------------------------------------------------

def test_parse_shapes() -> None:
    assert parse_shape("1x3x224x224") == InputSpec((1, 3, 224, 224), None)
    assert parse_shape("1x3x224x224:fp16") == InputSpec((1, 3, 224, 224), torch.float16)
    assert parse_shape(" 1X128 : int64 ") == InputSpec((1, 128), torch.int64)
    assert parse_shapes("2x3x32x32,2x10:int64") == [InputSpec((2, 3, 32, 32)), InputSpec((2, 10), torch.int64)]
    assert str(parse_shape("4x8:bf16")) == "4x8:bf16" and str(parse_shape("7")) == "7"


@pytest.mark.parametrize("text,match", [
    ("1x3xfoo", "malformed input shape '1x3xfoo'"),
    ("1x0x3", "has a zero dimension"),
    ("1x-3", "malformed input shape"),
    ("1x3:fp99", "unknown dtype in input shape '1x3:fp99'"),
    ("1x3:", "ends with ':' but names no dtype"),
    ("", "empty input shape"),
    ("1x3,", "empty input shape"),
    ("1xx3", "malformed input shape"),
])
def test_malformed_shapes(text: str, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load("torchvision:resnet18", shape=text)


def test_language_inputs() -> None:
    assert tuple(load("hf:llama-tiny", batch=3, seq=20).inputs["input_ids"].shape) == (3, 20)
    shaped = load("hf:llama-tiny", shape="4x64:int32")
    assert tuple(shaped.inputs["input_ids"].shape) == (4, 64) and shaped.inputs["input_ids"].dtype == torch.int32
    assert (shaped.batch, shaped.seq) == (4, 64)
    t5 = load("hf:t5-small", batch=2, seq=10)
    assert {k: tuple(v.shape) for k, v in t5.inputs.items()} == {"input_ids": (2, 10), "decoder_input_ids": (2, 10)}
    t5s = load("hf:t5-small", shape="1x32,1x4")
    assert {k: tuple(v.shape) for k, v in t5s.inputs.items()} == {"input_ids": (1, 32), "decoder_input_ids": (1, 4)}


@pytest.mark.parametrize("kwargs,match", [
    ({"seq": 2048}, "sequence length 2048 exceeds max_position_embeddings 1024"),
    ({"shape": "1x4096"}, "exceeds max_position_embeddings 1024"),
    ({"shape": "1x3x224"}, "token ids have shape batch x sequence"),
    ({"shape": "1x8:fp16"}, "token ids are integers"),
    ({"shape": "1x8,1x8"}, "takes 1 token input"),
    ({"shape": "1x8", "seq": 8}, "either a sequence length"),
    ({"batch": 0}, "batch size must be a positive integer"),
    ({"seq": -1}, "sequence length must be a positive integer"),
    ({"dtype": "int8"}, "model dtype must be a floating type"),
    ({"dtype": "fp12"}, "unknown model dtype 'fp12'"),
    ({"device": "gpu0"}, "unknown device 'gpu0'"),
])
def test_bad_language_inputs(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        load("hf:gpt2", **kwargs)


def test_seq_for_vision_model_is_an_error() -> None:
    with pytest.raises(InputError, match="sequence length does not apply"):
        load("torchvision:resnet18", seq=128)


# -- optional dependencies and no downloads -----------------------------------------------------------------------

def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(OptionalDependencyError, match=r"pip install 'modelmeter\[hf\]'"):
        load("hf:gpt2")


def test_missing_torchvision_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(OptionalDependencyError, match=r"pip install 'modelmeter\[vision\]'"):
        load("torchvision:resnet18")


def test_nothing_is_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for spec in ("hf:gpt2", "hf:bert-base", "hf:mixtral-8x7b", "torchvision:resnet18", "torchvision:deeplabv3_resnet50"):
        load(spec, seq=8) if spec.startswith("hf:") else load(spec)

"""KV cache of decoder LMs, and the Llama-3-8B training step on meta tensors."""

from __future__ import annotations

import time

import pytest
import torch

from modelmeter.analysis.memory import is_decoder_lm, kv_cache, kv_geometry, memory_profile
from modelmeter.errors import InputError

transformers = pytest.importorskip("transformers")


def llama3_8b_config():
    return transformers.LlamaConfig(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000,
    )


LLAMA3_8B_PARAMS = 8_030_261_248  # published size; also asserted below from the meta build


def test_llama3_8b_kv_bytes_per_token_exact() -> None:
    # 32 layers x 2 (K and V) x 8 KV heads x head_dim 128 (4096 / 32) x 2 B (bf16) = 131,072 B
    k = kv_cache(llama3_8b_config(), dtype="bf16", context=8192, batch=4)
    assert (k.layers, k.kv_heads, k.head_dim, k.itemsize_bytes) == (32, 8, 128, 2)
    assert k.bytes_per_token == 32 * 2 * 8 * 128 * 2 == 131_072
    assert k.bytes_per_sequence == 131_072 * 8192 == 1 << 30  # 1 GiB per 8k-token sequence
    assert k.total_bytes == 4 << 30
    assert k.model_max_context == 8192


def test_llama3_8b_longest_context_in_24gib() -> None:
    # weights at bf16: 8,030,261,248 x 2 = 16,060,522,496 B; 24 GiB = 25,769,803,776 B;
    # left for the cache: 9,709,281,280 B; / 131,072 B per token = 74,075 tokens (floor), batch 1
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(llama3_8b_config())
    assert sum(p.numel() for p in model.parameters()) == LLAMA3_8B_PARAMS
    k = kv_cache(model, dtype="bf16", memory="24GiB")
    assert k.weights_bytes == LLAMA3_8B_PARAMS * 2
    assert k.max_context == (24 * 2**30 - LLAMA3_8B_PARAMS * 2) // 131_072 == 74_075
    assert any("beyond" in n for n in k.notes)  # more than the 8192 positions it was trained for
    # batch 8 shares the same free memory: 74,075 // 8 per sequence (floor of the whole division)
    assert kv_cache(model, dtype="bf16", memory="24GiB", batch=8).max_context == 9_709_281_280 // (131_072 * 8)
    # from the bare config the model is built on meta to count the weights: same answer
    assert kv_cache(llama3_8b_config(), dtype="bf16", memory="24GiB").max_context == 74_075


def test_gpt2_kv_from_its_own_attribute_names() -> None:
    # GPT-2 small: n_layer 12, n_head 12, n_embd 768 -> head_dim 64, no GQA; fp32: 12*2*12*64*4 = 73,728 B
    cfg = transformers.GPT2Config()
    assert kv_geometry(cfg) == (12, 12, 64)
    k = kv_cache(cfg, dtype="fp32")
    assert k.bytes_per_token == 73_728
    assert k.context == 1024  # n_positions


def test_kv_errors() -> None:
    with pytest.raises(InputError, match="num_hidden_layers"):
        kv_geometry(object())
    with pytest.raises(InputError, match="context"):
        kv_cache(llama3_8b_config(), context=0)
    with pytest.raises(InputError, match="batch"):
        kv_cache(llama3_8b_config(), batch=0)


def test_decoder_detection() -> None:
    with torch.device("meta"):
        gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=2))
        bert = transformers.BertModel(transformers.BertConfig(num_hidden_layers=2))
    assert is_decoder_lm(gpt)
    assert not is_decoder_lm(bert)
    assert not is_decoder_lm(torch.nn.Linear(2, 2))


def test_llama3_8b_adamw_training_step_on_meta_in_seconds() -> None:
    # batch 1, seq 2048, bf16 weights, AdamW, fp32 master weights: no weight is allocated
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(llama3_8b_config())
    ids = torch.zeros(1, 2048, dtype=torch.long)
    t0 = time.perf_counter()
    r = memory_profile(model, {"input_ids": ids}, train=True, optimizer="adamw", dtype="bf16")
    elapsed = time.perf_counter() - t0
    n = LLAMA3_8B_PARAMS
    assert r.params_bytes == 2 * n  # bf16
    assert r.gradients_bytes == 2 * n
    # exp_avg + exp_avg_sq at bf16 + one fp32 step counter per parameter tensor (32 x 9 + 3 = 291)
    assert r.optimizer_state_bytes == 2 * 2 * n + 4 * 291
    assert r.steady_optimizer_state_bytes == 2 * 4 * n + 4 * 291  # at fp32 beside fp32 master weights
    assert r.master_weights_bytes == 4 * n
    # steady state: 2 + 2 + 8 + 4 = 16 B per parameter (128.5 GB) plus activations
    assert r.steady_peak_bytes > 16 * n
    assert r.activation_peak_bytes > 2048 * 128256 * 2  # at least the bf16 logits
    assert r.kv_cache is not None and r.kv_cache.bytes_per_token == 131_072
    assert elapsed < 60, f"took {elapsed:.1f} s"

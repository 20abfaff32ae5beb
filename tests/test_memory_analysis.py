"""Memory analysis: peaks derived by hand, checkpointing, optimizer state, frozen parameters, autocast."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint as cp
from torch import nn

from modelmeter.analysis.memory import (
    batch_size_of,
    inputs_at_batch,
    memory_profile,
    search_max_batch,
    training_memory_per_param,
)
from modelmeter.errors import InputError

F32 = 4


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


# parameters of mlp(): (8*16 + 16 + 16*4 + 4) * 4 B = 212 * 4 = 848 B; input 2x8 fp32 = 64 B
MLP_PARAMS = (8 * 16 + 16 + 16 * 4 + 4) * F32
MLP_INPUT = 2 * 8 * F32


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_mlp_inference_peak_exact(device: str) -> None:
    # live after each op: 0 t: 848 + 64 = 912; 1 addmm h1 (2x16x4 = 128 B): 1040; 2 relu r (128 B)
    # while h1 is still referenced: 1168 <- peak; 3 t (h1 gone): 1040; 4 addmm y (2x4x4 = 32 B): 1072
    r = memory_profile(mlp(), torch.randn(2, 8), device=device)
    assert r.timeline.total_bytes == [912, 1040, 1168, 1040, 1072]
    assert r.peak_bytes == MLP_PARAMS + MLP_INPUT + 2 * 128 == 1168
    assert (r.peak.event_index, r.peak.op, r.peak.module) == (2, "aten.relu.default", "1")
    assert r.activation_peak_bytes == 256
    assert r.peak.by_category_bytes == {
        "parameters": 848, "buffers": 0, "inputs": 64, "activations": 256, "gradients": 0,
        "optimizer_state": 0, "temporaries": 0}
    assert r.steady_peak_bytes == r.peak_bytes  # inference: nothing persists between calls
    assert [(t.op, t.size_bytes) for t in r.largest_at_peak] == [
        ("aten.addmm.default", 128), ("aten.relu.default", 128), ("", 64)]


def test_mlp_training_peak_exact() -> None:
    # forward saves x (input) and r (relu result, for relu's and the 2nd linear's backward); y (32 B)
    # is the output the capture keeps, loss = y.sum() (4 B). The peak is the layer-0 bias gradient
    # (sum over the batch, op 24), when alive are:
    #   parameters 848 + input 64
    #   activations: y 32 + loss 4                                    = 36 (r freed after layer 2/relu backward)
    #   gradients: dW2 4x16x4=256, db2 16, dW1 16x8x4=512, db1 64     = 848 (all four exist now)
    #   temporaries: grad of the loss (ones, 4 B, alive through backward) + grad of relu input (2x16x4 = 128)
    # total 848 + 64 + 36 + 848 + 132 = 1928
    r = memory_profile(mlp(), torch.randn(2, 8), train=True)
    assert r.peak_bytes == 1928
    assert r.peak.by_category_bytes == {
        "parameters": 848, "buffers": 0, "inputs": 64, "activations": 36, "gradients": 848,
        "optimizer_state": 0, "temporaries": 132}
    assert (r.peak.op, r.peak.module, r.peak.phase) == ("aten.sum.dim_IntList", "0", "backward")
    assert r.gradients_bytes == MLP_PARAMS


class Block(nn.Module):
    def __init__(self, d: int, checkpointed: bool) -> None:
        super().__init__()
        self.checkpointed = checkpointed
        self.l1 = nn.Linear(d, d, bias=False)
        self.act = nn.ReLU()
        self.l2 = nn.Linear(d, d, bias=False)

    def inner(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(self.act(self.l1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointed:
            return cp.checkpoint(self.inner, x, use_reentrant=False)
        return self.inner(x)


def blocks(checkpointed: bool, k: int = 4, d: int = 64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[Block(d, checkpointed) for _ in range(k)])


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_checkpointing_drops_the_training_peak_by_the_expected_amount(device: str) -> None:
    # 4 blocks of Linear(64,64) -> ReLU -> Linear(64,64), no bias, batch 256, fp32.
    # A = one activation = 256*64*4 = 65536 B; W = one weight = 64*64*4 = 16384 B = A/4; 8 weights = 2A.
    # Without checkpointing the forward keeps per block its output y_k (the next block's input, saved by
    # its first linear; y_3 is the model output) and its relu result r_k: 8A. The peak is block 3's relu
    # backward: 2A params + A input + 8A activations + W (dW of 3.l2) + temporaries 2A (grad of r_3 and
    # the relu backward output) + 8 B (loss and its gradient) = 13.25A + 8.
    # With checkpointing only the block outputs are kept (4A); block 3's backward first recomputes
    # h_3 and r_3 (r_3 stays, A), so the peak there is 2A + A + 4A + W + 3A + 8 = 10.25A + 8.
    # Drop = 4 relu results no longer saved - 1 recomputed = 3A = 196,608 B.
    a, w = 256 * 64 * 4, 64 * 64 * 4
    plain = memory_profile(blocks(False), torch.randn(256, 64), train=True, device=device)
    ckpt = memory_profile(blocks(True), torch.randn(256, 64), train=True, device=device)
    assert plain.peak_bytes == 13 * a + w + 8 == 868_360
    assert ckpt.peak_bytes == 10 * a + w + 8 == 671_752
    assert plain.peak_bytes - ckpt.peak_bytes == 3 * a == 196_608
    assert plain.peak.by_category_bytes["activations"] == 8 * a + 4
    assert ckpt.peak.by_category_bytes["activations"] == 4 * a + 4
    assert ckpt.peak.by_category_bytes["temporaries"] == 3 * a + 4
    # the recomputation is visible: block 3's first linear runs again in backward
    assert ckpt.ops > plain.ops


def frozen_net() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    for p in m[0].parameters():
        p.requires_grad_(False)  # frozen: (32*64 + 64) = 2112 params
    return m


# trainable params: 64*10 + 10 = 650 in 2 tensors; frozen: 2112
TRAINABLE, TRAINABLE_TENSORS = 64 * 10 + 10, 2


def test_adam_state_is_two_fp32_moments_per_trainable_parameter() -> None:
    # Adam keeps exp_avg and exp_avg_sq (2 x 4 B per trainable parameter) plus one fp32 step
    # counter per parameter tensor: 2 * 650 * 4 + 2 * 4 = 5208 B; frozen parameters get none.
    for opt in ("adam", "adamw"):
        r = memory_profile(frozen_net(), torch.randn(4, 32), train=True, optimizer=opt)
        assert r.optimizer_state_bytes == 2 * TRAINABLE * F32 + TRAINABLE_TENSORS * 4 == 5208
        assert r.gradients_bytes == TRAINABLE * F32  # no .grad for frozen parameters
        assert r.params_bytes == (TRAINABLE + 32 * 64 + 64) * F32


def test_sgd_state() -> None:
    plain = memory_profile(frozen_net(), torch.randn(4, 32), train=True, optimizer="sgd")
    momentum = memory_profile(frozen_net(), torch.randn(4, 32), train=True, optimizer="sgd-momentum")
    assert plain.optimizer_state_bytes == 0
    assert momentum.optimizer_state_bytes == TRAINABLE * F32  # one momentum buffer per parameter


def test_steady_state_keeps_optimizer_state_alive() -> None:
    # in a later step the Adam moments exist from the start: the steady peak is at least the first
    # step's peak, and exactly its maximum of (live + moments not yet allocated at that op)
    r = memory_profile(mlp(), torch.randn(2, 8), train=True, optimizer="adam")
    tl = r.timeline
    opt = tl.bytes_by_category["optimizer_state"]
    expect = max(t + r.optimizer_state_bytes - o for t, o in zip(tl.total_bytes, opt))
    assert r.steady_peak_bytes == expect >= r.peak_bytes
    # first step: no optimizer state during forward
    assert opt[0] == 0 and opt[-1] == r.optimizer_state_bytes


def test_bf16_training_adds_fp32_master_weights_and_state() -> None:
    # bf16 weights: params 848/2 = 424 B; master weights 4 B x 212 = 848 B; Adam moments traced at
    # bf16 (2 x 212 x 2 = 848 B) are counted at fp32 in the steady state (+848 B)
    r = memory_profile(mlp(), torch.randn(2, 8), train=True, optimizer="adam", dtype="bf16")
    assert r.params_bytes == 212 * 2
    assert r.master_weights_bytes == 212 * 4
    assert r.optimizer_state_bytes == 2 * 212 * 2 + 4 * 4  # + 4 fp32 step counters
    assert r.steady_optimizer_state_bytes == 2 * 212 * 4 + 4 * 4
    off = memory_profile(mlp(), torch.randn(2, 8), train=True, optimizer="adam", dtype="bf16", master_weights=False)
    assert off.master_weights_bytes == 0
    assert r.steady_peak_bytes - off.steady_peak_bytes == 212 * 4 + 2 * 212 * 2
    # budget per parameter: 2 (bf16 weight) + 2 (grad) + 4 + 4 (fp32 moments) + 4 (master) = 16 B
    assert training_memory_per_param("adamw", master_weights=True, dtype_bytes=2) == 16


def test_autocast_emulation_on_meta_matches_real_cpu_autocast() -> None:
    # on CPU the real torch.autocast runs; on meta the emulation. For linear/relu (in both policies)
    # the timelines must agree op for op, inference and training.
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64))
    x = torch.randn(32, 64)
    for train in (False, True):
        meta = memory_profile(m, x, train=train, autocast="bf16")
        real = memory_profile(m, x, train=train, autocast="bf16", device="cpu")
        assert meta.timeline.total_bytes == real.timeline.total_bytes
        assert meta.peak_bytes == real.peak_bytes


def test_autocast_with_checkpointing_on_meta_matches_real_cpu_autocast() -> None:
    # checkpointing recomputes each block in backward; the real autocast is re-entered there by
    # torch.utils.checkpoint, the emulation by a hook on the recomputed submodules. Same peak; the
    # timelines differ only where autocast caches a weight cast across submodules of one recomputation
    # (block 0, whose input needs no gradient: one bf16 64x64 weight = 8192 B for a few ops).
    x = torch.randn(256, 64)
    meta = memory_profile(blocks(True), x, train=True, autocast="bf16")
    real = memory_profile(blocks(True), x, train=True, autocast="bf16", device="cpu")
    assert meta.peak_bytes == real.peak_bytes
    assert meta.ops == real.ops
    diffs = [b - a for a, b in zip(meta.timeline.total_bytes, real.timeline.total_bytes)]
    assert set(diffs) <= {0, 64 * 64 * 2}


def test_autocast_halves_saved_activations() -> None:
    # 3 linears 512->512 at batch 64: autocast saves bf16 activations (2 B instead of 4), plus bf16
    # copies of the weights (cached for the forward, saved for backward)
    torch.manual_seed(0)
    m = nn.Sequential(*[nn.Linear(512, 512) for _ in range(3)])
    x = torch.randn(64, 512)
    fp32 = memory_profile(m, x, train=True)
    amp = memory_profile(m, x, train=True, autocast="bf16")
    # at the end of the forward, fp32 keeps the 3 linear outputs (the first two saved as inputs of
    # the next linear, the last one is the output): 3 x 64x512x4 = 393,216 B
    end_fwd = [s.last for s in fp32.timeline.phases if s.phase == "forward"][0]
    assert fp32.timeline.bytes_by_category["activations"][end_fwd] == 3 * 64 * 512 * 4
    # autocast keeps: bf16 input copy, 3 bf16 outputs and 3 bf16 weight copies + 3 bf16 bias copies
    end_amp = [s.last for s in amp.timeline.phases if s.phase == "forward"][0]
    expect = 64 * 512 * 2 + 3 * 64 * 512 * 2 + 3 * (512 * 512 + 512) * 2
    assert amp.timeline.bytes_by_category["activations"][end_amp] == expect
    assert amp.autocast == "bfloat16"


def test_batch_resizing_and_budget_rows_grow_with_batch() -> None:
    x = {"a": torch.randn(4, 8), "b": torch.randn(3), "c": 7}
    assert batch_size_of(x) == 4
    y = inputs_at_batch(x, 16, 4)
    assert y["a"].shape == (16, 8) and y["a"].device.type == "meta"
    assert y["b"].shape == (3,) and y["c"] == 7
    r = memory_profile(mlp(), torch.randn(2, 8), train=True, optimizer="sgd-momentum", batch_sizes=[1, 4, 16])
    assert [b.batch for b in r.budget] == [1, 4, 16]
    for b in r.budget:
        assert b.params_bytes == MLP_PARAMS and b.gradients_bytes == MLP_PARAMS
        assert b.optimizer_state_bytes == MLP_PARAMS
        assert b.inputs_bytes == b.batch * 8 * F32
        assert b.peak_bytes <= b.sum_bytes  # the timeline peak never exceeds the sum of maxima
        assert b.sum_bytes == (b.params_bytes + b.buffers_bytes + b.inputs_bytes + b.gradients_bytes
                               + b.optimizer_state_bytes + b.master_weights_bytes + b.activations_peak_bytes)
    assert r.budget[0].peak_bytes < r.budget[1].peak_bytes < r.budget[2].peak_bytes


def test_search_max_batch_on_an_affine_curve() -> None:
    # peak(b) = 1000 + 37 b: the largest b with peak <= 10_000 is floor(9000 / 37) = 243
    calls = []

    def peak(b: int) -> int:
        calls.append(b)
        return 1000 + 37 * b

    f = search_max_batch(peak, 10_000)
    assert f.max_batch == 243
    assert len(calls) <= 5  # 1, 2, then the extrapolated guess and its neighbour
    assert any(p.batch == 244 and not p.fits for p in f.probes)


def test_search_max_batch_piecewise_and_none_fits() -> None:
    # flat until 50 (another phase dominates), then steep: still exact
    def peak(b: int) -> int:
        return 5000 if b <= 50 else 5000 + 400 * (b - 50)

    assert search_max_batch(peak, 9_000).max_batch == 60  # 5000 + 400*10 = 9000
    assert search_max_batch(lambda b: 100 * b, 50).max_batch == 0
    with pytest.raises(InputError, match="does not grow"):
        search_max_batch(lambda b: 1, 10, max_probes=8)


def test_memory_profile_fits_search_agrees_with_direct_captures() -> None:
    r = memory_profile(mlp(), torch.randn(2, 8), fits=3000)
    assert r.fit is not None and r.fit.max_batch >= 1
    b = r.fit.max_batch
    at = memory_profile(mlp(), torch.randn(b, 8)).steady_peak_bytes
    over = memory_profile(mlp(), torch.randn(b + 1, 8)).steady_peak_bytes
    assert at <= 3000 < over


def test_memory_profile_validates_arguments() -> None:
    with pytest.raises(InputError, match="nn.Module"):
        memory_profile("resnet", torch.randn(1))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="batch sizes"):
        memory_profile(mlp(), torch.randn(2, 8), batch_sizes=[0])
    with pytest.raises(InputError, match="memory size"):
        memory_profile(mlp(), torch.randn(2, 8), fits="lots")
    with pytest.raises(InputError, match="autocast"):
        memory_profile(mlp(), torch.randn(2, 8), autocast="fp32")
    with pytest.raises(InputError, match="optimizer"):
        memory_profile(mlp(), torch.randn(2, 8), optimizer="adam")  # needs train=True


def test_the_users_model_is_untouched() -> None:
    m = blocks(True, k=2, d=8)
    before = {n: p.clone() for n, p in m.named_parameters()}
    memory_profile(m, torch.randn(4, 8), train=True, optimizer="adamw", autocast="bf16")
    for n, p in m.named_parameters():
        assert p.grad is None and p.device.type == "cpu" and torch.equal(p, before[n])
    assert torch.func.functional_call.__module__.startswith("torch")  # the swap is undone


class Attention(nn.Module):
    """One causal self-attention with attention dropout: the case CPU runs with the math kernel."""

    def __init__(self, d: int = 32, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(d, 3 * d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        return nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)


def test_attention_as_run_counts_what_the_math_kernel_keeps() -> None:
    # batch 2, 4 heads, seq 64: one attention matrix = 2*4*64*64 fp32 = 131,072 B. The math kernel
    # (meta tensors; CPU whenever dropout > 0) saves for backward the softmax (1 matrix), the dropout
    # mask (1, kept as fp32 by the math kernel) and the dropped weights (1); a fused kernel keeps none.
    torch.manual_seed(0)
    m, x = Attention(), torch.randn(2, 64, 32)
    fused = memory_profile(m, x, train=True, attention="fused")
    as_run = memory_profile(m, x, train=True, attention="as-run")
    cpu = memory_profile(m, x, train=True, device="cpu")  # auto on a real device = as-run
    loss = [s.first for s in fused.timeline.phases if s.phase == "loss"][0]
    matrix = 2 * 4 * 64 * 64 * 4
    # after the forward both keep q, k, v (3 x 2*4*64*8*4 B: the fused kernel's saved inputs, the math
    # kernel's contiguous copies) and the output; the math kernel also the 3 matrices
    act = "activations"
    assert as_run.timeline.bytes_by_category[act][loss] - fused.timeline.bytes_by_category[act][loss] == 3 * matrix
    # inside the fused op the math kernel's peak is higher still: scores, masked scores, softmax, ...
    assert as_run.peak_bytes > fused.peak_bytes + 3 * matrix
    assert as_run.timeline.total_bytes == cpu.timeline.total_bytes  # meta's math kernel = CPU's choice here
    assert any("inside modelmeter.sdpa" in t.op for t in as_run.largest_at_peak)
    assert any("fused kernel" in n for n in fused.notes)
    with pytest.raises(InputError, match="attention"):
        memory_profile(m, x, attention="flash")


def test_inner_storages_are_dated_at_their_fused_op() -> None:
    from modelmeter.analysis.memory import capture_with_lifetimes

    torch.manual_seed(0)
    trace, records = capture_with_lifetimes(Attention(), torch.randn(2, 64, 32), train=True, attention="as-run")
    sdpa = [e.index for e in trace.events if e.op == "modelmeter.sdpa"]
    sdpa_bwd = [e.index for e in trace.events if e.op == "modelmeter.sdpa_backward"]
    inner = [r for r in records if r.seen_as == "inner"]
    assert inner and {r.start for r in inner} <= set(sdpa) | set(sdpa_bwd)
    # every recorded op's outputs are claimed by that op, not left as inner storages
    for r in records:
        if r.seen_as == "output" and r.start >= 0:
            assert r.op == trace.events[r.start].op or r.op.startswith("modelmeter.")

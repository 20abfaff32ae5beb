"""Counts are identical on meta (no weights) and on CPU (real tensors): MACs and FLOPs always,
bytes where the two runs dispatch to kernels with the same output layouts."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import modelmeter as mm
from modelmeter.capture import native

transformers = pytest.importorskip("transformers")


def _counts(r):
    t = r.totals
    return t.macs, t.flops, t.bytes_read, t.bytes_written


def _per_op(r):
    out = {}
    for e in r.events:
        k = (e.op, e.phase)
        a = out.setdefault(k, [0, 0, 0])
        a[0] += e.macs
        a[1] += e.flops
        a[2] += e.bytes_read + e.bytes_written
    return out


@pytest.mark.parametrize(("train", "optimizer"), [(False, None), (True, "adamw")])
def test_resnet18_identical(train, optimizer):
    m = torchvision.models.resnet18()
    x = torch.randn(1, 3, 64, 64)
    a = mm.profile(m, x, device="meta", train=train, optimizer=optimizer)
    b = mm.profile(m, x, device="cpu", train=train, optimizer=optimizer)
    assert _counts(a) == _counts(b)
    assert _per_op(a) == _per_op(b)


def _lm(name):
    if name == "gpt2":
        cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=1000, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)
        return transformers.GPT2LMHeadModel(cfg)
    if name == "bert":
        cfg = transformers.BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                      intermediate_size=128, vocab_size=1000)
        return transformers.BertModel(cfg)
    cfg = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=128, vocab_size=1000)
    return transformers.LlamaForCausalLM(cfg)


IDS = {"input_ids": torch.randint(0, 1000, (2, 16))}


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("train", [False, True])
def test_language_models_macs_and_flops_identical(name, train):
    m = _lm(name)
    a = mm.profile(m, IDS, device="meta", train=train, optimizer="adamw" if train else None)
    b = mm.profile(m, IDS, device="cpu", train=train, optimizer="adamw" if train else None)
    assert (a.totals.macs, a.totals.flops) == (b.totals.macs, b.totals.flops)
    assert a.uncounted_ops == b.uncounted_ops == []


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_language_models_bytes_identical_inference(name):
    # the (B, L, H, d) queries of Hugging Face attention: SDPA's output layout agrees on meta and CPU,
    # so the .transpose(1, 2).contiguous() after attention copies in neither mode
    m = _lm(name)
    a = mm.profile(m, IDS, device="meta")
    b = mm.profile(m, IDS, device="cpu")
    assert _counts(a) == _counts(b)


@pytest.mark.parametrize("name", ["gpt2", "bert", "llama"])
def test_language_models_bytes_identical_training(name):
    # gradients of the CPU flash kernel are (B, L, H, d) and BERT's dropout sends the CPU to the math
    # kernel: the meta run must take the same kernel to get the same layouts, hence the same copies
    m = _lm(name)
    a = mm.profile(m, IDS, device="meta", train=True)
    b = mm.profile(m, IDS, device="cpu", train=True)
    assert _counts(a) == _counts(b)


class ContiguousHeads(nn.Module):
    """q, k, v made contiguous in (B, H, L, d): the CPU flash kernel returns (B, H, L, d) too."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(32, 96)

    def forward(self, x):
        q, k, v = self.qkv(x).view(2, 8, 3, 4, 8).permute(2, 0, 3, 1, 4).contiguous().unbind(0)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous()


@pytest.mark.parametrize("train", [False, True])
def test_contiguous_heads_bytes_identical(train):
    x = torch.randn(2, 8, 32)
    a = mm.profile(ContiguousHeads(), x, device="meta", train=train)
    b = mm.profile(ContiguousHeads(), x, device="cpu", train=train)
    assert (a.totals.macs, a.totals.flops) == (b.totals.macs, b.totals.flops)
    assert _counts(a) == _counts(b)


def test_inputs_that_require_grad_on_meta():
    # the input is moved to meta as a new leaf: its gradient is computed on meta, not copied back
    lin = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    r = mm.profile(lin, x, train=True, device="meta")
    # backward: grad input (2,4)@(4,4) = 32 + grad weight (4,2)@(2,4) = 32 MACs
    assert r.totals.phases["backward"].macs == 64


class _AssignAndBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4, 4))  # a weight: its values are not known on meta

    def forward(self, x):  # x: 4x4 fp32
        m = torch.zeros(4, 4, device=x.device)
        m[1:3, :2] = 5  # CPU: lift_fresh + fill_; meta (and CUDA): scalar_tensor + view + expand + copy_
        m[2:2] = 7  # an empty slice (Swin3d's shifted-window mask has some): nothing read, nothing written
        if (self.w > -100).all():  # a read of a weight's values: on meta answered True, as CPU finds it
            m = m * 2
        return x + m


def test_assignment_and_data_dependent_branch_count_the_same_on_meta_and_cpu() -> None:
    # PyTorch dispatches `m[1:3, :2] = 5` differently per device, and a meta run cannot read
    # `.all()`'s value; the counts must not notice. Bytes by hand (fp32 4 B, bool 1 B):
    #   zeros            read 0,   write 4*4*4 = 64
    #   m[1:3, :2] = 5   read 4 (the scalar, once), write 2*2*4 = 16 (the 0-dim scalar made: 0)
    #   m[2:2] = 7       read 0, write 0 (no element to fill)
    #   w > -100         read 64,  write 16 (bool)
    #   .all()           read 16,  write 1
    #   bool(...)        read 1 (the value read back), write 0
    #   m * 2            read 64,  write 64
    #   x + m            read 128, write 64
    # read 4 + 64 + 16 + 1 + 64 + 128 = 277; written 64 + 16 + 16 + 1 + 64 + 64 = 225
    x = torch.randn(4, 4)
    a = mm.profile(_AssignAndBranch(), x, device="meta")
    b = mm.profile(_AssignAndBranch(), x, device="cpu")
    assert (a.totals.bytes_read, a.totals.bytes_written) == (277, 225)
    assert _counts(a) == _counts(b)
    assert {e.op for e in a.events} >= {"aten.scalar_tensor.default", "aten.copy_.default"}
    assert {e.op for e in b.events} >= {"aten.lift_fresh.default", "aten.fill_.Tensor"}
    assert any("data-dependent" in n for n in a.notes)


def test_swin_counts_identical() -> None:
    # Swin's shifted-window mask is built with slice assignments (`attn_mask[h, w] = count`)
    m = torchvision.models.swin_t()
    x = torch.randn(1, 3, 64, 64)
    assert _counts(mm.profile(m, x, device="meta")) == _counts(mm.profile(m, x, device="cpu"))


def test_boolean_mask_of_unknown_values_selects_every_element_on_meta_and_is_noted() -> None:
    class Masked(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.tensor([[1.0, -1.0, 2.0, -2.0]] * 4))  # 8 positive

        def forward(self, x):  # x: 4x4 fp32
            return x[self.w > 0].sum()

    # meta (a weight's values are not known): the mask selects all 16 elements: index reads x (64 B)
    # and the mask (16 B), writes 16 x 4 = 64 B
    r = mm.profile(Masked(), torch.randn(4, 4))
    index = next(e for e in r.events if e.op == "aten.index.Tensor")
    assert (index.bytes_read, index.bytes_written) == (80, 64)
    assert any("x[mask]" in n and "(root)" in n for n in r.notes)
    # CPU: the real count, 8 selected: writes 8 x 4 = 32 B, and no note
    c = mm.profile(Masked(), torch.randn(4, 4), device="cpu")
    assert next(e for e in c.events if e.op == "aten.index.Tensor").bytes_written == 32
    assert c.notes == []


class _ReadsInputValues(nn.Module):
    """Reads the values of its input and of tensors made from it: on meta they are known."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)

    def forward(self, ids):  # ids: 2x6 int64, 0 = padding
        mask = torch.ones_like(ids).masked_fill(ids == 0, 0)  # a mask built from the input, as HF does
        if bool((mask == 1).all()):  # all real tokens: skip the masking (never taken below)
            return self.emb(ids).sum()
        n = int(mask.sum(dim=1).max())  # the longest row: 5
        h = self.emb(ids[:, :n])  # 2x5x4
        keep = mask[:, :n].bool()
        if 0 in ids[:, [0, -1]]:  # a list index (made out of the dispatcher's sight) read back
            h = h * 2
        return h[keep].sum()  # 9 rows of 4 selected


def test_values_of_inputs_are_known_on_meta() -> None:
    # meta follows the path the values take on CPU: the padding branch, a slice of length 5, a
    # boolean selection of 9 of 10 rows, and no data-dependent read noted
    ids = torch.tensor([[3, 4, 5, 6, 7, 0], [1, 2, 3, 4, 0, 0]])
    a = mm.profile(_ReadsInputValues(), ids)
    b = mm.profile(_ReadsInputValues(), ids, device="cpu")
    assert _per_op(a) == _per_op(b)
    assert a.notes == []
    # x[mask] selected 9 rows x 4 fp32 = 144 B, as on CPU (all 10 rows would be 160 B)
    index = [e for e in a.events if e.op == "aten.index.Tensor"][-1]
    assert index.bytes_written == 9 * 4 * 4
    # the same model with no padding takes the other branch, on meta as on CPU
    full = torch.tensor([[3, 4, 5, 6, 7, 8]])
    assert _per_op(mm.profile(_ReadsInputValues(), full)) == _per_op(mm.profile(_ReadsInputValues(), full, device="cpu"))


def test_boolean_mask_in_backward_runs_on_meta() -> None:
    # the backward of `h[mask] = v` indexes the gradient with the mask: PyTorch's meta kernel raises
    # unless masks are taken as all-selected
    class MaskFill(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fill = nn.Parameter(torch.zeros(8))
            self.lin = nn.Linear(8, 8)

        def forward(self, x):  # x: 2x3x8
            h = self.lin(x)
            mask = h[..., 0] > 0
            h = h.clone()
            h[mask] = self.fill.to(h.dtype)
            return h

    r = mm.profile(MaskFill(), torch.randn(2, 3, 8), train=True)
    assert r.totals.macs == 768  # forward 2*3*8*8 = 384, + the weight gradient 384 (x needs none)
    assert any("x[mask]" in n for n in r.notes)


@pytest.mark.parametrize("frozen", [False, True])
def test_linear_on_a_transposed_input_takes_the_same_path_on_meta_and_cpu(frozen: bool) -> None:
    # matmul folds a batch into one mm (after a copy of the non-contiguous input) only when the
    # weight requires grad, else it runs a bmm over the weight broadcast: the meta stand-ins carry the
    # user's requires_grad (inference too), so both runs take the same path, frozen or not
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    lin.requires_grad_(not frozen)

    class T(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x):  # x: 4x3x16
            return self.lin(x.transpose(0, 1))

    x = torch.randn(4, 3, 16)
    a, b = mm.profile(T(), x), mm.profile(T(), x, device="cpu")
    ops_a, ops_b = [e.op for e in a.events], [e.op for e in b.events]
    if native.load() is not None:
        # the native recorder sees what runs unobserved: at::native::linear adds the bias in place
        # (add_) unless its input looks like a tensor subclass, which every tensor does under a dispatch
        # mode (the meta run's capture): add there. The same reads and writes.
        assert ops_b[-1] == "aten.add_.Tensor"
        ops_b[-1] = "aten.add.Tensor"
    assert ops_a == ops_b
    assert _counts(a) == _counts(b)
    assert ("aten.bmm.default" in {e.op for e in a.events}) == frozen
    assert lin.weight.requires_grad is not frozen  # the user's flag untouched


def test_transformer_inference_identical() -> None:
    torch.manual_seed(0)
    m = nn.Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64,
                       batch_first=True).eval()
    src, tgt = torch.randn(2, 6, 32), torch.randn(2, 5, 32)
    assert _counts(mm.profile(m, (src, tgt))) == _counts(mm.profile(m, (src, tgt), device="cpu"))


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
@pytest.mark.parametrize("train", [False, True])
def test_embedding_bag_bytes_identical(mode: str, train: bool) -> None:
    # mean, inference, by hand: weight 100x16 fp32, indices 4x6 int64 (4 bags of 6; PyTorch adds
    # offsets of 4 int64). Read: 24 gathered rows x 16 x 4 B = 1,536 + indices 192 + offsets 32 = 1,760.
    # Written: output 4x16x4 = 256 + offset2bag 24 x 8 = 192 + bag sizes 4 x 8 = 32 = 480
    torch.manual_seed(0)
    m = nn.EmbeddingBag(100, 16, mode=mode)
    x = torch.randint(0, 100, (4, 6))
    a, b = mm.profile(m, x, train=train), mm.profile(m, x, train=train, device="cpu")
    assert _counts(a) == _counts(b)
    if mode == "mean" and not train:
        (bag,) = [e for e in a.events if "embedding_bag" in e.op]
        assert (bag.bytes_read, bag.bytes_written) == (1_760, 480)


def test_a_cpu_tensor_moved_to_the_run_device_moves_nothing_on_meta() -> None:
    # transformers' caches make counters on CPU and move them to the model's device: on a CPU run
    # `.to("cpu")` dispatches nothing; on meta it is a _to_copy that must not count either
    class Counter(nn.Module):
        def forward(self, x):
            step = torch.tensor(3.0).to(x.device)  # made on CPU
            return x * step

    x = torch.randn(4)
    a, b = mm.profile(Counter(), x), mm.profile(Counter(), x, device="cpu")
    assert "aten._to_copy.default" in {e.op for e in a.events}
    assert _counts(a) == _counts(b)


@pytest.mark.parametrize("device", ["meta", "cpu"])
def test_half_precision_norm_statistics_counted_at_float32(device: str) -> None:
    # LayerNorm(8) on 2x3x8 at bf16: reads input 48 x 2 B = 96 + weight 16 + bias 16 = 128; writes the
    # output 96 + mean and rstd of 6 rows at float32 (the opmath type: what CUDA and the meta kernel
    # return; CPU's kernel returns them at bf16) 2 x 6 x 4 = 48 -> 144
    r = mm.profile(nn.LayerNorm(8), torch.randn(2, 3, 8), device=device, dtype=torch.bfloat16)
    (ln,) = [e for e in r.events if e.op == "aten.native_layer_norm.default"]
    assert (ln.bytes_read, ln.bytes_written) == (128, 144)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_training_identical(dtype) -> None:
    m = torchvision.models.resnet18()
    x = torch.randn(1, 3, 64, 64)
    assert _counts(mm.profile(m, x, train=True, dtype=dtype)) == _counts(
        mm.profile(m, x, train=True, dtype=dtype, device="cpu"))
    lm = _lm("gpt2").eval()
    ids = torch.randint(0, 1000, (1, 16))
    assert _counts(mm.profile(lm, ids, train=True, dtype=dtype)) == _counts(
        mm.profile(lm, ids, train=True, dtype=dtype, device="cpu"))


def test_output_sizes_that_depend_on_known_values_are_real_on_meta() -> None:
    class Unique(nn.Module):
        def forward(self, ids):
            return torch.unique(ids).float().sum() + torch.nonzero(ids > 4).float().sum()

    # ids hold 8 distinct values (0-7): unique writes 8 x 8 B = 64 B (PyTorch has no meta kernel for
    # it: without the values a meta run could not run it); 3 ids are > 4: nonzero writes 3 x 2 dims x 8 B = 48 B
    ids = torch.tensor([[3, 4, 5, 6, 7, 0], [1, 2, 3, 4, 0, 0]])
    a = mm.profile(Unique(), ids)
    b = mm.profile(Unique(), ids, device="cpu")
    written = {e.op: e.bytes_written for e in a.events}
    assert written["aten._unique2.default"] == 64 and written["aten.nonzero.default"] == 48
    assert _per_op(a) == _per_op(b) and a.notes == []


def test_a_value_written_by_an_unknown_op_is_no_longer_known() -> None:
    class Overwrite(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.full((4,), -1.0))

        def forward(self, x):  # x: [1, 1, 1, -1]
            m = x.clone()
            m.view(2, 2)[0].copy_(self.w.view(2, 2)[0])  # a weight written through a view into m: [-1, -1, 1, -1]
            return x[m > 0].sum()  # CPU: 1 selected; meta cannot know: every element, and a note

    x = torch.tensor([1.0, 1.0, 1.0, -1.0])
    a = mm.profile(Overwrite(), x)
    c = mm.profile(Overwrite(), x, device="cpu")
    # meta: all 4 selected (4 x 4 B), not the 3 of the stale copy of x
    assert [e.bytes_written for e in a.events if e.op == "aten.index.Tensor"] == [4 * 4]
    assert any("x[mask]" in n for n in a.notes)
    assert [e.bytes_written for e in c.events if e.op == "aten.index.Tensor"] == [1 * 4]


def test_values_of_large_tensors_are_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    # above the size limit an input's values are not kept: the reads are answered and noted as before
    from modelmeter.capture import values

    ids = torch.tensor([[3, 4, 5, 6, 7, 0], [1, 2, 3, 4, 0, 0]])  # 12 elements
    monkeypatch.setattr(values, "MAX_ELEMENTS", 11)
    r = mm.profile(_ReadsInputValues(), ids)
    assert any("data-dependent" in n for n in r.notes)
    monkeypatch.setattr(values, "MAX_ELEMENTS", 12)
    assert mm.profile(_ReadsInputValues(), ids).notes == []


def test_known_values_never_write_to_the_users_tensors() -> None:
    class Counts(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("seen", torch.zeros(2, dtype=torch.long))

        def forward(self, ids):  # ids: known on meta; so is the buffer, written in place here
            self.seen.add_(ids[0])
            return ids[self.seen > 0].sum()  # seen = [3, 0]: 1 element selected

    m, ids = Counts(), torch.tensor([[3, 0], [5, 7]])
    r = mm.profile(m, ids)
    assert [e.bytes_written for e in r.events if e.op == "aten.index.Tensor"] == [1 * 2 * 8]  # one row of 2 int64
    assert r.notes == []
    assert m.seen.tolist() == [0, 0] and ids.tolist() == [[3, 0], [5, 7]]


class _Lengths(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, ids):  # ids: 2x4 int64, 0 = padding
        lens = (ids != 0).sum(-1)
        rows = [ids[i, :n].float().sum() for i, n in enumerate(lens.tolist())]  # a loop over real lengths
        scale = (self.w > 0).tolist()  # a weight's values: not known on meta
        return torch.stack(rows).sum() * float(scale[0])


def test_tolist_on_meta() -> None:
    # tolist() runs no aten op: on meta a known tensor's values are returned (lengths 3 and 2, so the
    # rows summed are 3 and 2 elements long, as on CPU); an unknown one's are answered and noted
    ids = torch.tensor([[3, 4, 5, 0], [1, 2, 0, 0]])
    a = mm.profile(_Lengths(), ids)
    b = mm.profile(_Lengths(), ids, device="cpu")
    assert _per_op(a) == _per_op(b)
    sums = [e.bytes_read for e in a.events if e.op == "aten.sum.default"]
    assert sums[:2] == [3 * 4, 2 * 4]  # fp32
    assert len(a.notes) == 1 and "(root)" in a.notes[0] and b.notes == []


class _PickByName(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branches = nn.ModuleDict({"b0": nn.Linear(4, 4), "b1": nn.Linear(4, 8), "b2": nn.Linear(4, 16)})
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, ids, x):  # ids: int64, known on meta; x: 2x4
        known = self.branches[f"b{ids.max()}"](x)  # f-string of a 0-dim tensor: its value (.item())
        unknown = self.branches[f"b{(self.gate > 1).long()}"](x)  # a weight's: answered 0 on meta, noted
        return known.sum() + unknown.sum()


def test_formatting_a_0_dim_tensor_on_meta() -> None:
    # ids.max() = 2: branch b2, 2 x 4 x 16 = 128 MACs; the gate (0 > 1 is False) picks b0 on CPU, and
    # meta answers 0 too: 2 x 4 x 4 = 32 MACs; total 160 on both
    ids, x = torch.tensor([0, 2, 1]), torch.randn(2, 4)
    a = mm.profile(_PickByName(), (ids, x))
    b = mm.profile(_PickByName(), (ids, x), device="cpu")
    assert a.totals.macs == b.totals.macs == 160
    assert len(a.notes) == 1 and b.notes == []


def test_equal_and_allclose_on_meta() -> None:
    class Compare(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(3))

        def forward(self, x):  # x: 3 fp32
            same = torch.equal(x, x.clone())  # known on meta: True, as on CPU
            near = torch.allclose(self.w, torch.zeros(3, device=x.device))  # a weight: answered True, noted
            return x.sum() * (2 if same else 1) * (3 if near else 1)

    # FLOPs: sum 3 + allclose 7 x 3 = 21 + two products 2 = 26 (equal and clone count no FLOPs)
    a = mm.profile(Compare(), torch.randn(3))
    b = mm.profile(Compare(), torch.randn(3), device="cpu")
    assert a.totals.flops == b.totals.flops == 26
    assert len(a.notes) == 1 and "1 data-dependent read" in a.notes[0] and b.notes == []


def test_masked_fill_with_a_cpu_scalar_tensor_runs_on_meta() -> None:
    # DeBERTa-style attention (SEW-D's XSoftmax): x.masked_fill(mask, torch.tensor(min)) with the value
    # made on CPU. Real kernels take a CPU 0-dim tensor on any device; PyTorch's meta kernel refuses it
    class Fill(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 5)

        def forward(self, x, ids):
            scores = self.proj(x)  # (2, 4, 5): its values depend on the weights
            return scores.masked_fill((ids == 0)[:, :, None], torch.tensor(torch.finfo(scores.dtype).min))

    x, ids = torch.randn(2, 4, 3), torch.tensor([[1, 0, 2, 0], [0, 3, 3, 1]])
    meta, cpu = mm.profile(Fill(), (x, ids)), mm.profile(Fill(), (x, ids), device="cpu")
    assert _counts(meta) == _counts(cpu)
    (row,) = [o for o in meta.ops if o.op == "aten.masked_fill.Tensor"]
    # 2 x 4 x 5 = 40 elements, 1 FLOP each; reads the scores (160 B), the broadcast mask (2 x 4 x 1
    # bools = 8 B) and the 0-dim value (4 B) = 172 B; writes 160 B
    assert (row.flops, row.bytes_read, row.bytes_written) == (40, 172, 160)
    assert not meta.notes


def test_a_failure_after_reads_answered_without_values_says_so() -> None:
    # a buffer made in __init__ under torch.device("meta") has no values: int(self.rows) is answered 0,
    # and the view that follows fails. The message says what led there, and what to do
    class ReadsLength(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("rows", torch.tensor(3))

        def forward(self, x):
            return x.view(int(self.rows), -1)

    with torch.device("meta"):
        model = ReadsLength()
    with pytest.raises(mm.ModelmeterError) as info:
        mm.profile(model, torch.randn(3, 4))
    text = str(info.value)
    assert "before it, 1 read(s) of tensor values this meta run does not have were answered True/0" in text
    assert "first in '(root)'" in text and "--device cpu" in text
    assert len(text.splitlines()) == 1
    assert mm.profile(ReadsLength(), torch.randn(3, 4)).totals.ops > 0  # with a real buffer, its value is known


class _ConvPoolLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8 * 3 * 3, 4)

    def forward(self, x):  # x: 1x3x8x8
        y = F.adaptive_avg_pool2d(self.conv(x), 3)  # conv2d and adaptive_avg_pool2d: CompositeImplicitAutograd
        return self.fc(y.flatten(1))


@pytest.mark.parametrize("device", ["meta", "cpu", "cpu-python"])
def test_inference_mode_counts_the_same(device: str, monkeypatch) -> None:
    # Under torch.inference_mode() autograd is off for the tensors, so a dispatch mode receives
    # CompositeImplicitAutograd ops (conv2d, linear, adaptive_avg_pool2d) whole instead of the ops they
    # decompose into; the capture decomposes them with the mode on. Before, conv2d went uncounted.
    if device == "cpu-python":
        monkeypatch.setenv("MODELMETER_NATIVE", "0")
    torch.manual_seed(0)
    m, x = _ConvPoolLinear().eval(), torch.randn(1, 3, 8, 8)
    dev = device.split("-")[0]
    plain = mm.profile(m, x, device=dev)
    with torch.inference_mode():
        inside = mm.profile(m, x, device=dev)
    # conv: 8 filters x 6x6 outputs x 27 MACs = 7776; linear: 72 x 4 = 288 -> 8064 MACs
    assert plain.totals.macs == inside.totals.macs == 7776 + 288
    assert inside.uncounted_ops == []
    assert _counts(plain) == _counts(inside)
    assert [e.op for e in plain.events] == [e.op for e in inside.events]

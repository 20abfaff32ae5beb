"""modelmeter.profile: the public API, its guarantees on the user's model, and its errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import modelmeter as mm
from modelmeter.errors import InputError, ModelRunError, UncountedOpsError


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))


def test_mlp_counts_by_hand() -> None:
    # batch 2: fc1 = 2*8*16 = 256 MACs, fc2 = 2*16*4 = 128 MACs -> 384 MACs
    # flops: 2*384 = 768 matmul + bias adds 2*16 + 2*4 = 40 + relu 2*16 = 32 -> 840
    # params: 8*16+16 + 16*4+4 = 144 + 68 = 212
    r = mm.profile(MLP(), torch.randn(2, 8))
    assert r.totals.macs == 384
    assert r.totals.matmul_flops == 768
    assert r.totals.flops == 840
    assert r.totals.params == 212
    assert r.totals.trainable_params == 212
    assert r.totals.param_bytes == 212 * 4
    assert r.module("fc1").macs == 256 and r.module("fc2").macs == 128
    assert r.uncounted_ops == []


def test_mlp_bytes_by_hand() -> None:
    # fc1 addmm reads bias 16*4 + x 2*8*4 + W^T 8*16*4 = 64 + 64 + 512 = 640, writes 2*16*4 = 128
    # relu reads 128, writes 128; dropout is identity in eval (no op)
    # fc2 addmm reads 4*4 + 2*16*4 + 16*4*4 = 16 + 128 + 256 = 400, writes 2*4*4 = 32
    # t() views move nothing
    r = mm.profile(MLP(), torch.randn(2, 8))
    assert r.totals.bytes_read == 640 + 128 + 400
    assert r.totals.bytes_written == 128 + 128 + 32


def test_meta_and_cpu_counts_identical() -> None:
    m = MLP()
    a = mm.profile(m, torch.randn(3, 8), device="meta")
    b = mm.profile(m, torch.randn(3, 8), device="cpu")
    assert (a.totals.macs, a.totals.flops, a.totals.bytes_moved) == (b.totals.macs, b.totals.flops, b.totals.bytes_moved)
    assert a.provenance.mode == "meta" and b.provenance.mode == "real"


def test_user_model_left_as_it_was() -> None:
    m = MLP().train()
    m.fc1.eval()  # a mixed mode that must survive
    before = {k: v.clone() for k, v in m.state_dict().items()}
    hooks_before = (dict(m._forward_hooks), dict(m._forward_pre_hooks))
    mm.profile(m, torch.randn(2, 8), train=True, device="cpu", optimizer="adam")
    mm.profile(m, torch.randn(2, 8))
    assert m.training and not m.fc1.training and m.fc2.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert v.device.type == "cpu"
    assert all(p.grad is None for p in m.parameters())
    assert (dict(m._forward_hooks), dict(m._forward_pre_hooks)) == hooks_before
    # no global hooks left behind
    from torch.nn.modules import module as module_mod

    assert not module_mod._global_forward_hooks and not module_mod._global_forward_pre_hooks


def test_training_step_phases_and_backward_macs() -> None:
    # forward 384 MACs; backward: fc2 needs grad_input (2x4 @ 4x16: 128) and grad_weight (4x2 @ 2x16: 128);
    # fc1 needs only grad_weight (its input does not require grad): 16x2 @ 2x8 = 256 -> 512
    r = mm.profile(MLP(), torch.randn(2, 8), train=True)
    assert r.totals.phases["forward"].macs == 384
    assert r.totals.phases["backward"].macs == 512
    assert set(r.totals.phases) == {"forward", "loss", "backward"}


def test_frozen_parameters() -> None:
    m = MLP()
    m.fc1.requires_grad_(False)
    r = mm.profile(m, torch.randn(2, 8), train=True)
    assert r.totals.trainable_params == 68 and r.totals.frozen_params == 144
    # fc1 frozen and the input needs no grad, so nothing upstream of fc2 wants a gradient:
    # only fc2's weight gradient remains, grad_out^T (4x2) @ h (2x16) = 128 MACs
    assert r.totals.phases["backward"].macs == 128


def test_failing_forward_names_the_module() -> None:
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ok = nn.Linear(8, 8)
            self.bad = nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bad(self.ok(x))

    with pytest.raises(ModelRunError) as ei:
        mm.profile(Bad(), torch.randn(2, 8))
    assert ei.value.module_path == "bad"
    assert "module 'bad' (Linear)" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_a_bare_assert_in_forward_is_named_once() -> None:
    class Checks(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] != 3:
                raise AssertionError  # a bare `assert` (pytest would rewrite one here, adding a message)
            return x

    with pytest.raises(ModelRunError) as ei:
        mm.profile(Checks(), torch.randn(2, 8), device="cpu")
    assert str(ei.value) == "the forward pass failed in the model (Checks): AssertionError"


def test_wrong_input_shape_is_a_model_error() -> None:
    with pytest.raises(ModelRunError, match="fc1"):
        mm.profile(MLP(), torch.randn(2, 9))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "adam"}, "needs a training step"),
        ({"train": True, "optimizer": "lion"}, "unknown optimizer"),
        ({"causal": "half"}, "causal must be"),
        ({"dtype": "fp7"}, "unknown dtype"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        mm.profile(MLP(), torch.randn(2, 8), **kwargs)


def test_not_a_module() -> None:
    with pytest.raises(InputError, match="torch.nn.Module"):
        mm.profile(lambda x: x, torch.randn(2))  # type: ignore[arg-type]


def test_strict_mode_raises_on_uncounted_op() -> None:
    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.bessel_j0(x)

    r = mm.profile(Odd(), torch.randn(4))
    assert [u.op for u in r.uncounted_ops] == ["aten.special_bessel_j0.default"]
    assert r.uncounted_ops[0].calls == 1 and r.uncounted_ops[0].modules == [""]
    assert r.uncounted_ops[0].bytes_moved == 16 + 16  # reads 4 floats, writes 4 floats
    with pytest.raises(UncountedOpsError, match="bessel_j0"):
        mm.profile(Odd(), torch.randn(4), strict=True)


def test_dtype_override_changes_bytes_not_macs() -> None:
    a = mm.profile(MLP(), torch.randn(2, 8))
    b = mm.profile(MLP(), torch.randn(2, 8), dtype="bf16")
    assert a.totals.macs == b.totals.macs
    assert b.totals.bytes_moved * 2 == a.totals.bytes_moved
    assert b.provenance.dtype == "bfloat16"
    # parameters as run: 212 params x 2 bytes (bf16) = 424, vs 212 x 4 = 848 at the model's own fp32
    assert (a.totals.param_bytes, b.totals.param_bytes) == (848, 424)
    assert b.totals.param_sizes.own_bytes == 848


def test_dict_and_tuple_inputs() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a @ b

    # (3x4) @ (4x5) = 60 MACs
    assert mm.profile(Two(), (torch.randn(3, 4), torch.randn(4, 5))).totals.macs == 60
    assert mm.profile(Two(), {"a": torch.randn(3, 4), "b": torch.randn(4, 5)}).totals.macs == 60
    with pytest.raises(InputError, match="inputs must be"):
        mm.profile(Two(), 3)


def test_compiled_model_counted_as_its_eager_module() -> None:
    # torch.compile wraps the model in an OptimizedModule holding it as `_orig_mod`; the capture runs
    # the eager module, and module rows carry its paths and parameters (4x4+4 = 20, 4x2+2 = 10)
    m = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    eager = mm.profile(m, torch.randn(3, 4))
    compiled = mm.profile(torch.compile(m), torch.randn(3, 4))
    rows = [(r.path, r.params, r.macs) for r in compiled.modules]
    assert rows == [(r.path, r.params, r.macs) for r in eager.modules]
    # MACs: 3 rows x 4 x 4 = 48 and 3 x 4 x 2 = 24; the root holds 20 + 10 = 30 params and 48 + 24 = 72 MACs
    assert rows == [("", 30, 72), ("0", 20, 48), ("1", 0, 0), ("2", 10, 24)]

"""The rule registry: uncounted ops are data in the report, strict mode, user rules for custom ops,
overriding a built-in rule, and reading arguments by schema name."""

from __future__ import annotations

import pytest
import torch
from test_costs_support import events_of, only, synthetic
from torch import nn

import modelmeter as mm
from modelmeter.costs import Cost, cost_of, registered_ops, rule_for, unregister_rule
from modelmeter.costs.registry import arguments, is_no_arithmetic, op_exists
from modelmeter.errors import RuleError, UncountedOpsError


@torch.library.custom_op("mmtest::scale2", mutates_args=())
def scale2(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@scale2.register_fake
def _(x):
    return torch.empty_like(x)


class Factorize(nn.Module):
    def forward(self, x):
        return torch.linalg.qr(x).R.abs()  # a QR factorization: no FLOP rule


class TwoFactorize(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = Factorize(), Factorize()

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_uncounted_ops_are_listed_with_count_and_modules():
    x = torch.randn(4, 8)
    r = mm.profile(TwoFactorize(), x)
    assert [(u.op, u.calls, sorted(u.modules)) for u in r.uncounted_ops] == [("aten.linalg_qr.default", 2, ["a", "b"])]
    # nothing silently zero: the op still has bytes, reads 4*8*4 = 128 B and writes Q (4x4) and R (4x8):
    # 64 + 128 = 192 B
    rows = [e for e in r.events if e.op == "aten.linalg_qr.default"]
    assert [(e.bytes_read, e.bytes_written, e.counted) for e in rows] == [(128, 192, False)] * 2
    assert r.uncounted_ops[0].bytes_moved == 2 * (128 + 192)
    assert r.totals.uncounted_ops == 2


def test_strict_mode_raises():
    with pytest.raises(UncountedOpsError, match="linalg_qr"):
        mm.profile(TwoFactorize(), torch.randn(4, 8), strict=True)
    # a model whose ops all have rules passes strict mode
    mm.profile(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), torch.randn(2, 4), strict=True, train=True, optimizer="adamw")


class UsesCustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        return scale2(self.lin(x))


def test_user_rule_for_a_custom_op():
    x = torch.randn(3, 4)
    r = mm.profile(UsesCustomOp(), x)
    assert [u.op for u in r.uncounted_ops] == ["mmtest.scale2.default"]

    @mm.register_rule("mmtest.scale2")
    def scale2_rule(ev):
        return Cost(flops=ev.outputs[0].numel)  # one multiply per element

    try:
        for device in ("meta", "cpu"):
            r = mm.profile(UsesCustomOp(), x, device=device)
            assert r.uncounted_ops == []
            # linear: 3*4*4 = 48 MACs + 12 bias FLOPs; scale2: 12 FLOPs -> 96 + 12 + 12 = 120
            assert (r.totals.macs, r.totals.flops) == (48, 120)
            ev = [e for e in r.events if e.op == "mmtest.scale2.default"]
            assert [(e.flops, e.bytes_read, e.bytes_written) for e in ev] == [(12, 48, 48)]
        # registering the same op again without override is an error
        with pytest.raises(RuleError, match="override=True"):
            mm.register_rule("mmtest.scale2")(lambda ev: Cost())
        # registering the same function twice is harmless
        mm.register_rule("mmtest.scale2")(scale2_rule)
    finally:
        unregister_rule("mmtest.scale2")
    assert rule_for("mmtest.scale2.default") is None


def test_override_a_builtin_rule():
    original = rule_for("aten.relu.default")
    assert original is not None
    with pytest.raises(RuleError):
        mm.register_rule("aten.relu")(lambda ev: Cost(flops=0))
    try:
        mm.register_rule("aten.relu", override=True)(lambda ev: Cost(flops=10 * ev.outputs[0].numel))
        r = mm.profile(nn.ReLU(), torch.randn(2, 3))
        assert r.totals.flops == 60
    finally:
        mm.register_rule("aten.relu", override=True)(original)
    assert mm.profile(nn.ReLU(), torch.randn(2, 3)).totals.flops == 6


def test_register_rule_needs_an_op():
    with pytest.raises(RuleError):
        mm.register_rule()


def test_a_failing_rule_is_an_error_not_a_zero():
    try:
        mm.register_rule("mmtest.scale2")(lambda ev: 1 / 0)
        with pytest.raises(RuleError, match="mmtest.scale2"):
            mm.profile(UsesCustomOp(), torch.randn(3, 4))
    finally:
        unregister_rule("mmtest.scale2")


def test_every_registered_op_exists():
    # guards against typos in rule registrations: every aten name is an op of this torch build (the
    # torchvision.* rules' ops exist once torchvision is imported; the op table is read afresh after it)
    pytest.importorskip("torchvision")
    from modelmeter.costs import registry

    registry._PACKETS.clear()
    for op in registered_ops():
        if op.startswith("modelmeter."):
            continue
        assert op_exists(op), op


def test_arguments_by_schema_name():
    # max_pool2d(x, 2) reaches the dispatcher with two arguments: the rest are schema defaults
    ev = only(events_of(torch.nn.functional.max_pool2d, torch.randn(1, 1, 4, 4), 2), "aten.max_pool2d_with_indices")
    a = arguments(ev)
    assert len(ev.args) == 2
    assert a["kernel_size"] == [2, 2] and a["stride"] == [] and a["padding"] == [0, 0] and a["ceil_mode"] is False
    # kwarg-only arguments come from kwargs
    ev = only(events_of(torch.add, torch.randn(2), torch.randn(2), alpha=3), "aten.add")
    assert arguments(ev)["alpha"] == 3
    # an overload's own schema is used: the quantized flash overload has is_causal at position 7
    m = torch.empty(1, 1, 2, 2, device="meta")
    ev = synthetic(torch.ops.aten._scaled_dot_product_flash_attention.quantized, m, m, m, m, m, m, 0.0, True)
    assert arguments(ev)["is_causal"] is True


def test_no_arithmetic_ops_are_counted_with_zero_flops():
    x = torch.randn(3, 4)
    ev = only(events_of(torch.cat, [x, x]), "aten.cat")
    c, counted = cost_of(ev)
    assert counted and is_no_arithmetic(ev.op) and (c.flops, c.macs) == (0, 0)


def test_cost_adds_up():
    a = Cost(1, 2, 3, 4) + Cost(10, 20, 30, 40)
    assert (a.macs, a.flops, a.bytes_read, a.bytes_written, a.matmul_flops, a.bytes_moved) == (11, 22, 33, 44, 22, 77)
    assert Cost.of_macs(5, extra_flops=3) == Cost(5, 13)

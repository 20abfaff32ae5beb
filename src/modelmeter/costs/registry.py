"""The cost-rule registry: aten op name -> pure function of an :class:`OpEvent` -> :class:`Cost`.

Rules are registered once with :func:`register_rule` and are the one source of truth. A rule returns
MACs and FLOPs; it may leave ``bytes_read``/``bytes_written`` as ``None`` and the registry fills
them from the op's tensors (every tensor read + every tensor written, numel x itemsize; view and
metadata ops move nothing). Ops without a rule still get those bytes and are reported as uncounted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from ..capture.events import OpEvent
from ..errors import RuleError

Rule = Callable[[OpEvent], "Cost"]


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of one op. Units are in the names: counts of MACs and FLOPs, and bytes.

    ``macs`` are multiply-accumulates in matrix-like products; ``flops`` is all floating-point work
    (2 per MAC plus the documented per-element cost of other arithmetic); ``matmul_flops`` = 2 x macs.
    """

    macs: int = 0
    flops: int = 0
    bytes_read: int | None = None
    bytes_written: int | None = None

    @classmethod
    def of_macs(cls, macs: int, extra_flops: int = 0) -> Cost:
        """A matrix-like product: ``flops = 2 * macs + extra_flops`` (e.g. a fused bias add)."""
        return cls(macs=int(macs), flops=2 * int(macs) + int(extra_flops))

    @property
    def matmul_flops(self) -> int:
        return 2 * self.macs

    @property
    def bytes_moved(self) -> int:
        return (self.bytes_read or 0) + (self.bytes_written or 0)

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.macs + other.macs,
            self.flops + other.flops,
            (self.bytes_read or 0) + (other.bytes_read or 0),
            (self.bytes_written or 0) + (other.bytes_written or 0),
        )


ZERO = Cost(0, 0, 0, 0)

_RULES: dict[str, Rule] = {}
_NO_ARITHMETIC: set[str] = set()


def _key(op: object) -> str:
    """Accept 'aten.mm', 'aten.mm.default', 'aten::mm', torch.ops.aten.mm or an OpOverload."""
    if isinstance(op, str):
        return op.replace("::", ".")
    name = getattr(op, "_qualified_op_name", None)  # OpOverloadPacket
    if name is not None and not hasattr(op, "_overloadname"):
        return str(name).replace("::", ".")
    return str(op)


def register_rule(*ops: object, override: bool = False) -> Callable[[Rule], Rule]:
    """Register ``rule`` for one or more ops.

    An op is named as a packet (``"aten.mm"``: every overload) or an overload (``"aten.add.Tensor"``).
    Registering an op that already has a rule is an error unless ``override=True``, so that a user's
    rule replacing a built-in one is always deliberate.
    """
    if not ops:
        raise RuleError("register_rule needs at least one op name, e.g. register_rule('aten.mm')")

    def deco(rule: Rule) -> Rule:
        for op in ops:
            k = _key(op)
            if k in _RULES and not override and _RULES[k] is not rule:
                raise RuleError(f"op {k} already has a rule ({_RULES[k].__name__}): pass override=True to replace it")
            _RULES[k] = rule
            _NO_ARITHMETIC.discard(k)
        return rule

    return deco


def unregister_rule(op: object) -> None:
    _RULES.pop(_key(op), None)


def register_no_arithmetic(*ops: str) -> None:
    """Ops that do no arithmetic by definition (creation, copies, indexing): zero FLOPs, bytes only."""
    for op in ops:
        _NO_ARITHMETIC.add(_key(op))


def rule_for(op: str) -> Rule | None:
    rule = _RULES.get(op)
    if rule is not None:
        return rule
    parts = op.split(".")
    if len(parts) > 2:
        return _RULES.get(".".join(parts[:2]))
    return None


def is_no_arithmetic(op: str) -> bool:
    if op in _NO_ARITHMETIC:
        return True
    parts = op.split(".")
    return len(parts) > 2 and ".".join(parts[:2]) in _NO_ARITHMETIC


def registered_ops() -> list[str]:
    return sorted(_RULES)


def default_bytes(ev: OpEvent) -> tuple[int, int]:
    """Bytes read and written by an op: every input tensor read once, every output written once.

    View ops (outputs alias inputs, nothing written) move nothing. An in-place op reads its inputs
    and writes its output. ``copy_(dst, src)`` reads ``src`` only.
    """
    if ev.is_view:
        return 0, 0
    inputs = ev.inputs
    if ev.op.startswith("aten.copy_"):
        inputs = inputs[1:2]
    return sum(t.nbytes for t in inputs), sum(t.nbytes for t in ev.outputs)


def cost_of(ev: OpEvent) -> tuple[Cost, bool]:
    """The cost of one event, and whether it was counted (a rule, or an op with no arithmetic)."""
    rule = rule_for(ev.op)
    if rule is None:
        r, w = default_bytes(ev)
        return Cost(0, 0, r, w), ev.is_view or is_no_arithmetic(ev.op)
    try:
        c = rule(ev)
    except Exception as exc:  # a rule that fails is a bug to report, not a silent zero
        raise RuleError(f"the cost rule for {ev.op} failed in module '{ev.module}': {type(exc).__name__}: {exc}") from exc
    if c.bytes_read is None or c.bytes_written is None:
        r, w = default_bytes(ev)
        c = Cost(c.macs, c.flops, r if c.bytes_read is None else c.bytes_read, w if c.bytes_written is None else c.bytes_written)
    return c, True


COST_FIELDS = tuple(f.name for f in fields(Cost))


@dataclass(frozen=True, slots=True)
class CountSettings:
    """Conventions a rule may depend on. ``causal``: "unmasked" counts only the query/key pairs a
    causal mask keeps (the work a fused kernel does); "dense" counts every pair."""

    causal: str = "unmasked"


_SETTINGS: list[CountSettings] = [CountSettings()]


def current_settings() -> CountSettings:
    return _SETTINGS[-1]


class using_settings:  # noqa: N801 - used as a context manager
    def __init__(self, settings: CountSettings) -> None:
        self.settings = settings

    def __enter__(self) -> CountSettings:
        _SETTINGS.append(self.settings)
        return self.settings

    def __exit__(self, *exc: object) -> None:
        _SETTINGS.pop()

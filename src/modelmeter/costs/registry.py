"""The cost-rule registry: aten op name -> pure function of an :class:`OpEvent` -> :class:`Cost`.

Rules are registered once with :func:`register_rule` and are the one source of truth. A rule returns
MACs and FLOPs; it may leave ``bytes_read``/``bytes_written`` as ``None`` and the registry fills
them from the op's tensors (every tensor read + every tensor written, numel x itemsize; view and
metadata ops move nothing). Ops without a rule still get those bytes and are reported as uncounted.

Rules read an op's arguments by schema name with :func:`arguments` (the dispatcher leaves trailing
defaulted arguments out, and overloads of one op put arguments at different positions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..capture.events import OpEvent, TensorMeta
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
        _LOOKUP.clear()
        return rule

    return deco


def unregister_rule(op: object) -> None:
    _RULES.pop(_key(op), None)
    _LOOKUP.clear()


def register_no_arithmetic(*ops: str) -> None:
    """Ops that do no arithmetic by definition (creation, copies, indexing): zero FLOPs, bytes only."""
    for op in ops:
        _NO_ARITHMETIC.add(_key(op))


_LOOKUP: dict[str, Rule | None] = {}  # op name -> resolved rule; cleared whenever the table changes


def rule_for(op: str) -> Rule | None:
    try:
        return _LOOKUP[op]
    except KeyError:
        pass
    rule = _RULES.get(op)
    if rule is None:
        parts = op.split(".")
        if len(parts) > 2:
            rule = _RULES.get(".".join(parts[:2]))
    _LOOKUP[op] = rule
    return rule


def is_no_arithmetic(op: str) -> bool:
    if op in _NO_ARITHMETIC:
        return True
    parts = op.split(".")
    return len(parts) > 2 and ".".join(parts[:2]) in _NO_ARITHMETIC


_PACKETS: set[str] = set()


def op_exists(name: str) -> bool:
    """Whether ``aten.NAME`` (a packet) is an op of this torch build; for registering variants."""
    if not _PACKETS:
        import torch

        for full in torch._C._dispatch_get_all_op_names():
            ns, _, rest = full.partition("::")
            _PACKETS.add(f"{ns}.{rest.split('.')[0]}")
    return name in _PACKETS


def registered_ops() -> list[str]:
    return sorted(_RULES)


def default_bytes(ev: OpEvent) -> tuple[int, int]:
    """Bytes read and written by an op: every input tensor read once, every output written once.

    View ops (outputs alias inputs, nothing written) move nothing. An in-place op reads its inputs
    and writes its output; one that returns nothing (``_foreach_add_``, ``_fused_adamw_``) writes
    the arguments its schema marks as mutated. Rules refine this where an op touches less than
    whole tensors (``copy_`` reads only its source, ``embedding`` only the rows it gathers).
    """
    if ev.is_view:
        return 0, 0
    read = sum(t.nbytes for t in ev.inputs)
    if ev.outputs:
        return read, sum(t.nbytes for t in ev.outputs)
    return read, sum(t.nbytes for t in mutated_args(ev))


_SIGNATURES: dict[str, tuple[tuple[str, bool, object, bool], ...] | None] = {}
_NO_DEFAULT = object()


def _signature(ev: OpEvent) -> tuple[tuple[str, bool, object, bool], ...] | None:
    """(name, kwarg_only, default, is_written) of every argument of the op's schema, cached per op."""
    sig = _SIGNATURES.get(ev.op, _NO_DEFAULT)
    if sig is not _NO_DEFAULT:
        return sig  # type: ignore[return-value]
    schema = getattr(ev.overload, "_schema", None)
    if schema is None:
        parts = ev.op.split(".")
        if len(parts) >= 2:
            import torch

            try:
                packet = getattr(getattr(torch.ops, parts[0]), parts[1])
                schema = getattr(packet, parts[2] if len(parts) > 2 else "default")._schema
            except (AttributeError, RuntimeError):
                schema = None
    sig = None
    if schema is not None:
        sig = tuple(
            (
                a.name,
                bool(a.kwarg_only),
                a.default_value if a.has_default_value() else _NO_DEFAULT,
                a.alias_info is not None and a.alias_info.is_write,
            )
            for a in schema.arguments
        )
    _SIGNATURES[ev.op] = sig
    return sig


def mutated_args(ev: OpEvent) -> list[TensorMeta]:
    """The tensors (flattened from lists) of the arguments the op's schema marks as written, ``out=``
    excluded (an out tensor is the op's output)."""
    sig = _signature(ev)
    if sig is None:
        return []
    found: list[TensorMeta] = []
    npos = len(ev.args)
    for i, (name, kwarg_only, _default, written) in enumerate(sig):
        if not written or name == "out":
            continue
        value = ev.args[i] if not kwarg_only and i < npos else ev.kwargs.get(name)
        _flatten(value, found)
    return found


def _flatten(x: Any, out: list[TensorMeta]) -> None:
    if isinstance(x, TensorMeta):
        out.append(x)
    elif isinstance(x, (list, tuple)):
        for y in x:
            _flatten(y, out)


_ARG_PLANS: dict[str, tuple[tuple[str, ...], dict[str, Any]] | None] = {}


def arguments(ev: OpEvent) -> dict[str, Any]:
    """The op's arguments by their schema names, with schema defaults filled in.

    The dispatcher leaves trailing defaulted arguments out of ``args`` (``max_pool2d(x, 2)`` arrives
    with two), so rules read arguments by name instead of by position. Events without an aten
    schema (``modelmeter.sdpa``) already carry named ``kwargs``. A missing argument without a
    default reads as ``None``.
    """
    plan = _ARG_PLANS.get(ev.op, _NO_DEFAULT)
    if plan is _NO_DEFAULT:
        sig = _signature(ev)
        plan = None if sig is None else (
            tuple(name for name, kwarg_only, _, _ in sig if not kwarg_only),  # positional names, in order
            {name: None if default is _NO_DEFAULT else default for name, _, default, _ in sig},
        )
        _ARG_PLANS[ev.op] = plan
    if plan is None:
        return dict(ev.kwargs)
    positional, defaults = plan
    out = dict(defaults)
    out.update(zip(positional, ev.args))
    if ev.kwargs:
        for name, value in ev.kwargs.items():
            if name in defaults:
                out[name] = value
    return out


def cost_of(ev: OpEvent) -> tuple[Cost, bool]:
    """The cost of one event, and whether it was counted (a rule, or an op with no arithmetic)."""
    macs, flops, r, w, counted = cost_values(ev)
    return Cost(macs, flops, r, w), counted


def cost_values(ev: OpEvent) -> tuple[int, int, int, int, bool]:
    """:func:`cost_of` as plain values ``(macs, flops, bytes_read, bytes_written, counted)``: what a
    report adds up for every event, without building a second :class:`Cost` to fill in the bytes."""
    rule = rule_for(ev.op)
    if rule is None:
        r, w = default_bytes(ev)
        return 0, 0, r, w, ev.is_view or is_no_arithmetic(ev.op)
    try:
        c = rule(ev)
    except Exception as exc:  # a rule that fails is a bug to report, not a silent zero
        raise RuleError(f"the cost rule for {ev.op} failed in module '{ev.module}': {type(exc).__name__}: {exc}") from exc
    r, w = c.bytes_read, c.bytes_written
    if r is None or w is None:
        dr, dw = default_bytes(ev)
        r = dr if r is None else r
        w = dw if w is None else w
    if c.macs and ev.inputs and ev.inputs[0].dtype.is_complex:
        # a complex multiply-accumulate is 4 real ones (and their sums); other work, as the bias's
        # complex adds, 2 real operations per complex one
        return 4 * c.macs, 8 * c.macs + 2 * (c.flops - 2 * c.macs), r, w, True
    return c.macs, c.flops, r, w, True


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

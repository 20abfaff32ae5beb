"""Units and number formatting. The MAC/FLOP convention is stated here once.

* A MAC is one multiply-accumulate inside a matrix-like product.
* A FLOP is one floating-point operation; every MAC is 2 FLOPs (``FLOPS_PER_MAC``).
* ``matmul_flops`` = 2 x MACs (the MFU / scaling-law convention); ``flops`` adds the documented
  per-element cost of non-matmul arithmetic.
* Sizes use binary prefixes for bytes (KiB, MiB, GiB) and decimal prefixes for counts (K, M, G, T).
"""

from __future__ import annotations

import re

from .errors import InputError

FLOPS_PER_MAC = 2

_DECIMAL = [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")]
_BINARY = [(1 << 50, "PiB"), (1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]


def human_count(value: float, unit: str = "", digits: int = 2) -> str:
    """1234567 -> '1.23 M' (decimal prefixes)."""
    v = float(value)
    for scale, prefix in _DECIMAL:
        if abs(v) >= scale:
            return f"{v / scale:.{digits}f} {prefix}{unit}"
    if v == int(v):
        return f"{int(v)} {unit}".rstrip()
    return f"{v:.{digits}f} {unit}".rstrip()


def human_bytes(nbytes: float, digits: int = 2) -> str:
    """1536 -> '1.50 KiB' (binary prefixes)."""
    v = float(nbytes)
    for scale, suffix in _BINARY:
        if abs(v) >= scale:
            return f"{v / scale:.{digits}f} {suffix}"
    return f"{int(v)} B"


def human_seconds(seconds: float, digits: int = 3) -> str:
    s = float(seconds)
    if s >= 1:
        return f"{s:.{digits}g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.{digits}g} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.{digits}g} µs"
    return f"{s * 1e9:.{digits}g} ns"


_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgtp]?i?b?)\s*$", re.IGNORECASE)
_SIZE_MULT = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12, "tb": 10**12,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30, "ti": 2**40, "tib": 2**40,
    "p": 10**15, "pb": 10**15, "pi": 2**50, "pib": 2**50,
}


def parse_bytes(text: str) -> int:
    """'24GiB' -> 25769803776, '80GB' -> 80e9. Raises InputError on anything else."""
    m = _SIZE_RE.match(str(text))
    if not m or m.group(2).lower() not in _SIZE_MULT:
        raise InputError(f"cannot read memory size {text!r}: write it like 24GiB, 80GB or 512MiB")
    return int(float(m.group(1)) * _SIZE_MULT[m.group(2).lower()])

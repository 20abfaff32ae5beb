"""MFU and HFU: achieved FLOP/s of a timed run divided by the dense peak of the device at the dtype.

Definitions (reference ``hardware-energy.md`` 4.1; PaLM, Chowdhery et al. 2022, appendix B):

* **model FLOPs** of a call = counted matmul FLOPs (2 x MACs) of the forward pass of the same inputs;
  for a training step 3 x that (backward = 2 x forward). Recomputation is never included, so MFU is
  comparable across implementations.
* **hardware FLOPs** of a call = every counted FLOP of the ops that really ran: matmul and non-matmul,
  every phase (forward, loss, backward, optimizer), recomputation included.
* **MFU** = model FLOPs / median latency / dense peak;  **HFU** = hardware FLOPs / median latency /
  the same dense peak (the matmul peak, so HFU is an upper-bound-style figure for non-matmul work).

The peak comes, in order, from an explicit override (``--peak-tflops``), a named device of the hardware
catalog, or the local device (its calibrated entry when one was saved, else its catalog entry). Code
here depends only on the small :class:`PeakSource` protocol, so any catalog entry that offers
``peak_flops_per_s(dtype)`` works.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ..errors import HardwareError, InputError
from ..report.benchmark import PeakInfo, Utilization

MFU_DEFINITION = ("counted forward matmul FLOPs (2 x MACs), x3 for a training step (backward = 2 x forward, "
                  "PaLM app. B), per call / median latency / dense peak at the dtype")
HFU_DEFINITION = ("all counted FLOPs of the ops that ran (matmul + non-matmul, every phase, recomputation "
                  "included) per call / median latency / the same dense peak")

DTYPE_KEYS = {
    "float32": "fp32", "fp32": "fp32", "float": "fp32",
    "float16": "fp16", "fp16": "fp16", "half": "fp16",
    "bfloat16": "bf16", "bf16": "bf16",
    "float64": "fp64", "fp64": "fp64", "double": "fp64",
    "tf32": "tf32", "fp8": "fp8", "int8": "int8", "int4": "int4",
}


def dtype_key(dtype: Any) -> str:
    """'torch.float32' / 'float32' / 'fp32' -> 'fp32' (the catalog's names)."""
    key = str(dtype).lower().replace("torch.", "")
    if key not in DTYPE_KEYS:
        raise InputError(f"unknown dtype {dtype!r} for a peak: use fp32, tf32, fp16, bf16, fp64, fp8 or int8")
    return DTYPE_KEYS[key]


def matmul_dtype_key(device: str, dtype: Any) -> str:
    """The peak that fp32 matmuls really use: TF32 on CUDA when torch allows it, else the dtype itself."""
    key = dtype_key(dtype)
    if key == "fp32" and str(device).startswith("cuda"):
        import torch

        # torch.backends.cuda.matmul.allow_tf32 = True also switches this to "high"
        if torch.get_float32_matmul_precision() != "highest":
            return "tf32"
    return key


@runtime_checkable
class PeakSource(Protocol):
    """What MFU needs from a device entry. Units: FLOP/s, bytes/s, W."""

    name: str

    def peak_flops_per_s(self, dtype: str) -> float | None: ...


def peak_info_from(source: Any, dtype: str, *, kind: str) -> PeakInfo:
    """Read a :class:`PeakSource`-like object (catalog or calibrated entry) into a :class:`PeakInfo`."""
    key = dtype_key(dtype)
    flops = source.peak_flops_per_s(key)
    bw = getattr(source, "bandwidth_bytes_per_s", None)
    bw = bw() if callable(bw) else bw
    tdp = getattr(source, "tdp_w", None)
    tdp = tdp() if callable(tdp) else tdp
    src = getattr(source, "source", None) or getattr(source, "sources", None) or ""
    if isinstance(src, (list, tuple)):
        src = "; ".join(str(s) for s in src)
    return PeakInfo(name=str(source.name), kind=kind, dtype=key, flops_per_s=None if flops is None else float(flops),
                    bandwidth_bytes_per_s=None if bw is None else float(bw), tdp_w=None if tdp is None else float(tdp),
                    source=str(src))


def override_peak(tflops: float, dtype: str, *, tdp_w: float | None = None) -> PeakInfo:
    if not tflops > 0:
        raise InputError(f"--peak-tflops must be a positive number of TFLOP/s, not {tflops}")
    return PeakInfo(name="user override", kind="override", dtype=dtype_key(dtype), flops_per_s=float(tflops) * 1e12,
                    bandwidth_bytes_per_s=None, tdp_w=tdp_w, source="--peak-tflops given on the command line")


def resolve_entry(device: str, *, hardware: str | None = None, catalog: Any = None) -> tuple[Any, str, str]:
    """The device entry for ``device``: catalog entry ``hardware`` when named, else the local device.

    Returns ``(entry or None, kind, note)``; kind is "catalog" or "calibrated"; ``note`` says why
    there is no entry. An unknown ``hardware`` name raises :class:`HardwareError` (a user error).
    ``catalog`` is an object with ``get(name)`` and ``local(device)`` (see :mod:`.catalog`); by
    default the package's hardware catalog.
    """
    if catalog is None:
        from .catalog import default_catalog

        catalog = default_catalog()
    if catalog is None:
        return None, "catalog", "no hardware catalog in this build; pass --peak-tflops"
    if hardware:
        entry = catalog.get(hardware)
        return entry, "calibrated" if getattr(entry, "calibrated", False) else "catalog", ""
    try:
        entry, kind = catalog.local(device)
    except HardwareError as exc:
        return None, "catalog", f"local device not identified ({exc}); pass --hardware NAME or --peak-tflops"
    if entry is None:
        return None, kind, ("local device not in the catalog; run 'modelmeter hardware calibrate' or pass "
                            "--peak-tflops")
    return entry, kind, ""


def resolve_peak(
    device: str,
    dtype: str,
    *,
    peak_tflops: float | None = None,
    hardware: str | None = None,
    catalog: Any = None,
) -> tuple[PeakInfo | None, str]:
    """Find the peak for MFU: override, else catalog entry ``hardware``, else the local device.

    Returns ``(peak, note)``; ``peak`` is None when none is known, and ``note`` says why.
    """
    key = matmul_dtype_key(device, dtype)
    if peak_tflops is not None:
        return override_peak(peak_tflops, key), ""
    entry, kind, note = resolve_entry(device, hardware=hardware, catalog=catalog)
    if entry is None:
        return None, note
    info = peak_info_from(entry, key, kind=kind)
    if info.flops_per_s is None:
        return info, f"{info.name} has no {key} peak; pass --peak-tflops"
    return info, ""


def utilization(
    *,
    forward_matmul_flops: int,
    hardware_flops: int,
    latency_s: float,
    train: bool,
    peak: PeakInfo | None,
    reason: str = "",
) -> Utilization:
    """MFU/HFU of one call that took ``latency_s`` (the median of the timed samples)."""
    if latency_s <= 0:
        raise InputError(f"latency must be > 0 s, not {latency_s}")
    model_flops = int(forward_matmul_flops) * (3 if train else 1)
    ach_model = model_flops / latency_s
    ach_hw = hardware_flops / latency_s
    pk = peak.flops_per_s if peak is not None else None
    if pk is None or pk <= 0:
        return Utilization(None, None, model_flops, int(hardware_flops), ach_model, ach_hw, None,
                           peak.name if peak else None, reason or "no peak known for this device and dtype",
                           MFU_DEFINITION, HFU_DEFINITION)
    return Utilization(
        mfu=ach_model / pk,
        hfu=ach_hw / pk,
        model_flops=model_flops,
        hardware_flops=int(hardware_flops),
        achieved_model_flops_per_s=ach_model,
        achieved_hardware_flops_per_s=ach_hw,
        peak_flops_per_s=pk,
        peak_name=peak.name if peak else None,
        reason="",
        mfu_definition=MFU_DEFINITION,
        hfu_definition=HFU_DEFINITION,
    )


__all__ = ["HFU_DEFINITION", "MFU_DEFINITION", "PeakSource", "dtype_key", "matmul_dtype_key", "override_peak",
           "peak_info_from", "resolve_entry", "resolve_peak", "utilization"]

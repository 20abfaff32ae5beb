"""Energy when no meter can measure: an estimate from counted work, a TDP x time bound, and CO2.

Both energy figures are labelled ``estimated``; neither is a measurement.

**Per-operation energies** (reference ``hardware-energy.md`` 2.1, 45 nm at 0.9 V; M. Horowitz,
"Computing's energy problem (and what we can do about it)", ISSCC 2014, doi:10.1109/ISSCC.2014.6757323,
as carried by stillwater-sc/esim and PMC8934428 table 3):

* fp32: multiply 3.7 pJ + add 0.9 pJ = 4.6 pJ per multiply-add = 2 FLOPs -> **2.3 pJ/FLOP**;
* fp16: multiply 1.1 pJ + add 0.4 pJ = 1.5 pJ per multiply-add -> **0.75 pJ/FLOP**; bf16 has no
  45 nm figure in the table and uses fp16's; fp64 has none either and uses fp32's (an underestimate);
* DRAM: 640 pJ per 32-bit access (Han et al. 2016, EIE / Deep Compression, from Horowitz's table)
  = 20 pJ/bit -> **160 pJ/byte**.

``E = flops x pJ/FLOP + bytes_moved x pJ/byte``, with the counted FLOPs (matmul and non-matmul) and
the counted unfused bytes moved (every op reads its inputs from and writes its outputs to DRAM). It
counts only arithmetic and DRAM access: control, caches, clocking, leakage and idle power are
left out, so real chips use more energy; 45 nm arithmetic costs more than on a modern node. Treat
it as an order of magnitude, never as a measurement.

**TDP x time** = the device's thermal design power x the measured latency: what the whole device
would draw running flat out at its design limit for that long. It is a rough upper bound on the
device's energy (boost can exceed TDP for short spells; on a shared CPU the package serves other work).

**CO2e** = energy (kWh) x PUE x grid intensity (g CO2e/kWh) (CodeCarbon's method, reference 5.3).
The default intensity is the world average of 475 g/kWh (IEA Global Energy & CO2 Status Report 2019,
CodeCarbon's fallback) and is always labelled as such: set your region's figure.
"""

from __future__ import annotations

from ..errors import InputError
from ..report.benchmark import Carbon, EnergyEstimate

#: (pJ per FLOP, citation) per dtype key
PJ_PER_FLOP: dict[str, tuple[float, str]] = {
    "fp32": ((3.7 + 0.9) / 2, "fp32 mult 3.7 + add 0.9 pJ per multiply-add (Horowitz ISSCC 2014, 45 nm)"),
    "fp16": ((1.1 + 0.4) / 2, "fp16 mult 1.1 + add 0.4 pJ per multiply-add (Horowitz ISSCC 2014, 45 nm)"),
    "bf16": ((1.1 + 0.4) / 2, "bf16 not in the 45 nm table: fp16 figures used (Horowitz ISSCC 2014)"),
    "fp64": ((3.7 + 0.9) / 2, "fp64 not in the 45 nm table: fp32 figures used, an underestimate (Horowitz ISSCC 2014)"),
    "tf32": ((3.7 + 0.9) / 2, "tf32: fp32 figures used (Horowitz ISSCC 2014, 45 nm)"),
}
#: DRAM energy per byte: 640 pJ per 32-bit access (Han et al. 2016 table from Horowitz's figures)
PJ_PER_DRAM_BYTE = 640.0 / 4
DRAM_SOURCE = "DRAM 640 pJ per 32-bit access = 160 pJ/B (Han et al. 2016 / Horowitz ISSCC 2014, 45 nm)"

WORLD_AVERAGE_G_PER_KWH = 475.0
WORLD_AVERAGE_SOURCE = ("world average 475 g/kWh (IEA Global Energy & CO2 Status Report 2019, CodeCarbon fallback); "
                        "set --grid-intensity for your region")

J_PER_KWH = 3.6e6


def estimate_energy(
    *,
    flops: int,
    bytes_moved: int,
    dtype: str,
    latency_s: float,
    tdp_w: float | None = None,
    tdp_source: str = "",
) -> EnergyEstimate:
    """Estimated energy of one call from its counted FLOPs and bytes, plus the TDP x latency bound."""
    from .mfu import dtype_key

    key = dtype_key(dtype)
    if key not in PJ_PER_FLOP:
        raise InputError(f"no per-operation energy for dtype {dtype!r}: estimates cover fp32, tf32, fp16, bf16, fp64")
    if flops < 0 or bytes_moved < 0 or latency_s < 0:
        raise InputError("flops, bytes moved and latency must be >= 0")
    pj_flop, cite = PJ_PER_FLOP[key]
    arith_j = flops * pj_flop * 1e-12
    mem_j = bytes_moved * PJ_PER_DRAM_BYTE * 1e-12
    if tdp_w is not None and not tdp_w > 0:
        raise InputError(f"TDP must be a positive number of watts, not {tdp_w}")
    return EnergyEstimate(
        label="estimated",
        flops=int(flops),
        bytes_moved=int(bytes_moved),
        pj_per_flop=pj_flop,
        pj_per_byte=PJ_PER_DRAM_BYTE,
        arithmetic_j=arith_j,
        memory_j=mem_j,
        total_j=arith_j + mem_j,
        figures=f"{cite}; {DRAM_SOURCE}",
        tdp_w=tdp_w,
        tdp_source=tdp_source if tdp_w is not None else "TDP unknown: pass --tdp-w",
        latency_s=latency_s,
        tdp_bound_j=tdp_w * latency_s if tdp_w is not None else None,
    )


def carbon(energy_per_call_j: float, batch: int, *, intensity_g_per_kwh: float | None = None,
           intensity_source: str = "", pue: float = 1.0) -> Carbon:
    """CO2e of one call and of 1000 samples. Without an intensity, the labelled world average."""
    if intensity_g_per_kwh is None:
        intensity, source = WORLD_AVERAGE_G_PER_KWH, WORLD_AVERAGE_SOURCE
    else:
        if intensity_g_per_kwh < 0:
            raise InputError(f"grid intensity must be >= 0 g/kWh, not {intensity_g_per_kwh}")
        intensity, source = float(intensity_g_per_kwh), intensity_source or "given by the user"
    if not pue >= 1.0:
        raise InputError(f"PUE must be >= 1.0 (1.0 = no facility overhead), not {pue}")
    if batch < 1:
        raise InputError(f"batch must be >= 1, not {batch}")
    g_call = energy_per_call_j / J_PER_KWH * pue * intensity
    return Carbon(grams_co2e_per_call=g_call, grams_co2e_per_1k_samples=g_call / batch * 1000,
                  intensity_g_per_kwh=intensity, intensity_source=source, pue=pue)


__all__ = ["DRAM_SOURCE", "J_PER_KWH", "PJ_PER_DRAM_BYTE", "PJ_PER_FLOP", "WORLD_AVERAGE_G_PER_KWH", "carbon",
           "estimate_energy"]

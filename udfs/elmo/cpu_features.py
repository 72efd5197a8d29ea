"""What this CPU offers the biLM's matrix products: its instruction sets, and whether bfloat16 pays on it.

bfloat16 products are fast only where the CPU multiplies bf16 itself (AVX512-BF16's dot products, AMX tiles). Elsewhere
the backend converts every operand to float32 and back, so ``precision=bfloat16`` is slower than float32 there and
changes the vectors for nothing: ``bf16_warning`` says so, once per process that asks.
"""

from __future__ import annotations

import platform
from pathlib import Path

# the instruction sets that decide a dense product's speed, in the order a reader compares CPUs by
MATMUL_FLAGS = ("fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def _cpuinfo_value(keys: tuple[str, ...], cpuinfo: Path) -> str | None:
    """The first processor's value of the first of ``keys`` that ``cpuinfo`` has; None if none (or no file)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The first processor's flags (Linux); None where the system does not say (then nothing is claimed)."""
    flags = _cpuinfo_value(("flags", "Features"), cpuinfo)  # x86, then ARM
    return None if flags is None else set(flags.split())


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    return (
        _cpuinfo_value(("model name",), cpuinfo)
        or platform.processor()
        or platform.machine()
        or "unknown CPU"
    )


def matmul_instructions(flags: set[str] | None) -> str:
    """The relevant instruction sets present, e.g. ``fma avx2 avx512f avx512_bf16 amx_bf16``; '?' if unknown."""
    if flags is None:
        return "?"
    return " ".join(f for f in MATMUL_FLAGS if f in flags) or "none of " + "/".join(MATMUL_FLAGS)


def has_bf16(flags: set[str] | None) -> bool | None:
    """Does the CPU multiply bfloat16 itself (AVX512-BF16 or AMX-BF16)? None: cannot tell."""
    if flags is None:
        return None
    return any(f in flags for f in BF16_FLAGS) or "bf16" in flags  # ARM's BF16 extension names itself 'bf16'


def bf16_warning(precision: str, device: str = "CPU", flags: set[str] | None = None) -> str | None:
    """One line for a bfloat16 run on a CPU without bf16 instructions; None where bf16 is fine or not asked for."""
    if precision != "bfloat16" or "GPU" in device.upper():
        return None
    flags = cpu_flags() if flags is None else flags
    if has_bf16(flags) is not False:
        return None
    return (
        f"precision bfloat16 on {cpu_name()}, which has no bfloat16 instructions (AVX512-BF16 or AMX-BF16; it has "
        f"{matmul_instructions(flags)}): every product converts to float32 and back, so expect it slower than "
        "float32, with less exact vectors; set precision float32 on this machine"
    )

"""Which floating-point precision fits the hardware, and a record of what the machine offers.

``auto`` picks bfloat16 only where the device multiplies it natively: CPUs with ``avx512_bf16`` or
``amx_bf16`` (AMD Zen 4/5, Intel Sapphire Rapids and later), CUDA GPUs that support bf16.
Elsewhere bfloat16 is emulated and slow (measured ~5x slower than float32 on an AVX2-only AMD Zen
3, docs/benchmarks.md), so ``auto`` is float16 on an older CUDA GPU and float32 on such a CPU.
"""

from __future__ import annotations

import platform
from functools import lru_cache

import torch

AUTO = "auto"
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model name and the flags that decide matmul precision (Linux ``/proc/cpuinfo``)."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "model name":
                    model = value.strip()
    except OSError:
        pass
    return {"model": model, "flags": [f for f in REPORTED_CPU_FLAGS if f in flags]}


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_info()["flags"] for flag in NATIVE_BF16_CPU_FLAGS)
    return False


def auto_dtype(device: torch.device | str) -> str:
    """The fastest precision of the three that the device runs natively."""
    device = torch.device(device)
    if native_bf16(device):
        return "bfloat16"
    return "float16" if device.type == "cuda" else "float32"


def resolve_dtype(name: str | None, device: torch.device | str) -> str | None:
    """``auto`` -> the device's choice; any other name (or None) unchanged."""
    return auto_dtype(device) if name == AUTO else name


def precision_record(device: torch.device | str) -> dict:
    """What a result file records about the hardware the precision was chosen for."""
    device = torch.device(device)
    record = {"device_type": device.type, "native_bf16": native_bf16(device), "cpu": cpu_info()}
    if device.type == "cuda" and torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(device)
    return record

"""Which floating-point precision fits the hardware, and a record of what the machine offers.

``auto`` picks bfloat16 only where the device multiplies it natively: CPUs with ``avx512_bf16`` or
``amx_bf16`` (AMD Zen 4 and later, Intel Sapphire Rapids and later), CUDA GPUs of compute capability
8.0 or more (Ampere and later; ``torch.cuda.is_bf16_supported()`` also counts emulation, so a V100 or
T4 would say yes), asked of the requested ``cuda:N``.
Elsewhere bfloat16 is emulated and slow (measured ~5x slower than float32 on an AVX2-only AMD Zen
3, docs/benchmarks.md), so ``auto`` is float16 on an older CUDA GPU and float32 on such a CPU.
"""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache

import torch

AUTO = "auto"
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
# Settings that choose which CPU kernels (AVX2, AVX-512, ...) torch, MKL and oneDNN run. float32
# results differ in rounding between kernel sets, enough to move a 70% run by percents. Pinning
# them to AVX2 reproduced a Zen 3 run on a Zen 4 to the last digit, not on an Intel Xeon (docs/zoo.md).
CPU_KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "ONEDNN_MAX_CPU_ISA")
NATIVE_BF16_CUDA_CAPABILITY = (8, 0)  # Ampere: bf16 tensor cores
DEFAULT_CUDA_DTYPE = "float16"  # the paper's code prunes and evaluates in float16


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model name, the flags that decide matmul precision, and the ``cpu family`` and ``model``
    numbers that tell CPU generations apart where the name does not (Linux ``/proc/cpuinfo``; the
    numbers are left out elsewhere)."""
    flags: set[str] = set()
    info = {"model": platform.processor() or platform.machine()}
    numbers = {"cpu family": "family", "model": "model_number"}
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "flags" and not flags:
                    flags = set(value.split())
                elif key == "model name":
                    info["model"] = value.strip()
                elif key in numbers and numbers[key] not in info:
                    info[numbers[key]] = value.strip()
    except OSError:
        pass
    return {**info, "flags": [f for f in REPORTED_CPU_FLAGS if f in flags]}


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` multiplies bfloat16 matrices in hardware."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and tuple(torch.cuda.get_device_capability(device)) >= NATIVE_BF16_CUDA_CAPABILITY
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


def default_dtype(device: str | None) -> str:
    """The working precision when none is asked for: the paper's float16 on a GPU (float32 on
    CUDA needs twice the memory and runs ~10x slower matmuls), float32 on a CPU (which multiplies
    float16 in software). ``device`` None: CUDA when available, as the runs' default device."""
    if device is None:
        return DEFAULT_CUDA_DTYPE if torch.cuda.is_available() else "float32"
    return DEFAULT_CUDA_DTYPE if device.split(":")[0] == "cuda" else "float32"  # a bad name: validation's to refuse


def _nvidia_driver_version() -> str | None:
    """The NVIDIA driver's version (nvidia-smi; None where it is missing or fails)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def cpu_kernels() -> dict:
    """The kernel set torch's CPU operators run (``AVX2``, ``AVX512``, ...) and every
    :data:`CPU_KERNEL_SETTINGS` variable set in this process: what a float32 CPU run's digits depend
    on beyond the CPU itself."""
    pinned = {name: os.environ[name] for name in CPU_KERNEL_SETTINGS if name in os.environ}
    return {"capability": torch.backends.cpu.get_cpu_capability(), "settings": pinned}


def precision_record(device: torch.device | str) -> dict:
    """What a result file records about the hardware the precision was chosen for: the CPU and the
    kernels it runs (:func:`cpu_kernels`); on a GPU its name, index, capability, count, CUDA and
    driver versions, the TF32 settings, and the peak memory allocated since the last
    :func:`reset_peak_memory` (the run's start)."""
    device = torch.device(device)
    record = {"device_type": device.type, "native_bf16": native_bf16(device), "cpu": cpu_info(),
              "cpu_kernels": cpu_kernels()}
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        record.update({
            "gpu": torch.cuda.get_device_name(index),
            "device_index": index,
            "gpu_capability": ".".join(map(str, torch.cuda.get_device_capability(index))),
            "gpu_count": torch.cuda.device_count(),
            "cuda_version": torch.version.cuda,
            "driver_version": _nvidia_driver_version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "peak_gpu_memory_bytes": torch.cuda.max_memory_allocated(index),
        })
    return record


def reset_peak_memory(device: torch.device | str) -> None:
    """Start counting the peak GPU memory that :func:`precision_record` reports (no-op on a CPU)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats(device)


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so a timing read after it counts that work (no-op on a CPU)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def check_device(name: str | None) -> torch.device:
    """``name`` as a device this machine has (default: CUDA when available, else the CPU); one-line
    :class:`OwlError` for a CUDA device that is missing (no GPU, or an index past the last GPU)."""
    from owl.errors import OwlError

    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise OwlError(f"--device {name} is not available on this machine (no CUDA GPU); use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise OwlError(f"--device {name} is not available: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}")
    return device

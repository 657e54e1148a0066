"""Peak memory, measured, and the largest micro-batch that fits a budget.

GPU: bytes allocated by tensors (torch.cuda.max_memory_allocated). CPU: the process's peak resident
set (VmHWM) above the resident set when training began; on Linux the peak can be reset by writing
"5" to /proc/self/clear_refs. Candidate micro-batches are tried smallest first, so even where the
peak cannot be reset, each reading is the peak of the largest batch tried so far.
"""

from __future__ import annotations

import ctypes
import gc
import resource
import sys
from collections.abc import Callable

import torch

from classicnets.errors import ClassicNetsError

_CLEAR_REFS = "/proc/self/clear_refs"


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def _proc_kib(path: str, key: str) -> int | None:
    """A `key: N kB` line of a /proc file (Linux), or None where there is none."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc malloc_trim), so RSS counts only what is in use."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: RSS may then include freed memory
        pass


# glibc mallopt parameters (malloc.h) and their defaults.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def _mallopt(param: int, value: int) -> bool:
    try:
        return ctypes.CDLL("libc.so.6").mallopt(param, value) == 1
    except (OSError, AttributeError):  # not glibc
        return False


def keep_freed_memory(keep: bool = True) -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS (keep=False: the defaults).

    Activations above 32 MiB otherwise come from a fresh mmap every step, and the kernel zeroes every page
    on first touch: VGG-11 width 1/4 at 224x224, batch 32, one core spent 0.5 s of 1.9 s per step in the
    kernel; with this, 0.0 s. Returns whether it took effect (glibc only).
    """
    if keep:
        return _mallopt(_M_MMAP_MAX, 0) and _mallopt(_M_TRIM_THRESHOLD, 2**30)
    return _mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX) and _mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)


def process_rss() -> int:
    kib = _proc_kib("/proc/self/status", "VmRSS")
    if kib is not None:
        return kib * 1024
    return process_peak_rss()


def process_peak_rss() -> int:
    kib = _proc_kib("/proc/self/status", "VmHWM")
    if kib is not None:
        return kib * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def peak(device: torch.device) -> int:
    """Peak bytes since the last reset_peak (CPU: the absolute process peak RSS)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return process_peak_rss()


def peak_above(device: torch.device, baseline: int) -> int:
    """What a budget counts: the peak of tensors on a GPU; on a CPU the peak RSS above `baseline`."""
    return peak(device) - (baseline if device.type != "cuda" else 0)


def total_memory() -> int | None:
    """This machine's RAM in bytes (/proc/meminfo's MemTotal; None where it cannot be read)."""
    kib = _proc_kib("/proc/meminfo", "MemTotal")
    return kib * 1024 if kib is not None else None


def default_budget(device: torch.device) -> int:
    """Budget when --auto-batch is given without --max-memory: most of what the device has."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
    available = _proc_kib("/proc/meminfo", "MemAvailable")
    if available is None:
        raise ClassicNetsError("cannot read the free memory of this machine; pass --max-memory, e.g. 4GiB")
    return int(available * 1024 * 0.8)


def _is_out_of_memory(e: BaseException) -> bool:
    text = str(e).lower()
    return isinstance(e, (torch.cuda.OutOfMemoryError, MemoryError)) or (
        isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)
    )


# On a CPU the peak of the same training step moves by about 10% between runs (allocator fragmentation,
# the real data batches, the test pass): measured for VGG-11 at 224, micro-batch 32, a 3.8 GiB trial step
# and then 3.5 or 4.1 GiB while training. The chosen micro-batch keeps that much of the budget free.
HEADROOM = 0.1


def _predicted_peak(peaks: dict[int, int], m: int) -> float:
    """Peak at micro-batch m on the line through the last two measured sizes (0 with fewer than two):
    activations grow linearly with the batch, while weights and optimizer state are a constant."""
    if len(peaks) < 2:
        return 0.0
    (m1, p1), (m2, p2) = sorted(peaks.items())[-2:]
    return p2 + (p2 - p1) * (m - m2) / (m2 - m1)


def find_micro_batch(try_step: Callable[[int], None], per_rank_batch: int, budget: int, device: torch.device,
                     baseline: int = 0, headroom: float = HEADROOM) -> tuple[int, dict[int, int]]:
    """Largest divisor m of `per_rank_batch` whose measured peak of `try_step(m)` fits the budget less
    `headroom` (a fraction of it).

    `baseline` is subtracted on CPU (the process's RSS before training began). Returns m and the peaks
    measured (bytes above baseline) per tried size. A size whose peak, extrapolated linearly from the
    last two sizes measured, would not fit is not tried: on a CPU nothing stops a trial step from
    really using that memory (VGG-11 at 224 under 4 GiB: trying micro-batch 64 after 32 took the process
    to 6.7 GiB), so the search itself must stay within the budget.
    """
    limit = budget * (1 - headroom)
    candidates = [m for m in range(1, per_rank_batch + 1) if per_rank_batch % m == 0]
    peaks: dict[int, int] = {}
    best = 0
    for m in candidates:
        if _predicted_peak(peaks, m) > limit:
            break
        release_free_memory()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reset_peak(device)
        try:
            try_step(m)
            used = peak_above(device, baseline)
        except Exception as e:
            if not _is_out_of_memory(e):
                raise
            used = budget + 1
        peaks[m] = used
        if used > limit:
            break
        best = m
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if best == 0:
        raise ClassicNetsError(
            f"a micro-batch of 1 needs {format_bytes(peaks[1])} (data, model, optimizer state, activations) "
            f"but the budget is {format_bytes(budget)}: raise --max-memory, or use --precision bf16, "
            "--activation-checkpointing, or a smaller --width or --size"
        )
    return best, peaks

"""Where a run executes and with which process-wide torch settings.

`torch_settings` is the one place that sets torch's threads, deterministic kernels and cuDNN autotuning
(and, on a CPU, whether freed memory is kept), and puts back what was there before: the trainer, bench,
the benchmarks and the paper experiment all run inside it, so a notebook keeps its own settings. Inside
it, `threads.AdaptiveThreads` may lower the count while another program is busy (no --threads given).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from classicnets.errors import ClassicNetsError
from classicnets.training import memory
from classicnets.training.config import TrainConfig
from classicnets.training.distributed import Dist

MAX_THREADS_PER_CORE = 8  # beyond this OpenMP gains nothing, and 100000 threads crash it outright


def cpu_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(dist: Dist | None = None) -> int:
    """All cores, split between the processes of this machine (torchrun --nproc_per_node)."""
    return max(1, cpu_cores() // (dist.local_world_size if dist is not None else 1))


def wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def pick_device(name: str, dist: Dist | None = None) -> torch.device:
    """"auto" is the GPU when there is one; under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ClassicNetsError(f"device {name} requested but no CUDA GPU is available; use --device cpu")
        if dist is not None and dist.active:
            return torch.device("cuda", dist.local_rank)
        device = torch.device(name)
        return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has bf16 convolutions for this CPU (AVX-512, native with avx512_bf16 or AMX). Without
    them torch runs bf16 convolutions in its reference code: measured 2026-12-02 on an AVX2-only AMD EPYC
    (2 threads), the fast recipe's step 85 img/s in bf16 against 700 in fp32, VGG-11 at 224 15x slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the check: assume the kernels are there
        return True


def autocast_precision(precision: str, device: torch.device) -> tuple[str, str | None]:
    """The precision a run uses on `device`, and a note worth telling: bf16 on a CPU without bf16 kernels
    runs in fp32, which is many times faster there and loses nothing; fp16 on a CPU (torch's CPU autocast and
    GradScaler("cpu") take it) runs as asked, to test the GPU's path."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_kernels():
        return "fp32", ("precision: this CPU has no bf16 convolution kernels (oneDNN needs AVX-512), where bf16 "
                        "runs ~8x slower than fp32: this run uses fp32")
    if precision == "fp16" and device.type == "cpu":
        return "fp16", ("precision fp16 on a CPU: the GPU's mixed precision with its grad scaler, here to test "
                        "that path; bf16 or fp32 train faster on a CPU")
    return precision, None


def run_settings(config: TrainConfig, device: torch.device, dist: Dist | None = None) -> dict:
    """The `torch_settings` keywords a training run asks for: --threads (default: `default_threads`),
    --deterministic, --cudnn-benchmark, and --keep-memory on a CPU."""
    return {"threads": config.threads or default_threads(dist), "deterministic": config.deterministic,
            "cudnn_benchmark": config.cudnn_benchmark,
            "keep_freed_memory": device.type == "cpu" and config.keep_memory}


@contextmanager
def torch_settings(*, threads: int | None = None, deterministic: bool | None = None,
                   cudnn_benchmark: bool | None = None, keep_freed_memory: bool = False) -> Iterator[None]:
    """Set torch's process-wide settings for a block and restore them afterwards; None leaves one as it is.

    `deterministic` asks for deterministic kernels (bitwise repeatable, warn-only where torch has none)
    and turns cuDNN autotuning off; `keep_freed_memory` keeps freed CPU memory for the next step instead
    of returning it to the OS (glibc only; see `memory.keep_freed_memory`).
    """
    if threads is not None and not 1 <= threads <= MAX_THREADS_PER_CORE * cpu_cores():
        raise ClassicNetsError(f"threads must be between 1 and {MAX_THREADS_PER_CORE * cpu_cores()} "
                               f"({MAX_THREADS_PER_CORE}x this machine's {cpu_cores()} cores); got {threads}")
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    kept = False
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        if deterministic is not None:
            if deterministic:
                os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
                torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = deterministic
        if cudnn_benchmark is not None or deterministic is not None:
            torch.backends.cudnn.benchmark = bool(cudnn_benchmark) and not deterministic
        kept = keep_freed_memory and memory.keep_freed_memory()
        yield
    finally:
        threads_before, det, warn_only, benchmark, cudnn_det = saved
        torch.set_num_threads(threads_before)
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark
        torch.backends.cudnn.deterministic = cudnn_det
        if kept:
            memory.keep_freed_memory(False)

"""Device, precision and CPU threading: the GPU when there is one, bf16 on CPUs that compute it natively, and
single-threaded workers rather than torch's intra-op threads on CPUs (see :func:`worker_pool`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from ..choices import DEVICE_CHOICES, PRECISION_CHOICES
from ..errors import EdranFusionError

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; an explicit device that is missing is a user error."""
    if name not in DEVICE_CHOICES:
        raise EdranFusionError(f"unknown device '{name}'; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise EdranFusionError(
            "device 'cuda' requested but no CUDA GPU is available to PyTorch; use --device cpu or auto"
        )
    if name == "mps" and not _mps_available():
        raise EdranFusionError("device 'mps' requested but Apple MPS is not available; use --device cpu or auto")
    return torch.device(name)


def precision_name(dtype: torch.dtype) -> str:
    """'fp32', 'bf16' or 'fp16': the user-facing name of a resolved precision."""
    return next(name for name, known in _DTYPES.items() if known == dtype)


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 convolutions natively (AVX-512 BF16 or AMX), so bf16 is a speed-up."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """``auto``: fp16 on CUDA/MPS, bf16 on CPUs with native bf16, else fp32."""
    if name not in PRECISION_CHOICES:
        raise EdranFusionError(f"unknown precision '{name}'; choose one of {', '.join(PRECISION_CHOICES)}")
    if name != "auto":
        return _DTYPES[name]
    if device.type in ("cuda", "mps"):
        return torch.float16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32


def autocast_if(enabled: bool, device_type: str, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """``torch.autocast`` when ``enabled``, else no context at all: torch 2.1 (Slicer 5.8's Python may hold it)
    refuses a CPU autocast of any dtype but bf16 even when it is disabled."""
    return torch.autocast(device_type, dtype=dtype) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def single_threaded_ops() -> Iterator[None]:
    """torch intra-op threads set to 1 for the block, then restored (threads created inside start with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def worker_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """Threads for ``workers`` concurrent batches; with more than one, torch runs single-threaded inside each
    so that the workers, not the operators, share the cores. Used by the fuser, SFNN and the benchmark."""
    single = workers > 1
    with single_threaded_ops() if single else contextlib.nullcontext():
        pool = ThreadPoolExecutor(workers, initializer=torch.set_num_threads if single else None,
                                  initargs=(1,) if single else ())
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

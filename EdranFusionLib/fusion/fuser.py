"""The one path from two stacks of [0,1] slices to one fused stack: batching, device, precision, progress.

Everything that fuses (2-D images, volumes, the Slicer module, evaluation, benchmarks) comes through
:func:`fuse_stacks`, so speed work and memory bounds live here once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch

from ..choices import DEFAULT_STRATEGY, LEARNED_STRATEGY, STRATEGY_NAMES, is_strategy
from ..errors import EdranFusionError, FusionCancelled
from ..network.devices import autocast_if, resolve_device, resolve_precision, worker_pool
from ..network.host_memory import available_memory_bytes
from ..network.model import EHDRAN, LATENT_CHANNELS, fold_for_inference
from .intensity import NormalisedStack
from .learned import fusion_head_of
from .strategies import decode_fused

MIN_SIZE = 8
MAX_AUTO_BATCH = 8
# On a CPU a batch beyond ~32k pixels per worker is slower per slice, not faster: the convolutions are already
# large enough, and bigger feature maps fall out of the core's cache (256x256: batch 1 is ~20% faster than 2).
_CPU_PIXELS_PER_BATCH = 32768
# Live feature maps per slice at the encoder's peak, in units of one latent (64 x H x W), measured with
# tracemalloc-free RSS probes on 256x256 and 512x512 inputs and rounded up for safety.
_PEAK_LATENTS_PER_SLICE = 12

Progress = Callable[[float], None]
Cancel = Callable[[], bool]
Sink = Callable[[np.ndarray, np.ndarray], None]  # (slice indices, fused [0,1] slices) -> stored by the caller
Stack = Union[np.ndarray, NormalisedStack]  # Union, not |: Slicer 5.8's Python 3.9 evaluates this line


@dataclass(frozen=True)
class FusionPlan:
    """Resolved settings for one run, reported to users (e.g. the device in use).

    ``workers`` batches run at once, each single-threaded (CPU only). On a shared or busy CPU this beats
    torch's intra-op threads several times over: independent slices never wait for each other at the
    per-operator barriers, and the LAPACK eigenvalue calls of SFNN do not thread well at 256 x 256.
    """

    device: torch.device
    dtype: torch.dtype
    batch_size: int
    strategy: str
    workers: int = 1


def _available_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return available_memory_bytes()


def working_bytes_per_slice(height: int, width: int, dtype: torch.dtype = torch.float32) -> int:
    """Memory one slice pair needs while it is fused (activations at the encoder's peak)."""
    bytes_per_slice = 2 * _PEAK_LATENTS_PER_SLICE * LATENT_CHANNELS * height * width * 4
    if dtype != torch.float32:
        bytes_per_slice = bytes_per_slice * 3 // 4  # weights/outputs stay fp32, activations halve
    return bytes_per_slice


def _slices_fitting(height: int, width: int, device: torch.device, dtype: torch.dtype) -> int:
    """How many slices' activations fit in half the memory available now."""
    return (_available_memory_bytes(device) // 2) // max(working_bytes_per_slice(height, width, dtype), 1)


def auto_batch_size(height: int, width: int, device: torch.device, dtype: torch.dtype, workers: int = 1) -> int:
    """Largest batch (at most 8) whose activations, times ``workers`` batches in flight, fit in half the
    memory available now; on a CPU also at most ~32k pixels (at least one slice), which is fastest there."""
    fitting = _slices_fitting(height, width, device, dtype) // workers
    limit = MAX_AUTO_BATCH if device.type != "cpu" else _CPU_PIXELS_PER_BATCH // (height * width)
    return int(max(1, min(MAX_AUTO_BATCH, limit, fitting)))


def plan_fusion(
    shape: tuple[int, int],
    strategy: str = DEFAULT_STRATEGY,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    *,
    workers: int | None = None,
) -> FusionPlan:
    """Validate the settings and resolve ``auto`` choices for slices of ``shape`` (H, W).

    ``workers`` defaults to torch's thread count on the CPU (so ``torch.set_num_threads`` still rules), fewer
    if their slices would not fit in memory, and to 1 on GPUs, which parallelise inside each batch.
    """
    if not is_strategy(strategy):
        raise EdranFusionError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGY_NAMES)}")
    if batch_size is not None and batch_size < 1:
        raise EdranFusionError(f"batch size must be at least 1 (got {batch_size})")
    if workers is not None and workers < 1:
        raise EdranFusionError(f"workers must be at least 1 (got {workers})")
    torch_device = resolve_device(device)
    dtype = resolve_precision(precision, torch_device)
    if torch_device.type != "cpu":
        workers = 1
    if workers is None:
        fitting = _slices_fitting(shape[0], shape[1], torch_device, dtype)
        workers = max(1, min(torch.get_num_threads(), fitting))
    batch = batch_size or auto_batch_size(shape[0], shape[1], torch_device, dtype, workers)
    if batch_size is not None and torch_device.type == "cpu":
        fitting = max(1, _slices_fitting(shape[0], shape[1], torch_device, dtype) // workers)
        if batch > fitting:  # fuse in smaller batches rather than run out of memory
            warnings.warn(f"batch size {batch} does not fit in the memory available now; fusing {fitting} "
                          "slices at a time", RuntimeWarning, stacklevel=3)
            batch = fitting
    return FusionPlan(torch_device, dtype, batch, strategy, workers)


def _check_stacks(a: Stack, b: Stack) -> None:
    if a.ndim != 3 or b.ndim != 3:
        raise EdranFusionError("fuse_stacks expects two [slices, H, W] arrays")
    if a.shape != b.shape:
        raise EdranFusionError(
            f"inputs differ in shape ({a.shape} vs {b.shape}); give co-registered images of one size"
        )
    if min(a.shape[1:]) < MIN_SIZE:
        raise EdranFusionError(
            f"slices of {a.shape[1]}x{a.shape[2]} pixels are too small; EH-DRAN needs at least {MIN_SIZE}x{MIN_SIZE}"
        )


class _Runner:
    """Encodes, fuses and decodes one batch; owns the model on its device and the precision context."""

    def __init__(self, model: EHDRAN, plan: FusionPlan) -> None:
        self.plan = plan
        # On a CPU the weights are cast once to the run's precision: autocast would re-cast them on every call
        # and run some element-wise ops in fp32, extra conversion passes that cost ~30% there. GPUs keep fp32
        # weights under autocast, which holds the sensitive ops (sigmoid, interpolation) in fp32 at little cost.
        self.autocast = plan.device.type != "cpu" and plan.dtype != torch.float32
        weights = torch.float32 if self.autocast else plan.dtype
        self.model = fold_for_inference(model).to(plan.device, weights, memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        device = self.plan.device
        images = torch.from_numpy(np.concatenate([a, b])[:, None]).to(device, torch.float32)
        pair = images.to(self.model.shallow.weight.dtype)
        with autocast_if(self.autocast, device.type, self.plan.dtype):
            latent_a, latent_b = self.model.encode(pair.contiguous(memory_format=torch.channels_last)).chunk(2)
            # The guided pyramid keeps the sources' own pixels, so it gets them in float32, not the run's dtype.
            fused = decode_fused(self.model, latent_a, latent_b, self.plan.strategy, images.chunk(2))
        return fused.float().clamp_(0.0, 1.0)[:, 0].cpu().numpy()


def fuse_stacks(
    a: Stack,
    b: Stack,
    model: EHDRAN,
    *,
    strategy: str = DEFAULT_STRATEGY,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    workers: int | None = None,
    sink: Sink | None = None,
) -> np.ndarray | None:
    """Fuse two [N, H, W] stacks of [0,1] slices; returns float32 [N, H, W] in [0,1].

    The stacks are arrays or :class:`NormalisedStack` views, which normalise each batch as it is taken. With
    ``sink``, nothing full-size is allocated here: every slice (empty ones as zeros) is handed to
    ``sink(indices, fused)`` once, batch by batch, and None is returned; that is how volumes stream.

    Slices where both inputs are empty (all zero after normalisation, e.g. air around a head) are not run
    through the network and stay zero. ``cancel`` is checked before every batch and raises
    :class:`FusionCancelled`; ``progress`` receives the fraction done after every batch. On CUDA an
    out-of-memory error halves the batch and retries, and at batch 1 falls back to the CPU with a warning.
    ``workers``: batches fused concurrently on the CPU (see :class:`FusionPlan`; default: torch's threads).
    """
    _check_stacks(a, b)
    if strategy == LEARNED_STRATEGY:
        fusion_head_of(model)
    plan = plan_fusion(a.shape[1:], strategy, device, precision, batch_size, workers=workers)
    output = np.zeros(a.shape, dtype=np.float32) if sink is None else None
    store = sink or output.__setitem__
    nonzero = _nonzero_slices(a) | _nonzero_slices(b)
    busy = np.flatnonzero(nonzero)
    batches = -(-len(busy) // plan.batch_size)
    if 0 < batches < plan.workers:  # e.g. one 2-D pair: torch's own threads are then the only way to use the cores
        plan = dataclasses.replace(plan, workers=batches)
    runner = _Runner(model, plan)
    in_flight: deque[tuple[np.ndarray, Future]] = deque()
    submitted = done = 0
    with worker_pool(plan.workers) as pool:
        while done < len(busy):
            while submitted < len(busy) and len(in_flight) < runner.plan.workers:
                if cancel is not None and cancel():
                    raise FusionCancelled()
                index = busy[submitted : submitted + runner.plan.batch_size]
                in_flight.append((index, pool.submit(runner, a[index], b[index])))
                submitted += len(index)
            index, batch = in_flight.popleft()
            try:
                store(index, batch.result())
            except torch.cuda.OutOfMemoryError:
                _drain(in_flight)
                runner = _smaller_runner(model, runner.plan)
                submitted = done
                continue
            done += len(index)
            if progress is not None:
                progress(done / len(busy))
    if progress is not None and len(busy) == 0:
        progress(1.0)
    if sink is not None:
        idle = np.flatnonzero(~nonzero)
        for start in range(0, len(idle), plan.batch_size):
            index = idle[start : start + plan.batch_size]
            sink(index, np.zeros((len(index), *a.shape[1:]), dtype=np.float32))
    return output


def _nonzero_slices(stack: Stack) -> np.ndarray:
    """Boolean per slice: anything to fuse (all-zero slices, e.g. air around a head, are skipped)."""
    if isinstance(stack, NormalisedStack):
        return stack.nonzero_slices()
    return stack.reshape(len(stack), -1).any(axis=1)


def _drain(in_flight: deque[tuple[np.ndarray, Future]]) -> None:
    """Wait for batches started before an out-of-memory error; they are run again on the smaller runner."""
    while in_flight:
        with contextlib.suppress(Exception):
            in_flight.popleft()[1].result()


def _smaller_runner(model: EHDRAN, plan: FusionPlan) -> _Runner:
    torch.cuda.empty_cache()
    if plan.batch_size > 1:
        return _Runner(model, FusionPlan(plan.device, plan.dtype, plan.batch_size // 2, plan.strategy, 1))
    warnings.warn("GPU out of memory even one slice at a time; continuing on the CPU", RuntimeWarning, stacklevel=3)
    cpu = torch.device("cpu")
    return _Runner(model, FusionPlan(cpu, resolve_precision("auto", cpu), 1, plan.strategy, 1))

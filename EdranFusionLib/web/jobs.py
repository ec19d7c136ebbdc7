"""The job queue: one worker thread fuses one job at a time with the library's ``fuse_volumes``.

Requests only enqueue, poll and cancel, so the web server stays responsive while the model runs. Each job owns
one folder (its uploads, then its results); a failed or cancelled job's folder is removed at once, a finished
one after its result is downloaded or when it expires. The fuser's progress callback feeds the job's
fraction done, and its cancel callback reads the job's cancel flag before every batch.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from ..errors import EdranFusionError, FusionCancelled
from ..fusion.pipeline import fuse_volumes
from ..io import volumes
from .storage import remove_folder

DOWNLOAD_SUFFIXES = {"nii.gz": ".nii.gz", "nrrd": ".nrrd"}  # format name -> result file suffix
VIEW_NAMES = ("a", "b", "fused")  # volumes the page shows, as <name>.nii.gz in the job folder
_LOG = logging.getLogger("edranfusion.serve")


@dataclass
class Job:
    """One fusion request: its inputs, settings, state and where its files live."""

    owner: str
    folder: Path
    inputs: dict[str, Path]  # "a" / "b" -> volume file or DICOM folder
    labels: dict[str, str]  # "a" / "b" -> what the user picked (file name)
    settings: dict  # keyword arguments of fuse_volumes: model, strategy, device, resample
    id: str = field(default_factory=lambda: secrets.token_hex(16))
    state: str = "queued"  # queued -> running -> done | failed | cancelled
    phase: str = "waiting in the queue"
    progress: float = 0.0
    message: str = ""
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def result_path(self, format_name: str) -> Path:
        return self.folder / f"fused{DOWNLOAD_SUFFIXES[format_name]}"

    def view_path(self, name: str) -> Path:
        """A, B (on A's grid) and the fused volume as NIfTI for the page's viewer."""
        return self.result_path("nii.gz") if name == "fused" else self.folder / f"{name}.view.nii.gz"

    def summary(self, position: int | None) -> dict:
        """What the page shows: state, phase, fraction done, place in the queue, timings, error message."""
        return {
            "id": self.id, "state": self.state, "phase": self.phase, "progress": round(self.progress, 4),
            "message": self.message, "labels": self.labels, "queue_position": position,
            "settings": {k: str(v) for k, v in self.settings.items()},
            "queue_wait_s": None if self.started is None else round(self.started - self.submitted, 3),
            "run_s": None if self.finished is None or self.started is None else round(self.finished - self.started, 3),
        }


class JobQueue:
    """Jobs in submission order, run by one daemon worker; finished jobs expire after ``expiry_s``."""

    def __init__(self, expiry_s: float = 3600.0, max_waiting: int = 32) -> None:
        self.expiry_s = expiry_s
        self.max_waiting = max_waiting
        self._jobs: dict[str, Job] = {}
        self._waiting: deque[Job] = deque()
        self._condition = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="edranfusion-fuser", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Job:
        with self._condition:
            if len(self._waiting) >= self.max_waiting:
                raise EdranFusionError(
                    f"the server's queue is full ({self.max_waiting} jobs waiting); try again when a job has finished"
                )
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._condition.notify_all()
        return job

    def find(self, job_id: str) -> Job | None:
        """The job with this id: the 128-bit random id is the capability to see, cancel and download it."""
        with self._condition:
            return self._jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """1 for the next job to run; None when the job is not waiting."""
        with self._condition:
            return next((i for i, j in enumerate(self._waiting, start=1) if j is job), None)

    def owned_by(self, owner: str) -> list[Job]:
        with self._condition:
            return [job for job in self._jobs.values() if job.owner == owner]

    def cancel(self, job: Job) -> None:
        """A waiting job is dropped at once; a running one stops before the fuser's next batch."""
        with self._condition:
            if job in self._waiting:
                self._waiting.remove(job)
                self._end(job, "cancelled", FusionCancelled().args[0])
            elif job.state == "running":
                job.cancel_requested.set()

    def forget(self, job: Job) -> None:
        """Remove a job and its files (after its download, or when the user closes it)."""
        with self._condition:
            if job.state == "running":
                job.cancel_requested.set()
                return
            if job in self._waiting:
                self._waiting.remove(job)
            self._jobs.pop(job.id, None)
        remove_folder(job.folder)

    def stop(self) -> None:
        with self._condition:
            self._stopping = True
            for job in list(self._waiting):
                self._end(job, "cancelled", "the server is shutting down")
            self._waiting.clear()
            for job in self._jobs.values():
                job.cancel_requested.set()
            self._condition.notify_all()
        self._worker.join(timeout=30)

    def _end(self, job: Job, state: str, message: str = "") -> None:
        job.state, job.message, job.finished = state, message, time.time()
        job.phase = {"done": "done", "failed": "failed", "cancelled": "cancelled"}[state]
        if state != "done":
            remove_folder(job.folder)

    def _next(self) -> Job | None:
        with self._condition:
            self._expire()
            while not self._waiting and not self._stopping:
                self._condition.wait(timeout=min(60.0, self.expiry_s))
                self._expire()
            if self._stopping:
                return None
            job = self._waiting.popleft()
            job.state, job.started, job.phase = "running", time.time(), "reading the volumes"
            return job

    def _expire(self) -> None:
        now = time.time()
        for job in [j for j in self._jobs.values() if j.finished is not None and now - j.finished > self.expiry_s]:
            self._jobs.pop(job.id)
            remove_folder(job.folder)

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                run_job(job)
            except FusionCancelled as error:
                outcome = ("cancelled", str(error))
            except EdranFusionError as error:
                outcome = ("failed", str(error))
            except Exception as error:  # a bug: keep serving, tell the user, log the traceback
                _LOG.exception("job %s failed", job.id)
                outcome = ("failed", f"internal error ({type(error).__name__}: {error}); see the server's log")
            else:
                outcome = ("done", "")
            with self._condition:
                self._end(job, *outcome)


def run_job(job: Job) -> None:
    """Read, fuse (with progress and cancel), then write the views and both download formats into the job folder."""
    a, b = volumes.read_volume(job.inputs["a"]), volumes.read_volume(job.inputs["b"])

    def report(fraction: float) -> None:
        job.phase, job.progress = "fusing", fraction

    fused = fuse_volumes(a, b, progress=report, cancel=job.cancel_requested.is_set, **job.settings)
    job.phase = "writing the result"
    for format_name in DOWNLOAD_SUFFIXES:
        volumes.write_volume(fused, job.result_path(format_name))
    for name, image in (("a", a), ("b", volumes.align_to(a, b, job.settings.get("resample", False)))):
        sitk.WriteImage(image, str(job.view_path(name)), useCompression=True)
    if job.cancel_requested.is_set():
        raise FusionCancelled

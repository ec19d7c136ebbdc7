"""The job queue on its own (no HTTP): a finished job's folder expires; a failed job's goes at once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from conftest import blob_image, oblique_volume

from EdranFusionLib.web.jobs import Job, JobQueue


def _wait_until(condition, timeout: float = 120) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_done_jobs_expire_and_failed_jobs_leave_nothing(tmp_path: Path) -> None:
    for name, seed in (("a", 1), ("b", 2)):
        sitk.WriteImage(oblique_volume(blob_image((2, 24, 24), seed, np.int16)), str(tmp_path / f"{name}.nii.gz"))
    queue = JobQueue(expiry_s=1.0)
    try:
        settings = {"model": "general", "strategy": "average", "device": "cpu", "resample": False}
        folders = [tmp_path / "job-ok", tmp_path / "job-bad"]
        for folder in folders:
            folder.mkdir()
        good = queue.submit(Job("me", folders[0], {"a": tmp_path / "a.nii.gz", "b": tmp_path / "b.nii.gz"},
                                {"a": "a", "b": "b"}, dict(settings)))
        bad = queue.submit(Job("me", folders[1], {"a": tmp_path / "a.nii.gz", "b": tmp_path / "missing.nii.gz"},
                               {"a": "a", "b": "missing"}, dict(settings)))
        assert _wait_until(lambda: bad.state == "failed")
        assert good.state == "done" and good.result_path("nrrd").is_file() and good.view_path("b").is_file()
        assert "does not exist" in bad.message and not folders[1].exists()
        assert _wait_until(lambda: queue.find(good.id) is None, timeout=30)
        assert not folders[0].exists()
    finally:
        queue.stop()

"""Load check of the web server: several clients submitting jobs at once against one server on 127.0.0.1.

Each client uploads its own slab of the bundled stroke T2 + FLAIR (so every result differs), submits its jobs,
waits, downloads, and the result is compared with ``fuse_volumes`` run here on the same slab. Jobs run one at a
time on the server, so queue wait grows with the queue while run time per job stays flat; the figures say so.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..fusion.pipeline import fuse_volumes
from ..io import volumes
from ..web.client import FusionClient, running_server
from .speed import SAMPLE_DIR


def _slabs(folder: Path, clients: int, slices: int) -> list[tuple[Path, Path]]:
    """Per client, ``slices`` consecutive axial slices of T2 and FLAIR, at different depths."""
    t2, flair = (volumes.read_volume(SAMPLE_DIR / name) for name in ("T2.nii.gz", "FLAIR.nii.gz"))
    depth = t2.GetSize()[2]
    starts = np.linspace(depth // 4, depth - depth // 4 - slices, clients).astype(int)
    pairs = []
    for number, start in enumerate(starts):
        pair = []
        for name, image in (("T2", t2), ("FLAIR", flair)):
            path = folder / f"client{number}_{name}.nii.gz"
            sitk.WriteImage(image[:, :, int(start):int(start) + slices], str(path), useCompression=True)
            pair.append(path)
        pairs.append(tuple(pair))
    return pairs


def web_load(clients: int = 4, jobs_per_client: int = 2, slices: int = 24) -> dict:
    """Queue wait, run time and end-to-end time of every job, and whether every result was right."""
    rows: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        pairs = _slabs(folder, clients, slices)
        shape = list(sitk.ReadImage(str(pairs[0][0])).GetSize())
        expected = [sitk.GetArrayFromImage(fuse_volumes(volumes.read_volume(a), volumes.read_volume(b)))
                    for a, b in pairs]
        with running_server() as server:

            def one_client(number: int) -> None:
                client = FusionClient(server.url)
                a, b = pairs[number]
                try:
                    submitted = []
                    for _ in range(jobs_per_client):
                        job = client.submit({"upload": client.upload(a)}, {"upload": client.upload(b)})
                        submitted.append((job["id"], time.perf_counter()))
                    for job_id, start in submitted:
                        job = client.wait(job_id, timeout=1800)
                        result = folder / f"{job_id}.nii.gz"
                        client.download(job_id, result)
                        error = float(np.abs(sitk.GetArrayFromImage(sitk.ReadImage(str(result))) -
                                             expected[number]).max())
                        with lock:
                            rows.append({"client": number, "queue_wait_s": job["queue_wait_s"],
                                         "run_s": job["run_s"], "end_to_end_s": time.perf_counter() - start,
                                         "max_abs_error": error, "correct": job["state"] == "done" and error < 1e-3})
                except Exception as problem:  # reported, not raised: the figures of the other clients still count
                    with lock:
                        failures.append(f"client {number}: {problem}")

            start = time.perf_counter()
            threads = [threading.Thread(target=one_client, args=(n,)) for n in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
    waits, runs = [r["queue_wait_s"] for r in rows], [r["run_s"] for r in rows]
    all_correct = not failures and len(rows) == clients * jobs_per_client and all(r["correct"] for r in rows)
    return {
        "clients": clients, "jobs_per_client": jobs_per_client, "shape": shape, "jobs_done": len(rows),
        "all_correct": all_correct, "failures": failures, "wall_s": wall,
        "queue_wait_median_s": statistics.median(waits) if waits else float("nan"),
        "queue_wait_max_s": max(waits, default=float("nan")),
        "run_median_s": statistics.median(runs) if runs else float("nan"), "jobs_per_minute": 60 * len(rows) / wall,
        "jobs": sorted(rows, key=lambda r: r["queue_wait_s"]),
    }

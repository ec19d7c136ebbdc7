"""The HTTP API and the page (Starlette, served by uvicorn); every fusion goes through jobs.py's queue.

Routes (JSON unless noted): GET /api/info, GET /api/data, POST /api/uploads?name=FILE (raw body),
POST /api/jobs, GET /api/jobs, GET|DELETE /api/jobs/{id}, GET /api/jobs/{id}/view/{a|b|fused}.nii.gz,
GET /api/jobs/{id}/result?format=nii.gz|nrrd (the download; the job's files are removed once it is sent).
User errors answer 400 with ``{"error": "<the CLI's one-line message>"}``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..choices import (
    DEFAULT_MODEL,
    DEVICE_CHOICES,
    STRATEGY_NAMES,
    is_strategy,
    strategies_offered,
    strategy_description,
)
from ..errors import EdranFusionError
from ..io import volumes
from ..io.weights import bundled_models, card_default_strategy, default_strategy_of
from ..network.devices import resolve_device
from .access import CLIENT_HEADER, AccessGuard, is_loopback
from .assets import STATIC_DIR, check_assets
from .jobs import DOWNLOAD_SUFFIXES, VIEW_NAMES, Job, JobQueue
from .storage import DataFolder, new_folder, remove_folder, save_upload, unpack_dicom_zip

_NO_JOB = "no such job (it was downloaded, cancelled or has expired); submit it again"


def device_label(name: str) -> str:
    """What the page shows next to the device choice: the GPU that will run, or that it is the CPU."""
    device = resolve_device(name)
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)} (cuda)"
    if device.type == "mps":
        return "Apple GPU (mps)"
    return f"CPU, {torch.get_num_threads()} threads" + (" (no GPU found)" if name == "auto" else "")


class FusionServer:
    """State shared by the routes: the data folder, the work folder, uploads waiting for a job, the queue."""

    def __init__(self, data: str | os.PathLike | None, work: Path, max_upload_bytes: int, expiry_s: float) -> None:
        self.data = DataFolder(data)
        self.work = work
        self.max_upload_bytes = max_upload_bytes
        self.expiry_s = expiry_s
        self.uploads: dict[str, tuple[Path, str, float]] = {}  # id -> (file, original name, time)
        self.queue = JobQueue(expiry_s=expiry_s)

    # -- routes -------------------------------------------------------------------------------------------
    async def info(self, _request: Request) -> JSONResponse:
        available = [d for d in DEVICE_CHOICES if d in ("auto", "cpu") or _device_works(d)]
        models = bundled_models()
        defaults = {name: card_default_strategy(model.card) for name, model in models.items()}
        strategies = strategies_offered(defaults.values())
        return JSONResponse({
            "models": {name: model.task for name, model in models.items()},
            "strategies": strategies,
            "strategy_descriptions": {name: strategy_description(name) for name in strategies},
            "default_strategies": defaults,
            "devices": {d: device_label(d) for d in available},
            "has_data": self.data.root is not None,
            "max_upload_mb": self.max_upload_bytes // 2**20,
            "download_formats": list(DOWNLOAD_SUFFIXES),
        })

    async def list_data(self, _request: Request) -> JSONResponse:
        return JSONResponse({"volumes": await run_in_threadpool(self.data.volumes)})

    async def upload(self, request: Request) -> JSONResponse:
        self._expire_uploads()
        name = request.query_params.get("name", "")
        folder = new_folder(self.work, "upload-")
        try:
            path = await save_upload(request.stream(), folder, name, self.max_upload_bytes)
        except BaseException:
            remove_folder(folder)
            raise
        upload_id = secrets.token_hex(16)
        self.uploads[upload_id] = (path, name, time.time())
        return JSONResponse({"upload": upload_id, "name": name, "bytes": path.stat().st_size})

    async def submit(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError as error:
            raise EdranFusionError("the request body is not JSON; send the job as JSON") from error
        if not isinstance(body, dict):
            raise EdranFusionError("the job must be a JSON object with 'a', 'b' and the settings")
        settings = _settings(body)
        folder = new_folder(self.work, "job-")
        try:
            inputs, labels = {}, {}
            for key in ("a", "b"):
                inputs[key], labels[key] = self._take_input(body.get(key), key, folder)
            await run_in_threadpool(_check_inputs, inputs, settings["resample"])
        except EdranFusionError as error:
            remove_folder(folder)
            raise EdranFusionError(self.public(str(error), folder)) from error
        except BaseException:
            remove_folder(folder)
            raise
        owner = request.headers[CLIENT_HEADER.decode()]
        job = self.queue.submit(Job(owner=owner, folder=folder, inputs=inputs, labels=labels, settings=settings))
        return JSONResponse(job.summary(self.queue.position(job)), status_code=202)

    async def list_jobs(self, request: Request) -> JSONResponse:
        owner = request.headers.get(CLIENT_HEADER.decode(), "")
        jobs = sorted(self.queue.owned_by(owner), key=lambda j: j.submitted) if owner else []
        return JSONResponse({"jobs": [j.summary(self.queue.position(j)) for j in jobs]})

    async def job(self, request: Request) -> Response:
        job = self._job(request)
        if request.method == "DELETE":
            if job.state in ("queued", "running"):
                self.queue.cancel(job)
            else:
                self.queue.forget(job)
        return JSONResponse(job.summary(self.queue.position(job)))

    async def view(self, request: Request) -> Response:
        job, name = self._job(request), request.path_params["name"].removesuffix(".nii.gz")
        if name not in VIEW_NAMES or job.state != "done" or not job.view_path(name).is_file():
            return _error(404, _NO_JOB)
        return FileResponse(job.view_path(name), media_type="application/gzip", filename=f"{name}.nii.gz")

    async def result(self, request: Request) -> Response:
        job, format_name = self._job(request), request.query_params.get("format", "nii.gz")
        if format_name not in DOWNLOAD_SUFFIXES:
            raise EdranFusionError(f"unknown download format {format_name!r}; use {' or '.join(DOWNLOAD_SUFFIXES)}")
        path = job.result_path(format_name)
        if job.state != "done" or not path.is_file():
            return _error(404, _NO_JOB)
        stem = Path(job.labels["a"]).name.split(".")[0] + "_" + Path(job.labels["b"]).name.split(".")[0]
        return FileResponse(path, filename=f"{stem}_fused{DOWNLOAD_SUFFIXES[format_name]}",
                            background=BackgroundTask(self.queue.forget, job))

    # -- helpers ------------------------------------------------------------------------------------------
    def _job(self, request: Request) -> Job:
        job = self.queue.find(request.path_params["job_id"])
        if job is None:
            raise _NotFound
        return job

    def _take_input(self, spec: object, key: str, job_folder: Path) -> tuple[Path, str]:
        """An input named by {"data": name under --data} or {"upload": id}; uploads move into the job folder."""
        what = f"volume {key.upper()}"
        if isinstance(spec, dict) and isinstance(spec.get("data"), str):
            return self.data.resolve(spec["data"]), spec["data"]
        if isinstance(spec, dict) and isinstance(spec.get("upload"), str) and spec["upload"] in self.uploads:
            path, name, _when = self.uploads.pop(spec["upload"])
            moved = job_folder / key
            os.replace(path.parent, moved)
            path = moved / path.name
            if path.suffix == ".zip":
                path = unpack_dicom_zip(path, self.max_upload_bytes)
            return path, name
        raise EdranFusionError(f"{what} is missing or its upload has expired; pick or upload {what} again")

    def public(self, message: str, job_folder: Path) -> str:
        """A message as the CLI run beside the files would print it: no server paths, uploads by their name."""
        for folder in (job_folder / "a", job_folder / "b", job_folder, self.data.root):
            if folder is not None:
                message = message.replace(f"{folder}{os.sep}", "")
        return message

    def _expire_uploads(self) -> None:
        now = time.time()
        for upload_id, (path, _name, when) in list(self.uploads.items()):
            if now - when > self.expiry_s:
                self.uploads.pop(upload_id, None)
                remove_folder(path.parent)

    def close(self) -> None:
        self.queue.stop()
        shutil.rmtree(self.work, ignore_errors=True)


class _NotFound(Exception):
    pass


def _device_works(name: str) -> bool:
    try:
        resolve_device(name)
    except EdranFusionError:
        return False
    return True


def _settings(body: dict) -> dict:
    """The fuse_volumes keywords of a job, checked the way the CLI checks its options."""
    model = str(body.get("model", DEFAULT_MODEL))
    if model not in bundled_models():  # names only: a weights path sent over the network would read server files
        raise EdranFusionError(f"unknown model {model!r}; choose one of {', '.join(bundled_models())}")
    strategy = str(body.get("strategy") or default_strategy_of(model))
    if not is_strategy(strategy):
        raise EdranFusionError(f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGY_NAMES)}")
    device = str(body.get("device", "auto"))
    if device not in DEVICE_CHOICES:
        raise EdranFusionError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    resolve_device(device)
    return {"model": model, "strategy": strategy, "device": device, "resample": bool(body.get("resample", False))}


def _check_inputs(inputs: dict[str, Path], resample: bool) -> None:
    """Read both volumes now, so bad input is reported at once with the CLI's message, not after the queue."""
    a, b = (volumes.read_volume(inputs[k]) for k in ("a", "b"))
    volumes.check_volume(a, "volume A")
    volumes.check_volume(b, "volume B")
    if not resample:
        volumes.align_to(a, b, resample=False)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _user_error(_request: Request, error: Exception) -> JSONResponse:
    return _error(400, str(error))


async def _not_found(_request: Request, _error_: Exception) -> JSONResponse:
    return _error(404, _NO_JOB)


async def _index(_request: Request) -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})


def build_app(server: FusionServer, token: str | None, loopback_only: bool) -> AccessGuard:
    job_route = "/api/jobs/{job_id:str}"
    routes = [
        Route("/", _index),
        Route("/api/info", server.info),
        Route("/api/data", server.list_data),
        Route("/api/uploads", server.upload, methods=["POST"]),
        Route("/api/jobs", server.submit, methods=["POST"]),
        Route("/api/jobs", server.list_jobs, methods=["GET"]),
        Route(job_route, server.job, methods=["GET", "DELETE"]),
        Route(job_route + "/view/{name:str}", server.view),
        Route(job_route + "/result", server.result),
        Mount("/static", StaticFiles(directory=STATIC_DIR)),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        server.close()

    app = Starlette(routes=routes, exception_handlers={EdranFusionError: _user_error, _NotFound: _not_found},
                    lifespan=lifespan)
    return AccessGuard(app, token=token, loopback_only=loopback_only)


def serve(host: str = "127.0.0.1", port: int = 8765, *, data: str | os.PathLike | None = None,
          token: str | None = None, max_upload_mb: int = 1024, expiry_s: float = 3600.0) -> None:
    """Run until interrupted. Beyond loopback a token is required (generated and printed when not given)."""
    check_assets()
    loopback = is_loopback(host)
    if not loopback and not token:
        token = secrets.token_urlsafe(24)
    try:
        listener = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as error:
        raise EdranFusionError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port") from error
    server = FusionServer(data, Path(tempfile.mkdtemp(prefix="edranfusion-serve-")), max_upload_mb * 2**20, expiry_s)
    shown_host = f"[{host}]" if ":" in host else host
    address = f"http://{shown_host}:{listener.getsockname()[1]}/" + (f"?token={token}" if token else "")
    print(f"EdranFusion serving {address} (fusion on {device_label('auto')}; Ctrl-C stops)", flush=True)
    if not loopback:
        print("reachable from the network: keep the token secret; SSH port forwarding (docs/WEB.md) is safer",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(build_app(server, token, loopback), log_level="warning", lifespan="on")
    uvicorn.Server(config).run(sockets=[listener])

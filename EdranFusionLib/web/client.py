"""A small client for the server (standard library only): scripts, the tests and the load benchmark use it.

    >>> with running_server("--data", "volumes") as server:
    ...     client = FusionClient(server.url)
    ...     job = client.wait(client.submit({"data": "T2.nii.gz"}, {"data": "FLAIR.nii.gz"})["id"])
    ...     client.download(job["id"], "fused.nii.gz")
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import EdranFusionError
from ..io.atomic import atomic_output

_ADDRESS = re.compile(r"serving (http://\S+?/)(?:\?token=(\S+))?\s")


class ServerError(EdranFusionError):
    """The server refused a request; the message is the server's own one-line explanation."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FusionClient:
    """One user of the server: its own client id (so it sees its own jobs) and, if needed, the token."""

    def __init__(self, url: str, token: str | None = None, client_id: str | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.client_id = client_id or secrets.token_hex(16)

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json",
                timeout: float = 120) -> tuple[dict, bytes]:
        """Send one request; returns (response headers, body) or raises :class:`ServerError`."""
        headers = {"X-EdranFusion-Client": self.client_id, "Content-Type": content_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace") or error.reason
            raise ServerError(error.code, message) from None

    def json(self, method: str, path: str, payload: object = None) -> dict:
        body = None if payload is None else json.dumps(payload).encode()
        return json.loads(self.request(method, path, body)[1])

    def upload(self, path: str | os.PathLike) -> str:
        """Upload a volume file (or a zipped DICOM folder); returns the upload id a job refers to."""
        path = Path(path)
        _headers, body = self.request("POST", f"/api/uploads?name={quote(path.name)}", path.read_bytes(),
                                      content_type="application/octet-stream")
        return json.loads(body)["upload"]

    def submit(self, a: dict, b: dict, **settings: object) -> dict:
        """Queue a job; ``a``/``b`` are {"data": name under --data} or {"upload": id}; settings as fuse_volumes."""
        return self.json("POST", "/api/jobs", {"a": a, "b": b, **settings})

    def job(self, job_id: str) -> dict:
        return self.json("GET", f"/api/jobs/{job_id}")

    def jobs(self) -> list[dict]:
        return self.json("GET", "/api/jobs")["jobs"]

    def cancel(self, job_id: str) -> dict:
        return self.json("DELETE", f"/api/jobs/{job_id}")

    def wait(self, job_id: str, timeout: float = 600, poll_s: float = 0.2) -> dict:
        """Poll until the job has finished (done, failed or cancelled); a timeout is an error."""
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["state"] in ("queued", "running"):
            if time.monotonic() > deadline:
                raise EdranFusionError(f"job {job_id} still {job['state']} after {timeout:.0f} s")
            time.sleep(poll_s)
        return job

    def download(self, job_id: str, target: str | os.PathLike, format_name: str = "nii.gz") -> Path:
        """Save the fused volume (written atomically); the server then removes the job's files."""
        _headers, body = self.request("GET", f"/api/jobs/{job_id}/result?format={format_name}")
        with atomic_output(target) as temporary:
            temporary.write_bytes(body)
        return Path(target)


@dataclass
class RunningServer:
    url: str
    token: str | None
    process: subprocess.Popen


@contextlib.contextmanager
def running_server(*arguments: str, startup_timeout: float = 120) -> Iterator[RunningServer]:
    """``python -m EdranFusionLib serve --port 0 ARGUMENTS`` in a child process, stopped (Ctrl-C) on exit."""
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "EdranFusionLib", "serve", "--port", "0", *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = _first_line(process, startup_timeout)
        found = _ADDRESS.search(line)
        if not found:
            raise EdranFusionError(f"the server did not start: {line.strip() or process.stderr.read().strip()}")
        yield RunningServer(found.group(1), found.group(2), process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.stdout.close()
        process.stderr.close()


def _first_line(process: subprocess.Popen, timeout: float) -> str:
    """The server's first stdout line (its address), or '' if it exited or stayed silent past ``timeout``."""
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()

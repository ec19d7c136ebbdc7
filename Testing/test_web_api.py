"""The web server's API, against a real server process on 127.0.0.1 (started here, stopped after).

Covers upload, fuse, progress, cancel (running and waiting), download in both formats, bad input answered with
the CLI's own message, the upload size limit, zipped DICOM, the token, the Host and cross-site checks, and that
no path outside --data can be read ('..', absolute paths, symlinks).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

pytest.importorskip("uvicorn", reason="the web extra is not installed: pip install 'EdranFusionLib[web]'")
pytest.importorskip("starlette", reason="the web extra is not installed: pip install 'EdranFusionLib[web]'")

from conftest import REPO, blob_image, oblique_volume  # noqa: E402

from EdranFusionLib.fusion.pipeline import fuse_volumes  # noqa: E402
from EdranFusionLib.io.volumes import read_volume, write_volume  # noqa: E402
from EdranFusionLib.io.weights import default_strategy_of  # noqa: E402
from EdranFusionLib.web.assets import NIIVUE_BUNDLE  # noqa: E402
from EdranFusionLib.web.client import FusionClient, ServerError, running_server  # noqa: E402

pytestmark = pytest.mark.skipif(not NIIVUE_BUNDLE.is_file(), reason="web assets not fetched: run 'make web-assets'")

CANCELLED = "fusion cancelled by the user; nothing was written"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """--data with two small volumes, a larger one (for cancelling), one on another grid, a symlink out."""
    root = tmp_path_factory.mktemp("web") / "data"
    root.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        sitk.WriteImage(oblique_volume(blob_image((6, 40, 48), seed, np.int16)), str(root / f"{name}.nii.gz"))
    sitk.WriteImage(oblique_volume(blob_image((40, 128, 128), 3, np.int16)), str(root / "big_a.nii.gz"))
    sitk.WriteImage(oblique_volume(blob_image((40, 128, 128), 4, np.int16)), str(root / "big_b.nii.gz"))
    sitk.WriteImage(oblique_volume(blob_image((6, 40, 48), 5, np.int16), spacing=(1, 1, 1)), str(root / "other.nrrd"))
    secret = root.parent / "secret.nii.gz"
    secret.write_bytes((root / "a.nii.gz").read_bytes())
    (root / "link.nii.gz").symlink_to(secret)
    (root / "inside").mkdir()
    (root / "inside" / "up").symlink_to(root.parent, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def server(data: Path):
    with running_server("--data", str(data), "--max-upload-mb", "1") as running:
        yield running


@pytest.fixture()
def client(server) -> FusionClient:
    return FusionClient(server.url)


def _cli_error(cwd: Path, *arguments: str) -> str:
    """The CLI's one stderr line for the same input, run beside the files."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "EdranFusionLib", "fuse", *arguments, "-o", "out.nii.gz", "--quiet"],
                          check=False, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr
    return done.stderr.strip().removeprefix("error: ")


def _refused(call, status: int) -> str:
    with pytest.raises(ServerError) as refused:
        call()
    assert refused.value.status == status, str(refused.value)
    return str(refused.value)


def test_info_lists_choices_and_the_device_in_use(client: FusionClient) -> None:
    info = client.json("GET", "/api/info")
    assert "general" in info["models"] and "sfnn-max" in info["strategies"]
    assert info["default_strategies"] == {name: default_strategy_of(name) for name in info["models"]}
    assert set(info["default_strategies"].values()) <= set(info["strategies"])  # the page can select each one
    assert set(info["strategy_descriptions"]) == set(info["strategies"]) and all(info["strategy_descriptions"].values())
    assert "cuda" in info["devices"] or "CPU" in info["devices"]["auto"]
    assert client.json("GET", "/api/data")["volumes"] == ["a.nii.gz", "b.nii.gz", "big_a.nii.gz", "big_b.nii.gz",
                                                          "other.nrrd"]


def test_upload_fuse_download_matches_the_library(client: FusionClient, data: Path, tmp_path: Path) -> None:
    job = client.submit({"upload": client.upload(data / "a.nii.gz")}, {"data": "b.nii.gz"}, strategy="sfnn-max")
    assert job["state"] == "queued" and job["labels"] == {"a": "a.nii.gz", "b": "b.nii.gz"}
    finished = client.wait(job["id"], timeout=300)
    assert finished["state"] == "done" and finished["progress"] == 1.0, finished
    assert finished["queue_wait_s"] >= 0 and finished["run_s"] > 0
    assert [j["id"] for j in client.jobs()] == [job["id"]]
    assert FusionClient(client.url).jobs() == []  # another user does not see it
    downloaded = client.download(job["id"], tmp_path / "fused.nii.gz")
    expected = fuse_volumes(read_volume(data / "a.nii.gz"), read_volume(data / "b.nii.gz"), model="general",
                            strategy="sfnn-max")
    result = read_volume(downloaded)
    assert result.GetSize() == expected.GetSize() and np.allclose(result.GetOrigin(), expected.GetOrigin())
    np.testing.assert_allclose(sitk.GetArrayFromImage(result), sitk.GetArrayFromImage(expected), atol=1e-3)
    # once downloaded, the job and its files are gone from the server
    assert "no such job" in _refused(lambda: client.download(job["id"], tmp_path / "again.nii.gz"), 404)
    assert not (tmp_path / "again.nii.gz").exists()


def test_a_job_without_a_strategy_gets_its_models_default(client: FusionClient) -> None:
    for model in ("general", "ct-mri"):
        job = client.submit({"data": "a.nii.gz"}, {"data": "b.nii.gz"}, model=model)
        assert job["settings"]["strategy"] == default_strategy_of(model)
        client.cancel(job["id"])


def test_nrrd_download_and_views(client: FusionClient) -> None:
    job = client.wait(client.submit({"data": "a.nii.gz"}, {"data": "b.nii.gz"}, strategy="average")["id"])
    for name in ("a", "b", "fused"):
        _headers, body = client.request("GET", f"/api/jobs/{job['id']}/view/{name}.nii.gz")
        assert body[:2] == b"\x1f\x8b"  # gzip: NIfTI for the viewer
    headers, body = client.request("GET", f"/api/jobs/{job['id']}/result?format=nrrd")
    assert body.startswith(b"NRRD") and "a_b_fused.nrrd" in headers["content-disposition"]


def test_progress_is_reported_and_a_running_job_can_be_cancelled(client: FusionClient) -> None:
    job = client.submit({"data": "big_a.nii.gz"}, {"data": "big_b.nii.gz"})
    seen = []
    while (state := client.job(job["id"]))["state"] in ("queued", "running"):
        seen.append(state["progress"])
        if 0 < state["progress"] < 1:
            client.cancel(job["id"])
            break
    final = client.wait(job["id"], timeout=300)
    assert final["state"] == "cancelled" and final["message"] == CANCELLED, final
    assert any(0 < p < 1 for p in seen), seen
    assert "no such job" in _refused(lambda: client.request("GET", f"/api/jobs/{job['id']}/result"), 404)


def test_a_waiting_job_is_dropped_at_once(client: FusionClient) -> None:
    first = client.submit({"data": "big_a.nii.gz"}, {"data": "big_b.nii.gz"})
    second = client.submit({"data": "a.nii.gz"}, {"data": "b.nii.gz"})
    assert client.job(second["id"])["queue_position"] == 1
    assert client.cancel(second["id"])["state"] == "cancelled"
    client.cancel(first["id"])
    assert client.wait(first["id"], timeout=300)["state"] == "cancelled"


def test_bad_input_gets_the_cli_message(client: FusionClient, data: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b" + os.urandom(2000))
    (tmp_path / "b.nii.gz").write_bytes((data / "b.nii.gz").read_bytes())
    message = _refused(lambda: client.submit({"upload": client.upload(broken)}, {"data": "b.nii.gz"}), 400)
    assert message == _cli_error(tmp_path, "broken.nii.gz", "b.nii.gz")
    grids = _refused(lambda: client.submit({"data": "a.nii.gz"}, {"data": "other.nrrd"}), 400)
    assert grids == _cli_error(data, "a.nii.gz", "other.nrrd") and "different grids" in grids
    resampled = client.wait(client.submit({"data": "a.nii.gz"}, {"data": "other.nrrd"}, resample=True)["id"])
    assert resampled["state"] == "done"
    assert "not a supported upload" in _refused(lambda: client.request(
        "POST", "/api/uploads?name=run.py", b"print('never run')"), 400)
    big = tmp_path / "big.nii"
    big.write_bytes(b"\0" * (2 * 2**20))
    assert "upload limit of 1 MiB" in _refused(lambda: client.upload(big), 400)
    assert "unknown strategy" in _refused(lambda: client.submit({"data": "a.nii.gz"}, {"data": "b.nii.gz"},
                                                                strategy="magic"), 400)
    assert "unknown model" in _refused(lambda: client.submit({"data": "a.nii.gz"}, {"data": "b.nii.gz"},
                                                             model=str(data / "a.nii.gz")), 400)
    assert "upload has expired" in _refused(lambda: client.submit({"upload": "0" * 32}, {"data": "b.nii.gz"}), 400)


def test_zipped_dicom_upload(client: FusionClient, data: Path, tmp_path: Path) -> None:
    series = tmp_path / "series"
    write_volume(read_volume(data / "a.nii.gz"), series)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(series.iterdir()):
            zipped.write(path, f"series/{path.name}")
    dicom = read_volume(series)
    sitk.WriteImage(read_volume(data / "b.nii.gz"), str(tmp_path / "b.nii.gz"))
    b = sitk.ReadImage(str(tmp_path / "b.nii.gz"))
    b.CopyInformation(dicom)  # DICOM stores positions to 6 decimals; B on exactly that grid
    sitk.WriteImage(b, str(tmp_path / "b_on_dicom.nii.gz"))
    job = client.submit({"upload": client.upload(archive)}, {"upload": client.upload(tmp_path / "b_on_dicom.nii.gz")})
    assert client.wait(job["id"])["state"] == "done"
    expected = fuse_volumes(dicom, b, model="general")
    result = read_volume(client.download(job["id"], tmp_path / "fused.nii.gz"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(result), sitk.GetArrayFromImage(expected), atol=1e-3)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as zipped:
        zipped.writestr("../../escaped.dcm", b"x")
    (tmp_path / "evil.zip").write_bytes(evil.getvalue())
    message = _refused(lambda: client.submit({"upload": client.upload(tmp_path / "evil.zip")}, {"data": "b.nii.gz"}),
                       400)
    assert "unsafe name" in message and not (tmp_path.parent / "escaped.dcm").exists()


@pytest.mark.parametrize("name", ["../secret.nii.gz", "inside/../../secret.nii.gz", "link.nii.gz",
                                  "inside/up/secret.nii.gz", "/etc/hostname", "..\\secret.nii.gz", ""])
def test_no_path_outside_data_can_be_read(client: FusionClient, name: str) -> None:
    message = _refused(lambda: client.submit({"data": name}, {"data": "b.nii.gz"}), 400)
    assert "not a name under the data folder" in message


def test_static_files_stay_inside_the_page_folder(server) -> None:
    for path in ("/static/../server.py", "/static/%2e%2e/server.py", "/static/..%2fserver.py"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url.rstrip("/") + path, timeout=30)
        assert refused.value.code == 404


def test_foreign_host_and_cross_site_writes_are_refused(server, client: FusionClient) -> None:
    request = urllib.request.Request(server.url + "api/info", headers={"Host": "attacker.example:8765"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 403
    form_post = urllib.request.Request(server.url + "api/jobs", data=b"a=1", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(form_post, timeout=30)
    assert refused.value.code == 403
    with urllib.request.urlopen(server.url, timeout=30) as page:
        assert b"niivue.umd.js" in page.read()


def test_beyond_loopback_every_request_needs_the_token(data: Path) -> None:
    with running_server("--host", "0.0.0.0", "--data", str(data)) as running:
        assert running.token and len(running.token) >= 24  # generated and printed
        url = running.url.replace("0.0.0.0", "127.0.0.1")
        for token in (None, "wrong"):
            message = _refused(lambda t=token: FusionClient(url, token=t).json("GET", "/api/data"), 401)
            assert "access token" in message
        assert FusionClient(url, token=running.token).json("GET", "/api/data")["volumes"]

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as redirected:
            opener.open(url + f"?token={running.token}", timeout=30)
        assert redirected.value.code == 303 and redirected.value.headers["Location"] == "/"
        cookie = redirected.value.headers["Set-Cookie"].split(";")[0]
        assert "HttpOnly" in redirected.value.headers["Set-Cookie"]
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=30) as page:
            assert b"EdranFusion" in page.read()

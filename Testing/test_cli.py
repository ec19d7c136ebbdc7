"""`python -m EdranFusionLib`: end to end on images, folders and volumes, and every bad input's one-line error.

Each bad input must print exactly one stderr line starting with "error:", exit with code 2, and leave no
output (not even a temporary file) behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO, SAMPLE_DIR, blob_image, oblique_volume
from PIL import Image

from EdranFusionLib.commands.cli import main
from EdranFusionLib.io.weights import bundled_models
from EdranFusionLib.network.model import EHDRAN


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    """Run the CLI in this process (the code path of `python -m EdranFusionLib` without interpreter start-up)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exit_:  # argparse errors
            code = exit_.code
    return subprocess.CompletedProcess(args, code, stdout.getvalue(), stderr.getvalue())


def cli_process(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """Run `python -m EdranFusionLib` as users do, in a child process."""
    return subprocess.run([sys.executable, "-m", "EdranFusionLib", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, timeout=300, check=False, **kwargs)


def assert_user_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def outputs_left(workdir: Path) -> list[str]:
    return sorted(os.listdir(workdir / "out"))


def test_two_gray_images(workdir, model_path):
    a, b = png(workdir / "a.png", blob_image((40, 56), 0)), png(workdir / "b.png", blob_image((40, 56), 1))
    result = cli_process("fuse", a, b, "-o", workdir / "out" / "f.png", "--model", model_path, "--quiet")
    assert result.returncode == 0, result.stderr
    fused = np.asarray(Image.open(workdir / "out" / "f.png"))
    assert fused.shape == (40, 56) and fused.dtype == np.uint8


def test_folders_give_one_png_per_common_name_rgb_when_colour(workdir, model_path):
    for name in ("A", "B"):
        (workdir / name).mkdir()
    for i in range(3):
        png(workdir / "A" / f"{i}.png", blob_image((32, 32), i))
        colour = np.stack([blob_image((32, 32), 10 + i + c) for c in range(3)], axis=-1)
        png(workdir / "B" / f"{i}.png", colour)
    png(workdir / "A" / "only_in_a.png", blob_image((32, 32), 9))
    result = cli("fuse", workdir / "A", workdir / "B", "-o", workdir / "out" / "fused", "--model", model_path)
    assert result.returncode == 0, result.stderr
    written = sorted(os.listdir(workdir / "out" / "fused"))
    assert written == ["0.png", "1.png", "2.png"]
    assert Image.open(workdir / "out" / "fused" / "0.png").mode == "RGB"
    assert outputs_left(workdir) == ["fused"]


def test_volumes_keep_geometry_of_a(workdir, model_path):
    a = oblique_volume(blob_image((5, 20, 24), 2, np.int16))
    b = oblique_volume(blob_image((5, 20, 24), 3, np.float32))
    sitk.WriteImage(a, str(workdir / "a.nii.gz"))
    sitk.WriteImage(b, str(workdir / "b.nrrd"))
    result = cli("fuse", workdir / "a.nii.gz", workdir / "b.nrrd", "-o", workdir / "out" / "f.mha",
                 "--model", model_path, "--strategy", "fer", "--precision", "fp32", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    fused, ref = sitk.ReadImage(str(workdir / "out" / "f.mha")), sitk.ReadImage(str(workdir / "a.nii.gz"))
    assert fused.GetSize() == ref.GetSize()
    np.testing.assert_allclose(fused.GetDirection(), ref.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(fused.GetOrigin(), ref.GetOrigin(), atol=1e-5)


def _weights_variants(workdir: Path, model_path: Path) -> dict[str, Path]:
    truncated = workdir / "truncated.pt"
    truncated.write_bytes(model_path.read_bytes()[:5000])
    other = workdir / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    tampered = workdir / "tampered.pt"
    tampered.write_bytes(model_path.read_bytes())
    (workdir / "tampered.json").write_text(json.dumps({"sha256": "0" * 64}))
    return {"truncated": truncated, "other": other, "tampered": tampered}


BAD_INPUTS = [
    ("missing file", lambda w: [w / "nope.png", w / "b.png"], "does not exist"),
    ("unsupported format", lambda w: [w / "notes.txt", w / "notes.txt"], "unsupported format"),
    ("2-D vs 3-D", lambda w: [w / "a.png", w / "vol_a.nii.gz"], "give two inputs of the same kind"),
    ("different grids", lambda w: [w / "vol_a.nii.gz", w / "vol_other_grid.nii.gz"], "--resample"),
    ("no finite voxel", lambda w: [w / "vol_a.nii.gz", w / "vol_nan.nrrd"], "no finite value"),
    ("constant image", lambda w: [w / "a.png", w / "constant.png"], "constant"),
    ("all-zero volume", lambda w: [w / "vol_a.nii.gz", w / "vol_zero.nii.gz"], "constant"),
    ("tiny image", lambda w: [w / "tiny.png", w / "tiny.png"], "too small"),
    ("different sizes", lambda w: [w / "a.png", w / "wide.png"], "differ in size"),
    ("no common names", lambda w: [w / "A", w / "B"], "no image file names in common"),
    ("truncated volume", lambda w: [w / "vol_a.nii.gz", w / "truncated.nii.gz"], "gzip stream ends early"),
    ("4-D volume", lambda w: [w / "vol_4d.nii.gz", w / "vol_4d.nii.gz"], "4-D"),
    ("4-component volume", lambda w: [w / "vol_rgba.nrrd", w / "vol_rgba.nrrd"], "4 components"),
]


@pytest.fixture
def bad_inputs(workdir: Path) -> Path:
    png(workdir / "a.png", blob_image((32, 32), 4))
    png(workdir / "b.png", blob_image((32, 32), 5))
    png(workdir / "wide.png", blob_image((32, 48), 5))
    png(workdir / "constant.png", np.full((32, 32), 9, np.uint8))
    png(workdir / "tiny.png", blob_image((6, 6), 6))
    (workdir / "notes.txt").write_text("not an image")
    for folder, name in (("A", "x.png"), ("B", "y.png")):
        (workdir / folder).mkdir()
        png(workdir / folder / name, blob_image((32, 32), 7))
    volume = blob_image((4, 16, 16), 8, np.float32)
    sitk.WriteImage(oblique_volume(volume), str(workdir / "vol_a.nii.gz"))
    sitk.WriteImage(oblique_volume(volume, spacing=(1, 1, 1)), str(workdir / "vol_other_grid.nii.gz"))
    with_nan = np.full_like(volume, np.nan)
    with_nan[1, 2, 3] = np.inf
    sitk.WriteImage(oblique_volume(with_nan), str(workdir / "vol_nan.nrrd"))  # NIfTI would store 0 for NaN
    sitk.WriteImage(oblique_volume(np.zeros_like(volume)), str(workdir / "vol_zero.nii.gz"))
    (workdir / "truncated.nii.gz").write_bytes((workdir / "vol_a.nii.gz").read_bytes()[:100])
    four_d = sitk.GetImageFromArray(np.ones((3, 8, 8, 8), np.float32), isVector=False)
    sitk.WriteImage(four_d, str(workdir / "vol_4d.nii.gz"))
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorUInt8, 4), str(workdir / "vol_rgba.nrrd"))
    return workdir


@pytest.mark.parametrize(("case", "inputs", "fragment"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_inputs_fail_cleanly(bad_inputs, model_path, case, inputs, fragment):
    output = bad_inputs / "out" / ("fused" if case == "no common names" else "fused.nii.gz")
    if case in ("2-D vs 3-D", "missing file", "constant image", "tiny image", "different sizes"):
        output = bad_inputs / "out" / "fused.png"
    result = cli("fuse", *inputs(bad_inputs), "-o", output, "--model", model_path)
    assert_user_error(result, fragment)
    assert outputs_left(bad_inputs) == []


@pytest.mark.parametrize(("variant", "fragment"), [
    ("truncated", "not a readable PyTorch state dict"),
    ("other", "not an EH-DRAN state dict"),
    ("tampered", "fails its sha256 check"),
])
def test_wrong_weight_files_are_refused(bad_inputs, model_path, variant, fragment):
    weights = _weights_variants(bad_inputs, model_path)[variant]
    result = cli("fuse", bad_inputs / "a.png", bad_inputs / "b.png", "-o", bad_inputs / "out" / "f.png",
                 "--model", weights)
    assert_user_error(result, fragment)
    assert outputs_left(bad_inputs) == []


def test_unknown_model_and_strategy(bad_inputs):
    result = cli("fuse", bad_inputs / "a.png", bad_inputs / "b.png", "-o", bad_inputs / "out" / "f.png",
                 "--model", "mri-ultrasound")
    assert_user_error(result, "unknown model 'mri-ultrasound'")
    result = cli("fuse", bad_inputs / "a.png", bad_inputs / "b.png", "-o", bad_inputs / "out" / "f.png",
                 "--strategy", "median")
    assert_user_error(result, "unknown strategy 'median'; choose one of sfnn-max")
    assert outputs_left(bad_inputs) == []


def test_any_member_of_the_activity_family_is_a_strategy(bad_inputs, model_path):
    """activity-p<P> (a model's default may be one, e.g. activity-p1) is accepted like the listed names."""
    output = bad_inputs / "f.png"
    result = cli("fuse", bad_inputs / "a.png", bad_inputs / "b.png", "-o", output, "--model", model_path,
                 "--strategy", "activity-p1.5", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "(strategy activity-p1.5)" in result.stdout and output.is_file()


def test_output_in_missing_folder(bad_inputs, model_path):
    result = cli("fuse", bad_inputs / "a.png", bad_inputs / "b.png", "-o", bad_inputs / "nowhere" / "f.png",
                 "--model", model_path)
    assert_user_error(result, "does not exist")


def test_full_disk_leaves_nothing_behind(bad_inputs, model_path):
    """A file size limit makes the writer fail as a full disk would."""
    import resource

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    volume = blob_image((6, 40, 40), 9, np.float32)
    sitk.WriteImage(oblique_volume(volume), str(bad_inputs / "big_a.nii"))
    sitk.WriteImage(oblique_volume(volume[::-1].copy()), str(bad_inputs / "big_b.nii"))
    result = cli_process("fuse", bad_inputs / "big_a.nii", bad_inputs / "big_b.nii", "-o",
                         bad_inputs / "out" / "f.nii", "--model", model_path, "--quiet", preexec_fn=limit_file_size)
    assert_user_error(result, "check free space")
    assert outputs_left(bad_inputs) == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_fusion_leaves_no_output(tmp_path, model_path, signum):
    out = tmp_path / "out"
    out.mkdir()
    command = ["fuse", SAMPLE_DIR / "T2.nii.gz", SAMPLE_DIR / "FLAIR.nii.gz", "-o", out / "fused.nii.gz",
               "--model", model_path, "--batch-size", "1", "--precision", "fp32"]
    process = subprocess.Popen([sys.executable, "-m", "EdranFusionLib", *map(str, command)],
                               cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    buffered = ""
    while "fusing" not in buffered and time.time() < deadline:  # wait until the progress bar shows work
        buffered += process.stderr.read(1)
    process.send_signal(signum)
    stderr = buffered + process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr
    assert "interrupted; no output was written" in stderr
    assert os.listdir(out) == []


def test_models_lists_bundled_weights_with_checksums():
    result = cli("models")
    assert result.returncode == 0
    installed = bundled_models()
    if not installed:
        assert "no trained weights are installed" in result.stdout
    for model in installed.values():
        assert f"sha256 {model.sha256}" in result.stdout


def test_strategies_says_what_each_does_and_whose_default_it_is():
    from EdranFusionLib.choices import STRATEGY_NAMES, strategy_description
    from EdranFusionLib.io.weights import default_strategy_of

    result = cli("strategies")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    for name in STRATEGY_NAMES:
        assert strategy_description(name) in lines[name]
    ct_default = default_strategy_of("ct-mri")
    assert "default of" in lines[ct_default] and "ct-mri" in lines[ct_default]
    listed = json.loads(cli("strategies", "--json").stdout)["strategies"]
    assert [row["name"] for row in listed][:len(STRATEGY_NAMES)] == list(STRATEGY_NAMES)
    assert next(row for row in listed if row["name"] == ct_default)["default_for"].count("ct-mri") == 1


def test_ablation_weights_file_is_accepted(workdir):
    path = workdir / "no_drgo.pt"
    torch.save(EHDRAN(use_drgo=False).state_dict(), path)
    a, b = png(workdir / "a.png", blob_image((24, 24), 0)), png(workdir / "b.png", blob_image((24, 24), 1))
    result = cli("fuse", a, b, "-o", workdir / "out" / "f.png", "--model", path, "--quiet")
    assert result.returncode == 0, result.stderr

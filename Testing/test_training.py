"""The trainer: run folder contents, exact resume (also after SIGKILL), torchrun data parallel, entry points,
and one-line errors for bad input that leave existing files alone. Tiny synthetic data, a few steps each."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_datasets import write_pair_folder
from test_losses import tiny_vgg_state

from EdranFusionLib.commands import train
from EdranFusionLib.io.model_files import load_model

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "EdranFusionLib" / "train.py"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CT-MRI-like pair folder: series 1-3, two 16x16 slices each -> 8 training images, 4 validation images."""
    return write_pair_folder(tmp_path_factory.mktemp("data"), "CT-MRI", series=(1, 2, 3), slices=2, size=16)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg_caffe.npz"
    np.savez(path, **{key: value.numpy() for key, value in tiny_vgg_state().items()})
    return path


def options(data: Path, vgg_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--data", str(data), "--run-dir", str(run_dir), "--val-series", "3", "--batch-size", "2",
            "--epochs", "2", "--crop", "12", "--flips", "--vgg-weights", str(vgg_file), "--vgg-layers", "relu1_2",
            "--threads", "1", "--no-progress", *extra]


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, f"tensors differ: {different[:5]}"


@pytest.fixture(scope="module")
def finished_run(data: Path, vgg_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    assert train.main(options(data, vgg_file, run_dir)) == 0
    return run_dir


def test_run_folder_holds_config_split_metrics_curves_and_weights(finished_run: Path) -> None:
    names = {p.name for p in finished_run.iterdir()}
    assert {"config.json", "split.json", "metrics.jsonl", "curves.png", "checkpoint.pt", "best.pt",
            "final.pt"} <= names
    assert not [n for n in names if "partial" in n]
    split = json.loads((finished_run / "split.json").read_text())
    assert split["val_series"] == ["3"] and split["train_series"] == ["1", "2"]
    records = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 8
    assert all(np.isfinite(r["val_loss"]) and r["val_psnr"] > 0 for r in records)
    assert records[-1]["lr"] == pytest.approx(3e-7)
    assert (finished_run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_model(finished_run / "final.pt").use_drgo


def test_resumed_run_ends_with_the_same_weights(data: Path, vgg_file: Path, finished_run: Path,
                                               tmp_path: Path) -> None:
    run_dir = tmp_path / "interrupted"
    assert train.main(options(data, vgg_file, run_dir, "--max-steps", "3")) == 0
    assert not (run_dir / "final.pt").exists()
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] == 3
    assert train.main(options(data, vgg_file, run_dir, "--resume")) == 0
    assert_identical(weights_of(finished_run / "final.pt"), weights_of(run_dir / "final.pt"))
    assert_identical(weights_of(finished_run / "best.pt"), weights_of(run_dir / "best.pt"))
    drop_time = [{k: v for k, v in json.loads(line).items() if k != "train_seconds"}
                 for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    reference = [{k: v for k, v in json.loads(line).items() if k != "train_seconds"}
                 for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    assert drop_time == reference


def test_bright_crops_and_modality_repeats_resume_exactly(data: Path, vgg_file: Path, tmp_path: Path) -> None:
    args = ["--epochs", "1", "--bright-crops", "0.7", "--repeat-modality", "CT:2"]
    reference = tmp_path / "reference"
    assert train.main(options(data, vgg_file, reference, *args)) == 0
    assert json.loads((reference / "metrics.jsonl").read_text())["step"] == 6  # (4 CT x 2 + 4 MRI) / batch 2
    run_dir = tmp_path / "interrupted"
    assert train.main(options(data, vgg_file, run_dir, *args, "--max-steps", "2")) == 0
    assert train.main(options(data, vgg_file, run_dir, *args, "--resume")) == 0
    assert_identical(weights_of(reference / "final.pt"), weights_of(run_dir / "final.pt"))


def test_sigkill_mid_run_resumes_from_the_last_complete_checkpoint(data: Path, vgg_file: Path,
                                                                  tmp_path: Path) -> None:
    args = ["--epochs", "3", "--checkpoint-every", "1"]
    reference = tmp_path / "reference"
    assert train.main(options(data, vgg_file, reference, *args)) == 0
    run_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "EdranFusionLib.train",
                                *options(data, vgg_file, run_dir, *args)], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run_dir / "final.pt").exists()
    assert train.main(options(data, vgg_file, run_dir, *args, "--resume")) == 0
    assert_identical(weights_of(reference / "final.pt"), weights_of(run_dir / "final.pt"))


def test_two_processes_under_torchrun_end_with_identical_replicas(data: Path, vgg_file: Path, tmp_path: Path) -> None:
    worker = tmp_path / "worker.py"
    worker.write_text(
        "import argparse, os, sys, torch\n"
        "from EdranFusionLib.commands import train\n"
        "from EdranFusionLib.training import distributed, trainer\n"
        "parser = argparse.ArgumentParser(); train.add_arguments(parser)\n"
        "args = parser.parse_args(sys.argv[1:])\n"
        "context = distributed.start('cpu')\n"
        "trainer = trainer.Trainer(args, context, torch.device('cpu'))\n"
        "trainer.prepare_run_dir(); trainer.fit()\n"
        "torch.save(trainer.model.state_dict(), f'{args.run_dir}/replica{context.rank}.pt')\n"
        "distributed.stop(context)\n"
    )
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(worker), *options(data, vgg_file, run_dir, "--batch-size", "1", "--threads", "1")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # torchrun's workers too, not only the launcher
        process.communicate()
        pytest.fail("torchrun with 2 processes did not finish in 300 s")
    assert process.returncode == 0, stderr[-2000:]
    replica0, replica1 = weights_of(run_dir / "replica0.pt"), weights_of(run_dir / "replica1.pt")
    assert_identical(replica0, replica1)
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [4, 8]
    assert_identical(replica0, weights_of(run_dir / "final.pt"))
    started = load_model(run_dir / "final.pt").state_dict()
    assert not all(torch.equal(v, torch.zeros_like(v)) for v in started.values())


def test_the_file_runs_as_a_script_as_slicer_does(data: Path, vgg_file: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "script"
    command = [sys.executable, str(TRAIN_SCRIPT), "--", *options(data, vgg_file, run_dir, "--epochs", "1")]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run_dir / "final.pt").is_file()
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [f"error: run folder {run_dir} already exists; pass --resume to "
                                                 "continue it or choose a new folder"]


def _fails_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], match: str) -> None:
    assert train.main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], lines


def test_bad_input_is_one_line_exit_2_and_overwrites_nothing(data: Path, vgg_file: Path, finished_run: Path,
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new_run = tmp_path / "new"
    _fails_with_one_line(options(tmp_path / "missing", vgg_file, new_run), capsys, "does not exist")
    (tmp_path / "empty").mkdir()
    _fails_with_one_line(options(tmp_path / "empty", vgg_file, new_run), capsys, "holds no training data")
    unpaired = write_pair_folder(tmp_path / "unpaired", "CT-MRI", series=(1, 2))
    (unpaired / "CT" / "1000.png").unlink()
    _fails_with_one_line(options(unpaired, vgg_file, new_run), capsys, "unpaired")
    unreadable = write_pair_folder(tmp_path / "unreadable", "CT-MRI", series=(1, 2))
    (unreadable / "MRI" / "2001.png").write_bytes(b"\x89PNG broken")
    _fails_with_one_line(options(unreadable, vgg_file, new_run), capsys, "cannot read image")
    _fails_with_one_line(options(data, tmp_path / "no.npz", new_run), capsys, "VGG16 weights file")
    _fails_with_one_line(options(data, vgg_file, new_run, "--resume"), capsys, "nothing to resume")
    assert not new_run.exists()

    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    _fails_with_one_line(options(data, vgg_file, finished_run), capsys, "already exists")
    _fails_with_one_line(options(data, vgg_file, finished_run, "--resume", "--lr", "0.01"), capsys, "lr=0.0001")
    _fails_with_one_line(options(data, vgg_file, finished_run, "--resume", "--no-drgo"), capsys, "drgo=True")
    assert {p.name: p.read_bytes() for p in finished_run.iterdir()} == before

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    _fails_with_one_line(options(data, vgg_file, tmp_path / "init", "--init-from", str(foreign)), capsys,
                         "not an EH-DRAN state dict")
    broken = tmp_path / "broken"
    broken.mkdir()
    torch.save({"model": {}}, broken / "checkpoint.pt")
    _fails_with_one_line(options(data, vgg_file, broken, "--resume"), capsys, "not an EdranFusion training checkpoint")


def test_fine_tuning_starts_from_given_weights(data: Path, vgg_file: Path, finished_run: Path,
                                              tmp_path: Path) -> None:
    run_dir = tmp_path / "tuned"
    argv = options(data, vgg_file, run_dir, "--init-from", str(finished_run / "final.pt"), "--max-steps", "1")
    assert train.main(argv) == 0
    moved = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]
    start = weights_of(finished_run / "final.pt")
    assert moved.keys() == start.keys()
    learned = [k for k in start if start[k].is_floating_point() and "running_" not in k]
    difference = max(float((moved[k] - start[k]).abs().max()) for k in learned)
    assert 0 < difference < 1e-3  # one Adam step (lr 1e-4) away from the initial weights


def test_shipping_a_run_writes_weights_card_and_curves(finished_run: Path, tmp_path: Path) -> None:
    from EdranFusionLib.io.weights import sha256_of
    from EdranFusionLib.training.report import ship

    path = ship(finished_run, "tiny", "ct-mri", "test run", directory=tmp_path, figures=tmp_path / "figures")
    card = json.loads((tmp_path / "tiny.json").read_text())
    assert path.stat().st_size < 5_000_000 and card["sha256"] == sha256_of(path)
    assert card["data"]["val_series"] == ["3"] and card["training"]["epochs"] == 2
    quality = card["validation"]["reconstruction_val_images"]
    assert quality["images"] == 4 and quality["psnr_db"] > 0 and -1 <= quality["ssim"] <= 1
    assert {m: q["images"] for m, q in quality["per_modality"].items()} == {"CT": 2, "MRI": 2}
    assert (tmp_path / "figures" / "curves_tiny.png").is_file()
    assert_identical(load_model(path).state_dict(), load_model(finished_run / "best.pt").state_dict())


def test_promoting_a_candidate_bundles_the_same_weights_under_the_new_name(finished_run: Path, tmp_path: Path) -> None:
    from EdranFusionLib.errors import EdranFusionError
    from EdranFusionLib.training.report import promote, ship

    ship(finished_run, "tiny-v2", "ct-mri", "a candidate", directory=tmp_path / "candidates")
    path = promote(tmp_path / "candidates" / "tiny-v2.json", "tiny", "promoted", directory=tmp_path / "weights",
                   figures=tmp_path / "figures")
    card, candidate = (json.loads(f.read_text()) for f in (path.with_suffix(".json"),
                                                            tmp_path / "candidates" / "tiny-v2.json"))
    assert (card["name"], card["file"], card["description"], card["promoted_from"]) == ("tiny", "tiny.pt", "promoted",
                                                                                          "tiny-v2")
    assert card["validation"] == candidate["validation"]
    assert card["curves"] == str(tmp_path / "figures" / "curves_tiny.png") and Path(card["curves"]).is_file()
    assert_identical(load_model(path).state_dict(), load_model(tmp_path / "candidates" / "tiny-v2.pt").state_dict())
    with pytest.raises(EdranFusionError, match="no candidate card"):
        promote(tmp_path / "nothing.json", "tiny", "", directory=tmp_path, figures=tmp_path)


def test_shipping_without_a_directory_goes_to_the_user_models_folder(finished_run: Path) -> None:
    from EdranFusionLib.io.user_data import user_models_dir
    from EdranFusionLib.io.weights import installed_models
    from EdranFusionLib.training.report import ship

    path = ship(finished_run, "tiny-user", "ct-mri", "test run", val_stride=4)
    assert path.parent == user_models_dir() and (user_models_dir() / "curves_tiny-user.png").is_file()
    assert installed_models()["tiny-user"].origin == "user"
    assert json.loads(path.with_suffix(".json").read_text())["license"]["terms"] == "education and research only"


def test_montage_fuses_validation_pairs(data: Path, finished_run: Path, tmp_path: Path) -> None:
    from EdranFusionLib.training.report import montage

    weights = str(finished_run / "final.pt")
    written = montage(data.parent, finished_run / "split.json", 2, tmp_path,
                      {"ct-mri": weights, "spect-mri": weights, "pet-mri": weights})
    assert [p.name for p in written] == ["montage_ct-mri.png"]
    assert written[0].read_bytes()[:4] == b"\x89PNG"
    card = tmp_path / "card.json"  # a model card names the validation series instead of the images
    card.write_text(json.dumps({"data": json.loads((finished_run / "split.json").read_text())}))
    from_card = montage(data.parent, card, 2, tmp_path / "card", {"ct-mri": weights})
    assert [p.name for p in from_card] == ["montage_ct-mri.png"]

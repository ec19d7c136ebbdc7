"""After training: measure a run's reconstruction quality, ship its weights with a model card, draw montages.

``ship`` takes the run's best checkpoint (chosen by validation loss, never by test data), scores x vs x_hat
on every validation image at the fuser's precision (PSNR and SSIM: Gaussian window 11, sigma 1.5, data range
1), writes ``<name>.pt`` + ``<name>.json`` (the model card, with the weights' terms of use) through
``io.model_files.save_bundled`` into the user's models folder (``--directory EdranFusionLib/weights`` for
maintainers shipping a bundled model) and copies the run's curves beside them (or to ``--figures``).
``promote`` bundles a candidate shipped earlier under another name (same weights, card kept, ``promoted_from``).
``montage`` fuses a few validation pairs of each task with the shipped models and their default strategies.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import EdranFusionError, exit_status_of
from ..io.model_files import load_state_dict, model_from_state_dict, save_bundled
from ..io.user_data import user_models_dir
from ..io.weights import bundled_models, default_strategy_of
from ..network.devices import autocast_if, resolve_precision
from ..network.model import EHDRAN, parameter_count
from ..version import __version__
from .datasets import Sample, collect, modality_of, recorded_val_series, series_of, split_by_series

FIGURES_DIR = Path(__file__).resolve().parents[2] / "docs" / "figures"
PAPER_DEPARTURES = (
    "Trained on 2 CPU cores with bf16 autocast, not on a GPU in fp32.",
    "Random crops (see 'crop') with random flips instead of whole 256x256 images; fewer epochs than the "
    "paper's 100 (see 'epochs'); validation loss during training on every Nth validation image (val_stride).",
    "Perceptual loss: squared VGG16 feature difference divided by the mean square of the target's features "
    "(scale-free across weight conventions), Caffe-convention ImageNet VGG16, gray input replicated to BGR "
    "and mean-subtracted as those weights expect.",
    "Train/validation split by series (no series on both sides); the paper's split is not series-aware.",
)

PAPER_CITATION = ("Meng Zhou, Yuxuan Zhang, Xiaolan Xu, Jiayi Wang, Farzad Khalvati. Edge-Enhanced Dilated Residual "
                  "Attention Network for Multimodal Medical Image Fusion. Code: github.com/simonZhou86/en_dran")


def terms_of_use(init_from: str | None) -> dict:
    """Licence, intended and out-of-scope use, limitations, citation and base model: the card's terms."""
    return {
        "license": {
            "terms": "education and research only",
            "weights": "The weights are derived from Harvard Whole Brain Atlas images, which their authors publish "
                       "for education and research; use the weights for education and research only, not "
                       "commercially and not in patient care.",
            "code": "Apache-2.0 (EdranFusion)",
        },
        "intended_use": "Research and teaching: fusing two co-registered MRI + CT, MRI + SPECT/PET or MRI + MRI "
                        "images or volumes to look at them together, and benchmarking fusion methods.",
        "out_of_scope_use": [
            "Diagnosis, treatment planning or any other clinical decision: not a medical device, not validated "
            "clinically.",
            "Inputs that are not co-registered (the model does not register them).",
            "Quantitative reading of fused intensities (the fused image is a visual blend, not a measurement).",
        ],
        "limitations": [
            "Trained on a few hundred 256x256 axial slices of one atlas; other scanners, protocols, anatomy and "
            "pathology are unseen.",
            "Fuses 2-D slices independently: no 3-D context across slices.",
            "SPECT/PET colour is fused on luminance; the chroma is carried over, not learned.",
        ],
        "citation": PAPER_CITATION,
        "base_model": ("EH-DRAN autoencoder (the paper's architecture), fine-tuned from " + str(init_from)
                       if init_from else "EH-DRAN autoencoder (the paper's architecture), trained from random "
                                         "initialisation"),
        "made_by": f"EdranFusion {__version__}",
    }


@torch.no_grad()
def reconstruction_quality(model: EHDRAN, samples: Sequence[Sample], precision: str = "auto") -> dict:
    """Mean PSNR (dB) and SSIM of x vs clamp(x_hat) over ``samples`` (data range 1), at the fuser's precision,
    pooled and per modality folder (CT slices, MRI slices, SPECT/PET Y)."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    dtype = resolve_precision(precision, torch.device("cpu"))
    model = model.float().eval().to(memory_format=torch.channels_last)
    psnrs, ssims, modalities = [], [], []
    for sample in samples:
        x = torch.from_numpy(sample.image)[None, None].contiguous(memory_format=torch.channels_last)
        with autocast_if(dtype != torch.float32, "cpu", dtype):
            x_hat = model(x).float().clamp(0, 1)[0, 0].numpy().astype(np.float64)
        truth = sample.image.astype(np.float64)
        psnrs.append(peak_signal_noise_ratio(truth, x_hat, data_range=1.0))
        ssims.append(structural_similarity(truth, x_hat, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False))
        modalities.append(modality_of(sample))
    per_modality = {}
    for modality in sorted(set(modalities)):
        chosen = [i for i, m in enumerate(modalities) if m == modality]
        per_modality[modality] = {"psnr_db": round(float(np.mean([psnrs[i] for i in chosen])), 3),
                                  "ssim": round(float(np.mean([ssims[i] for i in chosen])), 4),
                                  "images": len(chosen)}
    return {"psnr_db": round(float(np.mean(psnrs)), 3), "ssim": round(float(np.mean(ssims)), 4),
            "images": len(samples), "precision": str(dtype).replace("torch.", ""), "per_modality": per_modality}


def _cpu_name() -> str:
    """The CPU model from /proc/cpuinfo where there is one (platform.processor() is often empty on Linux)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _wall_hours(run_dir: Path) -> float:
    """Hours from the run's creation (config.json) to its last checkpoint, including resumed gaps."""
    seconds = (run_dir / "checkpoint.pt").stat().st_mtime - (run_dir / "config.json").stat().st_mtime
    return round(seconds / 3600, 2)


def model_card(run_dir: Path, model: EHDRAN, note: str, val_stride: int = 1, precision: str = "auto") -> dict:
    """Everything a user needs to judge the weights: data, split, training, losses, metrics, departures."""
    config = json.loads((run_dir / "config.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if not history or not (run_dir / "best.pt").is_file():
        raise EdranFusionError(f"run {run_dir} has no completed epoch with validation yet; train or resume it first")
    samples = collect(config["data"])
    _, val, _ = split_by_series(samples, config["val_series"].split(",") if config["val_series"] else None,
                                config["val_fraction"], config["seed"])
    best = min(history, key=lambda r: r.get("val_loss", float("inf")))
    stopped_early = history[-1]["epoch"] < config["epochs"]
    return {
        "description": note,
        "data": {"folders": [Path(p).name for p in config["data"]], "train_series": split["train_series"],
                 "val_series": split["val_series"], "train_images": len(split["train_images"]),
                 "val_images": len(split["val_images"]),
                 "split": "by series (patient/study): no series on both sides"},
        "training": {"epochs": history[-1]["epoch"], "epochs_scheduled": config["epochs"],
                     "best_epoch": best["epoch"], "steps": history[-1]["step"],
                     "batch_size": config["batch_size"], "processes": config["world_size"], "crop": config["crop"],
                     "flips": config["flips"], "bright_crops": config.get("bright_crops"),
                     "repeat_modality": config.get("repeat_modality"), "optimizer": "Adam", "lr": config["lr"],
                     "lr_schedule": f"per-step cosine decay to {config['lr_min']}", "seed": config["seed"],
                     "init_from": config["init_from"],
                     "precision": "bf16 autocast" if config["bf16"] else "fp32",
                     "train_step_hours": round(history[-1]["train_seconds"] / 3600, 2),
                     "wall_hours": _wall_hours(run_dir)},
        "hardware": {"cpu": _cpu_name(), "cores": os.cpu_count(), "gpu": None,
                     "torch": torch.__version__},
        "losses": {"pixel": "MSE", "gradient_weight": config["gradient_weight"], "gradient": "Sobel x and y, MSE",
                   "perceptual_weight": config["perceptual_weight"], "vgg_layers": config["vgg_layers"],
                   "vgg_weights": "ImageNet VGG16, Caffe convention (vgg16_imagenet_features_bgr.npz)"},
        "validation": {"final_loss": round(history[-1]["val_loss"], 5), "best_loss": round(best["val_loss"], 5),
                       "reconstruction_val_images": {**reconstruction_quality(model, val[::val_stride], precision),
                                                     "every_nth_val_image": val_stride}},
        "parameters": parameter_count(model),
        **terms_of_use(config["init_from"]),
        "departures_from_paper": list(PAPER_DEPARTURES)
        + (["Fine-tuned from the weights in 'init_from' on the data above (the paper trains each model from scratch)."]
           if config["init_from"] else [])
        + ([f"Beyond the paper: crops centred on bright pixels with probability {config.get('bright_crops') or 0}, "
            f"modality repeats per epoch {config.get('repeat_modality') or 'none'} (more CT bone per step)."]
           if config.get("bright_crops") or config.get("repeat_modality") else [])
        + ([f"Stopped after {history[-1]['epoch']} of {config['epochs']} scheduled epochs (time budget); the "
            f"cosine schedule had reached lr {history[-1]['lr']:.2g}. `--resume` finishes the schedule."]
           if stopped_early else []),
    }


def ship(run_dir: Path, name: str, task: str, note: str, *, directory: Path | None = None,
         figures: Path | None = None, val_stride: int = 1, precision: str = "auto") -> Path:
    """Save the run's best weights as model ``name`` with its card (default: the user's models folder, where
    ``--model name`` finds it) and copy its curves to ``figures`` (default: beside the weights)."""
    directory = user_models_dir() if directory is None else directory
    figures = directory if figures is None else figures
    state = load_state_dict(run_dir / "best.pt", None)
    model = model_from_state_dict(state, str(run_dir / "best.pt"))
    card = {**model_card(run_dir, model, note, val_stride, precision), "curves": str(figures / f"curves_{name}.png")}
    directory.mkdir(parents=True, exist_ok=True)
    path = save_bundled(model, name, task, card, directory)
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "curves.png", figures / f"curves_{name}.png")
    return path


def promote(candidate_card: Path, name: str, note: str, *, directory: Path, figures: Path) -> Path:
    """Bundle a shipped candidate (``<candidate>.pt`` + card, e.g. models/candidates/general-v3) as model ``name``:
    the same weights, its card under the new name with ``promoted_from``, its curves copied to ``figures``."""
    if not candidate_card.is_file():
        raise EdranFusionError(f"no candidate card {candidate_card}: give the .json beside the candidate's .pt")
    card = json.loads(candidate_card.read_text())
    weights_file = candidate_card.parent / card["file"]
    model = model_from_state_dict(load_state_dict(weights_file, card["sha256"]), str(weights_file))
    kept = {k: v for k, v in card.items() if k not in ("name", "task", "file", "sha256", "description", "curves")}
    curves = candidate_card.parent / f"curves_{card['name']}.png"
    if curves.is_file():
        figures.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(curves, figures / f"curves_{name}.png")
        kept["curves"] = str(figures / f"curves_{name}.png")
    directory.mkdir(parents=True, exist_ok=True)
    return save_bundled(model, name, card["task"],
                        {"description": note or card.get("description", ""), "promoted_from": card["name"], **kept},
                        directory)


HEAD_CAVEAT = ("Trained on differentiable forms of PSNR, SSIM, FSIM and Qabf (as weighed in 'loss') and an edge "
               "term: its scores on those metrics are partly scores on its own objective. The validation series "
               "were never trained on.")


def fusion_head_card(run_dir: Path) -> dict:
    """The card section of a stage-2 run (training/fusion_trainer.py): data, settings, loss, time, caveat."""
    config = json.loads((run_dir / "config.json").read_text())
    split = json.loads((run_dir / "split.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    decoder = ("the decoded candidate comes from the head's own copy of the decoder, fine-tuned on activity-fused "
               "latents (--train decoder, the run of the --model it started from); the encoder is the autoencoder's, "
               "frozen" if config.get("fused_decoder") else "the encoder and decoder are the autoencoder's, frozen")
    return {
        "beyond_the_paper": "learned stage-2 fusion: per-pixel softmax weights, from both latents, over three "
                            "candidates (decoded activity fusion, pixel maximum, guided pyramid), started at "
                            f"max-anchored fusion's fixed blend; {decoder}",
        "trained": config.get("train", "head"),
        "data": {"folders": [Path(p).name for p in config["data"]], "train_pairs": len(split["train_pairs"]),
                 "held_out_series": split["held_out_series"]},
        "training": {"epochs": history[-1]["epoch"], "steps": history[-1]["step"],
                     "batch_size": config["batch_size"], "crop": config["crop"], "flips": config["flips"],
                     "lr": config["lr"], "lr_schedule": f"per-step cosine decay to {config['lr_min']}",
                     "seed": config["seed"],
                     "precision": (f"latents {'bf16' if config['bf16'] else 'fp32'}, head {config['head_precision']}"
                                   if "head_precision" in config else "bf16 autocast" if config["bf16"] else "fp32"),
                     "train_step_hours": round(history[-1]["train_seconds"] / 3600, 2),
                     "wall_hours": _wall_hours(run_dir)},
        "loss": {"psnr_weight": config["psnr_weight"], "ssim_weight": config["ssim_weight"],
                 "gradient_weight": config["gradient_weight"], "fsim_weight": config["fsim_weight"],
                 "qabf_weight": config["qabf_weight"],
                 "intensity_target": config.get("intensity_target", "average"),
                 "definition": "psnr_weight * -(PSNR of the mean MSE to both sources, or to their maximum: "
                               "intensity_target)/10 dB + ssim_weight * (1 - mean SSIM to "
                               "both) + gradient_weight * L1(Sobel(F) - the stronger source gradient) / its mean "
                               "+ fsim_weight * (1 - mean FSIM to both) + qabf_weight * (1 - Qabf)"},
        "final_train_loss": {k.removeprefix("train_"): round(v, 4) for k, v in history[-1].items()
                             if k.startswith("train_") and k != "train_seconds"},
        "caveat": HEAD_CAVEAT,
    }


def ship_head(run_dir: Path, name: str, directory: Path | None = None) -> Path:
    """Attach a finished stage-2 run's head to model ``name`` in ``directory`` (its autoencoder must be the one
    the head was trained on): the weights file is rewritten with the head and the card gains ``fusion_head``."""
    directory = user_models_dir() if directory is None else directory
    card_file = directory / f"{name}.json"
    if not (run_dir / "final.pt").is_file() or not card_file.is_file():
        raise EdranFusionError(f"need {run_dir / 'final.pt'} (a finished stage-2 run) and the card {card_file}")
    card = json.loads(card_file.read_text())
    current = load_state_dict(directory / card["file"], card["sha256"])
    state = load_state_dict(run_dir / "final.pt", None)
    if any(not torch.equal(value, state[key]) for key, value in current.items() if not key.startswith("fusion_head.")):
        raise EdranFusionError(f"the head in {run_dir} was trained on another autoencoder than model {name}; "
                               "train it again on this model")
    model = model_from_state_dict(state, str(run_dir / "final.pt"))
    kept = {k: v for k, v in card.items() if k not in ("name", "task", "file", "sha256", "fusion_head")}
    return save_bundled(model, name, card["task"], {**kept, "fusion_head": fusion_head_card(run_dir)}, directory)


TASKS = {"CT-MRI": "ct-mri", "SPECT-MRI": "spect-mri", "PET-MRI": "pet-mri"}


def _pick_pairs(split: dict, data_root: Path, task: str, per_task: int) -> list[str]:
    """Evenly spaced validation pair names of one task, from a run's split.json or a model card's series."""
    if "val_images" in split:
        names = sorted({n.split("/")[-1] for n in split["val_images"] if n.startswith(f"{task}/")})
    else:
        series = recorded_val_series(split) or set()
        folder = data_root / task / "MRI"
        names = sorted(p.stem for p in folder.glob("*.png") if series_of(p.stem, folder) in series)
    if not names:
        return []
    picks = np.linspace(len(names) * 0.3, len(names) * 0.7, per_task).astype(int)
    return [names[i] for i in sorted(set(picks))]


def montage(data_root: Path, split_file: Path, per_task: int = 3, figures: Path = FIGURES_DIR,
            models: dict[str, str] | None = None) -> list[Path]:
    """One PNG per task: rows of validation pairs, columns MRI | other modality | fused (the model's default).

    ``models`` maps a task's model name to a bundled name or weights file; by default the bundled task model,
    else ``general``.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from PIL import Image

    from ..fusion.pipeline import fuse_images

    split = json.loads(split_file.read_text())
    installed = bundled_models()
    models = models or {name: name if name in installed else "general" for name in TASKS.values()}
    written = []
    for task, model_name in TASKS.items():
        names = _pick_pairs(split, data_root, task, per_task)
        if not names:
            continue
        model = models[model_name]
        strategy = default_strategy_of(model)
        label = f"{Path(model).stem if model not in installed else model}, {strategy}"
        other = task.split("-")[0]
        figure, axes = plt.subplots(len(names), 3, figsize=(7.5, 2.6 * len(names)), squeeze=False)
        for row, stem in zip(axes, names):
            mri = np.asarray(Image.open(data_root / task / "MRI" / f"{stem}.png"))
            second = np.asarray(Image.open(data_root / task / other / f"{stem}.png"))
            fused = fuse_images(mri, second, model=model, strategy=strategy)
            for axis, image, title in zip(row, (mri, second, fused), ("MRI", other, f"fused ({label})")):
                axis.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
                axis.set_title(f"{title} {stem}", fontsize=8)
                axis.axis("off")
        figure.tight_layout()
        path = figures / f"montage_{model_name}.png"
        figures.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=80)
        plt.close(figure)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """``ship`` a finished run or draw the ``montage`` figures; user errors exit 2 with one line."""
    parser = argparse.ArgumentParser(prog="python -m EdranFusionLib.training.report")
    commands = parser.add_subparsers(dest="command", required=True)
    ship_parser = commands.add_parser("ship", help="bundle a finished run's best weights with a model card")
    ship_parser.add_argument("--run-dir", type=Path, required=True)
    ship_parser.add_argument("--name", required=True)
    ship_parser.add_argument("--task", required=True)
    ship_parser.add_argument("--note", default="")
    ship_parser.add_argument("--val-stride", type=int, default=1, help="score every Nth validation image")
    ship_parser.add_argument("--directory", type=Path, default=None,
                             help="models folder (default: the user's; maintainers: EdranFusionLib/weights)")
    ship_parser.add_argument("--figures", type=Path, default=None,
                             help="folder for the curves (default: beside the weights; maintainers: docs/figures)")
    ship_parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                             help="precision of the reconstruction scores (auto: the fuser's)")
    head_parser = commands.add_parser("ship-head", help="attach a finished stage-2 run's fusion head to a model")
    head_parser.add_argument("--run-dir", type=Path, required=True)
    head_parser.add_argument("--name", required=True, help="the model the head was trained on")
    head_parser.add_argument("--directory", type=Path, default=None,
                             help="models folder (default: the user's; maintainers: EdranFusionLib/weights)")
    promote_parser = commands.add_parser("promote", help="bundle a shipped candidate model under another name")
    promote_parser.add_argument("--candidate", type=Path, required=True, help="the candidate's card (.json)")
    promote_parser.add_argument("--name", required=True)
    promote_parser.add_argument("--note", default="", help="the new card's description")
    promote_parser.add_argument("--directory", type=Path, required=True, help="models folder (EdranFusionLib/weights)")
    promote_parser.add_argument("--figures", type=Path, default=FIGURES_DIR, help="folder for the curves")
    montage_parser = commands.add_parser("montage", help="fuse validation pairs of each task into PNG montages")
    montage_parser.add_argument("--data", type=Path, required=True, help="the harvard folder")
    montage_parser.add_argument("--split", type=Path, required=True,
                                help="split.json of the general run, or its model card")
    args = parser.parse_args(argv)

    def work() -> int:
        if args.command == "ship":
            print(ship(args.run_dir, args.name, args.task, args.note, directory=args.directory,
                       figures=args.figures, val_stride=args.val_stride, precision=args.precision))
        elif args.command == "ship-head":
            print(ship_head(args.run_dir, args.name, args.directory))
        elif args.command == "promote":
            print(promote(args.candidate, args.name, args.note, directory=args.directory, figures=args.figures))
        else:
            print("\n".join(str(p) for p in montage(args.data, args.split)))
        return 0

    return exit_status_of(work)


if __name__ == "__main__":
    sys.exit(main())

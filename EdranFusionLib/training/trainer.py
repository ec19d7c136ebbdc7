"""Stage-1 training of the EH-DRAN autoencoder (paper sections 2.3, 2.4, 3): reconstruct single images.

Run as ``python -m EdranFusionLib.train ...``, as ``python path/to/train.py ...``, under
``Slicer --no-main-window --python-script path/to/train.py -- ...`` or ``torchrun --nproc-per-node N ...``.

The run folder holds config.json, split.json, metrics.jsonl, curves.png, checkpoint.pt (latest, atomically
replaced every epoch and every ``--checkpoint-every`` steps), best.pt (lowest validation loss) and final.pt.
Order and augmentation depend only on (seed, epoch, position), and the checkpoint holds the optimiser, the
step and the running epoch sums, so a killed run resumed with ``--resume`` ends with the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import warnings
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ..errors import EdranFusionError
from ..io.atomic import atomic_output
from ..io.model_files import load_state_dict, model_from_state_dict
from ..io.weights import resolve
from ..network.devices import cpu_has_fast_bf16
from ..network.losses import ReconstructionLoss
from ..network.model import EHDRAN
from ..network.vgg import load_vgg16
from . import distributed
from .datasets import TrainingImages, collect, parse_repeats, split_by_series, validation_batches
from .finite_steps import FiniteSteps

# Settings that define the run: resuming with any of them changed would not continue the same run.
RUN_DEFINING = ("data", "epochs", "batch_size", "lr", "lr_min", "crop", "flips", "gradient_weight",
                "perceptual_weight", "vgg_layers", "val_series", "val_fraction", "val_stride", "seed", "drgo",
                "init_from", "bright_crops", "repeat_modality")


def _choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise EdranFusionError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _use_bf16(precision: str, device: torch.device) -> bool:
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_fast_bf16()


def learning_rate(step: int, total: int, lr: float, lr_min: float) -> float:
    """Cosine decay from ``lr`` at step 0 to ``lr_min`` at the last step."""
    progress = min(step / max(total - 1, 1), 1.0)
    return lr_min + 0.5 * (lr - lr_min) * (1.0 + math.cos(math.pi * progress))


def _config(args: argparse.Namespace) -> dict:
    config = {key: getattr(args, key) for key in RUN_DEFINING}
    config["data"] = [str(Path(p).expanduser().resolve()) for p in args.data]
    return config


def _check_args(args: argparse.Namespace) -> None:
    for name in ("epochs", "batch_size", "val_stride"):
        if getattr(args, name) < 1:
            raise EdranFusionError(f"--{name.replace('_', '-')} must be at least 1")
    if args.bright_crops is not None and not 0 <= args.bright_crops <= 1:
        raise EdranFusionError("--bright-crops must be a probability between 0 and 1")
    parse_repeats(args.repeat_modality)
    if args.crop is not None and args.crop < 8:
        raise EdranFusionError("--crop must be at least 8 pixels")
    if args.lr <= 0 or args.lr_min < 0 or args.lr_min > args.lr:
        raise EdranFusionError("learning rates must satisfy 0 <= --lr-min <= --lr and --lr > 0")
    run_dir = args.run_dir
    if args.resume and not (run_dir / "checkpoint.pt").is_file():
        raise EdranFusionError(f"nothing to resume: {run_dir / 'checkpoint.pt'} does not exist; start without --resume")
    if not args.resume and run_dir.exists():
        raise EdranFusionError(
            f"run folder {run_dir} already exists; pass --resume to continue it or choose a new folder"
        )


class Trainer:
    """One training run: model, optimiser, data, loss and the run folder's files."""

    def __init__(self, args: argparse.Namespace, context: distributed.Context, device: torch.device) -> None:
        self.args = args
        self.context = context
        self.device = device
        self.run_dir: Path = args.run_dir
        self.config = _config(args)
        self.bf16 = _use_bf16(args.precision, device)
        self.channels_last = device.type == "cpu"
        torch.manual_seed(args.seed)
        samples = collect(args.data)
        val_series = args.val_series.split(",") if args.val_series else None
        train, val, self.split = split_by_series(samples, val_series, args.val_fraction, args.seed)
        self.val = val[::args.val_stride]
        self.images = TrainingImages(train, args.crop, args.flips, args.bright_crops or 0.0,
                                     parse_repeats(args.repeat_modality))
        self.steps_per_epoch = self.images.steps_per_epoch(args.batch_size, context.world)
        if self.steps_per_epoch == 0:
            raise EdranFusionError(f"{len(train)} training images are fewer than one step needs "
                                   f"({args.batch_size * context.world}); lower --batch-size or add data")
        self.total_steps = self.steps_per_epoch * args.epochs
        if args.init_from:
            self.model = model_from_state_dict(load_state_dict(*resolve(args.init_from)), str(args.init_from))
        else:
            self.model = EHDRAN(use_drgo=args.drgo)
        self.model.to(device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        vgg = None
        if args.perceptual_weight > 0:
            vgg = load_vgg16(args.vgg_weights, [name.strip() for name in args.vgg_layers.split(",")]).to(device)
            if self.channels_last:
                vgg.to(memory_format=torch.channels_last)
        self.loss = ReconstructionLoss(args.gradient_weight, args.perceptual_weight, vgg)
        self.network = (DistributedDataParallel(self.model) if context.world > 1 else self.model)
        self.step = 0
        self.finite = FiniteSteps()
        self.best_val = math.inf
        self.history: list[dict] = []
        self.epoch_sums: dict[str, float] = {}
        self.train_seconds = 0.0

    # -- run folder -------------------------------------------------------------------------------------------
    def prepare_run_dir(self) -> None:
        """Create the run folder with config and split, or load the checkpoint of an existing one."""
        if not self.args.resume:
            if self.context.is_main:
                self.run_dir.mkdir(parents=True)
                self._write_json("config.json", {**self.config, "steps_per_epoch": self.steps_per_epoch,
                                                 "world_size": self.context.world, "bf16": self.bf16,
                                                 "vgg_weights": self.args.vgg_weights})
                self._write_json("split.json", self.split)
            distributed.barrier(self.context)
            return
        checkpoint = torch.load(self.run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        saved = checkpoint.get("config") if isinstance(checkpoint, dict) else None
        if saved is None or "model" not in checkpoint:
            raise EdranFusionError(f"{self.run_dir / 'checkpoint.pt'} is not an EdranFusion training checkpoint")
        changed = [key for key in RUN_DEFINING if saved.get(key) != self.config[key]]
        if changed:
            key = changed[0]
            raise EdranFusionError(f"checkpoint in {self.run_dir} was made with {key}={saved.get(key)!r}, not "
                                   f"{self.config[key]!r}; resume with the run's own settings (see its config.json)")
        if checkpoint["steps_per_epoch"] != self.steps_per_epoch:
            raise EdranFusionError(f"checkpoint in {self.run_dir} has {checkpoint['steps_per_epoch']} steps per epoch, "
                                   f"now {self.steps_per_epoch}: the data or the number of processes changed")
        try:
            self.model.load_state_dict(checkpoint["model"])
        except RuntimeError as error:
            raise EdranFusionError(f"checkpoint in {self.run_dir} does not fit this model; start a new run") from error
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step = checkpoint["step"]
        self.best_val = checkpoint["best_val"]
        self.history = json.loads(checkpoint["history"])
        self.epoch_sums = json.loads(checkpoint["epoch_sums"])
        self.train_seconds = checkpoint["train_seconds"]
        self.finite = FiniteSteps(checkpoint.get("skipped_steps", 0))

    def _write_json(self, name: str, data: object) -> None:
        with atomic_output(self.run_dir / name) as temporary:
            temporary.write_text(json.dumps(data, indent=2) + "\n")

    def _save_state_dict(self, name: str) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_output(self.run_dir / name) as temporary:
            torch.save(state, temporary)

    def save_checkpoint(self) -> None:
        if not self.context.is_main:
            return
        checkpoint = {
            "model": {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "step": self.step, "best_val": self.best_val,
            "steps_per_epoch": self.steps_per_epoch, "config": self.config, "history": json.dumps(self.history),
            "epoch_sums": json.dumps(self.epoch_sums), "train_seconds": self.train_seconds,
            "skipped_steps": self.finite.skipped,
        }
        with atomic_output(self.run_dir / "checkpoint.pt") as temporary:
            torch.save(checkpoint, temporary)

    # -- training ---------------------------------------------------------------------------------------------
    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _to_device(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch

    def train_step(self, batch: torch.Tensor) -> dict[str, float] | None:
        """One update; the loss parts, or None when the step was skipped (finite_steps.py)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.total_steps, self.args.lr, self.args.lr_min)
        self.model.train()
        batch = self._to_device(batch)
        with self._autocast():
            output = self.network(batch)
        total, parts = self.loss(output, batch)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        taken = self.finite.step(self.optimizer, total, self.step + 1)
        self.step += 1
        return parts if taken else None

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Mean loss and PSNR of x vs clamp(x_hat) over this rank's share of the validation images, summed."""
        distributed.share_buffers(self.model, self.context)
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64)
        for index, batch in enumerate(validation_batches(self.val, self.args.batch_size)):
            if index % self.context.world != self.context.rank:
                continue
            images = self._to_device(batch)
            with self._autocast():
                output = self.model(images)
            total, _ = self.loss(output, images)
            mse = (output.float().clamp(0, 1) - images).square().flatten(1).mean(1).clamp_min(1e-12)
            sums += torch.tensor([total.item() * len(images), float((-10 * mse.log10()).sum()), len(images)],
                                 dtype=torch.float64)
        sums = distributed.sum_across(sums.to(self.device), self.context).cpu()
        count = max(float(sums[2]), 1.0)
        return {"val_loss": float(sums[0]) / count, "val_psnr": float(sums[1]) / count}

    def _end_epoch(self, epoch: int) -> None:
        sums = distributed.sum_across(torch.tensor([self.epoch_sums.get(k, 0.0) for k in
                                                    ("total", "pixel", "gradient", "perceptual", "count")],
                                                   dtype=torch.float64).to(self.device), self.context).cpu()
        count = max(float(sums[4]), 1.0)
        record = {"epoch": epoch + 1, "step": self.step,
                  "lr": learning_rate(self.step - 1, self.total_steps, self.args.lr, self.args.lr_min),
                  "train_loss": float(sums[0]) / count, "train_pixel": float(sums[1]) / count,
                  "train_gradient": float(sums[2]) / count, "train_perceptual": float(sums[3]) / count}
        if self.val:
            record.update(self.validate())
        record["train_seconds"] = round(self.train_seconds, 1)
        record["skipped_steps"] = self.finite.skipped
        self.history.append(record)
        self.epoch_sums = {}
        if self.context.is_main:
            if self.val and record["val_loss"] < self.best_val:
                self.best_val = record["val_loss"]
                self._save_state_dict("best.pt")
            self._write_json_lines()
            plot_curves(self.history, self.run_dir / "curves.png")
            print(json.dumps(record), file=sys.stderr, flush=True)
        self.save_checkpoint()

    def _write_json_lines(self) -> None:
        with atomic_output(self.run_dir / "metrics.jsonl") as temporary:
            temporary.write_text("".join(json.dumps(r) + "\n" for r in self.history))

    def fit(self) -> None:
        from tqdm import tqdm

        args = self.args
        stop_at = self.total_steps if args.max_steps is None else min(args.max_steps, self.total_steps)
        images_per_step = args.batch_size * self.context.world
        while self.step < stop_at:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            batches = self.images.batches(args.seed, epoch, args.batch_size, rank=self.context.rank,
                                          world=self.context.world, start=start)
            bar = tqdm(total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{args.epochs}",
                       disable=not (args.progress and self.context.is_main), mininterval=5, file=sys.stderr)
            for batch in batches:
                began = time.perf_counter()
                parts = self.train_step(batch)
                seconds = time.perf_counter() - began
                self.train_seconds += seconds
                if parts is not None:
                    for key, value in parts.items():
                        self.epoch_sums[key] = self.epoch_sums.get(key, 0.0) + value * len(batch)
                    self.epoch_sums["count"] = self.epoch_sums.get("count", 0.0) + len(batch)
                    bar.set_postfix(loss=f"{parts['total']:.4f}", img_s=f"{images_per_step / seconds:.1f}",
                                    refresh=False)
                bar.update()
                if self.step % self.steps_per_epoch == 0:
                    self._end_epoch(epoch)
                elif self.step == stop_at or (args.checkpoint_every and self.step % args.checkpoint_every == 0):
                    self.save_checkpoint()
                if self.step == stop_at:
                    break
            bar.close()
        distributed.share_buffers(self.model, self.context)
        if self.step == self.total_steps and self.context.is_main:
            self._save_state_dict("final.pt")
            if not self.val:
                self._save_state_dict("best.pt")


def plot_curves(history: list[dict], path: Path) -> None:
    """Training and validation loss per epoch (log scale) and validation PSNR, as a PNG.

    matplotlib is optional (Slicer does not ship it and the module installs only what fusion needs): without
    it no curves.png is drawn, with one warning; metrics.jsonl holds the same figures.
    """
    try:
        import matplotlib
    except ImportError:
        warnings.warn("curves.png is not drawn: matplotlib is not installed (pip install matplotlib); "
                      "metrics.jsonl holds the same figures", RuntimeWarning, stacklevel=2)
        return

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] for r in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(epochs, [r["train_loss"] for r in history], "o-", label="training")
    if "val_loss" in history[0]:
        left.plot(epochs, [r["val_loss"] for r in history], "s-", label="validation")
        right.plot(epochs, [r["val_psnr"] for r in history], "s-", color="C1")
    left.set(xlabel="epoch", ylabel="loss: pixel + λ1 grad + λ2 perceptual", yscale="log", title="loss")
    left.legend()
    right.set(xlabel="epoch", ylabel="PSNR x vs x_hat (dB, range 1)", title="validation reconstruction")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    with atomic_output(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100)
    plt.close(figure)


def train(args: argparse.Namespace) -> int:
    """Train as ``args`` (the `train` command's options) say; returns the exit status."""
    _check_args(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _choose_device(args.device)
    context = distributed.start(device.type)
    try:
        if device.type == "cuda":
            device = torch.device("cuda", context.local_rank)
            torch.cuda.set_device(device)
        trainer = Trainer(args, context, device)
        trainer.prepare_run_dir()
        trainer.fit()
    finally:
        distributed.stop(context)
        torch.set_num_threads(threads)  # in-process callers (tests, Slicer's Python) keep their setting
    return 0

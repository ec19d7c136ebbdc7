"""Stage-2 training (beyond the paper): the learned fusion head on a trained, frozen EH-DRAN autoencoder.

For each pair of co-registered training images (pair folders; A = the MRI folder, B = the other) the frozen
encoder gives both latents and the frozen decoder the candidates the head mixes (training/head_inputs.py, once
per pair); crops of them, flipped together, go through the head (network/fusion_head.py: per-pixel weights over
the candidates, started at max-anchored fusion's fixed blend), and network/fusion_losses.py scores the result
against both sources. Validation series are left out entirely: they are scored once, afterwards.

Run as ``python -m EdranFusionLib.training.fusion_trainer --data H/CT-MRI --model ct-mri --run-dir DIR``. The
run folder holds config.json, split.json, metrics.jsonl, checkpoint.pt (atomic, every epoch and every
``--checkpoint-every`` steps; ``--resume`` continues exactly) and, at the end, ``final.pt``: a complete weights
file (autoencoder + head) that ``--model`` of every command accepts and ``ship`` bundles.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import EdranFusionError, exit_status_of
from ..fusion.learned import decoded_fusion, starting_blend
from ..io.atomic import atomic_output
from ..io.images import common_names
from ..io.model_files import load_model
from ..network.devices import cpu_has_fast_bf16
from ..network.fusion_head import FusionHead
from ..network.fusion_losses import INTENSITY_TARGETS, FusionLoss
from ..network.model import LATENT_CHANNELS, fold_for_inference
from .datasets import Sample, SeriesSelection, load_gray
from .finite_steps import FiniteSteps
from .head_inputs import HeadBatch, HeadInputs
from .trainer import learning_rate

RUN_DEFINING = ("data", "model", "train", "epochs", "batch_size", "lr", "lr_min", "crop", "flips", "psnr_weight",
                "ssim_weight", "gradient_weight", "fsim_weight", "qabf_weight", "intensity_target", "on_pixels",
                "val_series", "seed")


def training_pairs(folders: list[Path], held_out: SeriesSelection) -> tuple[list[Sample], dict]:
    """[2, H, W] samples (A = the MRI folder, B = the other modality) of every pair not held out."""
    pairs, record = [], {"held_out_series": held_out.items(), "train_pairs": []}
    for folder in folders:
        modalities = sorted(p for p in folder.iterdir() if p.is_dir())
        first = next((m for m in modalities if m.name.upper() == "MRI"), None)
        if len(modalities) != 2 or first is None:
            raise EdranFusionError(f"pair folder {folder} must hold an MRI folder and one other modality folder")
        second = next(m for m in modalities if m != first)
        for name in common_names(str(first), str(second)):
            stem = Path(name).stem
            if held_out.holds(stem, folder):
                continue
            image = np.stack([load_gray(first / name), load_gray(second / name)])
            pairs.append(Sample(image, stem[:-3], f"{folder.name}/{stem}"))
            record["train_pairs"].append(pairs[-1].name)
    if not pairs:
        raise EdranFusionError("no training pairs left after holding out the validation series; check --data")
    return pairs, record


class FusionTrainer:
    """One stage-2 run: frozen encoder, trainable head, pair crops, loss and the run folder."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir: Path = args.run_dir
        self.config = {key: getattr(args, key) for key in RUN_DEFINING}
        self.config["data"] = [str(Path(p).expanduser().resolve()) for p in args.data]
        if not args.resume and self.run_dir.exists():  # before minutes of latents are computed
            raise EdranFusionError(f"run folder {self.run_dir} already exists; pass --resume or choose a new one")
        if args.train == "decoder" and args.on_pixels:
            raise EdranFusionError("--train decoder fine-tunes the network's decoder; the pixel control has none "
                                   "(drop --on-pixels)")
        self.bf16 = args.precision == "bf16" or (args.precision == "auto" and cpu_has_fast_bf16())
        torch.manual_seed(args.seed)
        pairs, self.split = training_pairs([Path(p) for p in args.data], SeriesSelection(args.val_series or ""))
        if len(pairs) < args.batch_size:
            raise EdranFusionError(f"{len(pairs)} training pairs are fewer than one batch; lower --batch-size")
        self.model = load_model(args.model).requires_grad_(False)
        # A head trained with --train decoder before keeps its fused decoder (frozen) for the first candidate.
        kept_decoder = None if args.on_pixels else getattr(self.model.fusion_head, "fused_decoder", None)
        encoder = None if args.on_pixels else fold_for_inference(self.model).to(memory_format=torch.channels_last)
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        if encoder is not None:
            encoder.to(dtype)  # its copy of the head, fused decoder included, too
        decode = None if kept_decoder is None else encoder.fusion_head.fused_decoder
        self.inputs = HeadInputs(pairs, encoder, args.crop, args.flips, decode=decode, dtype=dtype,
                                 progress=args.progress)
        self.steps_per_epoch = self.inputs.steps_per_epoch(args.batch_size)
        self.total_steps = self.steps_per_epoch * args.epochs
        self.head = FusionHead.starting_as(1 if args.on_pixels else LATENT_CHANNELS, starting_blend())
        if args.train == "decoder":  # only the decoder copy trains; the mixture stays at its start
            self.head.requires_grad_(False)
            self.head.fused_decoder = copy.deepcopy(self.model.decoder).requires_grad_(True)
        else:
            self.head.fused_decoder = kept_decoder  # frozen with the model it came from
        self.head.to(memory_format=torch.channels_last)
        trainable = [p for p in self.head.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trainable, lr=args.lr)
        self.loss = FusionLoss(args.psnr_weight, args.ssim_weight, args.gradient_weight, args.intensity_target,
                               fsim_weight=args.fsim_weight, qabf_weight=args.qabf_weight)
        self.step = 0
        self.finite = FiniteSteps()
        self.history: list[dict] = []
        self.sums: dict[str, float] = {}
        self.train_seconds = 0.0

    def prepare_run_dir(self) -> None:
        if not self.args.resume:
            self.run_dir.mkdir(parents=True)
            self._write("config.json", json.dumps({**self.config, "steps_per_epoch": self.steps_per_epoch,
                                                   "bf16": self.bf16, "head_precision": "fp32",
                                                   "fused_decoder": self.head.fused_decoder is not None}, indent=2))
            self._write("split.json", json.dumps(self.split, indent=1))
            return
        path = self.run_dir / "checkpoint.pt"
        if not path.is_file():
            raise EdranFusionError(f"nothing to resume: {path} does not exist; start without --resume")
        state = torch.load(path, map_location="cpu", weights_only=True)
        changed = [key for key in RUN_DEFINING if state["config"].get(key) != self.config[key]]
        if changed:
            raise EdranFusionError(f"checkpoint in {self.run_dir} was made with {changed[0]}="
                                   f"{state['config'].get(changed[0])!r}; resume with the run's own settings")
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.train_seconds = state["step"], state["train_seconds"]
        self.finite = FiniteSteps(state.get("skipped_steps", 0))
        self.history, self.sums = json.loads(state["history"]), json.loads(state["sums"])

    def _write(self, name: str, text: str) -> None:
        with atomic_output(self.run_dir / name) as temporary:
            temporary.write_text(text + "\n")

    def _save_checkpoint(self) -> None:
        state = {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "train_seconds": self.train_seconds, "skipped_steps": self.finite.skipped, "config": self.config,
                 "history": json.dumps(self.history), "sums": json.dumps(self.sums)}
        with atomic_output(self.run_dir / "checkpoint.pt") as temporary:
            torch.save(state, temporary)

    def train_step(self, batch: HeadBatch) -> dict[str, float] | None:
        """One update; the loss parts, or None when the step was skipped (finite_steps.py)."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, self.total_steps, self.args.lr, self.args.lr_min)
        # fp32, not bf16 autocast: on this CPU build the bf16 backward of the head's first convolution gives NaN
        # weight gradients (for its three candidate channels), intermittently; the head is small, so fp32 costs
        # little next to the loss. --precision sets how the latents are computed and kept.
        if self.args.train == "decoder":
            fused = decoded_fusion(self.head.fused_decoder, batch.fa, batch.fb)
        else:
            fused = self.head(batch.fa, batch.fb, batch.candidates)
        total, parts = self.loss(fused, batch.a, batch.b)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        taken = self.finite.step(self.optimizer, total, self.step + 1)
        self.step += 1
        return parts if taken else None

    def _end_epoch(self, epoch: int) -> None:
        count = max(self.sums.pop("count", 1.0), 1.0)
        record = {"epoch": epoch + 1, "step": self.step,
                  "lr": learning_rate(self.step - 1, self.total_steps, self.args.lr, self.args.lr_min),
                  **{f"train_{k}": v / count for k, v in self.sums.items()},
                  "train_seconds": round(self.train_seconds, 1), "skipped_steps": self.finite.skipped}
        self.history.append(record)
        self.sums = {}
        self._write("metrics.jsonl", "\n".join(json.dumps(r) for r in self.history))
        print(json.dumps(record), file=sys.stderr, flush=True)
        self._save_checkpoint()

    def fit(self) -> None:
        from tqdm import tqdm

        stop_at = min(self.args.max_steps or self.total_steps, self.total_steps)
        while self.step < stop_at:
            epoch, start = divmod(self.step, self.steps_per_epoch)
            bar = tqdm(total=self.steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{self.args.epochs}",
                       disable=not self.args.progress, mininterval=5, file=sys.stderr)
            for batch in self.inputs.batches(self.args.seed, epoch, self.args.batch_size, start=start):
                began = time.perf_counter()
                parts = self.train_step(batch)
                self.train_seconds += time.perf_counter() - began
                if parts is not None:
                    for key, value in parts.items():
                        self.sums[key] = self.sums.get(key, 0.0) + value * len(batch.a)
                    self.sums["count"] = self.sums.get("count", 0.0) + len(batch.a)
                    bar.set_postfix(loss=f"{parts['total']:.4f}", refresh=False)
                bar.update()
                if self.step % self.steps_per_epoch == 0:
                    self._end_epoch(epoch)
                elif self.step == stop_at or (self.args.checkpoint_every
                                              and self.step % self.args.checkpoint_every == 0):
                    self._save_checkpoint()
                if self.step == stop_at:
                    break
            bar.close()
        if self.step == self.total_steps:
            self.save_weights(self.run_dir / "final.pt")

    def save_weights(self, path: Path) -> None:
        """The autoencoder with this head attached, as one weights file (the pixel control: the head alone)."""
        if not self.args.on_pixels:
            self.model.fusion_head = self.head
        network = self.head if self.args.on_pixels else self.model
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        with atomic_output(path) as temporary:
            torch.save(state, temporary)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m EdranFusionLib.training.fusion_trainer",
                                     description="Beyond the paper: train the learned fusion head (stage 2)")
    parser.add_argument("--data", action="append", required=True, metavar="PAIR_FOLDER",
                        help="pair folder <task>/{MRI,<other>}/<name>.png (repeatable; pooled)")
    parser.add_argument("--model", required=True, help="trained autoencoder: bundled name or weights file")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--train", default="head", choices=("head", "decoder"),
                        help="head: the mixture head (keeping a fused decoder the model's head has); decoder: first "
                             "fine-tune a copy of the decoder on activity-fused latents, then train the head on the "
                             "resulting final.pt")
    parser.add_argument("--val-series", default=None,
                        help="comma-separated series never trained on, or slabs of one series' slices (41:56-84)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lr-min", type=float, default=1e-6)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--flips", action="store_true")
    parser.add_argument("--psnr-weight", type=float, default=1.0, help="weight of -mean PSNR / 10 dB")
    parser.add_argument("--ssim-weight", type=float, default=1.0, help="weight of 1 - mean SSIM")
    parser.add_argument("--gradient-weight", type=float, default=1.0, help="weight of the strongest-gradient term")
    parser.add_argument("--fsim-weight", type=float, default=0.0, help="weight of 1 - mean FSIM to both sources")
    parser.add_argument("--qabf-weight", type=float, default=0.0, help="weight of 1 - Qabf")
    parser.add_argument("--intensity-target", default="average", choices=INTENSITY_TARGETS,
                        help="what the PSNR term pulls toward: both sources (peaks at their average) or their maximum")
    parser.add_argument("--on-pixels", action="store_true",
                        help="the pixel-domain control: the same weight network on the source images and their "
                             "pixel-rule candidates, no encoder and no decoder")
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="how the frozen network computes and keeps the latents (the head trains in fp32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--checkpoint-every", type=int, default=50, metavar="STEPS")
    parser.add_argument("--max-steps", type=int, default=None, help="stop (resumable) after this many steps")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work() -> int:
        if args.threads:
            torch.set_num_threads(args.threads)
        trainer = FusionTrainer(args)
        trainer.prepare_run_dir()
        trainer.fit()
        return 0

    return exit_status_of(work)


if __name__ == "__main__":
    sys.exit(main())

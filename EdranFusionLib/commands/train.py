"""`train` sub-command and ``python -m EdranFusionLib.train``: the stage-1 training options and entry point.

torch is imported only when a run starts, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import EdranFusionError, exit_status_of
from ..io.user_data import user_runs_dir
from .arguments import OneLineParser

PROG = "python -m EdranFusionLib.train"
DESCRIPTION = "Stage-1 training of the EH-DRAN autoencoder: reconstruct single images"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the training options (shared by this module and the package CLI's ``train`` sub-command)."""
    parser.add_argument("--data", action="append", required=True, metavar="PATH",
                        help="pair folder <task>/<modality>/<name>.png, a folder of such task folders, a volume "
                             "file or a folder of volumes (repeatable; all are pooled)")
    parser.add_argument("--run-dir", type=Path, default=None,
                        help="run folder to create (or continue with --resume); default: a new dated folder in "
                             "the user data folder's runs/")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    parser.add_argument("--epochs", type=int, default=100, help="epochs (paper: 100)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per step per process (paper: 4)")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (paper: 1e-4)")
    parser.add_argument("--lr-min", type=float, default=3e-7, help="end of the per-step cosine decay (paper: 3e-7)")
    parser.add_argument("--crop", type=int, default=None, help="train on random NxN crops (default: whole images)")
    parser.add_argument("--flips", action="store_true", help="random horizontal/vertical flips")
    parser.add_argument("--bright-crops", type=float, default=None, metavar="P",
                        help="beyond the paper: with probability P centre a crop on a bright pixel (bone in CT)")
    parser.add_argument("--repeat-modality", default=None, metavar="MOD:N,...",
                        help="beyond the paper: show each image of these modality folders N times per epoch (CT:3)")
    parser.add_argument("--gradient-weight", type=float, default=0.5,
                        help="lambda1 of the Sobel gradient loss; 0 = off")
    parser.add_argument("--perceptual-weight", type=float, default=0.5, help="lambda2 of the VGG16 loss; 0 = off")
    parser.add_argument("--vgg-weights", default=None, help="VGG16 weights: Caffe-convention .npz or torchvision .pth")
    parser.add_argument("--vgg-layers", default="relu3_3", help="comma-separated VGG16 layers (default relu3_3)")
    parser.add_argument("--val-series", default=None, help="comma-separated series held out for validation")
    parser.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of series held out when no --val-series")
    parser.add_argument("--val-stride", type=int, default=1,
                        help="validate each epoch on every Nth validation image (all of them for the model card)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-drgo", dest="drgo", action="store_false", help="ablation: train without the DRGO block")
    parser.add_argument("--init-from", default=None,
                        help="start from these weights (bundled name or file): fine-tuning")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                        help="auto = bf16 autocast where the hardware has it (AVX-512/AMX CPUs, recent GPUs)")
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                        help="also checkpoint every N steps inside an epoch (0 = only at epoch ends)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="stop (checkpointed, resumable) after this many steps in total; the schedule is unchanged")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Train as ``args`` say (EdranFusionError propagates to the caller)."""
    from ..training.trainer import train

    if args.run_dir is None:
        if args.resume:
            raise EdranFusionError("--resume needs --run-dir: the run folder to continue")
        args.run_dir = user_runs_dir() / time.strftime("%Y%m%d-%H%M%S")
        print(f"run folder: {args.run_dir}")
    return train(args)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: user errors become one ``error: ...`` line on stderr and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--"]:  # Slicer passes the script's own arguments after "--"
        argv = argv[1:]
    parser = OneLineParser(prog=PROG, description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return exit_status_of(lambda: run(args))

"""The model cache of fusion/pipeline.py: one load per weights file, and a new load once the file changes."""

from __future__ import annotations

import os

import torch

from EdranFusionLib.fusion.pipeline import as_model
from EdranFusionLib.network.model import EHDRAN


def _save(seed: int, path) -> None:
    torch.manual_seed(seed)
    torch.save(EHDRAN().state_dict(), path)


def _first_weight(model: EHDRAN) -> torch.Tensor:
    return next(model.parameters()).detach().clone()


def test_a_weights_file_is_loaded_once(tmp_path):
    path = tmp_path / "weights.pt"
    _save(1, path)
    assert as_model(path) is as_model(str(path))


def test_a_weights_file_rewritten_on_disk_is_loaded_again(tmp_path):
    path = tmp_path / "weights.pt"
    _save(1, path)
    before = as_model(path)
    first = _first_weight(before)
    _save(2, path)  # same path and size; only the content and the mtime differ
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # coarse file-system clocks
    after = as_model(path)
    assert after is not before
    assert not torch.equal(_first_weight(after), first)
    torch.manual_seed(2)
    assert torch.equal(_first_weight(after), next(EHDRAN().parameters()).detach())

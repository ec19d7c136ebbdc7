"""The learned stage-2 fusion (beyond the paper): the mixture head, its loss, its trainer (exact resume), its
pixel-domain controls, shipping it into a model file and fusing with ``strategy="learned"`` through the real
fuser. Tiny synthetic data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from test_datasets import write_pair_folder
from test_training import assert_identical, weights_of

from EdranFusionLib.errors import EdranFusionError
from EdranFusionLib.evaluation.comparison import latent_methods, learned_pixel_control
from EdranFusionLib.fusion.learned import (
    fuse_learned,
    head_candidates,
    learned_weights,
    pixel_candidates,
    starting_blend,
)
from EdranFusionLib.fusion.pipeline import fuse_images
from EdranFusionLib.io.model_files import load_model, save_bundled
from EdranFusionLib.io.weights import WEIGHTS_DIR
from EdranFusionLib.network.fusion_head import FusionHead
from EdranFusionLib.network.fusion_losses import FusionLoss, joint_psnr, ssim, strongest_gradient
from EdranFusionLib.network.model import EHDRAN
from EdranFusionLib.training import fusion_trainer, report
from EdranFusionLib.training.datasets import SeriesSelection


def _latents(seed: int, shape=(2, 64, 12, 12)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_a_new_head_starts_as_max_anchored_fusions_fixed_blend() -> None:
    model = EHDRAN().eval()
    head = FusionHead.starting_as(64, starting_blend()).eval()
    fa, fb = _latents(0), _latents(1)
    ya, yb = (torch.rand((2, 1, 12, 12), generator=torch.Generator().manual_seed(s)) for s in (2, 3))
    with torch.no_grad():
        candidates = head_candidates(model.decode, fa, fb, ya, yb)
        weights = head.mixture_weights(fa, fb, candidates)
        assert candidates.shape == (2, 3, 12, 12) and weights.shape == (2, 3, 12, 12)
        torch.testing.assert_close(weights.sum(1), torch.ones(2, 12, 12))
        blend = torch.tensor(starting_blend())[None, :, None, None]
        torch.testing.assert_close(weights, blend.expand_as(weights), atol=0.02, rtol=0)
        # The blend is max-anchored fusion's: the decoded activity fusion pulled toward max and pyramid.
        torch.testing.assert_close(head(fa, fb, candidates), (blend * candidates).sum(1, keepdim=True),
                                   atol=0.02, rtol=0)
        assert sum(starting_blend()) == pytest.approx(1.0)
        assert candidates[:, 1:2].equal(torch.maximum(ya, yb))


def test_the_head_weighs_each_pixel_from_the_latents() -> None:
    head = FusionHead.starting_as(64)
    with torch.no_grad():
        head.weights[-1].weight.normal_(0, 1, generator=torch.Generator().manual_seed(0))
    candidates = torch.rand(2, 3, 12, 12)
    first = head.mixture_weights(_latents(0), _latents(1), candidates)
    second = head.mixture_weights(_latents(2), _latents(3), candidates)
    assert (first - second).abs().max() > 0.05  # other latents, other weights for the same candidates
    assert first[0, 0].std() > 0.01  # not one weight per image, as the paper's SFNN


def test_ssim_and_psnr_match_the_reference_definitions() -> None:
    rng = np.random.default_rng(3)
    x = rng.random((40, 40))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    tx, ty = (torch.from_numpy(v).float()[None, None] for v in (x, y))
    reference = structural_similarity(x, y, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False)
    assert float(ssim(tx, ty)) == pytest.approx(reference, abs=2e-4)
    assert float(ssim(tx, tx)) == pytest.approx(1.0, abs=1e-5)
    z = rng.random((40, 40))
    tz = torch.from_numpy(z).float()[None, None]
    both = (np.mean((z - x) ** 2) + np.mean((z - y) ** 2)) / 2
    assert float(joint_psnr(tz, tx, ty)) == pytest.approx(-10 * np.log10(both), abs=1e-3)
    assert float(joint_psnr(tx, tx, tx)) == pytest.approx(60.0)  # capped: identical crops must not dominate
    # Copying one source is no better than the average, unlike the mean of the two PSNRs in dB.
    assert float(joint_psnr((tx + ty) / 2, tx, ty)) > float(joint_psnr(tx, tx, ty))


def test_strongest_gradient_takes_each_pixels_larger_source_gradient() -> None:
    a = torch.zeros(1, 1, 8, 8)
    a[..., :, 4:] = 1.0  # a strong vertical edge
    b = torch.linspace(0, 0.2, 8).repeat(8, 1)[None, None]  # a weak ramp
    gx, _ = strongest_gradient(a, b)
    assert float(gx[0, 0, 4, 4]) == pytest.approx(4.0)  # Sobel of the unit step
    assert float(gx[0, 0, 4, 0]) == pytest.approx(0.2 / 7 * 4, rel=1e-4)  # the ramp wins there (replicate border)


def test_fusion_loss_prefers_the_strong_edges_of_both_sources() -> None:
    a = torch.zeros(1, 1, 32, 32)
    a[..., 8:24, 8:12] = 1.0
    b = torch.zeros(1, 1, 32, 32)
    b[..., 8:12, 8:24] = 1.0
    loss = FusionLoss(psnr_weight=0.0, ssim_weight=0.0, gradient_weight=1.0)
    keeps_both, _ = loss(torch.maximum(a, b), a, b)
    halves_both, parts = loss((a + b) / 2, a, b)
    assert float(keeps_both) < float(halves_both)
    assert set(parts) == {"total", "psnr", "ssim", "edges"}


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small models folder holding one untrained autoencoder with a card, as a shipped model has."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_bundled(EHDRAN().eval(), "tiny", "ct-mri", {"description": "test"}, folder)
    return folder


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pair_folder(tmp_path_factory.mktemp("pairs"), "CT-MRI", series=(1, 2, 3), slices=3, size=20)


def _options(pairs: Path, models: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["--data", str(pairs), "--model", str(models / "tiny.pt"), "--run-dir", str(run_dir),
            "--val-series", "3", "--epochs", "2", "--batch-size", "2", "--crop", "16", "--flips", "--threads", "1",
            "--checkpoint-every", "1", "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished(pairs: Path, autoencoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("head-runs") / "full"
    assert fusion_trainer.main(_options(pairs, autoencoder, run_dir)) == 0
    return run_dir


def test_trainer_leaves_out_the_held_out_series_and_writes_a_complete_weights_file(finished: Path) -> None:
    split = json.loads((finished / "split.json").read_text())
    assert split["held_out_series"] == ["3"] and len(split["train_pairs"]) == 6
    assert not any(name.endswith(("3000", "3001", "3002")) for name in split["train_pairs"])
    history = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2] and history[-1]["step"] == 6
    model = load_model(finished / "final.pt")
    assert isinstance(model.fusion_head, FusionHead)


def test_an_interrupted_run_resumes_to_identical_weights(pairs: Path, autoencoder: Path, finished: Path,
                                                         tmp_path: Path) -> None:
    run_dir = tmp_path / "resumed"
    assert fusion_trainer.main(_options(pairs, autoencoder, run_dir, "--max-steps", "4")) == 0
    assert not (run_dir / "final.pt").exists()
    assert fusion_trainer.main(_options(pairs, autoencoder, run_dir, "--resume")) == 0
    assert_identical(weights_of(finished / "final.pt"), weights_of(run_dir / "final.pt"))


def test_a_batch_with_a_non_finite_loss_is_skipped_and_the_run_goes_on(pairs: Path, autoencoder: Path,
                                                                      tmp_path: Path) -> None:
    args = fusion_trainer.build_parser().parse_args(_options(pairs, autoencoder, tmp_path / "nan"))
    trainer = fusion_trainer.FusionTrainer(args)
    trainer.prepare_run_dir()
    batch = next(trainer.inputs.batches(0, 0, 2))
    before = {k: v.clone() for k, v in trainer.head.state_dict().items()}
    assert trainer.train_step(batch._replace(a=batch.a * float("nan"))) is None
    assert_identical(before, trainer.head.state_dict())
    assert trainer.step == 1 and trainer.finite.skipped == 1
    assert trainer.train_step(batch) is not None
    trainer._end_epoch(0)
    assert json.loads((tmp_path / "nan" / "metrics.jsonl").read_text().splitlines()[-1])["skipped_steps"] == 1
    resumed = fusion_trainer.FusionTrainer(fusion_trainer.build_parser().parse_args(
        _options(pairs, autoencoder, tmp_path / "nan", "--resume")))
    resumed.prepare_run_dir()
    assert resumed.finite.skipped == 1


def test_the_head_trains_in_fp32_even_when_the_latents_are_bf16(pairs: Path, autoencoder: Path,
                                                                 tmp_path: Path) -> None:
    """bf16 autocast gave NaN weight gradients in the head's first convolution on a CPU build: the step is fp32."""
    import copy

    trainer = fusion_trainer.FusionTrainer(fusion_trainer.build_parser().parse_args(
        _options(pairs, autoencoder, tmp_path / "fp32", "--precision", "bf16")))
    trainer.prepare_run_dir()
    batch = next(trainer.inputs.batches(0, 0, 2))
    head = copy.deepcopy(trainer.head)
    optimizer = torch.optim.Adam(head.parameters(), lr=trainer.optimizer.param_groups[0]["lr"])
    trainer.train_step(batch)
    for group in optimizer.param_groups:
        group["lr"] = trainer.optimizer.param_groups[0]["lr"]
    trainer.loss(head(batch.fa, batch.fb, batch.candidates), batch.a, batch.b)[0].backward()
    optimizer.step()
    assert_identical(head.state_dict(), trainer.head.state_dict())


def test_a_decoder_fine_tuned_on_fused_latents_is_kept_by_the_head_trained_after_it(
        pairs: Path, autoencoder: Path, tmp_path: Path) -> None:
    first, second = tmp_path / "decoder", tmp_path / "head"
    assert fusion_trainer.main(_options(pairs, autoencoder, first, "--train", "decoder")) == 0
    tiny, tuned = weights_of(autoencoder / "tiny.pt"), weights_of(first / "final.pt")
    assert_identical(tiny, {k: v for k, v in tuned.items() if not k.startswith("fusion_head.")})
    decoder_keys = [k for k in tuned if k.startswith("fusion_head.fused_decoder.")]
    assert decoder_keys and not torch.equal(tuned["fusion_head.fused_decoder.layers.0.weight"],
                                            tiny["decoder.layers.0.weight"])
    start = torch.tensor(starting_blend()).log()  # the mixture stays at its start: only the decoder trains
    assert torch.allclose(tuned["fusion_head.weights.4.bias"], start)

    options = _options(pairs, autoencoder, second)
    options[options.index("--model") + 1] = str(first / "final.pt")
    assert fusion_trainer.main(options) == 0
    trained = weights_of(second / "final.pt")
    assert_identical({k: tuned[k] for k in decoder_keys}, {k: trained[k] for k in decoder_keys})
    assert not torch.equal(trained["fusion_head.weights.4.weight"], tuned["fusion_head.weights.4.weight"])
    assert json.loads((second / "config.json").read_text())["fused_decoder"] is True

    model = load_model(second / "final.pt")
    torch.manual_seed(1)
    ya, yb = torch.rand(2, 1, 1, 20, 20)
    fa, fb = model.encode(ya), model.encode(yb)
    with torch.no_grad():
        fused = fuse_learned(model, fa, fb, ya, yb)
        own = model.fusion_head(fa, fb, head_candidates(model.fusion_head.fused_decoder, fa, fb, ya, yb))
        plain = model.fusion_head(fa, fb, head_candidates(model.decode, fa, fb, ya, yb))
    assert torch.equal(fused, own) and not torch.equal(fused, plain)


def test_the_pixel_control_has_no_decoder_to_fine_tune(pairs: Path, autoencoder: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert fusion_trainer.main(_options(pairs, autoencoder, tmp_path / "x", "--train", "decoder",
                                        "--on-pixels")) == 2
    assert "drop --on-pixels" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_slab_of_a_series_is_held_out_of_training(pairs: Path) -> None:
    kept, record = fusion_trainer.training_pairs([pairs], SeriesSelection("3,1:1-2"))
    assert sorted(sample.name.split("/")[1] for sample in kept) == ["1000", "2000", "2001", "2002"]
    assert record["held_out_series"] == ["3", "1:1-2"]


def test_resuming_with_other_settings_is_a_one_line_error(pairs: Path, autoencoder: Path, finished: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert fusion_trainer.main(_options(pairs, autoencoder, finished, "--resume", "--lr", "0.5")) == 2
    assert "was made with lr=" in capsys.readouterr().err


def test_ship_head_attaches_the_head_and_learned_fusion_runs_through_the_fuser(
        finished: Path, autoencoder: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(autoencoder, models)
    plain = load_model(models / "tiny.pt")
    a = np.random.default_rng(0).integers(0, 256, (24, 24)).astype(np.uint8)
    b = np.random.default_rng(1).integers(0, 256, (24, 24)).astype(np.uint8)
    with pytest.raises(EdranFusionError, match="strategy 'learned' needs a model trained with a fusion head"):
        fuse_images(a, b, model=plain, strategy="learned")
    report.ship_head(finished, "tiny", models)
    card = json.loads((models / "tiny.json").read_text())
    assert card["fusion_head"]["data"]["held_out_series"] == ["3"] and "caveat" in card["fusion_head"]
    assert card["description"] == "test"  # the autoencoder's card is kept
    model = load_model(models / "tiny.pt")  # the new sha256 in the card verifies
    fused = fuse_images(a, b, model=model, strategy="learned", precision="fp32")
    assert fused.shape == a.shape and fused.dtype == np.uint8
    # The evaluation's shared-latent path gives the same image as the fuser.
    evaluated = latent_methods(str(models / "tiny.pt"), ["learned"])[0].fuse("pair", a, b)
    assert np.abs(evaluated.astype(int) - fused.astype(int)).max() <= 1


def test_ship_head_refuses_a_head_trained_on_another_autoencoder(finished: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(1)
    save_bundled(EHDRAN().eval(), "tiny", "ct-mri", {}, models)
    with pytest.raises(EdranFusionError, match="trained on another autoencoder"):
        report.ship_head(finished, "tiny", models)


def test_pixel_control_applies_the_heads_own_weights_to_the_pixel_candidates(finished: Path) -> None:
    model = load_model(finished / "final.pt")
    a = np.random.default_rng(2).integers(0, 256, (20, 20)).astype(np.uint8)
    b = np.random.default_rng(3).integers(0, 256, (20, 20)).astype(np.uint8)
    with torch.no_grad():
        pair = torch.from_numpy(np.stack([a, b])[:, None] / 255.0).float()
        ya, yb = pair.chunk(2)
        weights = learned_weights(model, *model.encode(pair).chunk(2), ya, yb)
        expected = (weights * pixel_candidates(ya, yb)).sum(1)[0].double().numpy() * 255
    got = learned_pixel_control(str(finished / "final.pt"))("pair", a, b)
    assert np.abs(got.astype(int) - np.clip(np.rint(expected), 0, 255)).max() <= 1


def test_pixel_head_trains_on_the_images_and_their_pixel_rule_candidates(pairs: Path, autoencoder: Path,
                                                                          tmp_path: Path) -> None:
    from EdranFusionLib.evaluation.comparison import pixel_head

    run_dir = tmp_path / "pixels"
    assert fusion_trainer.main(_options(pairs, autoencoder, run_dir, "--on-pixels")) == 0
    state = torch.load(run_dir / "final.pt", map_location="cpu", weights_only=True)
    assert state["reduce.0.weight"].shape[1] == 2  # the two images are its only "latents"
    a, b = (np.random.default_rng(s).integers(0, 256, (20, 20)).astype(np.uint8) for s in (4, 5))
    fused = pixel_head(str(run_dir / "final.pt"))("pair", a, b)
    assert fused.shape == a.shape and fused.dtype == np.uint8
    from EdranFusionLib.commands.cli import main

    scored, out = write_pair_folder(tmp_path / "scored", "CT-MRI", series=(7,), size=48), tmp_path / "report"
    assert main(["evaluate", str(scored / "MRI"), str(scored / "CT"), "--pixel-head", str(run_dir / "final.pt"),
                 "--baselines", "--out", str(out), "--quiet"]) == 0
    methods = {row["method"] for row in json.loads((out / "metrics.json").read_text())["rows"]}
    assert methods == {"pixel-head", "pixel-average", "pixel-max"}
    assert main(["evaluate", str(scored / "MRI"), str(scored / "CT"), "--pixel-head",
                 str(scored / "MRI" / "7000.png"), "--quiet"]) == 2


def test_a_head_of_the_earlier_version_is_a_clear_error(tmp_path: Path) -> None:
    state = {**EHDRAN().state_dict(), "fusion_head.decoder.layers.0.weight": torch.zeros(1)}
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(EdranFusionError, match="earlier version .* train the head again"):
        load_model(tmp_path / "old.pt")


def test_bundled_cards_name_their_fusion_head_when_they_have_one() -> None:
    for card_file in WEIGHTS_DIR.glob("*.json"):
        card = json.loads(card_file.read_text())
        state = torch.load(WEIGHTS_DIR / card["file"], map_location="cpu", weights_only=True)
        assert ("fusion_head" in card) == any(k.startswith("fusion_head.") for k in state), card_file.name


def test_strategy_benchmark_times_the_learned_head_of_a_model_that_has_one(finished: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from EdranFusionLib.benchmarks.strategies import print_strategies, strategy_timings

    results = strategy_timings(load_model(finished / "final.pt"), "fp32", repeats=1)
    learned = results["strategies"]["learned"]
    assert learned["rule_seconds"] is None and learned["seconds_per_pair"] > 0
    print_strategies(results)
    assert "learned" in capsys.readouterr().out
    from EdranFusionLib.io.weights import bundled_models, default_strategy_of

    assert results["defaults"] == {name: default_strategy_of(name) for name in bundled_models()}
    assert set(results["default_vs_sfnn_max"]) == set(results["defaults"].values())  # every default is timed
    assert results["default_vs_sfnn_max"].get("sfnn-max", 1.0) == 1.0
    assert "learned" not in strategy_timings(EHDRAN().eval(), "fp32", repeats=1)["strategies"]

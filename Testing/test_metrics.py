"""Fusion metrics against closed forms and independent reference implementations.

References: scikit-image (PSNR, SSIM, Scharr), sewar (pixel VIF) and phasepack (Kovesi's phase congruency);
the last two are test extras and their checks are skipped where they are not installed. FMI, having no
reference on PyPI, is checked against a literal per-window transcription of its definition.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from skimage import filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from EdranFusionLib.evaluation.metrics import (
    METRICS,
    entropy,
    fmi,
    fsim,
    fusion_metrics,
    joint_psnr,
    mutual_information,
    psnr,
    qabf,
    sobel_edge_map,
    spatial_frequency,
    ssim,
    standard_deviation,
    vif,
)
from EdranFusionLib.evaluation.metrics.fsim import fsim_features
from EdranFusionLib.evaluation.metrics.information import fmi_features
from EdranFusionLib.evaluation.metrics.phase_congruency import phase_congruency, phase_congruency_energy
from EdranFusionLib.fusion.color import luminance

REFERENCE_TOLERANCE = 1e-9  # agreement demanded of independent implementations of the same definition


def _phantom(size: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth 8-bit 'anatomy' with edges: blurred blobs on a dark background."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((size, size)), size / 24)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.4) ** 2
    image = np.where(disc, (field - field.min()) / np.ptp(field) * 200 + 40, 0)
    return np.rint(image).astype(np.uint8)


def _noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(np.rint(image + noise), 0, 255).astype(np.uint8)


# -- entropy, SD, SF, MI: closed forms ---------------------------------------------------------------------------
def test_entropy_closed_forms():
    assert entropy(np.array([[0, 255], [255, 0]], dtype=np.uint8)) == pytest.approx(1.0, abs=1e-12)
    assert entropy(np.arange(256, dtype=np.uint8).reshape(16, 16)) == pytest.approx(8.0, abs=1e-12)
    assert entropy(np.full((5, 7), 42, dtype=np.uint8)) == 0.0
    # Four levels with probabilities 1/2, 1/4, 1/8, 1/8: 1.75 bits.
    levels = np.array([0] * 4 + [1] * 2 + [2] + [3], dtype=np.uint8).reshape(2, 4)
    assert entropy(levels) == pytest.approx(1.75, abs=1e-12)


def test_entropy_of_floats_uses_8bit_levels_not_distinct_values():
    rng = np.random.default_rng(0)
    floats = rng.random((128, 128)) * 255  # 16384 distinct values: 14 bits if each had its own bin
    assert entropy(floats) <= 8.0
    assert entropy(floats) == pytest.approx(entropy(np.rint(floats).astype(np.uint8)))
    with pytest.raises(ValueError, match="0..255"):
        entropy(floats * 4)


@settings(max_examples=30, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_entropy_is_between_0_and_8_bits(image):
    assert 0.0 <= entropy(image) <= 8.0 + 1e-12


def test_standard_deviation_and_spatial_frequency_closed_forms():
    half = np.zeros((4, 8), dtype=np.uint8)
    half[:, 4:] = 255
    assert standard_deviation(half) == pytest.approx(127.5)
    checkerboard = (np.indices((8, 8)).sum(axis=0) % 2 * 255).astype(np.uint8)
    assert spatial_frequency(checkerboard) == pytest.approx(255 * math.sqrt(2))
    stripes = np.tile(np.array([0, 255], dtype=np.uint8), (6, 3))  # columns alternate, rows are equal
    assert spatial_frequency(stripes) == pytest.approx(255.0)
    assert spatial_frequency(np.full((5, 5), 9)) == 0.0
    # A ramp rising by 2 per column: RF = 2, CF = 0.
    assert spatial_frequency(np.tile(np.arange(0, 20, 2), (4, 1))) == pytest.approx(2.0)


def test_mutual_information_closed_forms():
    image = _phantom()
    assert mutual_information(image, image) == pytest.approx(entropy(image), abs=1e-12)
    assert mutual_information(image, np.full_like(image, 7)) == pytest.approx(0.0, abs=1e-12)
    # A one-to-one relabelling of grey levels keeps all the information.
    assert mutual_information(image, 255 - image) == pytest.approx(entropy(image), abs=1e-12)
    noisy = _noisy(image, 20)
    assert mutual_information(image, noisy) == pytest.approx(mutual_information(noisy, image), abs=1e-12)
    assert 0 < mutual_information(image, noisy) < entropy(image)


# -- PSNR, SSIM: scikit-image ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape", [(96, 96), (41, 67)])
def test_psnr_and_ssim_agree_with_scikit_image(seed, shape):
    rng = np.random.default_rng(seed)
    reference = _phantom(max(shape), seed)[: shape[0], : shape[1]]
    test = _noisy(reference, 5 + 10 * seed, seed)
    test[rng.random(shape) < 0.05] = 255
    assert psnr(reference, test) == pytest.approx(
        peak_signal_noise_ratio(reference, test, data_range=255), abs=REFERENCE_TOLERANCE)
    expected = structural_similarity(reference, test, gaussian_weights=True, sigma=1.5,
                                     use_sample_covariance=False, data_range=255)
    assert ssim(reference, test) == pytest.approx(expected, abs=REFERENCE_TOLERANCE)
    assert ssim(test, reference) == pytest.approx(expected, abs=REFERENCE_TOLERANCE)


def test_psnr_and_ssim_closed_forms():
    image = _phantom()
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    shifted = image.astype(np.float64) + 1  # MSE exactly 1
    assert psnr(image, shifted) == pytest.approx(20 * math.log10(255), abs=1e-12)
    assert ssim(image, 255 - image) < 0


# -- VIF: sewar -------------------------------------------------------------------------------------------------
def test_vif_closed_forms():
    image = _phantom()
    assert vif(image, image) == 1.0
    assert vif(np.full((64, 64), 3.0), np.full((64, 64), 3.0)) == 1.0
    assert vif(image, np.full_like(image, 100)) == pytest.approx(0.0, abs=1e-12)
    assert vif(image, _noisy(image, 30)) < vif(image, _noisy(image, 5)) < 1.0
    with pytest.raises(ValueError, match="41x41"):
        vif(image[:40, :40], _noisy(image, 5)[:40, :40])


@pytest.mark.parametrize("sigma", [3, 15, 40])
def test_vif_agrees_with_sewar(sigma):
    sewar = pytest.importorskip("sewar")
    reference = _phantom(80, 3).astype(np.float64)
    test = _noisy(reference, sigma, 4).astype(np.float64)
    assert vif(reference, test) == pytest.approx(sewar.vifp(reference, test), abs=REFERENCE_TOLERANCE)


# -- phase congruency: phasepack, closed forms --------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(64, 64), (45, 70)])
@pytest.mark.parametrize("orientations", [1, 4, 6])
def test_phase_congruency_agrees_with_phasepack(shape, orientations):
    """Same filter bank (phasecong3's cosine angular window), noise threshold fixed to 0 and the frequency-spread
    weight made constant (g = 0 gives 1/2): phasepack's per-orientation PC is then half our energy / amplitude."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # phasepack warns that pyfftw is missing and imports deprecated scipy.fftpack
        phasepack = pytest.importorskip("phasepack")
        image = _phantom(max(shape), 5)[: shape[0], : shape[1]].astype(np.float64)
        result = phasepack.phasecong(image, nscale=4, norient=orientations, minWaveLength=6, mult=2,
                                     sigmaOnf=0.55, noiseMethod=0, g=0.0)
    their_pc = np.array(result[4])
    energy, amplitude = phase_congruency_energy(image, noise_threshold=0, n_orientations=orientations,
                                                angular_spread="cosine")
    ours = np.divide(energy, amplitude, out=np.zeros_like(energy), where=amplitude > 0)
    assert np.abs(ours - 2 * their_pc).max() < REFERENCE_TOLERANCE


def test_phase_congruency_closed_forms():
    assert phase_congruency(np.full((32, 40), 77.0)).max() == 0.0
    step = np.zeros((64, 128))
    step[:, 64:] = 200  # (the FFT also sees a step where column 127 wraps to column 0)
    pc = phase_congruency(step)
    assert pc.max() <= 1.0 and pc.min() >= 0.0
    assert pc[:, 63:65].min() > 0.7  # on the edge, everywhere along it
    assert np.median(pc) < 0.2  # mostly not
    # Contrast invariance: the noise threshold scales with the image, so PC does not change (but for the 1e-4
    # guard in the mean-phase normalisation).
    image = _phantom(64, 6).astype(np.float64)
    assert np.abs(phase_congruency(image) - phase_congruency(image * 3.7)).max() < 1e-4
    # The noise threshold suppresses the response to pure noise.
    noise = np.random.default_rng(7).normal(100, 10, (96, 96))
    assert phase_congruency(noise).mean() < 0.1 < phase_congruency(noise, noise_threshold=0).mean()


# -- FSIM ---------------------------------------------------------------------------------------------------------
def test_fsim_gradient_is_scharr():
    image = _phantom(48, 8).astype(np.float64)
    ours = fsim_features(image).gradient_magnitude
    # scikit-image's scharr is sqrt((gx^2 + gy^2) / 2) with the same 3-10-3 / 16 kernels (borders differ).
    assert np.abs(ours[1:-1, 1:-1] - math.sqrt(2) * filters.scharr(image)[1:-1, 1:-1]).max() < 1e-10


def test_fsim_closed_forms_and_ordering():
    image = _phantom()
    assert fsim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert fsim(np.full((40, 40), 5), np.full((40, 40), 5)) == pytest.approx(1.0, abs=1e-12)
    slightly, badly = _noisy(image, 5), _noisy(image, 40)
    assert fsim(image, badly) < fsim(image, slightly) < 1.0
    assert fsim(image, badly) == pytest.approx(fsim(badly, image), abs=1e-12)


def test_fsim_on_unit_range_is_inflated():
    """The paper's pitfall: on [0, 1] floats the gradient term is ~1 everywhere and FSIM rises."""
    image, badly = _phantom().astype(np.float64), _noisy(_phantom(), 40).astype(np.float64)
    assert fsim(image / 255, badly / 255) > fsim(image, badly) + 0.05


# -- FMI: a literal per-window transcription of the definition ----------------------------------------------------
def _fmi_window_reference(a_window: np.ndarray, f_window: np.ndarray) -> float:
    """Normalised MI of two 3x3 windows, written loop by loop from Haghighat & Razian (2014)."""
    if np.array_equal(a_window, f_window):
        return 1.0

    def pdf(window):
        values = window.T.ravel().astype(np.float64)  # column-major
        low, high = values.min(), values.max()
        values = np.ones(9) if high == low else (values - low) / (high - low)
        return values / values.sum()

    pa, pf = pdf(a_window), pdf(f_window)
    ca, cf = np.cumsum(pa), np.cumsum(pf)
    da, df = pa - pa.mean(), pf - pf.mean()
    num = float(np.sum(da * df))
    c = 0.0 if num == 0 else num / math.sqrt(float(np.sum(da * da) * np.sum(df * df)))
    levels = np.arange(1, 10)
    sd_a = math.sqrt(max(float(np.sum(levels**2 * pa) - np.sum(levels * pa) ** 2), 0.0))
    sd_f = math.sqrt(max(float(np.sum(levels**2 * pf) - np.sum(levels * pf) ** 2), 0.0))

    def copula(u, v):
        return min(u, v) if c >= 0 else max(u + v - 1, 0.0)

    if c == 0 or sd_a == 0 or sd_f == 0:
        weight = 0.0
    else:
        cov = sum(copula(cf[i], ca[j]) - cf[i] * ca[j] for i in range(9) for j in range(9))
        weight = c / (cov / (sd_f * sd_a))
    joint_entropy = 0.0
    for i in range(9):
        for j in range(9):
            mass = copula(cf[i], ca[j])
            mass -= copula(cf[i - 1], ca[j]) if i else 0.0
            mass -= copula(cf[i], ca[j - 1]) if j else 0.0
            mass += copula(cf[i - 1], ca[j - 1]) if i and j else 0.0
            p = weight * mass + (1 - weight) * pf[i] * pa[j]
            if p > 0:
                joint_entropy -= p * math.log2(p)
    h_a = -sum(p * math.log2(p) for p in pa if p > 0)
    h_f = -sum(p * math.log2(p) for p in pf if p > 0)
    mi = h_a + h_f - joint_entropy
    return 0.0 if mi == 0 else 2 * mi / (h_a + h_f)


def _fmi_reference(a: np.ndarray, f: np.ndarray) -> float:
    rows, cols = a.shape
    return float(np.mean([_fmi_window_reference(a[r:r + 3, c:c + 3], f[r:r + 3, c:c + 3])
                          for r in range(rows - 2) for c in range(cols - 2)]))


@pytest.mark.parametrize("feature", ["pixel", "edge"])
def test_fmi_agrees_with_literal_definition(feature):
    rng = np.random.default_rng(11)
    a = _phantom(24, 9)
    f = np.where(rng.random(a.shape) < 0.5, a, 255 - a).astype(np.uint8)  # includes anti-correlated windows
    f[:6, :6] = a[:6, :6]  # and identical windows
    fa, ff = fmi_features(a, feature), fmi_features(f, feature)
    assert fmi(a, f, feature) == pytest.approx(_fmi_reference(fa, ff), abs=1e-12)


def test_fmi_closed_forms():
    image = _phantom()
    for feature in ("pixel", "edge"):
        assert fmi(image, image, feature) == 1.0
    noisy = _noisy(image, 30)
    assert 0.0 < fmi(image, noisy) < fmi(image, _noisy(image, 3)) < 1.0
    assert fmi(image, noisy) == pytest.approx(fmi(noisy, image), abs=1e-12)
    with pytest.raises(ValueError, match="feature"):
        fmi(image, image, "wavelet")


def test_sobel_edge_map_is_thin():
    step = np.zeros((20, 20), dtype=np.uint8)
    step[:, 10:] = 200
    edges = sobel_edge_map(step)
    assert edges[1:-1].sum(axis=1).tolist() == [1] * 18  # one pixel per row, on the step
    assert not edges[:, :8].any() and not edges[:, 12:].any()
    assert not sobel_edge_map(np.full((9, 9), 4)).any()


# -- Qabf -----------------------------------------------------------------------------------------------------------
def test_qabf_closed_forms():
    image = _phantom()
    ceiling = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert qabf(image, image, image) == pytest.approx(ceiling, abs=1e-12)
    assert qabf(np.full_like(image, 90), image, image) < 0.01  # every edge lost
    assert qabf(image, np.zeros_like(image), np.zeros_like(image)) == 0.0  # no source edges to keep
    other = _phantom(96, 12)
    half_kept = qabf(image, image, other)
    assert 0.2 < half_kept < ceiling
    assert qabf(_noisy(image, 25), image, image) < ceiling


def test_joint_psnr_does_not_reward_copying_one_source():
    a, b = _phantom(), _phantom(96, 12)
    mse = np.mean((a.astype(float) - b) ** 2)
    copy, average = joint_psnr(a, b, a), joint_psnr(a, b, (a.astype(float) + b) / 2)
    assert copy == pytest.approx(10 * math.log10(255**2 / (mse / 2)))  # finite, where psnr(a, a) is inf
    assert average == pytest.approx(10 * math.log10(255**2 / (mse / 4)))  # the best blend: 3 dB above a copy
    for weight in (0.0, 0.3, 0.7, 1.0):
        assert joint_psnr(a, b, weight * a.astype(float) + (1 - weight) * b) <= average + 1e-9
    assert joint_psnr(a, a, a) == math.inf


# -- fusion_metrics -----------------------------------------------------------------------------------------------
def test_fusion_metrics_of_perfect_fusion():
    image = _phantom()
    values = fusion_metrics(image, image, image)
    assert list(values) == list(METRICS)
    assert values["PSNR"] == values["PSNR_joint"] == math.inf
    for name in ("SSIM", "FMI_pixel", "FMI_edge", "FSIM"):
        assert values[name] == pytest.approx(1.0, abs=1e-12), name
    assert values["VIF"] == pytest.approx(2.0)
    assert values["MI"] == pytest.approx(2 * entropy(image))
    assert values["EN"] == pytest.approx(entropy(image))


def test_fusion_metrics_average_the_two_sources():
    a, b = _phantom(96, 1), _phantom(96, 2)
    fused = ((a.astype(np.float64) + b) / 2).round().astype(np.uint8)
    values = fusion_metrics(fused, a, b)
    assert values["PSNR"] == pytest.approx((psnr(a, fused) + psnr(b, fused)) / 2)
    assert values["SSIM"] == pytest.approx((ssim(a, fused) + ssim(b, fused)) / 2)
    assert values["FSIM"] == pytest.approx((fsim(a, fused) + fsim(b, fused)) / 2)
    assert values["FMI_edge"] == pytest.approx((fmi(a, fused, "edge") + fmi(b, fused, "edge")) / 2)
    assert values["MI"] == pytest.approx(mutual_information(a, fused) + mutual_information(b, fused))
    assert values["VIF"] == pytest.approx(vif(a, fused) + vif(b, fused))
    assert values["Qabf"] == pytest.approx(qabf(fused, a, b))
    assert values["SD"] == pytest.approx(standard_deviation(fused))


def test_colour_is_scored_on_luminance():
    gray_source = _phantom(64, 3)
    colour = np.stack([_phantom(64, 4), _phantom(64, 5), _phantom(64, 6)], axis=-1)
    fused = np.stack([gray_source] * 3, axis=-1) // 2 + colour // 2
    by_colour = fusion_metrics(fused, colour, gray_source)
    by_luminance = fusion_metrics(luminance(fused), luminance(colour), gray_source)
    assert by_colour == pytest.approx(by_luminance, abs=1e-12)


def test_metrics_refuse_mismatched_sizes():
    with pytest.raises(ValueError, match="same height and width"):
        fusion_metrics(np.zeros((64, 64)), np.zeros((64, 64)), np.zeros((64, 65)))

"""Full-reference similarity of the fused image to one source: PSNR, SSIM, VIF (0..255 scale), and PSNR
against both sources at once."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._common import DATA_RANGE, gray, same_shape

_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # radius int(3.5 * 1.5 + 0.5) = 5: the standard 11x11 Gaussian window
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_VIF_SCALES = 4
_VIF_NOISE_VARIANCE = 2.0  # sigma_n^2 of the visual-noise model, on the 0..255 scale
_VIF_TINY = 1e-10


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB with a 255 peak: 10 log10(255^2 / MSE).

    Identical images give ``inf`` (MSE = 0), as scikit-image does; a fusion table then shows inf rather than a
    made-up cap, because no finite number is "correct" there.
    """
    x, y = gray(reference), gray(test)
    same_shape(x, y)
    return _psnr_of_mse(float(np.mean((x - y) ** 2)))


def _psnr_of_mse(mse: float) -> float:
    return float("inf") if mse == 0 else float(10 * np.log10(DATA_RANGE**2 / mse))


def joint_psnr(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """PSNR of the mean of the two MSEs: 10 log10(255^2 / ((MSE(A, F) + MSE(B, F)) / 2)).

    The usual fusion PSNR, the mean of PSNR(A, F) and PSNR(B, F) in dB, rewards copying one source (F = A
    scores inf); this one is finite unless A = B = F and is highest for the pixel average.
    """
    x, y, f = gray(a), gray(b), gray(fused)
    same_shape(x, y, f)
    return _psnr_of_mse((float(np.mean((x - f) ** 2)) + float(np.mean((y - f) ** 2))) / 2)


def ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Mean structural similarity (Wang et al., IEEE TIP 13(4), 2004). Range -1..1, 1 for identical images.

    Gaussian window (sigma 1.5, 11x11), K1 = 0.01, K2 = 0.03, L = 255, population (not sample) covariances,
    averaged over the pixels whose window lies inside the image (MATLAB's 'valid'; scikit-image's crop).
    """
    x, y = gray(reference), gray(test)
    same_shape(x, y)

    def blur(image: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(image, _SSIM_SIGMA, truncate=_SSIM_TRUNCATE, mode="reflect")

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (_SSIM_K1 * DATA_RANGE) ** 2, (_SSIM_K2 * DATA_RANGE) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    pad = int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5)
    return float(ssim_map[pad:-pad, pad:-pad].mean())


def _gaussian_valid(image: np.ndarray, size: int) -> np.ndarray:
    """Normalised Gaussian window of ``size`` (sigma size/5), 'valid' part only (separable)."""
    offsets = np.arange(size) - size // 2
    weights = np.exp(-(offsets**2) / (2 * (size / 5) ** 2))
    weights /= weights.sum()
    smoothed = ndimage.correlate1d(ndimage.correlate1d(image, weights, axis=0), weights, axis=1)
    radius = size // 2
    return smoothed[radius:-radius, radius:-radius] if radius else smoothed


def vif(reference: np.ndarray, test: np.ndarray) -> float:
    """Pixel-domain visual information fidelity, 4 scales (Sheikh & Bovik, IEEE TIP 15(2), 2006).

    The share of the reference's information (under a Gaussian scale-mixture model with visual noise
    sigma_n^2 = 2) that survives in ``test``. 1 for identical images, 0 when nothing survives; above 1 when test
    is a contrast-enhanced reference; 0 for a flat reference that differs from test (nothing to carry).
    Fusion papers report VIF(A, F) + VIF(B, F).
    """
    x, y = gray(reference), gray(test)
    same_shape(x, y)
    if np.array_equal(x, y):
        return 1.0  # also covers a flat reference, where the ratio below is 0/0
    numerator = denominator = 0.0
    for scale in range(1, _VIF_SCALES + 1):
        size = 2 ** (_VIF_SCALES - scale + 1) + 1
        if scale > 1:
            x, y = _gaussian_valid(x, size)[::2, ::2], _gaussian_valid(y, size)[::2, ::2]
        if min(x.shape) < size:
            raise ValueError("VIF needs images of at least 41x41 pixels (four scales of Gaussian windows)")
        mu_x, mu_y = _gaussian_valid(x, size), _gaussian_valid(y, size)
        var_x = np.maximum(_gaussian_valid(x * x, size) - mu_x**2, 0.0)
        var_y = np.maximum(_gaussian_valid(y * y, size) - mu_y**2, 0.0)
        cov = _gaussian_valid(x * y, size) - mu_x * mu_y
        gain = cov / (var_x + _VIF_TINY)
        noise = var_y - gain * cov
        # Degenerate windows: flat reference (no information to carry), flat test (nothing carried),
        # negative gain (treated as no transfer, all of test's variance is noise).
        flat_x = var_x < _VIF_TINY
        gain[flat_x], noise[flat_x], var_x[flat_x] = 0.0, var_y[flat_x], 0.0
        flat_y = var_y < _VIF_TINY
        gain[flat_y], noise[flat_y] = 0.0, 0.0
        negative = gain < 0
        noise[negative], gain[negative] = var_y[negative], 0.0
        noise = np.maximum(noise, _VIF_TINY)
        numerator += np.sum(np.log10(1 + gain**2 * var_x / (noise + _VIF_NOISE_VARIANCE)))
        denominator += np.sum(np.log10(1 + var_x / _VIF_NOISE_VARIANCE))
    return float(numerator / denominator) if denominator > 0 else 0.0

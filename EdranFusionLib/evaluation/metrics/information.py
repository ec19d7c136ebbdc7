"""Information-theoretic fusion metrics: mutual information (MI) and feature mutual information (FMI)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from ._common import entropy_bits, gray, gray_8bit, same_shape

FmiFeature = Literal["pixel", "edge"]
_FMI_WINDOW = 3
_FMI_CHUNK = 32768  # windows processed at once: bounds memory to a few tens of MB for any image size
_EDGE_SCALE = 4.0  # MATLAB edge(): threshold = 4 x mean squared Sobel magnitude


def mutual_information(reference: np.ndarray, test: np.ndarray) -> float:
    """MI in bits between two images' 8-bit levels: H(X) + H(Y) - H(X, Y) from 256-bin (joint) histograms.

    Range 0..8; MI(X, X) = H(X). Fusion papers report MI(A, F) + MI(B, F) (range 0..16).
    """
    x, y = gray_8bit(reference), gray_8bit(test)
    same_shape(x, y)
    joint = np.bincount(x.ravel().astype(np.intp) * 256 + y.ravel(), minlength=256 * 256).reshape(256, 256)
    joint = joint / joint.sum()
    return float(entropy_bits(joint.sum(axis=1)) + entropy_bits(joint.sum(axis=0)) - entropy_bits(joint))


def sobel_edge_map(image: np.ndarray) -> np.ndarray:
    """Binary edge map like MATLAB's default ``edge(I)``: Sobel, automatic threshold, thinning.

    Squared magnitude b of the Sobel response (kernels / 8, replicated borders) above 4 x mean(b), kept only
    where b is a local maximum along the dominant gradient axis (strictly above the preceding neighbour, at
    least the following one, so a two-pixel ridge keeps one pixel). The outermost pixels are never edges.
    MATLAB's compiled thinning is not published; this is the documented rule it implements, not a bit copy.
    """
    array = gray(image)
    kernel = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 8
    bx = ndimage.correlate(array, kernel, mode="nearest")
    by = ndimage.correlate(array, kernel.T, mode="nearest")
    b = bx**2 + by**2
    edges = np.zeros(array.shape, dtype=bool)
    if min(array.shape) < 3:
        return edges
    centre = b[1:-1, 1:-1]
    horizontal_max = (centre > b[1:-1, :-2]) & (centre >= b[1:-1, 2:])
    vertical_max = (centre > b[:-2, 1:-1]) & (centre >= b[2:, 1:-1])
    ax, ay = np.abs(bx[1:-1, 1:-1]), np.abs(by[1:-1, 1:-1])
    thin = ((ax >= ay) & horizontal_max) | ((ay >= ax) & vertical_max)
    edges[1:-1, 1:-1] = (centre > _EDGE_SCALE * b.mean()) & thin
    return edges


def fmi_features(image: np.ndarray, feature: FmiFeature = "pixel") -> np.ndarray:
    """The feature image FMI compares: the intensities (``pixel``) or the binary Sobel edge map (``edge``)."""
    if feature == "pixel":
        return gray(image)
    if feature == "edge":
        return sobel_edge_map(image).astype(np.float64)
    raise ValueError(f"FMI feature must be 'pixel' or 'edge', not {feature!r}")


def _window_vectors(feature: np.ndarray) -> np.ndarray:
    """Every 3x3 window as a 9-vector in column-major order (the order the CDFs accumulate in)."""
    windows = np.lib.stride_tricks.sliding_window_view(feature, (_FMI_WINDOW, _FMI_WINDOW))
    return np.swapaxes(windows, -1, -2).reshape(-1, _FMI_WINDOW * _FMI_WINDOW)


def _window_pdfs(vectors: np.ndarray) -> np.ndarray:
    """Each window min-max normalised and scaled to sum 1 (a flat window becomes uniform)."""
    low = vectors.min(axis=1, keepdims=True)
    span = vectors.max(axis=1, keepdims=True) - low
    normalised = np.where(span > 0, (vectors - low) / np.where(span > 0, span, 1.0), 1.0)
    return normalised / normalised.sum(axis=1, keepdims=True)


def _normalised_window_mi(pdf_s: np.ndarray, pdf_f: np.ndarray) -> np.ndarray:
    """2 I(S; F) / (H(S) + H(F)) per window, the joint law built from the marginals and their correlation.

    The joint law mixes the Frechet-Hoeffding bound copula of the two marginal CDFs (upper bound min(u, v) for
    positive correlation c, lower bound max(u + v - 1, 0) for negative) with independence, the bound's weight
    being c divided by the correlation the bound itself reaches (Haghighat & Razian, 2014).
    """
    length = pdf_s.shape[1]
    centred_s = pdf_s - pdf_s.mean(axis=1, keepdims=True)
    centred_f = pdf_f - pdf_f.mean(axis=1, keepdims=True)
    covariance = np.sum(centred_s * centred_f, axis=1)
    spread = np.sqrt(np.sum(centred_s**2, axis=1) * np.sum(centred_f**2, axis=1))
    correlation = np.divide(covariance, spread, out=np.zeros_like(covariance), where=covariance != 0)

    levels = np.arange(1, length + 1)

    def level_sd(pdf: np.ndarray) -> np.ndarray:
        return np.sqrt(np.maximum(pdf @ levels**2 - (pdf @ levels) ** 2, 0.0))

    # CDFs with a leading 0, so differencing the copula over the grid gives the joint probability masses.
    cdf_s = np.concatenate([np.zeros((len(pdf_s), 1)), np.cumsum(pdf_s, axis=1)], axis=1)
    cdf_f = np.concatenate([np.zeros((len(pdf_f), 1)), np.cumsum(pdf_f, axis=1)], axis=1)
    u, v = cdf_f[:, :, None], cdf_s[:, None, :]
    positive = (correlation >= 0)[:, None, None]
    bound = np.where(positive, np.minimum(u, v), np.maximum(u + v - 1, 0.0))
    # Hoeffding: cov = sum over levels of (C(u, v) - u v); the bound's correlation divides it by both sds.
    bound_covariance = bound[:, 1:, 1:].sum(axis=(1, 2)) - cdf_f[:, 1:].sum(axis=1) * cdf_s[:, 1:].sum(axis=1)
    bound_correlation = bound_covariance / (level_sd(pdf_f) * level_sd(pdf_s) + 1e-300)
    usable = (correlation != 0) & (bound_correlation != 0)
    weight = np.divide(correlation, bound_correlation, out=np.zeros_like(correlation), where=usable)[:, None, None]
    bound_mass = np.diff(np.diff(bound, axis=1), axis=2)
    joint = weight * bound_mass + (1 - weight) * pdf_f[:, :, None] * pdf_s[:, None, :]
    h_s, h_f = entropy_bits(pdf_s, axis=1), entropy_bits(pdf_f, axis=1)
    # Entries a weight above 1 drives negative are not probabilities: they count as 0, as in the original.
    information = h_s + h_f - entropy_bits(np.maximum(joint, 0.0), axis=(1, 2))
    normaliser = h_s + h_f
    return np.divide(2 * information, normaliser, out=np.zeros_like(information),
                     where=(information != 0) & (normaliser > 0))


def fmi_from_features(source: np.ndarray, fused: np.ndarray) -> float:
    """Mean over all 3x3 windows of the normalised feature MI; windows with equal features score 1."""
    same_shape(source, fused)
    if min(source.shape) < _FMI_WINDOW:
        raise ValueError("FMI needs images of at least 3x3 pixels")
    vectors_s, vectors_f = _window_vectors(source), _window_vectors(fused)
    scores = np.ones(len(vectors_s))
    differing = np.flatnonzero(np.any(vectors_s != vectors_f, axis=1))
    for start in range(0, len(differing), _FMI_CHUNK):
        rows = differing[start : start + _FMI_CHUNK]
        scores[rows] = _normalised_window_mi(_window_pdfs(vectors_s[rows]), _window_pdfs(vectors_f[rows]))
    return float(scores.mean())


def fmi(reference: np.ndarray, test: np.ndarray, feature: FmiFeature = "pixel") -> float:
    """Fast feature mutual information (Haghighat & Razian, 2014; Haghighat et al., 2011) with 3x3 windows.

    Range 0..1, 1 for identical images. Fusion uses (FMI(A, F) + FMI(B, F)) / 2, which equals the mean over
    windows of the per-window average the original defines. ``edge`` features (binary Sobel edge maps) give the
    higher numbers fusion papers quote; ``pixel`` features compare intensities directly.
    """
    return fmi_from_features(fmi_features(reference, feature), fmi_features(test, feature))

"""Phase congruency (Kovesi's log-Gabor method), the feature map FSIM is built on.

Phase congruency is a dimensionless measure of how well the Fourier components of an image agree in phase at
a point: 1 on a step or line whatever its contrast, 0 in flat or noisy regions. It is computed from a bank of
log-Gabor filters (``n_scales`` scales x ``n_orientations`` orientations) applied in the frequency domain:

    PC(x) = sum_o max(E_o(x) - T_o, 0) / sum_o sum_s A_so(x)

with A_so the amplitude of the quadrature response at scale s, orientation o; E_o = sum_s A_so (cos(dphi) -
|sin(dphi)|) the phase-deviation-weighted energy (Kovesi's PC_2), dphi the deviation of each scale's phase from
the orientation's mean phase, and T_o a noise threshold estimated from the smallest-scale responses (median of
a Rayleigh distribution, propagated to all scales through the filters' own spectra).

Defaults are the ones Zhang et al. (FSIM, IEEE TIP 20(8), 2011) use: 4 scales, 4 orientations, smallest
wavelength 6 px, scale factor 2, sigma_on_f 0.55, Gaussian angular spread with d_theta/sigma = 1.2, k = 2.
References: P. Kovesi, "Image features from phase congruency", Videre 1(3), 1999; "Phase congruency detects
corners and edges", DICTA 2003.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import scipy.fft

EPSILON = 1e-4  # guards the mean-phase normalisation where the summed response vanishes
_LOWPASS_CUTOFF = 0.45  # Butterworth low-pass applied to every log-Gabor filter (keeps the FFT corners out)
_LOWPASS_ORDER = 15
PC2_NOISE_RESCALE = 1.7  # Kovesi's empirical rescaling of the noise threshold for the PC_2 energy


def _normalised_axis(n: int) -> np.ndarray:
    """Frequencies in cycles/pixel on Kovesi's grid (odd sizes span exactly +-0.5), zero frequency first."""
    values = np.arange(-(n - 1) / 2, (n - 1) / 2 + 1) / (n - 1) if n % 2 else np.arange(-n // 2, n // 2) / n
    return np.fft.ifftshift(values)


def log_gabor_bank(
    shape: tuple[int, int],
    *,
    n_scales: int = 4,
    n_orientations: int = 4,
    min_wavelength: float = 6.0,
    mult: float = 2.0,
    sigma_on_f: float = 0.55,
    d_theta_on_sigma: float = 1.2,
    angular_spread: Literal["gaussian", "cosine"] = "gaussian",
) -> np.ndarray:
    """Frequency-domain filters [orientation, scale, rows, cols] (zero frequency at index [0, 0]).

    ``angular_spread="gaussian"`` is Kovesi's phasecong2 (used by FSIM); ``"cosine"`` is his later phasecong3
    window (a raised cosine over 2*pi/n_orientations), kept so the bank can be cross-checked against it.
    """
    rows, cols = shape
    fy = _normalised_axis(rows)[:, None]
    fx = _normalised_axis(cols)[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    theta = np.arctan2(-fy, fx)
    lowpass = 1.0 / (1.0 + (radius / _LOWPASS_CUTOFF) ** (2 * _LOWPASS_ORDER))
    radius[0, 0] = 1.0  # avoid log(0); the DC value is zeroed below
    radial = []
    for scale in range(n_scales):
        centre = 1.0 / (min_wavelength * mult**scale)
        filt = np.exp(-(np.log(radius / centre) ** 2) / (2 * np.log(sigma_on_f) ** 2)) * lowpass
        filt[0, 0] = 0.0
        radial.append(filt)
    bank = np.empty((n_orientations, n_scales, rows, cols))
    for orientation in range(n_orientations):
        angle = orientation * np.pi / n_orientations
        # Angular distance to the filter's orientation, wrap-around safe.
        d_sin = np.sin(theta) * np.cos(angle) - np.cos(theta) * np.sin(angle)
        d_cos = np.cos(theta) * np.cos(angle) + np.sin(theta) * np.sin(angle)
        d_theta = np.abs(np.arctan2(d_sin, d_cos))
        if angular_spread == "gaussian":
            theta_sigma = np.pi / n_orientations / d_theta_on_sigma
            spread = np.exp(-(d_theta**2) / (2 * theta_sigma**2))
        elif angular_spread == "cosine":
            spread = (np.cos(np.clip(d_theta * n_orientations / 2, 0, np.pi)) + 1) / 2
        else:
            raise ValueError(f"angular_spread must be 'gaussian' or 'cosine', not {angular_spread!r}")
        bank[orientation] = np.stack(radial) * spread
    return bank


@functools.lru_cache(maxsize=8)
def bank_and_noise_gains(shape: tuple[int, int], **bank_options: float | int | str
                         ) -> tuple[np.ndarray, np.ndarray]:
    """The filter bank and, per orientation, the factors that turn a noise power into the expected squared
    noise energy (image independent, so cached: a test set is one size)."""
    bank = log_gabor_bank(shape, **bank_options)
    bank.flags.writeable = False
    rows, cols = shape
    kernels = np.real(scipy.fft.ifft2(bank, workers=-1)) * np.sqrt(rows * cols)  # spatial filters
    # E[energy^2] = 2 P sum_s K_s^2 + 4 P sum_{s<t} K_s K_t = 2 P (sum_s K_s)^2 summed over pixels,
    # divided by the smallest filter's spectral power that converts a response power into P.
    gains = 2 * np.sum(kernels.sum(axis=1) ** 2, axis=(-2, -1)) / np.sum(bank[:, 0] ** 2, axis=(-2, -1))
    gains.flags.writeable = False
    return bank, gains


def _noise_thresholds(responses: np.ndarray, gains: np.ndarray, k: float) -> np.ndarray:
    """Per-orientation noise energy threshold T_o (Kovesi's phasecong2 estimate), shape [orientations, 1, 1].

    The smallest scale's squared amplitudes are taken to be noise-dominated; their median gives the noise power,
    which each filter's spatial kernel carries into the expected energy of the summed responses (a Rayleigh
    variable: T = mean + k * std).
    """
    noise_response_power = -np.median(np.abs(responses[:, 0]) ** 2, axis=(-2, -1)) / np.log(0.5)
    tau = np.sqrt(noise_response_power * gains / 2)  # Rayleigh parameter
    threshold = (tau * np.sqrt(np.pi / 2) + k * np.sqrt((2 - np.pi / 2) * tau**2)) / PC2_NOISE_RESCALE
    return threshold[:, None, None]


def phase_congruency_energy(
    image: np.ndarray,
    *,
    k: float = 2.0,
    noise_threshold: float | None = None,
    **bank_options: float | int | str,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-orientation thresholded energy and summed amplitude, each [orientations, rows, cols].

    ``noise_threshold=None`` estimates T_o from the image; a number uses that fixed threshold (0 disables it).
    ``bank_options`` go to :func:`log_gabor_bank`.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"phase congruency needs a 2-D image, got shape {image.shape}")
    bank, gains = bank_and_noise_gains(image.shape, **bank_options)
    spectrum = scipy.fft.fft2(image, workers=-1)
    responses = scipy.fft.ifft2(spectrum * bank, workers=-1)  # [orientations, scales, rows, cols], complex
    even, odd = responses.real, responses.imag
    sum_even, sum_odd = even.sum(axis=1), odd.sum(axis=1)
    norm = np.sqrt(sum_even**2 + sum_odd**2) + EPSILON
    mean_even, mean_odd = (sum_even / norm)[:, None], (sum_odd / norm)[:, None]
    # A_s (cos(dphi) - |sin(dphi)|) summed over scales, via dot and cross products with the mean phase vector.
    energy = np.sum(even * mean_even + odd * mean_odd - np.abs(even * mean_odd - odd * mean_even), axis=1)
    threshold = _noise_thresholds(responses, gains, k) if noise_threshold is None else noise_threshold
    return np.maximum(energy - threshold, 0.0), np.abs(responses).sum(axis=1)


def phase_congruency(image: np.ndarray, **options: float | int | str | None) -> np.ndarray:
    """Phase congruency map in [0, 1] of a 2-D image (any intensity scale; it is contrast invariant).

    Options are those of :func:`phase_congruency_energy`. A constant image gives 0 everywhere.
    """
    energy, amplitude = phase_congruency_energy(image, **options)
    total_energy, total_amplitude = energy.sum(axis=0), amplitude.sum(axis=0)
    return np.divide(total_energy, total_amplitude, out=np.zeros_like(total_energy), where=total_amplitude > 0)

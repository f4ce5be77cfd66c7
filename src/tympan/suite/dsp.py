"""Signal helpers shared by the suite's generators: trimming, tape speed, noise, level.

All signals are mono float arrays at tympan's SAMPLE_RATE (16 kHz).
"""

from __future__ import annotations

import numpy as np

from tympan.audio import SAMPLE_RATE
from tympan.io import RESAMPLE_QUALITY

PEAK = 0.99  # set_level keeps peaks at or below this, so 16-bit files never clip
# Silence detection for trimming: 10 ms frames, TRIM_DB below the loudest frame.
TRIM_FRAME = SAMPLE_RATE // 100
TRIM_DB = 40.0


def trim_silence(x: np.ndarray) -> np.ndarray:
    """`x` without leading and trailing 10 ms frames more than TRIM_DB below its loudest frame."""
    n = len(x) // TRIM_FRAME
    if n == 0:
        return x
    energy = (x[: n * TRIM_FRAME].reshape(n, TRIM_FRAME) ** 2).mean(axis=1)
    loud = np.flatnonzero(energy > energy.max() * 10 ** (-TRIM_DB / 10))
    if len(loud) == 0:
        return x[:0]
    return x[loud[0] * TRIM_FRAME : (loud[-1] + 1) * TRIM_FRAME]


def tape(x: np.ndarray, factor: float) -> np.ndarray:
    """Play `x` `factor` times faster: pitch and formants x factor, duration / factor."""
    import soxr

    return soxr.resample(x, SAMPLE_RATE * factor, SAMPLE_RATE, quality=RESAMPLE_QUALITY)


def coloured_noise(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^beta, unit RMS, shape (n,)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1]  # no infinite DC for beta > 0
    noise = np.fft.irfft(spectrum * freqs ** (-beta / 2), n)
    return noise / np.sqrt(np.mean(noise**2))


def add_noise(rng: np.random.Generator, x: np.ndarray, snr_db: float, beta: float) -> np.ndarray:
    """`x` plus coloured noise `snr_db` dB below x's RMS (silent x gets unit-RMS noise)."""
    rms = np.sqrt(np.mean(x**2)) if len(x) else 0.0
    level = rms * 10 ** (-snr_db / 20) if rms > 0 else 1.0
    return x + level * coloured_noise(rng, len(x), beta)


def set_level(x: np.ndarray, rms_db: float) -> np.ndarray:
    """`x` scaled to RMS `rms_db` dBFS, then down so that its peak is at most PEAK."""
    rms = np.sqrt(np.mean(x**2))
    if rms == 0:
        return x
    y = x * (10 ** (rms_db / 20) / rms)
    peak = np.max(np.abs(y))
    return y * (PEAK / peak) if peak > PEAK else y

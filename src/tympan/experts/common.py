"""What the experts share: windows centred on tympan's grid, Slaney mel filters, resampling.

Every expert model subclasses model.GridModel (the HEAR plumbing on tympan's grid) and
implements `chunks(sound)`, yielding its frame embeddings on tympan's grid (frame k centred on
sample k * HOP, audio.py) chunk by chunk, so a 20-minute clip never holds all intermediate
activations at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch

from tympan.audio import HOP, n_frames


@lru_cache(maxsize=8)
def slaney_mel_filters(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None
) -> torch.Tensor:
    """librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with librosa's defaults (Slaney's mel
    scale, each triangle of unit area in Hz), transposed: (n_fft // 2 + 1, n_mels) float32, so
    that power or magnitude spectra (n, n_fft // 2 + 1) @ it -> mel bands (n, n_mels).

    Resemblyzer and FCPE were trained on librosa's filters; librosa is not a runtime
    dependency, so they are built here (numpy, float64, as librosa) and checked by the
    experts' parity tests."""
    fmax = sample_rate / 2 if fmax is None else fmax
    log_step = math.log(6.4) / 27.0  # Slaney: 27 mel per factor 6.4 above 1 kHz

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)  # linear (200/3 Hz per mel) below 1 kHz, logarithmic above
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1000.0) / 1000.0) / log_step, f * 3.0 / 200.0)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp(log_step * (m - 15.0)), m * 200.0 / 3.0)

    fft_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    rising = (fft_hz[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - fft_hz[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]  # each filter has unit area in Hz
    return torch.from_numpy(weights.T.copy()).to(torch.float32)


def frame_ranges(n_samples: int, chunk_frames: int) -> Iterator[tuple[int, int]]:
    """Consecutive (k0, k1) grid-frame ranges of at most `chunk_frames` frames covering the clip."""
    total = n_frames(n_samples)
    for k0 in range(0, total, chunk_frames):
        yield k0, min(total, k0 + chunk_frames)


def centred_windows(sound: torch.Tensor, win: int, centres: torch.Tensor) -> torch.Tensor:
    """Windows of `win` samples centred on the given sample positions, zero outside the clip.

    sound (n_samples,); centres (n,) int64 sample indices -> (n, win): window j holds samples
    centres[j] - win // 2 .. centres[j] - win // 2 + win - 1 (the convention of torch.stft's
    and librosa's centred frames).
    """
    lo = int(centres.min()) - win // 2
    hi = int(centres.max()) - win // 2 + win
    pad_left, pad_right = max(0, -lo), max(0, hi - sound.shape[0])
    seg = torch.nn.functional.pad(sound[max(0, lo) : min(sound.shape[0], hi)], (pad_left, pad_right))
    idx = (centres - win // 2 - lo)[:, None] + torch.arange(win, device=sound.device)[None, :]
    return seg[idx]


def grid_centres(k0: int, k1: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Sample positions of grid frames k0 .. k1-1: k * HOP, int64 (n,)."""
    return torch.arange(k0, k1, dtype=torch.int64, device=device) * HOP


@lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int, zeros: int, beta: float) -> torch.Tensor:
    """Polyphase Kaiser-windowed sinc filters, (new, 1, width) float64.

    Output j = p * new + q sits at input position p * orig + q * orig / new; conv1d with
    stride `orig` over the input padded by `half` on the left computes, for block p and
    phase q, sum_i x[p * orig - half + i] * kernel[q, 0, i].
    """
    cutoff = min(orig, new) / orig  # in units of the input Nyquist: 1 up, new/orig down
    half = math.ceil(zeros / cutoff)  # input samples each side of an output position
    width = 2 * half + orig + 1
    i = torch.arange(width, dtype=torch.float64)
    q = torch.arange(new, dtype=torch.float64)
    t = i[None, :] - half - (q * orig / new)[:, None]  # input sample minus output position
    inside = t.abs() <= half
    window = torch.special.i0(beta * torch.sqrt((1 - (t / half) ** 2).clamp_min(0))) / torch.special.i0(
        torch.tensor(beta, dtype=torch.float64)
    )
    kernel = torch.where(inside, cutoff * torch.sinc(cutoff * t) * window, torch.zeros_like(t))
    return kernel[:, None, :]


def resample(x: torch.Tensor, orig: int, new: int, zeros: int = 24, beta: float = 8.6) -> torch.Tensor:
    """Band-limited resampling of the last axis from `orig` Hz to `new` Hz (Kaiser-windowed sinc).

    x (..., n) float32 -> (..., ceil(n * new / orig)); the signal is zero outside its ends.
    Written here because torchaudio cannot be a dependency (it does not load beside the CPU
    torch we pin) and the runtime dependencies are torch and numpy only.
    """
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    if orig == new:
        return x.clone()
    kernel = _sinc_kernel(orig, new, zeros, beta).to(x.device, x.dtype)
    half = (kernel.shape[-1] - orig - 1) // 2
    n = x.shape[-1]
    n_out = -(-n * new // orig)
    n_blocks = -(-n_out // new)
    flat = x.reshape(-1, 1, n)
    right = (n_blocks - 1) * orig + kernel.shape[-1] - half - n
    flat = torch.nn.functional.pad(flat, (half, max(0, right)))
    out = torch.nn.functional.conv1d(flat, kernel, stride=orig)[:, :, :n_blocks]  # (b, new, blocks)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[:, :n_out]
    return out.reshape(*x.shape[:-1], n_out)

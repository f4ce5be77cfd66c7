"""The time grid and the front end: from audio samples to framewise features.

Time grid (every constant of it lives here):
    SAMPLE_RATE = 16000 Hz; HOP = 320 samples = HOP_MS = 20 ms.
    Frame k is centred on sample k * HOP, i.e. on k * 20 ms, for k = 0 .. n_samples // HOP:
    the last centre is the last one <= the clip's duration, so any clip of at least one
    sample has at least one frame. Frames are centred by zero padding half the longest
    window on each side of the clip.

Front end (training-free, deterministic): a multi-resolution time-frequency analysis,
computed per frame from a fixed neighbourhood of samples only, so a frame's features
never depend on what else is in the batch or where a chunk boundary falls:
    - log-mel, 64 bands, 25 ms window: the short-time spectral envelope (timbre, phones);
    - log semitone spectrum, 96 bands (32.7 Hz - 7.9 kHz), 128 ms window: the harmonic
      partials of notes and voices, resolved to a semitone;
    - chroma, 12 pitch classes: the semitone energy folded over octaves (share of energy);
    - periodicity, 48 lags (50 - 1000 Hz, log-spaced): normalised autocorrelation of a
      64 ms window, divided by the window's own autocorrelation (Boersma 1993), which
      peaks at the period of a pitched sound whatever its timbre;
    - onsets, 17 values: half-wave rectified rise of the log-mel from the previous frame,
      in 16 groups of 4 bands plus their mean (spectral flux);
    - context, 64 bands: the log-mel averaged over +-8 frames (+-160 ms), so a frame also
      sees the sound around it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

SAMPLE_RATE = 16000  # Hz, the only rate the model accepts
HOP = 320  # samples between frame centres
HOP_MS = HOP * 1000 // SAMPLE_RATE  # 20 ms, exact
assert HOP * 1000 % SAMPLE_RATE == 0, "the hop must be a whole number of milliseconds"

MEL_WIN = 400  # 25 ms: short window for the spectral envelope and onsets
MEL_NFFT = 512
N_MELS = 64
SEMI_WIN = 2048  # 128 ms: long window to resolve semitones of low notes
N_SEMITONES = 96
SEMI_LOW_MIDI = 24  # C1, 32.7 Hz
PERIOD_WIN = 1024  # 64 ms: holds at least three periods down to 50 Hz
N_LAGS = 48
LAG_MIN = SAMPLE_RATE // 1000  # 16 samples = 1000 Hz
LAG_MAX = SAMPLE_RATE // 50  # 320 samples = 50 Hz
N_ONSET_GROUPS = 16
CONTEXT = 8  # frames each side averaged into the context block
MAX_WIN = max(MEL_WIN, SEMI_WIN, PERIOD_WIN)
MARGIN = CONTEXT  # neighbour frames a frame's features need on each side (>= 1 for onsets)
POWER_FLOOR = 1e-10  # floor of powers before the log: -100 dB re full scale

FEATURE_BLOCKS = (
    ("logmel", N_MELS),
    ("semitone", N_SEMITONES),
    ("chroma", 12),
    ("periodicity", N_LAGS),
    ("onset", N_ONSET_GROUPS + 1),
    ("context", N_MELS),
)
N_FEATURES = sum(size for _, size in FEATURE_BLOCKS)  # 301

CHUNK_FRAMES = 3000  # frames per internal chunk (60 s): bounds memory for long clips
# Largest peak magnitude analysed in float32. Squared spectra reach about 3e8 x peak^2 (the
# periodicity's 2048-point FFT of a 1024-sample window), which overflows float32 (3.4e38) from
# a peak of about 1e15; 2^40 (1.1e12, 220 dB above full scale) leaves a margin of 1000.
SAFE_PEAK = 2.0**40


def n_frames(n_samples: int) -> int:
    """Number of frames for a clip of `n_samples` samples: n_samples // HOP + 1 (>= 1)."""
    if n_samples < 1:
        raise ValueError(f"a clip needs at least one sample, got n_samples={n_samples}")
    return n_samples // HOP + 1


def timestamps_ms(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Frame centres in milliseconds, shape (n,), float32: k * HOP_MS for k = 0 .. n-1.

    Computed from integers and converted once, so there is no accumulated drift: at
    20 minutes every value equals k * 20 ms up to float32 rounding.
    """
    return (torch.arange(n, dtype=torch.int64, device=device) * HOP_MS).to(torch.float32)


def check_audio(audio) -> torch.Tensor:
    """Validate HEAR input audio and return it as a float32 tensor (n_sounds, n_samples).

    Accepts a torch tensor or a numpy array (converted with torch.from_numpy) of a real
    floating dtype; float64/float16/bfloat16 are converted to float32. Values outside
    [-1, 1] are legal. Raises TypeError or ValueError naming the problem, the value and the
    fix; the input is never modified.
    """
    if isinstance(audio, np.ndarray):
        if not (np.issubdtype(audio.dtype, np.floating)):
            raise TypeError(
                f"audio has dtype {audio.dtype}; expected floating point samples in [-1, 1] "
                "(convert integer PCM with audio.astype(np.float32) / 32768)"
            )
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if not isinstance(audio, torch.Tensor):
        raise TypeError(
            f"audio must be a torch.Tensor (or numpy array) of shape (n_sounds, n_samples), "
            f"got {type(audio).__name__}"
        )
    if audio.is_complex() or not audio.is_floating_point():
        raise TypeError(
            f"audio has dtype {audio.dtype}; expected a real floating dtype such as torch.float32 "
            "(convert integer PCM with audio.float() / 32768)"
        )
    if audio.ndim != 2:
        hint = " Add the batch dimension: audio.unsqueeze(0)." if audio.ndim == 1 else ""
        raise ValueError(
            f"audio must have 2 dimensions (n_sounds, n_samples), got shape {tuple(audio.shape)}.{hint}"
        )
    n_sounds, n_samples = audio.shape
    if n_sounds == 0 or n_samples == 0:
        raise ValueError(
            f"audio is empty: shape {tuple(audio.shape)} (n_sounds, n_samples); "
            "pass at least one sound of at least one sample"
        )
    finite = torch.isfinite(audio).all(dim=1)
    if not bool(finite.all()):
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(
            f"audio contains NaN or Inf in sound index {bad[:10]}{' ...' if len(bad) > 10 else ''}; "
            "replace them (e.g. torch.nan_to_num) or drop those sounds"
        )
    return audio.to(torch.float32)


def peak(sound: torch.Tensor) -> float:
    """The largest magnitude of `sound` (any shape), without an |sound| copy: bounded memory on
    20-minute clips."""
    low, high = torch.aminmax(sound)
    return max(-float(low), float(high))


def widened(sound: torch.Tensor) -> torch.Tensor:
    """sound (n_samples,) float32 -> the same sound in float64 when its peak magnitude exceeds
    SAFE_PEAK, else the sound itself (no copy).

    Legal audio may reach float32's limit (3.4e38), whose energies overflow float32; analysed in
    float64 they stay finite (float64 holds up to 1.8e308). One decision per sound, from its own
    samples only, so an ordinary sound is computed exactly as before and never depends on its batch.
    """
    return sound.double() if peak(sound) > SAFE_PEAK else sound


@lru_cache(maxsize=None)
def _hann(n: int) -> torch.Tensor:
    return torch.hann_window(n, periodic=True, dtype=torch.float64).to(torch.float32)


def _triangular_filters(centres_hz: np.ndarray, n_fft: int, min_width_bins: float) -> np.ndarray:
    """Triangular filters on the rfft bins, shape (n_fft // 2 + 1, len(centres_hz)) float64.

    Neighbouring centres give each filter's edges; a filter narrower than `min_width_bins`
    is widened so that no band falls between two FFT bins and stays empty.
    """
    freqs = np.arange(n_fft // 2 + 1) * SAMPLE_RATE / n_fft
    bin_hz = SAMPLE_RATE / n_fft
    edges = np.concatenate([[2 * centres_hz[0] - centres_hz[1]], centres_hz, [2 * centres_hz[-1] - centres_hz[-2]]])
    fb = np.zeros((len(freqs), len(centres_hz)))
    for i, c in enumerate(centres_hz):
        lo = min(edges[i], c - min_width_bins * bin_hz)
        hi = max(edges[i + 2], c + min_width_bins * bin_hz)
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[:, i] = np.clip(np.minimum(up, down), 0.0, None)
    return fb / fb.sum(axis=0, keepdims=True)  # each band: a weighted mean of bin powers


@lru_cache(maxsize=None)
def mel_filterbank() -> torch.Tensor:
    """Mel filters (HTK mel scale, 0 Hz - 8 kHz), shape (MEL_NFFT // 2 + 1, N_MELS) float32."""
    mel = np.linspace(0.0, 2595.0 * np.log10(1.0 + (SAMPLE_RATE / 2) / 700.0), N_MELS + 2)
    hz = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    return torch.from_numpy(_triangular_filters(hz[1:-1], MEL_NFFT, 1.0)).to(torch.float32)


@lru_cache(maxsize=None)
def semitone_filterbank() -> torch.Tensor:
    """Semitone filters (MIDI 24 - 119), shape (SEMI_WIN // 2 + 1, N_SEMITONES) float32."""
    midi = np.arange(SEMI_LOW_MIDI, SEMI_LOW_MIDI + N_SEMITONES)
    hz = 440.0 * 2.0 ** ((midi - 69) / 12.0)
    return torch.from_numpy(_triangular_filters(hz, SEMI_WIN, 1.0)).to(torch.float32)


@lru_cache(maxsize=None)
def lag_interpolation() -> torch.Tensor:
    """Linear interpolation from autocorrelation lags 0..PERIOD_WIN-1 to N_LAGS log-spaced
    lags between LAG_MIN and LAG_MAX samples, shape (PERIOD_WIN, N_LAGS) float32."""
    lags = np.geomspace(LAG_MIN, LAG_MAX, N_LAGS)
    m = np.zeros((PERIOD_WIN, N_LAGS))
    lo = np.floor(lags).astype(int)
    frac = lags - lo
    m[lo, np.arange(N_LAGS)] = 1.0 - frac
    m[lo + 1, np.arange(N_LAGS)] += frac
    return torch.from_numpy(m).to(torch.float32)


@lru_cache(maxsize=None)
def _window_autocorrelation() -> torch.Tensor:
    """Autocorrelation of the Hann window at the interpolated lags, shape (N_LAGS,)."""
    w = _hann(PERIOD_WIN).double()
    ac = torch.fft.irfft(torch.fft.rfft(w, n=2 * PERIOD_WIN).abs() ** 2, n=2 * PERIOD_WIN)[:PERIOD_WIN]
    return ((ac / ac[0]).float() @ lag_interpolation())


def _frames(padded: torch.Tensor, win: int, n: int) -> torch.Tensor:
    """Windows of `win` samples centred on padded[MAX_WIN // 2 + j * HOP], j = 0..n-1.

    padded: (n_samples_padded,) -> (n, win) view (no copy).
    """
    start = MAX_WIN // 2 - win // 2
    return padded[start : start + (n - 1) * HOP + win].unfold(0, win, HOP)


class FrontEnd(torch.nn.Module):
    """Audio (n_samples,) float32 -> features (n_frames, N_FEATURES) float32.

    Holds the fixed filter banks as buffers so they follow the module to its device.
    Processes one sound at a time, in chunks of CHUNK_FRAMES frames at fixed positions:
    memory stays bounded for 20-minute clips, and a sound's features never depend on the
    rest of the batch.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mel_fb", mel_filterbank().clone(), persistent=False)
        self.register_buffer("semi_fb", semitone_filterbank().clone(), persistent=False)
        self.register_buffer("lag_interp", lag_interpolation().clone(), persistent=False)
        self.register_buffer("win_ac", _window_autocorrelation().clone(), persistent=False)
        self.register_buffer("hann_mel", _hann(MEL_WIN).clone(), persistent=False)
        self.register_buffer("hann_semi", _hann(SEMI_WIN).clone(), persistent=False)
        self.register_buffer("hann_period", _hann(PERIOD_WIN).clone(), persistent=False)

    def chunks(self, audio: torch.Tensor):
        """Yield (first_frame, features (n, N_FEATURES)) over a sound, chunk by chunk.

        audio: (n_samples,) float32. The chunks cover frames 0 .. n_frames(n_samples)-1 in order;
        features are float32 (computed in float64 for a sound louder than SAFE_PEAK: widened()).
        """
        total = n_frames(audio.shape[0])
        padded = self.padded(audio)
        for k0 in range(0, total, CHUNK_FRAMES):
            yield k0, self.frames(padded, k0, min(total, k0 + CHUNK_FRAMES))

    def padded(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (n_samples,) float32 -> the zero-padded samples that frames() reads,
        (n_samples + 2 * (MAX_WIN // 2 + MARGIN * HOP),), float32 or float64 (widened())."""
        pad = MAX_WIN // 2 + MARGIN * HOP
        # Zero padding on both sides: frames past the clip see silence, as the grid says.
        return torch.nn.functional.pad(widened(audio), (pad, pad))

    def frames(self, padded: torch.Tensor, k0: int, k1: int) -> torch.Tensor:
        """Features of grid frames k0 .. k1-1 (0 <= k0 < k1 <= n_frames) from padded(audio):
        (k1 - k0, N_FEATURES) float32. Any range: a frame's features depend on its samples only."""
        # frames k0-MARGIN .. k1+MARGIN-1 of the clip, i.e. j = 0 .. n_ext-1 here
        n_ext = k1 - k0 + 2 * MARGIN
        seg = padded[k0 * HOP : k0 * HOP + (n_ext - 1) * HOP + MAX_WIN]
        return self._features(seg, n_ext).to(torch.float32)

    def _features(self, seg: torch.Tensor, n_ext: int) -> torch.Tensor:
        """seg: samples covering n_ext frames -> features of the central n_ext - 2*MARGIN frames,
        in seg's dtype (float32, or float64 for a widened sound)."""
        dt = seg.dtype
        # Short window: log-mel, onsets, context.
        fr = _frames(seg, MEL_WIN, n_ext) * self.hann_mel
        power = torch.fft.rfft(fr, n=MEL_NFFT).abs().square() / (self.hann_mel.sum() ** 2 / 4)
        logmel = torch.log10(power @ self.mel_fb.to(dt) + POWER_FLOOR)  # (n_ext, N_MELS)
        core = slice(MARGIN, n_ext - MARGIN)
        rise = torch.relu(logmel[1:] - logmel[:-1])[MARGIN - 1 : n_ext - MARGIN - 1]
        groups = rise.reshape(rise.shape[0], N_ONSET_GROUPS, -1).mean(dim=2)
        onset = torch.cat([groups, rise.mean(dim=1, keepdim=True)], dim=1)
        context = logmel.unfold(0, 2 * CONTEXT + 1, 1).mean(dim=2)  # frames MARGIN.. (CONTEXT == MARGIN)

        n = n_ext - 2 * MARGIN
        core_seg = seg[MARGIN * HOP : MARGIN * HOP + (n - 1) * HOP + MAX_WIN]
        # Long window: semitone spectrum and chroma.
        fr = _frames(core_seg, SEMI_WIN, n) * self.hann_semi
        power = torch.fft.rfft(fr).abs().square() / (self.hann_semi.sum() ** 2 / 4)
        semi_power = power @ self.semi_fb.to(dt)  # (n, N_SEMITONES)
        semitone = torch.log10(semi_power + POWER_FLOOR)
        pc = semi_power.reshape(n, N_SEMITONES // 12, 12).sum(dim=1)
        chroma = pc / (pc.sum(dim=1, keepdim=True) + POWER_FLOOR)
        # Medium window: periodicity from the autocorrelation (Wiener-Khinchin).
        fr = _frames(core_seg, PERIOD_WIN, n) * self.hann_period
        spec = torch.fft.rfft(fr, n=2 * PERIOD_WIN).abs().square()
        ac = torch.fft.irfft(spec, n=2 * PERIOD_WIN)[:, :PERIOD_WIN]
        energy = ac[:, :1]
        # Silence has no period: its normalised autocorrelation is defined as 0.
        periodicity = (ac @ self.lag_interp.to(dt)) / (energy + POWER_FLOOR * PERIOD_WIN) / self.win_ac

        return torch.cat([logmel[core], semitone, chroma, periodicity, onset, context], dim=1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (n_samples,) float32 -> features (n_frames(n_samples), N_FEATURES) float32."""
        return torch.cat([f for _, f in self.chunks(audio)], dim=0)

"""Voice and channel augmentation of training clips, with the labels kept on the 20 ms grid.

A training clip is stored twice: clean (what the teachers see) and augmented (what the
student sees), and the augmentation is a `Recipe` of drawn numbers, stored beside the clip,
from which `apply` rebuilds the augmented audio exactly. The chain, in the order sound
meets it on its way to a recording:

    source:  speed (tape: tempo, pitch and formants together, x0.9-1.1), pitch shift
             (phase vocoder, tempo kept; speech only), vocal-tract-length warp (VTLP: the
             spectrum's frequency axis scaled by 0.85-1.15 below 4.8 kHz; not music)
    room:    a simulated shoebox room (pyroomacoustics, the suite's room_bank), its
             impulse response advanced so that the direct path is at lag 0
    noise:   coloured noise (1/f^beta, beta 0-2) at an SNR of 0-40 dB
    channel: band limits (Butterworth, zero phase), spectral tilt (dB per octave around
             1 kHz), a codec (MP3, GSM 6.10 or mu-law at 8 kHz, or none), output level

Only speed moves time: augmented sample s holds clean sample s * speed. Every other step
keeps time (zero-phase filters, the room's direct path at lag 0, codecs checked to add no
delay through libsndfile), so labels follow by dividing times by `speed`
(`warp_ms`, `warp_frames`), and pitches move by `pitch_offset` semitones. Clips with pitch
labels (music, mix) change speed by whole semitones only (2^(k/12)), with no pitch shift
and no VTLP: the piano roll moves by whole keys (see draw_recipe).

Audio is mono float64 at SAMPLE_RATE (16 kHz); times in milliseconds; frames on tympan's
grid (frame k centred on k * HOP samples).
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import dataclass

import numpy as np

from tympan.audio import HOP, SAMPLE_RATE
from tympan.suite.dsp import add_noise, set_level, tape
from tympan.suite.speech import reverberate, room_bank

SPEED_RANGE = (0.9, 1.1)
PITCH_RANGE = (-3.0, 3.0)  # semitones, speech
# The phase vocoder's window: librosa's default 2048 (128 ms) smears onsets over +-3 frames, 512 over about one.
PITCH_NFFT = 512
MUSIC_SHIFTS = (-2, -1, 0, 1, 2)  # semitones (speed 2^(k/12): x0.89-1.12), music and mix
VTLP_RANGE = (0.85, 1.15)
VTLP_BOUNDARY_HZ = 4800.0  # above it the warp bends back so that 8 kHz maps to 8 kHz (Jaitly & Hinton 2013)
ROOM_CHANCE = 0.7
SNR_RANGE = (0.0, 40.0)  # dB
NOISE_BETA_RANGE = (0.0, 2.0)
BAND_CHANCE = 0.5
BAND_LOW_HZ = (50.0, 400.0)
BAND_HIGH_HZ = (3000.0, 7500.0)
TILT_RANGE = (-4.0, 2.0)  # dB per octave
CODECS = ("none", "mp3", "gsm8k", "ulaw8k")
CODEC_WEIGHTS = (0.55, 0.2, 0.1, 0.15)
LEVEL_DB_RANGE = (-35.0, -15.0)  # RMS dBFS
STFT_WINDOW = 512


@dataclass(frozen=True)
class Recipe:
    """The numbers of one clip's augmentation (see the module docstring for each step).

    room_seed < 0 means no room; codec is one of CODECS; band_low_hz = 0 and
    band_high_hz = SAMPLE_RATE / 2 mean no band limit; seed drives the noise.
    """

    speed: float
    pitch_semitones: float
    vtlp: float
    room_seed: int
    snr_db: float
    noise_beta: float
    band_low_hz: float
    band_high_hz: float
    tilt_db_per_octave: float
    codec: str
    level_db: float
    seed: int

    @property
    def pitch_offset(self) -> float:
        """Semitones by which every pitch moves: 12 log2(speed) + the pitch shift."""
        return 12 * math.log2(self.speed) + self.pitch_semitones

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def draw_recipe(rng: np.random.Generator, kind: str) -> Recipe:
    """Draw a recipe for a clip of `kind` ("speech", "music", "mix", "events", "noise").

    Clips with pitch labels (music, mix) move by a whole number of semitones through speed
    alone (speed = 2^(k/12)), without pitch shift or VTLP, so their piano roll moves by whole
    keys and their onsets stay sharp. The pitch shift (a phase vocoder) is for speech only:
    it blurs onsets by about a frame, which speech labels tolerate and event onsets do not.
    """
    if kind in ("music", "mix"):
        speed, shift, vtlp = float(2 ** (rng.choice(MUSIC_SHIFTS) / 12)), 0.0, 1.0
    else:
        speed = float(rng.uniform(*SPEED_RANGE))
        shift = float(rng.uniform(*PITCH_RANGE)) if kind == "speech" else 0.0
        vtlp = float(rng.uniform(*VTLP_RANGE))
    room_seed = int(rng.integers(2**32)) if rng.uniform() < ROOM_CHANCE else -1
    snr, beta = float(rng.uniform(*SNR_RANGE)), float(rng.uniform(*NOISE_BETA_RANGE))
    if rng.uniform() < BAND_CHANCE:
        low, high = float(rng.uniform(*BAND_LOW_HZ)), float(rng.uniform(*BAND_HIGH_HZ))
    else:
        low, high = 0.0, SAMPLE_RATE / 2
    tilt = float(rng.uniform(*TILT_RANGE))
    codec = str(rng.choice(CODECS, p=CODEC_WEIGHTS))
    level, seed = float(rng.uniform(*LEVEL_DB_RANGE)), int(rng.integers(2**32))
    return Recipe(speed, shift, vtlp, room_seed, snr, beta, low, high, tilt, codec, level, seed)


def augmented_length(n_clean: int, speed: float) -> int:
    """Samples of the augmented clip made from `n_clean` clean samples (tape speed `speed`)."""
    return round(n_clean / speed)


def apply(x: np.ndarray, recipe: Recipe) -> tuple[np.ndarray, dict]:
    """The augmented clip, shape (augmented_length(len(x), speed),), and what was measured.

    x: the clean clip, float64 (n,) at SAMPLE_RATE. Returns (y, {"rt60_s": measured RT60 of
    the room's impulse response, 0.0 without a room}). Deterministic for a given recipe.
    """
    import librosa

    n_out = augmented_length(len(x), recipe.speed)
    y = _fit(tape(x, recipe.speed), n_out)
    if recipe.pitch_semitones != 0.0:
        y = librosa.effects.pitch_shift(
            y, sr=SAMPLE_RATE, n_steps=recipe.pitch_semitones, n_fft=PITCH_NFFT, res_type="soxr_hq"
        )
    if recipe.vtlp != 1.0:
        y = vtlp(y, recipe.vtlp)
    rt60 = 0.0
    if recipe.room_seed >= 0:
        rir = room_bank(np.random.default_rng(recipe.room_seed), 1)[0][0]
        rt60 = measure_rt60(rir)
        lag = int(np.argmax(np.abs(rir)))  # the direct path: labels must not move with the room's delay
        y = reverberate(np.concatenate([y, np.zeros(lag)]), rir)[lag:]
    y = add_noise(np.random.default_rng(recipe.seed), y, recipe.snr_db, recipe.noise_beta)
    y = band_limit(y, recipe.band_low_hz, recipe.band_high_hz)
    y = tilt(y, recipe.tilt_db_per_octave)
    y = codec(y, recipe.codec)
    return set_level(y, recipe.level_db), {"rt60_s": rt60}


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return np.concatenate([x[:n], np.zeros(max(0, n - len(x)))])


def measure_rt60(rir: np.ndarray) -> float:
    """RT60 in seconds of an impulse response (Schroeder decay, extrapolated from -5..-25 dB)."""
    import pyroomacoustics as pra

    return float(pra.experimental.measure_rt60(rir, fs=SAMPLE_RATE, decay_db=20))


def vtlp(x: np.ndarray, alpha: float) -> np.ndarray:
    """Vocal-tract-length perturbation: the STFT's frequency axis scaled by `alpha`, same length.

    Frequencies f below VTLP_BOUNDARY_HZ * min(alpha, 1) / alpha move to alpha * f; above,
    a straight line takes the rest of the band to the Nyquist frequency (which stays put).
    Magnitudes are interpolated, each output bin keeps the phase of its nearest source bin.
    """
    from scipy.signal import istft, stft

    _, _, spec = stft(x, fs=SAMPLE_RATE, nperseg=STFT_WINDOW, boundary="even")
    nyquist = SAMPLE_RATE / 2
    freqs = np.linspace(0.0, nyquist, spec.shape[0])
    knee = VTLP_BOUNDARY_HZ * min(alpha, 1.0) / alpha
    # Inverse of the warp: the source frequency that lands on each output frequency.
    warped_knee = alpha * knee
    source = np.where(
        freqs <= warped_knee,
        freqs / alpha,
        knee + (freqs - warped_knee) * (nyquist - knee) / (nyquist - warped_knee),
    )
    position = source / nyquist * (spec.shape[0] - 1)
    magnitude = np.abs(spec)
    low = np.floor(position).astype(int).clip(0, spec.shape[0] - 1)
    high = (low + 1).clip(max=spec.shape[0] - 1)
    frac = (position - low)[:, None]
    warped = (1 - frac) * magnitude[low] + frac * magnitude[high]
    phase = np.angle(spec[np.rint(position).astype(int).clip(0, spec.shape[0] - 1)])
    _, y = istft(warped * np.exp(1j * phase), fs=SAMPLE_RATE, nperseg=STFT_WINDOW, boundary=True)
    return _fit(y, len(x))


def band_limit(x: np.ndarray, low_hz: float, high_hz: float) -> np.ndarray:
    """`x` through a 4th-order Butterworth band-pass low_hz..high_hz, run forwards and back (no delay)."""
    from scipy.signal import butter, sosfiltfilt

    if low_hz <= 0 and high_hz >= SAMPLE_RATE / 2:
        return x
    sos = butter(4, [low_hz, high_hz], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    return sosfiltfilt(sos, x)


def tilt(x: np.ndarray, db_per_octave: float) -> np.ndarray:
    """`x` with a spectral tilt of `db_per_octave` around 1 kHz (gain fixed below 50 Hz)."""
    if db_per_octave == 0.0:
        return x
    spectrum = np.fft.rfft(x)
    freqs = np.maximum(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE), 50.0)
    return np.fft.irfft(spectrum * 10 ** (db_per_octave * np.log2(freqs / 1000.0) / 20), len(x))


def codec(x: np.ndarray, name: str) -> np.ndarray:
    """`x` encoded and decoded in memory by libsndfile: "mp3" (at 16 kHz, mid quality), "gsm8k"
    (GSM 6.10) or "ulaw8k" (G.711 mu-law) at 8 kHz, or "none". Same length, no delay."""
    import soundfile as sf
    import soxr

    if name == "none":
        return x
    peak = max(float(np.max(np.abs(x))), 1e-9)
    y = x / peak * 0.9  # codecs store fixed-point: keep the signal inside full scale
    if name == "mp3":
        rate, fmt, subtype, extra = SAMPLE_RATE, "MP3", "MPEG_LAYER_III", {"compression_level": 0.6}
    elif name in ("gsm8k", "ulaw8k"):
        rate, fmt, subtype, extra = 8000, "WAV", "GSM610" if name == "gsm8k" else "ULAW", {}
        y = soxr.resample(y, SAMPLE_RATE, rate, quality="HQ")
    else:
        raise ValueError(f"unknown codec {name!r}; choose one of {CODECS}")
    buffer = io.BytesIO()
    sf.write(buffer, y, rate, format=fmt, subtype=subtype, **extra)
    buffer.seek(0)
    z, _ = sf.read(buffer, dtype="float64")
    if rate != SAMPLE_RATE:
        z = soxr.resample(z, rate, SAMPLE_RATE, quality="HQ")
    return _fit(z, len(x)) * (peak / 0.9)


def warp_ms(times_ms: np.ndarray, speed: float) -> np.ndarray:
    """Clean-clip times (ms) as times in the augmented clip: t / speed."""
    return np.asarray(times_ms, dtype=np.float64) / speed


def warp_frames(values: np.ndarray, speed: float, n_out: int) -> np.ndarray:
    """Per-frame values of the clean clip (e.g. teacher targets), shape (n, ...), resampled onto
    the augmented clip's grid, shape (n_out, ...): augmented frame k takes clean frame
    round(k * speed) (the nearest centre), clipped to the last one."""
    index = np.minimum(np.rint(np.arange(n_out) * speed).astype(np.int64), len(values) - 1)
    return values[index]


def frame_of_ms(times_ms: np.ndarray) -> np.ndarray:
    """The frame whose centre is nearest to each time (ms): round(t / 20 ms), as int64."""
    return np.rint(np.asarray(times_ms, dtype=np.float64) * SAMPLE_RATE / 1000 / HOP).astype(np.int64)

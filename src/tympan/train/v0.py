"""Build the v0 weights: the encoder's standardisation constants, measured on calibration audio.

    python -m tympan.train.v0 [--out src/tympan/weights/tympan-v0.pt]

v0 learns nothing: its encoder subtracts a per-dimension mean and divides by a
per-dimension std, so that every feature block reaches the downstream model on a
comparable scale. The constants come from generated audio (seeded, no files, no network)
that spans what the front end will meet: coloured noise, harmonic tones with vibrato at
50 Hz - 1 kHz, noise bursts with syllable-rate envelopes, clicks and drum-like decays,
chirps and silence, each at levels from -60 dB to 0 dB re full scale.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from tympan.audio import N_FEATURES, SAMPLE_RATE, FrontEnd
from tympan.model import V0_WEIGHTS, Tympan, save_weights

SEED = 20261129
N_CLIPS = 96
CLIP_SECONDS = 4.0
STD_FLOOR = 1e-3  # a dimension that barely moves on calibration audio is not amplified by noise


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(spec.shape[0], dtype=np.float64)
    f[0] = 1.0
    x = np.fft.irfft(spec / f ** (exponent / 2), n)
    return x / (np.abs(x).max() + 1e-12)


def _harmonic(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f0 = 50.0 * 20.0 ** rng.random()  # 50 Hz - 1 kHz, log-uniform
    vibrato = 1.0 + 0.01 * rng.random() * np.sin(2 * math.pi * (3 + 4 * rng.random()) * t)
    phase = 2 * math.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE
    x = np.zeros(n)
    for h in range(1, int(min(30, 7900 // f0)) + 1):
        x += rng.random() / h * np.sin(h * phase + 2 * math.pi * rng.random())
    decay = np.exp(-t * rng.random() * 3)
    return x * decay / (np.abs(x).max() + 1e-12)


def _bursts(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    envelope = np.clip(np.sin(2 * math.pi * (2 + 4 * rng.random()) * t), 0, None) ** 2
    return _coloured_noise(rng, n, rng.choice([0.0, 1.0])) * envelope


def _clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    x = np.zeros(n)
    for start in rng.integers(0, n - 1, size=rng.integers(2, 12)):
        length = min(n - start, int(SAMPLE_RATE * 0.3))
        decay = np.exp(-np.arange(length) / (SAMPLE_RATE * 0.01 * (1 + 10 * rng.random())))
        x[start : start + length] += rng.standard_normal(length) * decay
    return x / (np.abs(x).max() + 1e-12)


def _chirp(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    f_lo, f_hi = sorted(50.0 * 150.0 ** rng.random(2))
    f = f_lo * (f_hi / f_lo) ** (t / t[-1])
    return np.sin(2 * math.pi * np.cumsum(f) / SAMPLE_RATE)


def calibration_audio() -> torch.Tensor:
    """Generated calibration clips, shape (N_CLIPS, CLIP_SECONDS * 16000) float32, seeded."""
    rng = np.random.default_rng(SEED)
    n = int(CLIP_SECONDS * SAMPLE_RATE)
    kinds = [
        lambda: _coloured_noise(rng, n, rng.choice([0.0, 1.0, 2.0])),
        lambda: _harmonic(rng, n),
        lambda: _harmonic(rng, n) + 0.5 * _harmonic(rng, n),
        lambda: _bursts(rng, n),
        lambda: _clicks(rng, n),
        lambda: _chirp(rng, n),
    ]
    clips = np.zeros((N_CLIPS, n))
    for i in range(N_CLIPS):
        x = kinds[i % len(kinds)]()
        gate = np.ones(n)
        if rng.random() < 0.3:  # some silence inside clips
            a = rng.integers(0, n // 2)
            gate[a : a + n // 4] = 0.0
        clips[i] = x * gate * 10 ** (-rng.uniform(0, 60) / 20)
    return torch.from_numpy(clips).to(torch.float32)


def build() -> Tympan:
    """Measure the standardisation constants on calibration_audio(); returns the v0 model."""
    frontend = FrontEnd()
    feats = torch.cat([frontend(clip) for clip in calibration_audio()]).double()
    model = Tympan()
    model.encoder.mean.copy_(feats.mean(dim=0).float())
    model.encoder.std.copy_(feats.std(dim=0).clamp_min(STD_FLOOR).float())
    assert model.encoder.mean.shape == (N_FEATURES,)
    model.version = "v0"
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(V0_WEIGHTS))
    args = parser.parse_args(argv)
    sha = save_weights(build(), args.out, "v0")
    print(f"wrote {args.out} (v0, sha256 {sha})")


if __name__ == "__main__":
    main()

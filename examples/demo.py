"""`make demo`: generate example audio, embed it with `tympan embed`, print shapes and timing,
and run the strict validator on tympan.

Everything it writes goes to demo-out/ (audio/ and embeddings/); nothing is downloaded.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

OUT = Path("demo-out")
BIN = Path(sys.executable).parent


def make_audio(folder: Path) -> None:
    """Four clips in four formats and rates, so the demo shows downmixing and resampling."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def t(seconds: float, sr: int) -> np.ndarray:
        return np.arange(int(seconds * sr)) / sr

    sr = 44100  # a stereo chord at 44.1 kHz, resampled to 16 kHz by tympan embed
    x = t(3.0, sr)
    chord = sum(np.sin(2 * np.pi * f * x) for f in (261.6, 329.6, 392.0)) / 3 * np.exp(-x)
    sf.write(folder / "chord-44k-stereo.wav", np.stack([chord, 0.5 * chord], axis=1) * 0.8, sr)
    sr = 16000
    x = t(2.0, sr)
    sf.write(folder / "chirp.flac", 0.5 * np.sin(2 * np.pi * (100 + 1000 * x) * x), sr)
    sf.write(folder / "noise-bursts.ogg", 0.3 * rng.standard_normal(x.size) * (np.sin(2 * np.pi * 3 * x) > 0), sr)
    x = t(60.0, 22050)
    beat = (np.sin(2 * np.pi * 2 * x) > 0.95) * rng.standard_normal(x.size)
    sf.write(folder / "minute-of-beats.wav", 0.5 * beat + 0.1 * np.sin(2 * np.pi * 110 * x), 22050)


def main() -> int:
    shutil.rmtree(OUT, ignore_errors=True)
    audio, embeddings = OUT / "audio", OUT / "embeddings"
    make_audio(audio)
    print(f"generated {len(list(audio.iterdir()))} clips in {audio}/")

    start = time.perf_counter()
    embed = subprocess.run([str(BIN / "tympan"), "embed", str(audio), "--out", str(embeddings)])
    print(f"tympan embed: exit code {embed.returncode}, {time.perf_counter() - start:.2f} s wall (process start included)")
    for path in sorted(embeddings.rglob("*.npz")):
        with np.load(path) as f:
            print(
                f"  {path.relative_to(embeddings)}: embeddings {f['embeddings'].shape} {f['embeddings'].dtype}, "
                f"timestamps {f['timestamps'].shape} ({f['timestamps'][0]:.0f} .. {f['timestamps'][-1]:.0f} ms), "
                f"scene {f['scene'].shape}"
            )

    print("tympan validate tympan (20-minute clip included):")
    validate = subprocess.run([str(BIN / "tympan"), "validate", "tympan"], capture_output=True, text=True)
    print("\n".join("  " + line for line in validate.stdout.strip().splitlines()))
    return embed.returncode or validate.returncode


if __name__ == "__main__":
    sys.exit(main())

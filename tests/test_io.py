"""tympan.io: reading any audio file to mono at the model's rate, listing files, atomic .npz writes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.io import AudioReadError, atomic_save_npz, find_audio, probe_audio, read_audio


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def peak_frequency(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spectrum) * rate / len(x)


@pytest.mark.parametrize("ext", ["wav", "flac", "ogg", "mp3"])
def test_stereo_44k1_is_downmixed_and_resampled_to_16k(tmp_path, ext):
    left, right = sine(440, 1.0, 44100, 0.6), sine(440, 1.0, 44100, 0.2)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, np.stack([left, right], axis=1), 44100)

    audio = read_audio(path, 16000)

    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == 16000  # 1 s at the target rate
    assert abs(peak_frequency(audio, 16000) - 440) <= 1.0  # 1 Hz = one FFT bin of 1 s
    # mean of the channels: amplitude (0.6 + 0.2) / 2, away from the resampler's edges
    assert np.max(np.abs(audio[2000:-2000])) == pytest.approx(0.4, abs=0.02)


def test_downmix_is_the_mean_of_the_channels_and_no_resampling_at_the_same_rate(tmp_path):
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.5, 0.5, size=(1000, 2)).astype(np.float32)
    path = tmp_path / "noise.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")

    np.testing.assert_array_equal(read_audio(path, 16000), stereo.mean(axis=1, dtype=np.float32))


def test_corrupt_file_raises_an_error_naming_it(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF" + bytes(range(256)) * 4)

    with pytest.raises(AudioReadError, match="corrupt.wav") as info:
        read_audio(path, 16000)
    assert info.value.path == path and info.value.reason


def test_empty_files_raise(tmp_path):
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    no_frames = tmp_path / "noframes.wav"
    sf.write(no_frames, np.zeros((0, 1), np.float32), 16000)

    with pytest.raises(AudioReadError, match=r"zero\.wav.*empty"):
        read_audio(zero_bytes, 16000)
    with pytest.raises(AudioReadError, match=r"noframes\.wav.*no samples"):
        read_audio(no_frames, 16000)


def test_missing_file_gives_the_os_reason(tmp_path):
    with pytest.raises(AudioReadError, match=r"absent\.wav.*No such file"):
        read_audio(tmp_path / "absent.wav", 16000)


def test_non_finite_samples_raise(tmp_path):
    path = tmp_path / "nan.wav"
    sf.write(path, np.array([0.0, np.nan, 0.1], np.float32), 16000, subtype="FLOAT")

    with pytest.raises(AudioReadError, match="NaN"):
        read_audio(path, 16000)


def test_missing_cli_extra_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "soxr", None)  # makes `import soxr` fail
    with pytest.raises(ImportError, match=r'pip install "tympan\[cli\]"'):
        read_audio(tmp_path / "any.wav", 16000)


def test_probe_audio_reads_the_header_and_never_raises(tmp_path):
    good, bad = tmp_path / "good.flac", tmp_path / "bad.wav"
    sf.write(good, np.zeros(22050, np.float32), 44100)
    bad.write_bytes(b"not audio")

    assert probe_audio(good) == (44100, 22050)
    assert probe_audio(bad) is None


def test_find_audio_recurses_filters_by_extension_and_sorts(tmp_path):
    root = tmp_path / "data"
    for rel in ["b.wav", "a.FLAC", "sub/z.Ogg", "sub/deeper/m.mp3", "a/c.wav", "notes.txt", "x.npz"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    (root / "folder.wav").mkdir()  # a folder with an audio extension is not a file
    lone = tmp_path / "lone.aiff"  # named explicitly: taken whatever its extension
    lone.write_bytes(b"")

    found = find_audio([root, lone])

    assert [(r, rel.as_posix()) for r, rel in found] == [
        (root, "a/c.wav"),
        (root, "a.FLAC"),
        (root, "b.wav"),
        (root, "sub/deeper/m.mp3"),
        (root, "sub/z.Ogg"),
        (tmp_path, "lone.aiff"),
    ]
    assert find_audio([root, lone]) == found  # deterministic


def test_find_audio_names_a_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        find_audio([tmp_path, tmp_path / "nowhere"])


def test_atomic_save_npz_writes_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "deep" / "x.wav.npz"
    arrays = {"embeddings": np.ones((3, 2), np.float32), "scene": np.arange(2, dtype=np.float32)}

    atomic_save_npz(path, **arrays)

    assert [p.name for p in path.parent.iterdir()] == ["x.wav.npz"]
    with np.load(path) as saved:
        assert set(saved.files) == set(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(saved[key], value)


def test_atomic_save_npz_failing_mid_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    atomic_save_npz(path, a=np.zeros(3))
    before = path.read_bytes()

    def savez_then_fail(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_fail)
    with pytest.raises(OSError, match="No space"):
        atomic_save_npz(path, a=np.ones(3))

    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]
    assert path.read_bytes() == before


def test_find_audio_lists_fifos_and_broken_links_and_read_audio_names_them_without_opening(tmp_path):
    """Issue 11.8: such entries were dropped by find_audio, and read_audio opened a FIFO (a hang)."""
    import os
    import signal

    root = tmp_path / "data"
    root.mkdir()
    os.mkfifo(root / "pipe.wav")
    (root / "broken.flac").symlink_to(root / "gone.flac")
    (root / "loop.wav").symlink_to(root / "loop.wav")
    (root / "sub.wav").mkdir()  # a folder is still not listed

    assert [rel.as_posix() for _, rel in find_audio([root])] == ["broken.flac", "loop.wav", "pipe.wav"]
    assert find_audio([root / "broken.flac"]) == [(root, Path("broken.flac"))]  # named: taken as given

    def hung(signum, frame):
        raise TimeoutError("read_audio opened the FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    try:
        reasons = {}
        for name in ["pipe.wav", "broken.flac", "loop.wav"]:
            with pytest.raises(AudioReadError) as info:
                read_audio(root / name, 16000)
            reasons[name] = info.value.reason
        assert probe_audio(root / "pipe.wav") is None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert reasons["pipe.wav"] == "a FIFO (named pipe), not a regular file (not opened)"
    assert reasons["broken.flac"] == f"a broken symbolic link (its target {root / 'gone.flac'} does not exist)"
    assert reasons["loop.wav"].startswith("a symbolic link loop")

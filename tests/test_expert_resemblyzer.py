"""Resemblyzer expert: parity with resemblyzer 0.1.4 (fixture recorded by
tests/fixtures/experts/record_resemblyzer.py), the HEAR module on tympan's grid, weights handling."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan.experts import cache
from tympan.experts import resemblyzer as R

FIXTURES = Path(__file__).parent / "fixtures" / "experts"
sys.path.insert(0, str(FIXTURES))

from parity_audio import assert_parity, parity_audio


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "resemblyzer.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def model():
    try:
        return R.load_model()
    except cache.ExpertWeightsMissing:
        pytest.skip("resemblyzer weights are not in the cache: run tympan experts fetch --expert resemblyzer")


def test_partial_starts_follow_the_original(ref):
    assert R.partial_starts(64000) == ref["partial_starts"].tolist()
    assert len(R.partial_starts(70400)) == ref["long_partials"].shape[0]  # last partial kept at coverage 0.825
    assert R.partial_starts(16000) == [0]  # shorter than a partial: one, zero padded
    assert R.partial_starts(1) == [0]
    with pytest.raises(ValueError, match="rate=0.5 .* use a rate between 0.625"):
        R.partial_starts(64000, rate=0.5)


def test_mel_matches_librosa_melspectrogram(model, ref):
    wav = torch.from_numpy(parity_audio(16000))
    index = ref["mel_index"]
    assert_parity(model.mel(wav, 0, int(index.max()) + 1)[index], ref["mel"])


def test_partials_and_utterance_match_the_original(model, ref):
    utterance, partials = R.native_embeddings(parity_audio(16000), model)
    assert_parity(partials, ref["partials"])
    assert_parity(utterance, ref["utterance"])
    utterance, partials = R.native_embeddings(parity_audio(16000, 4.4), model)
    assert_parity(partials, ref["long_partials"])
    assert_parity(utterance, ref["long_utterance"])
    utterance, partials = R.native_embeddings(parity_audio(16000, 1.0), model)
    assert partials.shape == (1, 256)
    assert_parity(utterance, ref["short_utterance"])


def test_scene_is_the_utterance_embedding_after_volume_normalisation(model, ref):
    wav = torch.from_numpy(parity_audio(16000))
    # The parity audio is louder than -30 dBFS: preprocess_wav leaves it as it is.
    assert_parity(R.get_scene_embeddings(wav[None], model)[0], ref["utterance"])
    # A quiet copy is raised to -30 dBFS first, as preprocess_wav does (its VAD aside).
    scene = R.get_scene_embeddings(torch.stack([0.01 * wav, 0.001 * wav]), model)
    assert_parity(scene[0], ref["quiet_utterance"])
    assert_parity(scene[1], ref["quiet_utterance"])
    assert scene.shape == (2, 256) and scene.dtype == torch.float32


def test_timestamp_embeddings_on_the_grid(model, ref):
    wav = torch.from_numpy(parity_audio(16000))
    emb, ts = R.get_timestamp_embeddings(wav[None], model)
    assert emb.shape == (1, 201, 256) and emb.dtype == torch.float32
    assert torch.equal(ts[0], torch.arange(201, dtype=torch.float32) * 20)
    assert torch.allclose(emb.norm(dim=2), torch.ones(1, 201), atol=1e-5) and bool((emb >= 0).all())
    # Grid frame 40 (800 ms) is centred on mel frames 0 .. 159: the original's first partial.
    assert_parity(emb[0, 40], ref["partials"][0])
    # Every frame takes the partial centred on the nearest multiple of STRIDE (ties to the earlier).
    anchors = range(0, 201 + R.STRIDE, R.STRIDE)
    shared = [k for k in range(201) if min(anchors, key=lambda a: (abs(a - k), a)) == 40]
    assert len(shared) == R.STRIDE
    assert all(torch.equal(emb[0, k], emb[0, 40]) for k in shared)
    assert not torch.equal(emb[0, shared[0] - 1], emb[0, 40]) and not torch.equal(emb[0, shared[-1] + 1], emb[0, 40])


def test_batch_and_chunk_independence(model, monkeypatch):
    g = torch.Generator().manual_seed(3)
    audio = (torch.rand(2, 16000 + 123, generator=g) * 2 - 1) * torch.tensor([[0.3], [0.003]])
    emb, ts = R.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 51, 256) and ts.shape == (2, 51)
    for i in range(2):
        alone, _ = R.get_timestamp_embeddings(audio[i : i + 1], model)
        assert torch.equal(alone[0], emb[i])
        assert torch.equal(R.get_scene_embeddings(audio[i : i + 1], model)[0], R.get_scene_embeddings(audio, model)[i])
    # Small chunks and batches give the same frames (up to float rounding of other batch shapes).
    monkeypatch.setattr(R, "CHUNK_FRAMES", 8)
    monkeypatch.setattr(R, "BATCH", 3)
    small, _ = R.get_timestamp_embeddings(audio, model)
    assert (small - emb).abs().max() <= 1e-5


def test_silence_and_one_sample_give_finite_embeddings(model):
    for n in (1, 3200):
        audio = torch.zeros(1, n)
        emb, _ = R.get_timestamp_embeddings(audio, model)
        scene = R.get_scene_embeddings(audio, model)
        assert emb.shape == (1, n // 320 + 1, 256) and scene.shape == (1, 256)
        assert bool(torch.isfinite(emb).all()) and bool(torch.isfinite(scene).all())


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TYMPAN_EXPERTS_DIR", str(tmp_path))
    with pytest.raises(cache.ExpertWeightsMissing, match="tympan experts fetch --expert resemblyzer"):
        R.load_model()


def _checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """resemblyzer's training checkpoint layout around a network state."""
    model_state = {"similarity_weight": torch.tensor([10.0]), "similarity_bias": torch.tensor([-5.0]), **state}
    return {"step": 1, "model_state": model_state, "optimizer_state": {"state": {}, "param_groups": []}}


def test_convert_round_trip_and_load_from_a_path(tmp_path):
    torch.manual_seed(0)
    state = R.SpeakerEncoder().state_dict()
    torch.save(_checkpoint(state), tmp_path / "pretrained.pt")
    converted = R.convert(tmp_path / "pretrained.pt")
    assert converted.keys() == state.keys()  # the GE2E similarity scale and bias are dropped
    assert all(torch.equal(converted[k], state[k]) for k in state)
    torch.save(converted, tmp_path / "resemblyzer.pt")
    loaded = R.load_model(str(tmp_path / "resemblyzer.pt"))
    assert not loaded.training
    assert all(torch.equal(loaded.encoder.state_dict()[k], state[k]) for k in state)
    torch.save({"weights": state}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not resemblyzer's checkpoint"):
        R.convert(tmp_path / "other.pt")


def test_a_near_denormal_sound_embeds_like_the_same_sound_at_an_ordinary_level(model):
    # The volume normalisation raises both to -30 dBFS. At 1e-40 (float32 denormals) the mel
    # powers underflow float32 and the squared gain overflows it: 0 x inf gave NaN embeddings.
    g = torch.Generator().manual_seed(3)
    sound = torch.rand(1, 16000, generator=g) * 2 - 1
    for quiet in (1e-40, 1e-20):
        for hear in (R.get_scene_embeddings, lambda a, m: R.get_timestamp_embeddings(a, m)[0]):
            got, expected = hear(sound * quiet, model), hear(sound * 1e-3, model)
            assert torch.isfinite(got).all()
            # 1e-40 keeps 16 of float32's 24 bits of precision: the input itself differs by 1e-5
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_a_sound_beyond_float32_powers_embeds_like_the_same_sound_at_2_to_the_40(model):
    # Louder than SAFE_PEAK (2^40) the sound is lowered by a power of two to at most 2^40: its mel
    # powers (up to 1e82) would overflow the float32 LSTM. Here the LSTM is saturated from 2^20 on.
    g = torch.Generator().manual_seed(4)
    sound = torch.rand(1, 16000, generator=g) * 2 - 1
    at_2_40 = R.get_timestamp_embeddings(sound * 2.0**40, model)[0]
    for exponent in (20, 64, 127):
        loud = R.get_timestamp_embeddings(sound * 2.0**exponent, model)[0]
        assert torch.equal(loud, at_2_40), exponent
    assert R.volume_gain(sound[0] * 2.0**100) == 2.0**-60

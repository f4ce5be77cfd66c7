"""aiSFX expert: parity with aisfx 0.1.2 (fixture recorded by tests/fixtures/experts/record_aisfx.py),
the HEAR module on tympan's grid, weights handling."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan.experts import aisfx as A
from tympan.experts import cache
from tympan.experts.common import resample

FIXTURES = Path(__file__).parent / "fixtures" / "experts"
sys.path.insert(0, str(FIXTURES))

from parity_audio import assert_parity, parity_audio


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURES / "aisfx.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def model():
    try:
        return A.load_model()
    except cache.ExpertWeightsMissing:
        pytest.skip("aisfx weights are not in the cache: run tympan experts fetch --expert aisfx")


def noise(n_sounds: int, n_samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_sounds, n_samples, generator=g) * 2 - 1) * 0.3


def test_framing_and_blocks_follow_the_original(ref):
    n = parity_audio(44100).shape[0]
    assert A.n_native_frames(n) == ref["spectrogram"].shape[0]
    assert len(A.native_block_starts(n)) == ref["emb_hop50"].shape[0]
    assert len(A.native_block_starts(n, hop=0.05)) == ref["emb_hop5"].shape[0]
    assert len(A.native_block_starts(parity_audio(44100, 1.5).shape[0], hop=0.05)) == ref["short_emb_hop5"].shape[0]
    assert A.native_block_starts(n)[:2] == [-1024, 50 * 1024 - 1024]  # frame t starts at 1024 (t - 1)
    with pytest.raises(ValueError, match="hop=0.001 .* use hop >= 0.01"):
        A.native_block_starts(n, hop=0.001)


def test_mel_filters_are_unit_sum_triangles():
    fb = A.mel_filters()
    assert fb.shape == (A.FRAME // 2 + 1, A.N_MELS)
    assert torch.allclose(fb.sum(dim=0), torch.ones(A.N_MELS), atol=1e-6)
    peaks = fb.argmax(dim=0)
    assert bool((peaks[1:] >= peaks[:-1]).all()) and bool((fb >= 0).all())


def test_spectrogram_matches_essentia(model, ref):
    assert_parity(A.native_spectrogram(parity_audio(44100), model), ref["spectrogram"])


def test_block_embeddings_match_the_original(model, ref):
    audio = parity_audio(44100)
    assert_parity(A.native_embeddings(audio, model), ref["emb_hop50"])
    assert_parity(A.native_embeddings(audio, model, hop=0.05), ref["emb_hop5"])
    # 1.5 s: shorter than a block, one block zero padded past the clip's 66 frames.
    assert_parity(A.native_embeddings(parity_audio(44100, 1.5), model, hop=0.05), ref["short_emb_hop5"])
    assert_parity(A.native_embeddings(audio, model).mean(dim=0), ref["clip_mean"])


def test_resampled_spans_equal_the_whole_clip_resampled():
    sound = noise(1, 50000, seed=1)[0]
    whole = resample(sound, 16000, 44100)
    span = A.resampled_spans(sound)
    for lo, hi in [
        (-5000, 3000),
        (0, whole.shape[0]),
        (60001, 140000),
        (137000, 200000),
        (-9000, -10),
        (140000, 141000),
    ]:
        assert (span(lo, hi) - A._zero_padded(whole, lo, hi)).abs().max() <= 1e-6, (lo, hi)


def test_scene_is_the_mean_of_the_native_blocks(model):
    sound = torch.from_numpy(parity_audio(16000))
    scene = A.get_scene_embeddings(sound[None], model)
    assert scene.shape == (1, 512) and scene.dtype == torch.float32
    native = A.native_embeddings(resample(sound, 16000, 44100), model)
    assert native.shape[0] == 2
    assert (scene[0] - native.mean(dim=0)).abs().max() <= 1e-5 * native.abs().max()


def test_timestamp_embeddings_are_blocks_centred_on_the_grid(model):
    sound = torch.from_numpy(parity_audio(16000, 2.0))
    emb, ts = A.get_timestamp_embeddings(sound[None], model)
    assert emb.shape == (1, 101, 512) and emb.dtype == torch.float32
    assert torch.equal(ts[0], torch.arange(101, dtype=torch.float32) * 20)
    whole = resample(sound, 16000, 44100)
    s = A.STRIDE
    nearest = [(0, 0), (s // 2 + 1, s), (4 * s + 1, 4 * s), (100, s * round(100 / s))]
    for k, anchor in nearest:
        # The block centred on grid frame `anchor` (882 samples per frame at 44.1 kHz), cut out
        # as a clip of its own: the native path's block 1 at a one-frame hop is exactly that block.
        centre = anchor * A.GRID_HOP
        block = A._zero_padded(whole, centre - A.BLOCK_SAMPLES // 2, centre + A.BLOCK_SAMPLES // 2)
        expected = A.native_embeddings(block, model, hop=0.01)[1]
        assert (emb[0, k] - expected).abs().max() <= 1e-5 * expected.abs().max(), k
    # The frames within STRIDE // 2 of an anchor share its block; the next ones have their own.
    a = 4 * s
    assert all(torch.equal(emb[0, k], emb[0, a]) for k in range(a - s // 2, a + s // 2 + 1))
    assert not torch.equal(emb[0, a - s // 2 - 1], emb[0, a]) and not torch.equal(emb[0, a + s // 2 + 1], emb[0, a])


def test_batch_and_chunk_independence(model, monkeypatch):
    audio = noise(2, 8000 + 123, seed=3) * torch.tensor([[1.0], [0.01]])
    emb, ts = A.get_timestamp_embeddings(audio, model)
    scene = A.get_scene_embeddings(audio, model)
    assert emb.shape == (2, 26, 512) and ts.shape == (2, 26) and scene.shape == (2, 512)
    alone, _ = A.get_timestamp_embeddings(audio[1:], model)
    assert torch.equal(alone[0], emb[1])
    assert torch.equal(A.get_scene_embeddings(audio[1:], model)[0], scene[1])
    # Smaller batches of blocks give the same frames (up to float rounding of other batch shapes).
    monkeypatch.setattr(A, "BATCH", 3)
    small, _ = A.get_timestamp_embeddings(audio[:1], model)
    assert (small[0] - emb[0]).abs().max() <= 1e-5 * emb[0].abs().max()


def test_silence_and_one_sample_give_finite_embeddings(model):
    for n in (1, 3200):
        audio = torch.zeros(1, n)
        emb, _ = A.get_timestamp_embeddings(audio, model)
        scene = A.get_scene_embeddings(audio, model)
        assert emb.shape == (1, n // 320 + 1, 512) and scene.shape == (1, 512)
        assert bool(torch.isfinite(emb).all()) and bool(torch.isfinite(scene).all())


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TYMPAN_EXPERTS_DIR", str(tmp_path))
    with pytest.raises(cache.ExpertWeightsMissing, match="tympan experts fetch --expert aisfx"):
        A.load_model()


def _checkpoint(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """aisfx's checkpoint layout around an embedding network state: CrossNet's keys, one
    classification head, and the {library: (index, n_classes)} map with numpy integers."""
    weights = {}
    for key, value in state.items():
        _, block, name = key.split(".", 2)
        weights[f"embedding_net.conv_block{int(block) + 1}.{name}"] = value
    weights.update({"fc.0.0.weight": torch.zeros(256, 512), "fc.0.0.bias": torch.zeros(256)})
    return weights, {"prosfx": (np.int64(0), 78)}


def test_convert_round_trip_and_load_from_a_path(tmp_path):
    torch.manual_seed(0)
    net = A.AisfxNet()
    for p in net.parameters():
        torch.nn.init.normal_(p)
    state = net.state_dict()
    torch.save(_checkpoint(state), tmp_path / "checkpoint.pth")
    converted = A.convert(tmp_path / "checkpoint.pth")
    assert converted.keys() == state.keys()  # the classification heads are dropped
    assert all(torch.equal(converted[k], state[k]) for k in state)
    torch.save(converted, tmp_path / "aisfx.pt")
    loaded = A.load_model(str(tmp_path / "aisfx.pt"))  # plain tensors: loads with weights_only=True
    assert not loaded.training
    assert all(torch.equal(loaded.net.state_dict()[k], state[k]) for k in state)
    torch.save({"weights": state}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not aisfx's checkpoint"):
        A.convert(tmp_path / "other.pth")


@pytest.fixture(scope="module")
def local(model):
    local = A.load_model("local")  # the HEAR module's name for the local view
    assert isinstance(local, A.AisfxLocal) and torch.equal(local.net.blocks[0].conv1.weight, model.net.blocks[0].conv1.weight)
    return local


def test_local_view_is_the_last_feature_map_of_the_whole_clip(local, monkeypatch):
    """AisfxLocal (fusion block aisfx-local): frame k is the column of the network's feature map,
    run once over the whole clip surrounded by silence, nearest to k * 20 ms; chunking changes nothing."""
    sound = noise(1, 16000 * 9 + 77, seed=5)[0] * torch.linspace(0.1, 2.0, 16000 * 9 + 77)
    n = A.n_frames(sound.shape[0])
    monkeypatch.setattr(A, "LOCAL_CHUNK", 5)  # 9 s is 49 columns: ten chunks
    with torch.no_grad():
        emb, _ = A.get_timestamp_embeddings(sound[None], local)
        column = A.AisfxLocal.column_of_frame(torch.arange(n))
        # the reference: one spectrogram of the whole clip with LOCAL_MARGIN silent frames before,
        # and enough after, through the network in one call
        pad = A.LOCAL_MARGIN
        n_cols = int(column[-1]) + 1
        whole = resample(sound, 16000, 44100)
        frames = A._zero_padded(whole, (-pad - 1) * A.FRAME_HOP, (n_cols * 8 + pad - 2) * A.FRAME_HOP + A.FRAME)
        spec = local.spectrogram(frames.unfold(0, A.FRAME, A.FRAME_HOP))
        ref = local.net.features(spec[None])[0, :, pad // 8 : pad // 8 + n_cols].T
    assert emb.shape == (1, n, 512)
    assert (emb[0] - ref[column]).abs().max() <= 1e-5 * ref.abs().max()
    # nearest column: column c covers 44.1 kHz samples 8192 c - 1024 .. 8192 c + 8191, centre 8192 c + 3583.5
    centres = column * 8192 + 3583.5
    assert bool(((torch.arange(n) * A.GRID_HOP - centres).abs() <= 4096).all())
    assert int(column[0]) == 0 and len(set(column.tolist())) == n_cols  # every column is used
    # a column changes every 186 ms, not every 20 ms: it is local, and differs from its neighbours
    assert not torch.equal(ref[10], ref[11])
    # its scene embedding is aisfx's own
    blocks = A.from_state_dict(local.net.state_dict())
    assert torch.equal(A.get_scene_embeddings(sound[None], local), A.get_scene_embeddings(sound[None], blocks))

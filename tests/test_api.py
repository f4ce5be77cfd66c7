"""The HEAR API of tympan: attributes, shapes, dtypes, the time grid, pooling, determinism."""

import math

import numpy as np
import pytest
import torch

import tympan
from tympan.audio import FEATURE_BLOCKS, HOP, HOP_MS, N_FEATURES, SAMPLE_RATE, n_frames, timestamps_ms


def test_model_attributes(model):
    """The default (v1) and v0: v1's embedding is v0's 301 features + 576 learned ones."""
    v0 = tympan.load_model("v0")
    for m, size, version in ((v0, N_FEATURES, "v0"), (model, N_FEATURES + 576, "v1")):
        assert isinstance(m, torch.nn.Module)
        assert m.sample_rate == 16000
        assert isinstance(m.timestamp_embedding_size, int) and m.timestamp_embedding_size == size
        assert isinstance(m.scene_embedding_size, int) and m.scene_embedding_size == 2 * size
        assert m.version == version and len(m.weights_sha256) == 64


@pytest.mark.parametrize("n_samples", [1, 2, 16, 319, 320, 321, 639, 640, 16000, 16017, 59840])
def test_time_grid(model, noise, n_samples):
    emb, ts = tympan.get_timestamp_embeddings(noise(2, n_samples), model)
    expected_n = n_samples // HOP + 1
    assert emb.shape == (2, expected_n, model.timestamp_embedding_size)
    assert ts.shape == (2, expected_n)
    assert emb.dtype == torch.float32 and ts.dtype == torch.float32
    # centres k * 20 ms from 0, the last one <= the clip's duration, the next one past it
    assert torch.equal(ts[0], torch.arange(expected_n, dtype=torch.float32) * 20)
    duration_ms = n_samples * 1000 / SAMPLE_RATE
    assert ts[0, -1].item() <= duration_ms < ts[0, -1].item() + HOP_MS
    assert torch.isfinite(emb).all()


def test_timestamps_have_no_drift_at_20_minutes():
    n = n_frames(20 * 60 * SAMPLE_RATE)
    assert n == 60001
    ts = timestamps_ms(n)
    exact = np.arange(n, dtype=np.int64) * 20
    assert np.array_equal(ts.numpy(), exact.astype(np.float32))
    assert ts[-1].item() == 1_200_000.0


def test_scene_is_mean_and_std_of_timestamp_embeddings(model, noise):
    audio = noise(3, 40000, seed=3)
    emb, _ = tympan.get_timestamp_embeddings(audio, model)
    scene = tympan.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size) and scene.dtype == torch.float32
    d = model.timestamp_embedding_size
    torch.testing.assert_close(scene[:, :d], emb.double().mean(dim=1).float(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scene[:, d:], emb.double().std(dim=1, unbiased=False).float(), rtol=1e-4, atol=1e-4)


def test_batch_independence_is_bitwise(model, noise):
    a = noise(1, 24000, seed=1)
    others = noise(4, 24000, seed=2, scale=0.9)
    alone, _ = tympan.get_timestamp_embeddings(a, model)
    batch = torch.cat([others[:2], a, others[2:]])
    together, _ = tympan.get_timestamp_embeddings(batch, model)
    assert torch.equal(alone[0], together[2])
    assert torch.equal(tympan.get_scene_embeddings(a, model)[0], tympan.get_scene_embeddings(batch, model)[2])


def test_determinism_is_bitwise_across_runs_and_loads(noise):
    audio = noise(2, 33333, seed=4)
    first = tympan.get_timestamp_embeddings(audio, tympan.load_model())[0]
    second = tympan.get_timestamp_embeddings(audio, tympan.load_model())[0]
    assert torch.equal(first, second)


def test_numpy_input_is_accepted(model, noise):
    audio = noise(2, 8000, seed=5)
    from_np, _ = tympan.get_timestamp_embeddings(audio.numpy(), model)
    from_torch, _ = tympan.get_timestamp_embeddings(audio, model)
    assert torch.equal(from_np, from_torch)
    from_f64, _ = tympan.get_timestamp_embeddings(audio.double(), model)
    assert torch.equal(from_f64, from_torch)


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_frames_see_only_their_neighbourhood(noise, version):
    # Changing audio far from a frame must not change that frame: no global normalisation.
    # 4 s away is beyond v1's reach (2.72 s of network + 0.16 s of front-end context), and v0's.
    model = tympan.load_model(version)
    audio = noise(1, 8 * 16000, seed=6)
    changed = audio.clone()
    changed[0, 6 * 16000 :] = 0.9
    a, _ = tympan.get_timestamp_embeddings(audio, model)
    b, _ = tympan.get_timestamp_embeddings(changed, model)
    assert torch.equal(a[0, :100], b[0, :100])
    assert not torch.equal(a[0, -10:], b[0, -10:])


@pytest.mark.parametrize(
    "name, make",
    [
        ("silence", lambda n: torch.zeros(1, n)),
        ("dc", lambda n: torch.ones(1, n)),
        ("negative dc", lambda n: -torch.ones(1, n)),
        ("square", lambda n: torch.sign(torch.sin(torch.arange(n) * 2 * torch.pi * 441 / 16000)).unsqueeze(0)),
        ("denormals", lambda n: torch.full((1, n), 1e-40)),
        ("beyond full scale", lambda n: torch.sin(torch.arange(n) * 0.1).unsqueeze(0) * 50),
        ("single impulse", lambda n: torch.nn.functional.one_hot(torch.tensor([n // 2]), n).float()),
    ],
)
def test_edge_signals_give_finite_embeddings(model, name, make):
    audio = make(16000)
    emb, _ = tympan.get_timestamp_embeddings(audio, model)
    scene = tympan.get_scene_embeddings(audio, model)
    assert torch.isfinite(emb).all(), name
    assert torch.isfinite(scene).all(), name


def test_features_respond_to_pitch(model):
    # The periodicity and semitone blocks must tell a 220 Hz tone from a 440 Hz one.
    t = torch.arange(16000) / 16000
    low = torch.sin(2 * torch.pi * 220 * t).unsqueeze(0) * 0.5
    high = torch.sin(2 * torch.pi * 440 * t).unsqueeze(0) * 0.5
    s_low = tympan.get_scene_embeddings(low, model)
    s_high = tympan.get_scene_embeddings(high, model)
    assert (s_low - s_high).abs().max() > 1.0


def test_a_sound_far_beyond_full_scale_is_analysed_faithfully(model, noise):
    # At 2^80 the float32 spectra would overflow (inf, then NaN embeddings); the sound is analysed
    # in float64 instead, so the log-power blocks move by exactly the gain in dB and the
    # level-free blocks (chroma, periodicity, onsets) stay put.
    sound = noise(1, 16000, seed=8)[0]
    ordinary = model.frontend(sound * 2.0**30)
    loud = model.frontend(sound * 2.0**80)
    assert loud.dtype == torch.float32 and torch.isfinite(loud).all()
    # frames whose context (+-8 frames) and windows lie inside the clip: silence outside it stays silence
    ordinary, loud = ordinary[10:-10], loud[10:-10]
    offset = 2 * 50 * math.log10(2.0)  # 50 doublings of amplitude, in log10 power
    columns, start = {}, 0
    for name, size in FEATURE_BLOCKS:
        columns[name] = torch.arange(start, start + size)
        start += size
    log_power = torch.cat([columns["logmel"], columns["semitone"], columns["context"]])
    level_free = torch.cat([columns["chroma"], columns["periodicity"], columns["onset"]])
    torch.testing.assert_close(loud[:, log_power], ordinary[:, log_power] + offset, rtol=0, atol=1e-4)
    torch.testing.assert_close(loud[:, level_free], ordinary[:, level_free], rtol=0, atol=1e-4)

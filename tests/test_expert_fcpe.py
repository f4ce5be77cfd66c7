"""FCPE expert: parity with torchfcpe 0.0.4 (fixture recorded by fixtures/experts/record_fcpe.py) on its
own framing and on tympan's grid, chunking, the HEAR module, conversion and the missing-weights error."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tympan.experts import cache, fcpe

FIXTURES = Path(__file__).parent / "fixtures" / "experts"
sys.path.insert(0, str(FIXTURES))
from parity_audio import assert_parity, parity_audio

FETCH = "FCPE weights are not in the cache: run `tympan experts fetch --expert fcpe`"


@pytest.fixture(scope="module")
def model() -> fcpe.FCPE:
    try:
        return fcpe.load_model()
    except cache.ExpertWeightsMissing:
        pytest.skip(FETCH)


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURES / "fcpe.npz")


@pytest.fixture(scope="module")
def audio(ref) -> torch.Tensor:
    samples = parity_audio(16000)
    assert hashlib.sha256(samples.tobytes()).hexdigest() == str(ref["audio_sha256"]), "parity audio changed"
    return torch.from_numpy(samples)


def test_native_parity(model, ref, audio):
    """torchfcpe's framing: its mel, last hidden state, salience and decoded f0."""
    out = fcpe.native_outputs(audio, model)
    t = audio.shape[0] // 160 + 1
    assert out["mel"].shape == (t, 128) and out["hidden"].shape == (t, 512) and out["salience"].shape == (t, 360)
    frames = ref["frames"]
    # The mel is compared as torchfcpe computes it before its log: magnitudes. Near the log's
    # floor (1e-5) a float32 rounding difference between FFT builds (1.2e-7 relative here) is
    # 0.002 in the log, above the bound in the log domain, though the network's outputs agree.
    assert_parity(out["mel"][frames].exp(), np.exp(ref["mel"]), "mel magnitude")
    for key in ("hidden", "salience"):
        assert_parity(out[key][frames], ref[key], key)
    assert_parity(out["f0"], ref["f0"], "f0")


def test_grid_parity_whole_and_chunked(model, ref, audio):
    """HEAR embeddings and salience against torchfcpe's network on the centred framing, computed in one
    sequence: the same with 25-frame chunks (recorded frames sit at chunk edges and at every offset)."""
    emb, ts = fcpe.get_timestamp_embeddings(audio[None], model)
    assert emb.shape == (1, audio.shape[0] // 320 + 1, 512) and emb.dtype == torch.float32
    assert torch.equal(ts[0], torch.arange(emb.shape[1]) * 20.0)
    kept = ref["grid_frames"]
    assert_parity(emb[0, kept], ref["grid_hidden"], "grid hidden")
    pairs = list(model.chunks(audio, salience=True))
    assert torch.equal(torch.cat([h for h, _ in pairs]), emb[0])
    assert_parity(torch.cat([s for _, s in pairs])[kept], ref["grid_salience"], "grid salience")

    small = fcpe.FCPE(model.net).eval()
    small.chunk_frames = 25
    pairs = list(small.chunks(audio, salience=True))
    assert len(pairs) == -(-emb.shape[1] // 25)
    assert_parity(torch.cat([h for h, _ in pairs])[kept], ref["grid_hidden"], "grid hidden, 25-frame chunks")
    assert_parity(torch.cat([s for _, s in pairs])[kept], ref["grid_salience"], "grid salience, 25-frame chunks")


def test_scene_is_mean_and_std_of_the_grid_frames(model, noise):
    audio = noise(2, 12345, seed=3)
    emb, _ = fcpe.get_timestamp_embeddings(audio, model)
    scene = fcpe.get_scene_embeddings(audio, model)
    assert scene.shape == (2, 1024) and scene.dtype == torch.float32
    expected = torch.cat([emb.double().mean(dim=1), emb.double().std(dim=1, unbiased=False)], dim=1)
    torch.testing.assert_close(scene.double(), expected, rtol=1e-5, atol=1e-5)


def test_f0_follows_the_glide(model, audio):
    """The decoded pitch of the parity tone (110 -> 440 Hz) where it plays alone and without noise or clicks."""
    hidden_salience = list(model.chunks(audio, salience=True))
    f0 = model.net.decode_f0(torch.cat([s for _, s in hidden_salience])).double()
    t = torch.arange(f0.shape[0], dtype=torch.float64) * 0.02
    truth = 110.0 * 2 ** (t / 2.0) * (1 + 0.01 * torch.sin(2 * torch.pi * 5 * t))
    clean = (t > 0.05) & (t < 1.45) & ((t % 1.0) < 0.78) & ((t % 0.5 - 0.25).abs() > 0.04)
    cents = 1200 * torch.log2(f0[clean] / truth[clean])
    assert clean.sum() > 40 and cents.abs().median() < 10 and cents.abs().max() < 30, cents


def test_shapes_short_clips_and_batch_independence(model, noise):
    for n in (1, 319, 320, 321, 1000):
        emb, ts = fcpe.get_timestamp_embeddings(torch.zeros(1, n), model)
        assert emb.shape == (1, n // 320 + 1, 512) and torch.isfinite(emb).all()
        assert ts.shape == (1, n // 320 + 1)
    batch = noise(3, 8000, seed=7)
    batch[0] *= 0.01
    emb, _ = fcpe.get_timestamp_embeddings(batch, model)
    alone, _ = fcpe.get_timestamp_embeddings(batch[1:2].clone(), model)
    assert torch.equal(emb[1], alone[0])
    assert not torch.allclose(emb[0], emb[1])


def test_decode_f0_threshold_and_peak(model):
    bins = torch.arange(360, dtype=torch.float32)
    salience = torch.exp(-0.5 * ((bins - 200.0) / 2.0) ** 2)[None].repeat(2, 1)
    salience[1] *= 0.005  # below torchfcpe's voicing threshold 0.006
    f0 = model.net.decode_f0(salience)
    expected = 10.0 * 2 ** (model.net.cent_table[200] / 1200)
    assert abs(float(f0[0]) / float(expected) - 1) < 1e-4 and float(f0[1]) == 0.0


def _torchfcpe_layout(net: fcpe.FCPENet, g: torch.Tensor, v: torch.Tensor) -> dict:
    """A checkpoint in torchfcpe's layout holding `net`'s weights, its head given as weight_g, weight_v."""
    state = {
        "cent_table": net.cent_table.clone(),
        "gaussian_blurred_cent_mask": torch.tensor(4000.0),
        "output_proj.weight_g": g,
        "output_proj.weight_v": v,
        "output_proj.bias": net.head.bias.detach().clone(),
    }
    for p in ("weight", "bias"):
        state[f"input_stack.0.{p}"] = getattr(net.conv_in, p).detach().clone()
        state[f"input_stack.1.{p}"] = getattr(net.group_norm, p).detach().clone()
        state[f"input_stack.3.{p}"] = getattr(net.conv_mid, p).detach().clone()
        state[f"norm.{p}"] = getattr(net.norm, p).detach().clone()
        for i, block in enumerate(net.blocks):
            old = f"net.encoder_layers.{i}"
            state[f"{old}.conformer.net.0.{p}"] = getattr(block.norm, p).detach().clone()
            expand, project = getattr(block.expand, p).detach(), getattr(block.project, p).detach()
            state[f"{old}.conformer.net.2.{p}"] = expand[..., None].clone() if p == "weight" else expand.clone()
            state[f"{old}.conformer.net.4.conv.{p}"] = getattr(block.depthwise, p).detach().clone()
            state[f"{old}.conformer.net.6.{p}"] = project[..., None].clone() if p == "weight" else project.clone()
            state[f"{old}.norm.{p}"] = torch.ones_like(block.norm.weight)
    config = {
        "mel": {
            "sr": 16000,
            "num_mels": net.n_mels,
            "n_fft": 1024,
            "win_size": 1024,
            "hop_size": 160,
            "fmin": 0,
            "fmax": 8000,
        },
        "model": {"type": "CFNaiveMelPE", "conv_only": True},
    }
    return {"global_step": 1, "model": state, "config_dict": config}


def test_convert_round_trip(tmp_path):
    """A small random network in torchfcpe's layout converts to our keys, value for value, the
    weight-normalised head folded; the converted file loads by path."""
    torch.manual_seed(0)
    net = fcpe.FCPENet(n_mels=16, dim=8, n_blocks=2, inner=12, stem_kernel=3, kernel=5, n_bins=10)
    net.cent_table.copy_(torch.linspace(2000, 6000, 10))
    g, v = torch.rand(10, 1) + 0.5, torch.randn(10, 8)
    torch.save(_torchfcpe_layout(net, g, v), tmp_path / "small.pt")
    converted = fcpe.convert(tmp_path / "small.pt")
    ours = net.state_dict()
    assert converted.keys() == ours.keys()
    torch.testing.assert_close(converted.pop("head.weight"), g * v / v.norm(dim=1, keepdim=True))
    for key, value in converted.items():
        assert torch.equal(value, ours[key]), key
    torch.save(fcpe.convert(tmp_path / "small.pt"), tmp_path / "fcpe.pt")
    loaded = fcpe.load_model(str(tmp_path / "fcpe.pt"))
    assert not loaded.training and loaded.timestamp_embedding_size == 8 and loaded.scene_embedding_size == 16
    assert loaded.net.margin == 2 + 2 * 2
    emb, _ = fcpe.get_timestamp_embeddings(torch.zeros(1, 2000), loaded)
    assert emb.shape == (1, 7, 8)


def test_convert_rejects_other_checkpoints(tmp_path):
    net = fcpe.FCPENet(n_mels=16, dim=8, n_blocks=1, inner=12, stem_kernel=3, kernel=5, n_bins=10)
    ckpt = _torchfcpe_layout(net, torch.ones(10, 1), torch.randn(10, 8))
    ckpt["config_dict"]["model"]["conv_only"] = False
    torch.save(ckpt, tmp_path / "attention.pt")
    with pytest.raises(ValueError, match="conv-only"):
        fcpe.convert(tmp_path / "attention.pt")
    ckpt["config_dict"]["model"]["conv_only"] = True
    ckpt["model"]["net.encoder_layers.0.attn.to_q.weight"] = torch.zeros(8, 8)
    torch.save(ckpt, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match="unexpected weights"):
        fcpe.convert(tmp_path / "extra.pt")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a converted FCPE state_dict"):
        fcpe.load_model(str(tmp_path / "other.pt"))


def test_load_model_by_path_matches_the_cache(model):
    by_path = fcpe.load_model(str(cache.cache_dir() / "fcpe.pt"))
    assert by_path.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(by_path.state_dict().values(), model.state_dict().values()))
    assert sum(p.numel() for p in model.parameters()) == 10_826_088


def test_missing_cache_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("TYMPAN_EXPERTS_DIR", str(tmp_path))
    with pytest.raises(cache.ExpertWeightsMissing, match="tympan experts fetch"):
        fcpe.load_model()

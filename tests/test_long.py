"""Long audio: chunked processing equals unchunked, and 20 minutes stay under 2 GB RSS."""

import json
import subprocess
import sys

import torch

import tympan
import tympan.audio


def test_chunking_does_not_change_embeddings(model, noise, monkeypatch):
    audio = noise(2, 16000 * 3 + 123, seed=7)
    whole_emb, whole_ts = tympan.get_timestamp_embeddings(audio, model)
    whole_scene = tympan.get_scene_embeddings(audio, model)
    monkeypatch.setattr(tympan.audio, "CHUNK_FRAMES", 7)
    chunked_emb, chunked_ts = tympan.get_timestamp_embeddings(audio, model)
    chunked_scene = tympan.get_scene_embeddings(audio, model)
    assert torch.equal(whole_ts, chunked_ts)
    torch.testing.assert_close(chunked_emb, whole_emb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(chunked_scene, whole_scene, rtol=1e-5, atol=1e-5)


PROBE = """
import json, resource, torch, tympan
model = tympan.load_model()
audio = (torch.rand(1, 20 * 60 * 16000, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.3
emb, ts = tympan.get_timestamp_embeddings(audio, model)
scene = tympan.get_scene_embeddings(audio, model)
print(json.dumps({
    "emb": list(emb.shape), "last_ms": ts[0, -1].item(), "scene": list(scene.shape),
    "finite": bool(torch.isfinite(emb).all() and torch.isfinite(scene).all()),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""


def test_twenty_minutes_in_one_call_with_bounded_memory():
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["emb"] == [1, 60001, tympan.load_model().timestamp_embedding_size]
    assert result["last_ms"] == 1_200_000.0
    assert result["finite"]
    assert result["peak_rss_mb"] < 2048, result

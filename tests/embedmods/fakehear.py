"""A small, deterministic HEAR module for testing the kit without tympan's model.

Timestamp embeddings are a fixed random projection of 25 ms frames every 10 ms, and the
scene embedding is their mean, so outputs depend on the exact samples and on the clip's
length (padding would change them), which is what the embedder's tests need to see.
"""

from __future__ import annotations

import torch

SAMPLE_RATE = 16000
WIN = 400  # samples, 25 ms
HOP = 160  # samples, 10 ms
# Set by tests to simulate a module that runs out of memory on batches larger than this.
MAX_BATCH: int | None = None


class FakeModel(torch.nn.Module):
    sample_rate = SAMPLE_RATE
    timestamp_embedding_size = 8
    scene_embedding_size = 8

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj", torch.randn(WIN, self.timestamp_embedding_size, generator=g))


def load_model(model_file_path: str = "") -> FakeModel:
    """The "weights file", when given, is a text file holding the projection's seed."""
    seed = int(open(model_file_path).read()) if model_file_path else 0
    return FakeModel(seed)


def get_timestamp_embeddings(audio: torch.Tensor, model: FakeModel) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n, n_samples) float32, n_samples >= WIN -> (n, T, 8) float32, (n, T) ms."""
    if audio.ndim != 2 or audio.dtype != torch.float32:
        raise ValueError(f"expected (n_sounds, n_samples) float32, got {tuple(audio.shape)} {audio.dtype}")
    if audio.shape[1] < WIN:
        raise ValueError(f"audio shorter than one frame ({audio.shape[1]} < {WIN} samples)")
    if MAX_BATCH is not None and audio.shape[0] > MAX_BATCH:
        raise RuntimeError(f"out of memory: batch of {audio.shape[0]} > {MAX_BATCH}")
    frames = audio.unfold(1, WIN, HOP)  # (n, T, WIN)
    emb = torch.tanh(frames @ model.proj)
    centres_ms = (torch.arange(frames.shape[1]) * HOP + WIN / 2) * 1000 / SAMPLE_RATE
    return emb, centres_ms.to(torch.float32).expand(audio.shape[0], -1).contiguous()


def get_scene_embeddings(audio: torch.Tensor, model: FakeModel) -> torch.Tensor:
    return get_timestamp_embeddings(audio, model)[0].mean(dim=1)

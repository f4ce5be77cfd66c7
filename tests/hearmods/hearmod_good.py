"""A small, correct HEAR module for the validator's tests (the broken ones reuse it).

Frames of 2 hops, centred every `hop_ms` (25 ms) by padding one hop on each side; each
frame's embedding is its log RMS and a fixed random projection of its samples. Timestamps
are the frame centres k * hop_ms in milliseconds, for every k with k * hop_ms <= duration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

N_PROJECTIONS = 8


class FrameModel(torch.nn.Module):
    timestamp_embedding_size = N_PROJECTIONS + 1
    scene_embedding_size = N_PROJECTIONS + 1

    def __init__(self, sample_rate: int = 16000, hop_ms: float = 25.0):
        super().__init__()
        self.sample_rate = sample_rate
        self.hop_ms = hop_ms
        # Frames step by whole samples; flooring keeps at least as many frames as timestamps.
        self.hop = int(hop_ms * sample_rate / 1000)
        self.window = 2 * self.hop
        g = torch.Generator().manual_seed(0)
        self.register_buffer("projection", torch.randn(self.window, N_PROJECTIONS, generator=g) / self.window**0.5)
        self.eval()


def load_model(model_file_path: str = "") -> FrameModel:
    return FrameModel()


def get_timestamp_embeddings(audio: torch.Tensor, model: FrameModel) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) -> embeddings (n_sounds, n_frames, 9), timestamps (n_sounds, n_frames) ms."""
    n_sounds, n_samples = audio.shape
    n_frames = int(n_samples * 1000 // (model.sample_rate * model.hop_ms)) + 1
    padded = F.pad(audio, (model.hop, model.hop))
    frames = padded.unfold(1, model.window, model.hop)[:, :n_frames]  # (n_sounds, n_frames, window)
    rms = frames.pow(2).mean(-1, keepdim=True).sqrt()
    embeddings = torch.cat([torch.log(rms + 1e-6), frames @ model.projection], dim=-1)
    timestamps = torch.arange(n_frames, dtype=torch.float64, device=audio.device) * model.hop_ms
    return embeddings, timestamps.float().expand(n_sounds, -1)


def get_scene_embeddings(audio: torch.Tensor, model: FrameModel) -> torch.Tensor:
    """audio (n_sounds, n_samples) -> (n_sounds, 9): the mean of the timestamp embeddings."""
    return get_timestamp_embeddings(audio, model)[0].mean(1)

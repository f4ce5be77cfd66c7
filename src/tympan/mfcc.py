"""A trivial reference HEAR module: MFCCs on tympan's time grid, scene = their mean and std.

    tympan evaluate tympan.mfcc --tasks DIR --out OUT

It shows how far a 40-number summary of the spectral envelope goes on a task, so that a
task on which it already scores near the top is known to be too easy, and one on which
every module stays at chance too hard. Frames, windows and the mel filter bank are
tympan's own (audio.py); the MFCCs are the orthonormal DCT-II of the 64 log-mel bands,
keeping the first 20. No weights: load_model ignores its argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from tympan.audio import N_MELS, FrontEnd
from tympan.model import GridModel

N_MFCC = 20


def _dct_matrix() -> torch.Tensor:
    """Orthonormal DCT-II, shape (N_MELS, N_MFCC): log-mel (n, N_MELS) @ it -> MFCC (n, N_MFCC)."""
    n = torch.arange(N_MELS, dtype=torch.float64)
    k = torch.arange(N_MFCC, dtype=torch.float64)
    m = torch.cos(math.pi / N_MELS * (n[:, None] + 0.5) * k[None, :]) * math.sqrt(2.0 / N_MELS)
    m[:, 0] /= math.sqrt(2.0)
    return m.float()


class MFCC(GridModel):
    """HEAR attributes: 16 kHz, 20-d timestamp embeddings every 20 ms, 40-d scene embeddings."""

    timestamp_embedding_size = N_MFCC
    scene_embedding_size = 2 * N_MFCC

    def __init__(self) -> None:
        super().__init__()
        self.frontend = FrontEnd()
        self.register_buffer("dct", _dct_matrix(), persistent=False)

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) -> yields MFCCs (n, N_MFCC) of consecutive frames."""
        for _, features in self.frontend.chunks(sound):
            yield features[:, :N_MELS] @ self.dct  # the log-mel block comes first


def load_model(model_file_path: str = "") -> MFCC:
    """The MFCC reference; it has no weights, so `model_file_path` is ignored."""
    return MFCC().eval()


def get_timestamp_embeddings(audio: torch.Tensor, model: MFCC) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) -> MFCCs (n_sounds, n_frames, 20) float32, timestamps (n_sounds, n_frames) ms."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio: torch.Tensor, model: MFCC) -> torch.Tensor:
    """audio (n_sounds, n_samples) -> (n_sounds, 40) float32: MFCC mean and std over time."""
    return model.scene_embeddings(audio)

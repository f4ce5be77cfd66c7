"""tympan: a general-purpose audio embedding behind the HEAR common API.

    import torch, tympan
    model = tympan.load_model()                        # shipped weights, no network
    audio = torch.zeros(2, 16000)                      # (n_sounds, n_samples), 16 kHz, float
    emb, ts = tympan.get_timestamp_embeddings(audio, model)   # (2, 51, 301), (2, 51) ms
    scene = tympan.get_scene_embeddings(audio, model)          # (2, 602)

Timestamps are frame centres every 20 ms from 0 ms up to the clip's duration (audio.py).
"""

from __future__ import annotations

import torch

from tympan.model import DEFAULT_WEIGHTS, Tympan, WeightsError, load_weights

__all__ = ["load_model", "get_timestamp_embeddings", "get_scene_embeddings", "Tympan", "WeightsError"]
__version__ = "0.1.0"


def load_model(model_file_path: str = "") -> Tympan:
    """Load tympan. "" loads the weights shipped inside the package; a path loads that file.

    Returns a torch.nn.Module in eval mode on the CPU (move it with .to(device)).
    Raises WeightsError for a missing, truncated, foreign or corrupt weights file.
    """
    return load_weights(model_file_path or DEFAULT_WEIGHTS)


def get_timestamp_embeddings(audio: torch.Tensor, model: Tympan) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings every 20 ms.

    audio: (n_sounds, n_samples) float tensor at 16 kHz on the model's device (a numpy
        float array is accepted and converted); any length >= 1 sample.
    Returns embeddings (n_sounds, n_timestamps, model.timestamp_embedding_size) float32 and
    timestamps (n_sounds, n_timestamps) float32, frame centres in milliseconds, with
    n_timestamps = n_samples // 320 + 1.
    """
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio: torch.Tensor, model: Tympan) -> torch.Tensor:
    """One embedding per clip: audio (n_sounds, n_samples) -> (n_sounds, model.scene_embedding_size)
    float32, the mean and standard deviation over time of the timestamp embeddings."""
    return model.scene_embeddings(audio)

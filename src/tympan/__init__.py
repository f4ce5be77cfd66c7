"""tympan: a general-purpose audio embedding behind the HEAR common API.

    import torch, tympan
    model = tympan.load_model()                        # shipped weights, no network
    audio = torch.zeros(2, 16000)                      # (n_sounds, n_samples), 16 kHz, float
    emb, ts = tympan.get_timestamp_embeddings(audio, model)   # (2, 51, 301), (2, 51) ms
    scene = tympan.get_scene_embeddings(audio, model)          # (2, 602); load_model("v1"): 877, 1754

Timestamps are frame centres every 20 ms from 0 ms up to the clip's duration (audio.py).
"""

from __future__ import annotations

import torch

import os

from tympan.model import (
    DEFAULT_WEIGHTS,
    SHIPPED_WEIGHTS,
    SUPPORTED_VERSIONS,
    GridModel,
    Tympan,
    TympanV1,
    WeightsError,
    load_weights,
)

__all__ = ["load_model", "get_timestamp_embeddings", "get_scene_embeddings", "Tympan", "TympanV1", "WeightsError"]
__version__ = "0.1.0"


def load_model(model_file_path: str | os.PathLike = "") -> Tympan | TympanV1:
    """Load tympan. "" loads the default weights shipped inside the package (v1, the trained
    encoder: model.DEFAULT_VERSION); the names "v0" (the training-free front end) and "v1" load
    those shipped weights explicitly; anything else is the path of a weights file (v0 or v1).

    A version name is always a name, never a file: a file named v0 in the working directory
    loads as "./v0" (or pathlib.Path("v0")). Returns a torch.nn.Module in eval mode on the CPU
    (move it with .to(device)). Raises WeightsError for a missing, truncated, foreign or
    corrupt weights file, and for a version name whose weights do not ship with this tympan.
    """
    if isinstance(model_file_path, str) and model_file_path in SUPPORTED_VERSIONS:
        if model_file_path not in SHIPPED_WEIGHTS:
            raise WeightsError(
                f"no {model_file_path} weights ship with this tympan (shipped: {sorted(SHIPPED_WEIGHTS)}); "
                f"pass the path of a {model_file_path} weights file, e.g. ./{model_file_path} for one in this folder"
            )
        return load_weights(SHIPPED_WEIGHTS[model_file_path])
    return load_weights(model_file_path or DEFAULT_WEIGHTS)


def get_timestamp_embeddings(audio: torch.Tensor, model: GridModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings every 20 ms.

    audio: (n_sounds, n_samples) float tensor at 16 kHz on the model's device (a numpy
        float array is accepted and converted); any length >= 1 sample.
    Returns embeddings (n_sounds, n_timestamps, model.timestamp_embedding_size) float32 and
    timestamps (n_sounds, n_timestamps) float32, frame centres in milliseconds, with
    n_timestamps = n_samples // 320 + 1.
    """
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio: torch.Tensor, model: GridModel) -> torch.Tensor:
    """One embedding per clip: audio (n_sounds, n_samples) -> (n_sounds, model.scene_embedding_size)
    float32, the mean and standard deviation over time of the timestamp embeddings."""
    return model.scene_embeddings(audio)

"""fakehear, except that clips of exactly NAN_SAMPLES samples get NaN in one timestamp embedding
and clips of exactly INF_SAMPLES samples an infinite scene embedding: a module whose outputs are
not finite for some inputs, for the embedder's "never write NaN" tests."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fakehear

NAN_SAMPLES = 12000  # 0.75 s at 16 kHz
INF_SAMPLES = 8000  # 0.5 s

load_model = fakehear.load_model


def get_timestamp_embeddings(audio: torch.Tensor, model) -> tuple[torch.Tensor, torch.Tensor]:
    emb, ts = fakehear.get_timestamp_embeddings(audio, model)
    if audio.shape[1] == NAN_SAMPLES:
        emb = emb.clone()
        emb[:, 3, 0] = math.nan
    return emb, ts


def get_scene_embeddings(audio: torch.Tensor, model) -> torch.Tensor:
    scene = fakehear.get_scene_embeddings(audio, model)
    if audio.shape[1] == INF_SAMPLES:
        scene = scene.clone()
        scene[:, 0] = math.inf
    return scene

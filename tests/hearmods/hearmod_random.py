"""Broken: unseeded noise added at inference, so two calls differ."""

import hearmod_good
import torch
from hearmod_good import load_model  # noqa: F401


def get_timestamp_embeddings(audio, model):
    embeddings, timestamps = hearmod_good.get_timestamp_embeddings(audio, model)
    return embeddings + 0.01 * torch.randn_like(embeddings), timestamps


def get_scene_embeddings(audio, model):
    return get_timestamp_embeddings(audio, model)[0].mean(1)

"""Broken: refuses clips shorter than its window (800 samples, 50 ms)."""

import hearmod_good
from hearmod_good import load_model  # noqa: F401


def get_timestamp_embeddings(audio, model):
    if audio.shape[1] < model.window:
        raise ValueError(f"audio of {audio.shape[1]} samples is shorter than the {model.window}-sample window")
    return hearmod_good.get_timestamp_embeddings(audio, model)


def get_scene_embeddings(audio, model):
    return get_timestamp_embeddings(audio, model)[0].mean(1)

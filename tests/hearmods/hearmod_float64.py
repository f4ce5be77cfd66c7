"""Broken: float64 embeddings (timestamp and scene); timestamps stay float32."""

import hearmod_good
from hearmod_good import load_model  # noqa: F401


def get_timestamp_embeddings(audio, model):
    embeddings, timestamps = hearmod_good.get_timestamp_embeddings(audio, model)
    return embeddings.double(), timestamps


def get_scene_embeddings(audio, model):
    return hearmod_good.get_scene_embeddings(audio, model).double()

"""Broken: timestamps in seconds instead of milliseconds (passes the official validator)."""

import hearmod_good
from hearmod_good import get_scene_embeddings, load_model  # noqa: F401


def get_timestamp_embeddings(audio, model):
    embeddings, timestamps = hearmod_good.get_timestamp_embeddings(audio, model)
    return embeddings, timestamps / 1000

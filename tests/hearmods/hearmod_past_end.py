"""Broken: timestamps shifted by half a hop, so the last centre lies past the clip's end."""

import hearmod_good
from hearmod_good import get_scene_embeddings, load_model  # noqa: F401


def get_timestamp_embeddings(audio, model):
    embeddings, timestamps = hearmod_good.get_timestamp_embeddings(audio, model)
    return embeddings, timestamps + model.hop_ms / 2

"""Broken: no get_scene_embeddings."""

from hearmod_good import get_timestamp_embeddings, load_model  # noqa: F401

"""Broken: load_model raises."""

from hearmod_good import get_scene_embeddings, get_timestamp_embeddings  # noqa: F401


def load_model(model_file_path=""):
    raise FileNotFoundError(f"no weights at {model_file_path!r}")

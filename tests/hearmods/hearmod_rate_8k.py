"""Broken: 8 kHz input, not a HEAR sample rate."""

from hearmod_good import FrameModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401


def load_model(model_file_path=""):
    return FrameModel(sample_rate=8000)

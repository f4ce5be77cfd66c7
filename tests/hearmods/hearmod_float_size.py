"""Broken: timestamp_embedding_size is a float."""

from hearmod_good import FrameModel, get_scene_embeddings, get_timestamp_embeddings  # noqa: F401


def load_model(model_file_path=""):
    model = FrameModel()
    model.timestamp_embedding_size = 9.0
    return model

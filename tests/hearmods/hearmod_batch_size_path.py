"""Broken: batches of more than 8 sounds take a 'faster' path that pads the frames by
reflection instead of with zeros, so the first and last frames change with the batch size."""

import torch
import torch.nn.functional as F

import hearmod_good
from hearmod_good import load_model  # noqa: F401

LARGE_BATCH = 8


def get_timestamp_embeddings(audio, model):
    embeddings, timestamps = hearmod_good.get_timestamp_embeddings(audio, model)
    if audio.shape[0] <= LARGE_BATCH or audio.shape[1] <= model.hop:  # reflection needs hop < length
        return embeddings, timestamps
    padded = F.pad(audio.unsqueeze(1), (model.hop, model.hop), mode="reflect").squeeze(1)
    frames = padded.unfold(1, model.window, model.hop)[:, : embeddings.shape[1]]
    rms = frames.pow(2).mean(-1, keepdim=True).sqrt()
    return torch.cat([torch.log(rms + 1e-6), frames @ model.projection], dim=-1), timestamps


def get_scene_embeddings(audio, model):
    return get_timestamp_embeddings(audio, model)[0].mean(1)

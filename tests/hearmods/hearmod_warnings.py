"""Correct but with every warning: left in training mode, a 35 ms hop (1543.5 samples at
44.1 kHz) and slower than 10x real time on clips over 5 s. Also prints, as some modules do."""

import time

import hearmod_good
from hearmod_good import FrameModel


def load_model(model_file_path=""):
    print("hearmod_warnings: loading")
    return FrameModel(sample_rate=44100, hop_ms=35.0).train()


def get_timestamp_embeddings(audio, model):
    seconds = audio.shape[1] / model.sample_rate
    if seconds > 5:
        time.sleep(seconds / 8)
    return hearmod_good.get_timestamp_embeddings(audio, model)


def get_scene_embeddings(audio, model):
    return get_timestamp_embeddings(audio, model)[0].mean(1)

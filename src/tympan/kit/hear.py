"""Running any HEAR module: import it, load its model, embed a batch, report durations.

The one place where the tools (`tympan embed` in both formats, `tympan evaluate`,
`tympan validate`) meet a HEAR module's code, so that they import, load and batch the same
way and say the same thing when it goes wrong. Imports nothing of tympan above the model
layer.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np
import torch

MAX_BATCHED_SECONDS = 60.0  # longer files are embedded alone: batch memory stays bounded
HEAR_FUNCTIONS = ("load_model", "get_timestamp_embeddings", "get_scene_embeddings")
HEAR_ATTRIBUTES = ("sample_rate", "timestamp_embedding_size", "scene_embedding_size")


class UsageError(Exception):
    """A bad command line or environment: reported in one line, without a traceback, exit code 2."""


def import_hear_module(name: str) -> ModuleType:
    """Import a HEAR module by name; UsageError when it is missing or lacks the HEAR functions."""
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
            raise UsageError(
                f"no module named {name!r}: --module takes an importable HEAR module, "
                "e.g. tympan or hearbaseline.naive"
            ) from None
        raise UsageError(f"module {name!r} cannot be imported: {e}") from None
    missing = [f for f in HEAR_FUNCTIONS if not callable(getattr(module, f, None))]
    if missing:
        raise UsageError(f"module {name!r} is not a HEAR module: it has no {', '.join(missing)}")
    return module


def check_device(device: str) -> torch.device:
    """`device` as a torch.device that can hold a tensor here; UsageError naming it otherwise."""
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:  # CUDA missing raises AssertionError
        raise UsageError(f"--device {device!r} cannot be used: {e}") from None
    return torch.device(device)


def load_hear_model(module: ModuleType, model_path: str, device: str | torch.device):
    """`module.load_model(model_path)` (or `load_model()` for ""), on `device`, in eval mode.

    eval(): an embedding must not depend on dropout or batch statistics.
    Raises UsageError in one line when the module's loader fails (a missing, truncated or
    corrupt --model file, missing weights): a foreign module's loader may raise anything, and
    for a tool it is the command line or the environment that is wrong, not the run.
    """
    try:
        model = module.load_model(model_path) if model_path else module.load_model()
        if isinstance(model, torch.nn.Module):
            model.to(device).eval()
    except Exception as e:
        given = f"--model {model_path}" if model_path else "its default weights (no --model)"
        reason = " ".join(f"{type(e).__name__}: {e}".split())  # one line
        fix = "check the file, or give another --model" if model_path else "check the module's installation"
        raise UsageError(f"{module.__name__}.load_model could not load {given}: {reason}; {fix}") from None
    return model


def embed_batch(
    module: ModuleType, model, device: torch.device, audios: list[np.ndarray], scene: bool = True
) -> list[dict[str, np.ndarray]]:
    """Embed equal-length clips, each (n_samples,) float32, in one call of each HEAR function.

    Returns per clip {"embeddings": (n_timestamps, D) float32, "timestamps": (n_timestamps,)
    float32 ms, "scene": (D_scene,) float32}; without "scene" (get_scene_embeddings not
    called: for a grid model it is a second pass over the audio) when scene is False.
    Raises ValueError when the module's outputs do not have the HEAR shapes.
    """
    audio = torch.from_numpy(np.stack(audios)).to(device)
    emb, ts = module.get_timestamp_embeddings(audio, model)
    emb, ts = (t.detach().cpu().numpy().astype(np.float32, copy=False) for t in (emb, ts))
    n = len(audios)
    if emb.ndim != 3 or emb.shape[0] != n or ts.shape != emb.shape[:2]:
        raise ValueError(
            f"for {n} sounds the module returned embeddings {emb.shape}, timestamps {ts.shape}; "
            "HEAR needs (n, T, D), (n, T)"
        )
    outputs = [{"embeddings": emb[i], "timestamps": ts[i]} for i in range(n)]
    if scene:
        pooled = module.get_scene_embeddings(audio, model).detach().cpu().numpy().astype(np.float32, copy=False)
        if pooled.ndim != 2 or pooled.shape[0] != n:
            raise ValueError(f"for {n} sounds the module returned scene {pooled.shape}; HEAR needs (n, D_scene)")
        for out, row in zip(outputs, pooled):
            out["scene"] = row
    return outputs


def format_duration(seconds: float) -> str:
    """A duration for people: seconds, minutes or hours."""
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"

"""tympan.train.teachers: the experts whose frames `tympan train targets` stores, as one HEAR module.

    model = tympan.train.teachers.load_model("crepe,fcpe,aisfx-local-pc32")   # the default set
    emb, ts = tympan.train.teachers.get_timestamp_embeddings(audio, model)     # (n, T, 800), (n, T) ms

One HEAR module for several teachers, so that the corpus pipeline (tympan.corpus) decodes each
clip once and runs every teacher on it in one pass. A teacher is a block of tympan.fusion
(fusion.BLOCKS: crepe is CREPE tiny's 256-d embedding, fcpe FCPE's 512-d hidden state,
aisfx-local aisfx's 512-d local view, ...), on tympan's grid (frame k centred on k * 20 ms).
The timestamp embedding is the teachers' frames concatenated in the order named;
`model.widths` gives each teacher's width. A reduced block (aisfx-local-pc32) is the fusion's
own projection: the local view centred by the fusion constants' mean and projected on their
first 32 principal axes (weights/fusion-v0.pt), NOT scaled: the targets are the fusion's
coordinates, and a student's loss sets its own weights. The scene embedding (GridModel's mean
and std over frames) exists for the HEAR API only; `tympan train targets` never computes it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tympan import fusion
from tympan.checksum import state_dict_sha256
from tympan.experts import cache
from tympan.model import GridModel, WeightsError

DEFAULT_TEACHERS: tuple[str, ...] = ("crepe", "fcpe", "aisfx-local-pc32")

__all__ = ["DEFAULT_TEACHERS", "Teachers", "get_scene_embeddings", "get_timestamp_embeddings", "load_model"]


class Teachers(GridModel):
    """Several grid models' frames side by side. blocks: name -> module with chunks(sound);
    projections: name -> (mean (D,), axes (D, rank)) for the reduced blocks."""

    def __init__(self, blocks: dict[str, torch.nn.Module], projections: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.blocks = torch.nn.ModuleDict(blocks)
        self.names = list(blocks)
        self.reduced = list(projections)
        for name, (mean, axes) in projections.items():
            self.register_buffer(f"mean_{_attr(name)}", mean.float().clone())
            self.register_buffer(f"axes_{_attr(name)}", axes.float().clone())
        self.widths = {
            n: projections[n][1].shape[1] if n in projections else int(blocks[n].timestamp_embedding_size)
            for n in self.names
        }
        self.timestamp_embedding_size = sum(self.widths.values())
        self.scene_embedding_size = 2 * self.timestamp_embedding_size

    def _frames(self, name: str, sound: torch.Tensor) -> torch.Tensor:
        x = torch.cat(list(self.blocks[name].chunks(sound)))
        if name in self.reduced:
            x = (x - getattr(self, f"mean_{_attr(name)}")) @ getattr(self, f"axes_{_attr(name)}")
        return x

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) -> one chunk (n_frames, sum of widths): each teacher's whole frames.
        Whole clips, not chunks: training clips are 10 s (a 20-minute clip holds 60001 x 800
        float32 frames, 190 MB)."""
        yield torch.cat([self._frames(name, sound) for name in self.names], dim=1)


def _attr(name: str) -> str:
    return name.replace("-", "_").replace("+", "_")


def check_names(names: list[str]) -> list[str]:
    """`names` if they are distinct fusion blocks; ValueError naming the choices otherwise."""
    unknown = [n for n in names if n not in fusion.BLOCKS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"teachers {','.join(names)!r}: give distinct names among {','.join(sorted(fusion.BLOCKS))}")
    return names


def load_model(model_file_path: str = "") -> Teachers:
    """The teachers named in `model_file_path`, comma-separated (default: DEFAULT_TEACHERS),
    from the experts' cache, in eval mode. Raises ValueError for an unknown name,
    ExpertWeightsMissing (naming `tympan experts fetch`) when weights are absent, WeightsError
    when a reduced block's constants were measured with other expert weights."""
    names = check_names([n.strip() for n in model_file_path.split(",")] if model_file_path else list(DEFAULT_TEACHERS))
    states = {key: cache.load_state_dict(key) for n in names for key in fusion.BLOCKS[n].keys}
    projections = {}
    reduced = [n for n in names if fusion.BLOCKS[n].rank]
    if reduced:
        stats = fusion.read_stats()
        for name in reduced:
            for key in fusion.BLOCKS[name].keys:
                if state_dict_sha256(states[key]) != stats["expert_sha256"][key]:
                    raise WeightsError(
                        f"expert weights {key!r} are not those the fusion's principal axes were measured with; "
                        "fetch the pinned weights again: tympan experts fetch"
                    )
            block = stats["blocks"][name]
            projections[name] = (block["timestamp"][0], block["axes"][0])
    return Teachers({n: fusion.BLOCKS[n].build(states) for n in names}, projections).eval()


def get_timestamp_embeddings(audio, model: Teachers) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) at 16 kHz -> embeddings (n_sounds, n_frames, sum of widths)
    float32 and timestamps (n_sounds, n_frames) ms, n_frames = n_samples // 320 + 1."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio, model: Teachers) -> torch.Tensor:
    """audio (n_sounds, n_samples) -> (n_sounds, 2 x sum of widths): mean and std over frames."""
    return model.scene_embeddings(audio)

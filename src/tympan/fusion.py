"""tympan.fusion: tympan v0 and the pretrained experts on one 20 ms grid, as one HEAR module.

    tympan experts fetch                          # once: the experts' weights into the cache
    tympan validate tympan.fusion
    tympan experts pack --out fusion.pt [--blocks v0,crepe,...]   # one self-contained file
    tympan evaluate tympan.fusion --model fusion.pt --tasks DIR --out OUT

Blocks (BLOCKS): "v0" (tympan's own 301-d features) and one block per expert output
(tympan.experts.*). Every block yields frames on tympan's grid (frame k centred at k * 20 ms),
so fusing is a concatenation frame by frame; each block's scene embedding is its own design
(v0: mean + std; resemblyzer: its utterance embedding; ...), concatenated the same way.

Scaling, so that no block dominates the downstream model by its size or its variance alone:
each dimension is centred on its mean over tympan's calibration audio (train/v0.py: 96
generated clips of noise, tones, bursts, clicks, chirps and silence at -60..0 dB), then
block b is multiplied by one number, sqrt(D / n) / sigma_b, where sigma_b^2 is the block's
total variance on that audio (the sum of its dimensions' variances), n the number of blocks
and D their total width. On the calibration audio every block therefore has the same total
variance, D / n, whether it has 256 or 1024 dimensions, and the whole embedding unit
variance per dimension on average: the downstream MLP's fixed learning rates assume inputs
of about unit scale. Within a block the dimensions keep the expert's own relative scales, so
that dimensions an expert barely uses do not weigh as much as its main ones (as they would if
every dimension were standardised). The constants are computed by `python -m
tympan.train.fusion` into weights/fusion-v0.pt (shipped; CC BY 4.0), which also records the
SHA-256 of every expert state_dict they were measured with: loading them beside other
weights is an error. docs/experts.md has the measurements behind these choices.

Reduced blocks (Block.rank > 0): a block's timestamp frames can be reduced to their first
`rank` principal axes on the same calibration audio (centred, projected on the axes, then
scaled whole like any block; the axes are measured with the other constants). Its scene
embedding is not reduced.

DEFAULT_BLOCKS (v0, crepe, fcpe, aisfx-local-pc32) was chosen on the full offline suite; the
other blocks stay available (docs/experts.md compares them). "aisfx-local" reads aisfx
locally (the network's last feature map, a 186 ms column per frame, in one pass over the
clip) instead of aisfx's HEAR timestamps (a 2.35 s block every 220 ms); its scene embedding
is aisfx's own. The default keeps that view's first 32 principal axes in the timestamps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tympan.experts import cache
from tympan.io import atomic_write
from tympan.checksum import sha256_file, state_dict_sha256
from tympan.model import V0_WEIGHTS, GridModel, WeightsError, load_weights, pool_mean_std, verify_archive

__all__ = ["BLOCKS", "Fusion", "get_scene_embeddings", "get_timestamp_embeddings", "load_model", "pack"]

STATS_FILE = Path(__file__).parent / "weights" / "fusion-v0.pt"
STATS_FORMAT = "tympan-fusion-stats/1"
PACK_FORMAT = "tympan-fusion/1"
STD_FLOOR = 1e-3  # as train/v0.py: a block that barely moves is not amplified into noise
SALIENCE_BINS = 360  # the pitch experts' salience (crepe.PITCH_BINS, fcpe's 360 bins)


@dataclass(frozen=True)
class Block:
    """One fused block. keys: the expert cache keys it needs; build(states by key) -> a module
    with chunks(sound) -> (n_i, width) and scene(sound) -> (scene_width,)."""

    name: str
    keys: tuple[str, ...]
    build: Callable[[dict[str, dict[str, torch.Tensor]]], torch.nn.Module]
    rank: int = 0  # > 0: timestamp frames reduced to their first `rank` principal axes (see above)


class WithSalience(torch.nn.Module):
    """A pitch expert's embedding and its 360-bin pitch salience as one block: frames
    (n_i, D + 360); scene: mean and std of both over frames."""

    def __init__(self, expert: torch.nn.Module):
        super().__init__()
        self.expert = expert
        self.timestamp_embedding_size = expert.timestamp_embedding_size + SALIENCE_BINS
        self.scene_embedding_size = 2 * self.timestamp_embedding_size

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        for emb, sal in self.expert.chunks(sound, salience=True):
            yield torch.cat([emb, sal], dim=1)

    def scene(self, sound: torch.Tensor) -> torch.Tensor:
        return pool_mean_std(self.chunks(sound))


def _v0(states: dict) -> torch.nn.Module:
    return load_weights(V0_WEIGHTS)


def _crepe(states: dict) -> torch.nn.Module:
    from tympan.experts import crepe

    return crepe.Crepe(states["crepe-tiny"], "crepe-tiny")


def _fcpe(states: dict) -> torch.nn.Module:
    from tympan.experts import fcpe

    return fcpe.FCPE(fcpe.FCPENet.from_state_dict(states["fcpe"]))


def _resemblyzer(states: dict) -> torch.nn.Module:
    from tympan.experts import resemblyzer

    return resemblyzer.from_state_dict(states["resemblyzer"])


def _aisfx(states: dict) -> torch.nn.Module:
    from tympan.experts import aisfx

    return aisfx.from_state_dict(states["aisfx"])


def _aisfx_local(states: dict) -> torch.nn.Module:
    from tympan.experts import aisfx

    return aisfx.from_state_dict(states["aisfx"], aisfx.AisfxLocal)


BLOCKS: dict[str, Block] = {
    b.name: b
    for b in (
        Block("v0", (), _v0),
        Block("crepe", ("crepe-tiny",), _crepe),
        Block("crepe+salience", ("crepe-tiny",), lambda states: WithSalience(_crepe(states))),
        Block("fcpe", ("fcpe",), _fcpe),
        Block("fcpe+salience", ("fcpe",), lambda states: WithSalience(_fcpe(states))),
        Block("resemblyzer", ("resemblyzer",), _resemblyzer),
        Block("aisfx", ("aisfx",), _aisfx),
        Block("aisfx-local", ("aisfx",), _aisfx_local),
        Block("aisfx-local-pc8", ("aisfx",), _aisfx_local, rank=8),
        Block("aisfx-local-pc32", ("aisfx",), _aisfx_local, rank=32),
    )
}
DEFAULT_BLOCKS: tuple[str, ...] = ("v0", "crepe", "fcpe", "aisfx-local-pc32")


def _zip_chunks(streams: list[Iterator[torch.Tensor]]) -> Iterator[list[torch.Tensor]]:
    """Consecutive frame chunks of several streams cut to equal lengths: yields [(m, d_b) per stream]."""
    pending: list[torch.Tensor | None] = [None] * len(streams)
    while True:
        for i, stream in enumerate(streams):
            while pending[i] is None or pending[i].shape[0] == 0:
                pending[i] = next(stream, None)
                if pending[i] is None:
                    break
        ended = [p is None for p in pending]
        if all(ended):
            return
        if any(ended):
            raise RuntimeError("fusion blocks gave different numbers of frames for the same sound")
        m = min(p.shape[0] for p in pending)
        yield [p[:m] for p in pending]
        pending = [p[m:] for p in pending]


class Fusion(GridModel):
    """The fused HEAR model. blocks: name -> module; stats: per block "timestamp"/"scene"
    (mean, std) per dimension, and for a reduced block "axes": (axes (D, rank), std (rank,)),
    its timestamp frames' principal axes and their standard deviations."""

    def __init__(self, blocks: dict[str, torch.nn.Module], stats: dict[str, dict[str, tuple[torch.Tensor, ...]]]):
        super().__init__()
        self.blocks = torch.nn.ModuleDict(blocks)
        self.names = list(blocks)
        self.reduced = [n for n in self.names if "axes" in stats[n]]
        for name in self.reduced:
            self.register_buffer(f"timestamp_axes_{name.replace('-', '_')}", stats[name]["axes"][0].float().clone())
        for kind in ("timestamp", "scene"):
            # the spread of what a block contributes: its dimensions, or its principal axes
            stds = {n: stats[n][kind][1] for n in self.names}
            if kind == "timestamp":
                stds.update({n: stats[n]["axes"][1] for n in self.reduced})
            # Each block gets a total variance of (total width / number of blocks): equal
            # shares, and unit variance per dimension on average over the whole embedding
            # (the downstream optimiser's step size assumes inputs of about unit scale).
            share = sum(std.numel() for std in stds.values()) / len(self.names)
            for name, std in stds.items():
                sigma = float(std.double().square().sum().sqrt())  # the block's total std
                scale = torch.tensor(math.sqrt(share) / max(sigma, STD_FLOOR))  # one number per block
                self.register_buffer(f"{kind}_mean_{name.replace('-', '_')}", stats[name][kind][0].float().clone())
                self.register_buffer(f"{kind}_scale_{name.replace('-', '_')}", scale.float())
            setattr(self, f"{kind}_embedding_size", sum(std.numel() for std in stds.values()))

    def _stat(self, kind: str, what: str, name: str) -> torch.Tensor:
        return getattr(self, f"{kind}_{what}_{name.replace('-', '_')}")

    def _scaled(self, kind: str, name: str, x: torch.Tensor) -> torch.Tensor:
        x = x - self._stat(kind, "mean", name)
        if kind == "timestamp" and name in self.reduced:
            x = x @ self._stat(kind, "axes", name)
        return x * self._stat(kind, "scale", name)

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        streams = [iter(self.blocks[name].chunks(sound)) for name in self.names]
        for parts in _zip_chunks(streams):
            yield torch.cat([self._scaled("timestamp", n, p) for n, p in zip(self.names, parts, strict=True)], dim=1)

    def scene(self, sound: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._scaled("scene", n, self.blocks[n].scene(sound).float()) for n in self.names])


def _check_blocks(names) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in BLOCKS]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(f"fusion blocks {names}: use distinct names among {sorted(BLOCKS)}")
    return names


def read_stats(path: str | os.PathLike = STATS_FILE) -> dict:
    """The scaling constants written by `python -m tympan.train.fusion` (checked: verify_archive)."""
    rebuild = "rebuild it: python -m tympan.train.fusion"
    verify_archive(path, rebuild, "fusion statistics file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged files
        raise WeightsError(f"cannot read {str(path)!r} ({type(exc).__name__}: {exc}); {rebuild}") from exc
    if not isinstance(payload, dict) or payload.get("format") != STATS_FORMAT:
        raise WeightsError(
            f"{path} is not a fusion statistics file ({STATS_FORMAT}); rebuild it: python -m tympan.train.fusion"
        )
    return payload


def _states(keys, directory=None) -> dict[str, dict[str, torch.Tensor]]:
    return {key: cache.load_state_dict(key, directory) for key in keys}


def _build(names: list[str], states: dict[str, dict[str, torch.Tensor]], stats: dict) -> Fusion:
    for name in names:
        if name not in stats["blocks"]:
            raise WeightsError(f"no scaling constants for block {name!r}; rebuild them: python -m tympan.train.fusion")
        for key in BLOCKS[name].keys:
            want = stats["expert_sha256"][key]
            got = state_dict_sha256(states[key])
            if got != want:
                raise WeightsError(
                    f"expert weights {key!r} hash to {got[:16]}..., but the fusion constants were measured with "
                    f"{want[:16]}...; fetch the pinned weights again (tympan experts fetch) or rebuild the constants"
                )
    blocks = {name: BLOCKS[name].build(states) for name in names}
    for name, block in blocks.items():
        _check_widths(name, block, stats["blocks"][name])
    return Fusion(blocks, {name: stats["blocks"][name] for name in names}).eval()


def _check_widths(name: str, block: torch.nn.Module, stats: dict) -> None:
    """The block's scaling constants fit what its module yields: (mean, std) of timestamp_embedding_size
    and of scene_embedding_size, and a reduced block's axes (timestamp_embedding_size, rank)."""
    expected = {
        "timestamp": [(block.timestamp_embedding_size,)] * 2,
        "scene": [(block.scene_embedding_size,)] * 2,
    }
    if BLOCKS[name].rank:
        expected["axes"] = [(block.timestamp_embedding_size, BLOCKS[name].rank), (BLOCKS[name].rank,)]
    got = {
        kind: [tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in stats.get(kind, ())]
        for kind in expected
    }
    if got != expected:
        raise WeightsError(
            f"the scaling constants of block {name!r} have shapes {got}, but its module needs {expected}; "
            "rebuild them: python -m tympan.train.fusion"
        )


def load_model(model_file_path: str = "") -> Fusion:
    """ "" : the default blocks, experts from the cache (`tympan experts fetch`), constants shipped
    in the package. A path: a file written by `tympan experts pack` (self-contained).
    Raises ExpertWeightsMissing (with the fetch command) or WeightsError."""
    if not model_file_path:
        names = list(DEFAULT_BLOCKS)
        states = _states({k for n in names for k in BLOCKS[n].keys})
        return _build(names, states, read_stats())
    path = Path(model_file_path)
    if not path.is_file():
        raise WeightsError(f"fusion file not found: {str(path)!r}; write one with `tympan experts pack --out FILE`")
    again = "write it again with tympan experts pack"
    verify_archive(path, again, "fusion file")  # a flipped bit anywhere in its contents fails a CRC-32
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated files
        raise WeightsError(f"cannot read {str(path)!r} ({type(exc).__name__}); {again}") from exc
    if not isinstance(payload, dict) or payload.get("format") != PACK_FORMAT:
        raise WeightsError(
            f"{str(path)!r} is not a packed fusion file ({PACK_FORMAT}); write one with tympan experts pack"
        )
    try:
        return _build(_check_blocks(payload["blocks"]), payload["states"], payload["stats"])
    except Exception as exc:  # missing fields, wrong types or shapes: the file's contents do not build a fusion
        named = isinstance(exc, WeightsError | ValueError) and exc.args
        detail = " ".join(str(exc.args[0] if named else f"{type(exc).__name__}: {exc}").split())  # one line
        raise WeightsError(f"{str(path)!r} does not hold a usable fusion ({detail}); {again}") from exc


def pack(out: str | os.PathLike, directory: str | os.PathLike | None = None, blocks=None) -> str:
    """Write one file holding the fusion of `blocks` (default DEFAULT_BLOCKS): the experts'
    state_dicts from the cache and the scaling constants. Returns the file's SHA-256."""
    names = _check_blocks(blocks or DEFAULT_BLOCKS)
    states = _states({k for n in names for k in BLOCKS[n].keys}, directory)
    stats = read_stats()
    _build(names, states, stats)  # refuse to pack what would not load
    payload = {"format": PACK_FORMAT, "blocks": names, "states": states, "stats": stats}
    atomic_write(out, lambda f: torch.save(payload, f))
    return sha256_file(out)


def get_timestamp_embeddings(audio: torch.Tensor, model: Fusion) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) at 16 kHz -> embeddings (n_sounds, n_frames, D) float32 and
    timestamps (n_sounds, n_frames) ms, n_frames = n_samples // 320 + 1; D = sum of block widths."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio: torch.Tensor, model: Fusion) -> torch.Tensor:
    """audio (n_sounds, n_samples) -> (n_sounds, model.scene_embedding_size) float32: the blocks'
    scene embeddings, each scaled as described above, concatenated."""
    return model.scene_embeddings(audio)

"""Measure tympan.fusion's scaling constants: per block, per dimension mean and std.

    python -m tympan.train.fusion [--out src/tympan/weights/fusion-v0.pt] [--dir CACHE]

Runs every block of tympan.fusion.BLOCKS (the experts from the cache: `tympan experts fetch`)
over tympan's calibration audio (train/v0.py: 96 generated clips of 4 s, seeded) and records
the mean and standard deviation of each dimension of the timestamp embeddings (over all
frames) and of the scene embeddings (over the clips), with the state_dict SHA-256 of every
expert they were measured with. Fusion centres each dimension on its mean and scales each
block whole by its total standard deviation (fusion.py says why).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tympan import fusion
from tympan.experts import cache
from tympan.io import atomic_write
from tympan.checksum import state_dict_sha256
from tympan.train.v0 import N_CLIPS, SEED, calibration_audio


def _mean_std(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = rows.double()
    return rows.mean(dim=0).float(), rows.std(dim=0, unbiased=False).float()


def principal_axes(rows: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """rows (n, D) -> the first `rank` principal axes of the centred rows, (D, rank), and the
    standard deviation along each, (rank,). Each axis's sign is fixed (its largest component
    positive), so that measuring again gives the same file."""
    rows = rows.double()
    _, s, vh = torch.linalg.svd(rows - rows.mean(dim=0), full_matrices=False)
    axes = vh[:rank].T
    axes = axes * torch.sign(axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)))
    return axes.float(), (s[:rank] / rows.shape[0] ** 0.5).float()


@torch.no_grad()
def measure(directory=None, blocks=None, log=print) -> dict:
    """{"format", "blocks": {name: {"timestamp": (mean, std), "scene": (mean, std)[, "axes": ...]}},
    "expert_sha256": ...}. Blocks built by the same function (aisfx-local and its reduced
    versions) run over the calibration audio once."""
    names = list(blocks or fusion.BLOCKS)
    keys = sorted({k for n in names for k in fusion.BLOCKS[n].keys})
    states = {key: cache.load_state_dict(key, directory) for key in keys}
    expert_sha256 = {key: state_dict_sha256(states[key]) for key in keys}
    audio = calibration_audio()
    outputs = {}  # build function -> (frames, scenes)
    out = {}
    for name in names:
        start = time.perf_counter()
        build = fusion.BLOCKS[name].build
        if build not in outputs:
            block = build(states).eval()
            frames = torch.cat([torch.cat(list(block.chunks(sound))) for sound in audio])
            outputs[build] = frames, torch.stack([block.scene(sound).float() for sound in audio])
        frames, scenes = outputs[build]
        out[name] = {"timestamp": _mean_std(frames), "scene": _mean_std(scenes)}
        if fusion.BLOCKS[name].rank:
            out[name]["axes"] = principal_axes(frames, fusion.BLOCKS[name].rank)
        log(f"{name}: {frames.shape[1]}-d frames, {scenes.shape[1]}-d scenes, {time.perf_counter() - start:.1f} s")
    return {
        "format": fusion.STATS_FORMAT,
        "blocks": out,
        "expert_sha256": expert_sha256,
        "calibration": f"tympan.train.v0.calibration_audio(): {N_CLIPS} clips x 4 s, seed {SEED}",
        "licence": "CC BY 4.0",
    }


def merge(old: dict, new: dict) -> dict:
    """old's constants with new's blocks added or replaced; both must have been measured with
    the same weights of every expert they share."""
    for key in set(old["expert_sha256"]) & set(new["expert_sha256"]):
        if old["expert_sha256"][key] != new["expert_sha256"][key]:
            raise SystemExit(f"expert {key!r} has other weights than the constants kept; measure every block again")
    return {
        **old,
        "blocks": {**old["blocks"], **new["blocks"]},
        "expert_sha256": {**old["expert_sha256"], **new["expert_sha256"]},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(fusion.STATS_FILE))
    parser.add_argument("--dir", default=None, help="experts cache folder")
    parser.add_argument(
        "--block",
        action="append",
        help="measure only these blocks and keep the others' constants from --out (default: all)",
    )
    args = parser.parse_args(argv)
    stats = measure(args.dir, args.block)
    if args.block and Path(args.out).exists():
        stats = merge(fusion.read_stats(args.out), stats)
    atomic_write(args.out, lambda f: torch.save(stats, f))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

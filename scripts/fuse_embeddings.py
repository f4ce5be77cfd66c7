"""Assemble tympan.fusion's embedding folders from its blocks' folders, checked against the module.

    python scripts/fuse_embeddings.py --pack fusion.pt --tasks tasks-full \
        --block v0=baselines-full/tympan-one-fast-seed0/embeddings/tympan \
        --block crepe=baselines-full/tympan.experts.crepe-one-fast-seed0/embeddings/tympan.experts.crepe ... \
        --out baselines-full/tympan.fusion=fusion-one-fast-seed0/embeddings/tympan.fusion [--check 3]
    tympan evaluate tympan.fusion --model fusion.pt --tasks tasks-full --out baselines-full/tympan.fusion=...

Why: the fusion's embedding of a clip is, by construction, the concatenation of its blocks'
HEAR embeddings, each centred and scaled (fusion.py). When every block has already been
embedded over the suite (each expert is also evaluated alone), recomputing all the experts
inside the fusion would double hours of CPU work on this 2-core machine. This script applies
the packed fusion model's own scaling (Fusion._scaled) to the stored block embeddings and
writes the per-file outputs in `tympan evaluate`'s layout, which `tympan evaluate` then
stacks and trains on without embedding again. It is a cache fill, not a second
implementation: for --check files per split and task (chosen with a seeded generator) it runs
tympan.fusion itself on the audio and requires the same numbers (max abs difference printed;
it fails above 1e-5).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from tympan import fusion
from tympan.kit.tasks import list_tasks, read_task

TOLERANCE = 1e-5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pack", required=True, help="file written by tympan experts pack")
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--block", action="append", required=True, help="NAME=embedding folder of that block's module")
    parser.add_argument("--out", required=True, help="OUT/embeddings/tympan.fusion of the evaluate run to fill")
    parser.add_argument("--check", type=int, default=2, help="files per split and task recomputed by tympan.fusion")
    parser.add_argument("--task", action="append", help="only these task folders (default: all)")
    args = parser.parse_args()
    model = fusion.load_model(args.pack)
    sources = dict(b.split("=", 1) for b in args.block)
    if list(sources) != model.names:
        raise SystemExit(f"--block names {list(sources)} must be the packed blocks in order: {model.names}")
    rng = random.Random(0)
    worst = 0.0
    for path in list_tasks(Path(args.tasks)):
        if args.task and path.name not in args.task:
            continue
        task = read_task(path, sample_rate=16000)
        kind = "scene" if task.embedding_type == "scene" else "timestamp"
        out = Path(args.out) / task.name
        first = Path(sources[model.names[0]]) / task.name
        out.mkdir(parents=True, exist_ok=True)
        for name in ["task_metadata.json", "labelvocabulary.csv"] + [f"{s}.json" for s in task.splits]:
            shutil.copyfile(first / name, out / name)
        for split in task.splits:
            (out / split).mkdir(exist_ok=True)
            files = list(task.labels[split])
            for f in files:
                parts = []
                for block in model.names:
                    e = torch.from_numpy(np.load(Path(sources[block]) / task.name / split / f"{f}.embedding.npy"))
                    parts.append(model._scaled(kind, block, e))
                fused = torch.cat(parts, dim=-1).numpy()
                np.save(out / split / f"{f}.embedding.npy", fused)
                for suffix in (".target-labels.json", ".timestamps.json"):
                    src = first / split / f"{f}{suffix}"
                    if src.exists():
                        shutil.copyfile(src, out / split / f"{f}{suffix}")
            for f in rng.sample(files, min(args.check, len(files))):
                audio, _ = sf.read(str(path / "16000" / split / f), dtype="float32")
                x = torch.from_numpy(audio)[None]
                with torch.no_grad():
                    live = (
                        fusion.get_scene_embeddings(x, model)[0]
                        if kind == "scene"
                        else fusion.get_timestamp_embeddings(x, model)[0][0]
                    ).numpy()
                stored = np.load(out / split / f"{f}.embedding.npy")
                diff = float(np.abs(live - stored).max())
                worst = max(worst, diff)
                if live.shape != stored.shape or diff > TOLERANCE:
                    print(f"{task.name}/{split}/{f}: fused from blocks differs from tympan.fusion by {diff}", file=sys.stderr)
                    return 1
        print(f"{task.name}: {sum(len(task.labels[s]) for s in task.splits)} files fused", flush=True)
    print(json.dumps({"checked_max_abs_diff": worst, "tolerance": TOLERANCE}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

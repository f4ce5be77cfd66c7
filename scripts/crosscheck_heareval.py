"""Cross-check `tympan evaluate` against the organisers' predictions runner on the same embeddings.

    python scripts/crosscheck_heareval.py --tasks TASKS_DIR --task SCENE_TASK --task EVENT_TASK \
        --heareval-python /path/to/heareval-venv/bin/python [--module tympan] [--out crosscheck-out] \
        [--grid default|one]

The heareval environment comes from ../shared/peers/heareval-env.sh (Python 3.11, about
3.5 GB; build it outside the repo). For each task: `tympan evaluate` embeds it (the official
on-disk layout) and scores it with our downstream protocol; a copy of the same embedding
folder is then given to `python -m heareval.predictions.runner` (default grid, 8 points,
Lightning, deterministic; with --grid one, `--grid-points 1`, the first of those 8, which is
what `tympan evaluate --grid one` trains), and the two primary test scores are printed side by side with
their absolute difference. The issue's bar: within 0.03. Slow on CPU (the official runner
validates with sed_eval every few epochs on event tasks); no GPU needed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def official_primary(scores: dict, metric: str) -> float:
    """Primary test score from heareval's test.predicted-scores.json (one split or k folds)."""
    if "aggregated_scores" in scores:
        return float(scores["aggregated_scores"][f"test_{metric}_mean"])
    (entry,) = [v for k, v in scores.items() if isinstance(v, dict) and f"test_{metric}" in v]
    return float(entry[f"test_{metric}"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--task", action="append", required=True)
    parser.add_argument("--heareval-python", required=True)
    parser.add_argument("--module", default="tympan")
    parser.add_argument("--out", default="crosscheck-out")
    parser.add_argument("--grid", choices=["default", "one"], default="default",
                        help="default: 8 grid points on both sides; one: the first point only, on both sides")
    args = parser.parse_args()
    grid_points = {"default": "8", "one": "1"}[args.grid]
    out = Path(args.out)
    rows = []
    for task in args.task:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "tympan.cli", "evaluate", args.module, "--tasks", args.tasks, "--task", task,
             "--out", str(out / "tympan"), "--grid", args.grid],
            check=True,
        )
        ours = json.loads((out / "tympan" / "tasks" / f"{task}.json").read_text())
        ours_s = time.perf_counter() - start
        metric = ours["primary_metric"]
        theirs_dir = out / "heareval" / task
        if not (theirs_dir / "test.predicted-scores.json").exists():
            shutil.rmtree(theirs_dir, ignore_errors=True)
            shutil.copytree(out / "tympan" / "embeddings" / args.module / task, theirs_dir)
            start = time.perf_counter()
            subprocess.run(
                [args.heareval_python, "-m", "heareval.predictions.runner", str(theirs_dir), "--grid-points", grid_points],
                check=True,
                env={**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                     "CUDA_VISIBLE_DEVICES": ""},
            )
            (theirs_dir / "crosscheck-seconds.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
        theirs = official_primary(json.loads((theirs_dir / "test.predicted-scores.json").read_text()), metric)
        theirs_s = float((theirs_dir / "crosscheck-seconds.txt").read_text())
        rows.append((task, metric, ours["scores"][metric]["mean"], theirs, ours_s, theirs_s))
    print("| task | metric | tympan evaluate | heareval runner | abs diff | within 0.03 |")
    print("|---|---|---|---|---|---|")
    for task, metric, a, b, _, _ in rows:
        print(f"| {task} | {metric} | {a:.4f} | {b:.4f} | {abs(a - b):.4f} | {'yes' if abs(a - b) <= 0.03 else 'NO'} |")
    return 0 if all(abs(a - b) <= 0.03 for _, _, a, b, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

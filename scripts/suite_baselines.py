"""Baselines on the offline suite: tympan, the naive HEAR baseline and an MFCC reference,
same harness (`tympan evaluate`, one grid and seed for all), then `tympan report`.

    make baselines SUITE=full            # builds the suite and .venv-peers first
    python scripts/suite_baselines.py --tasks tasks-full --out baselines-full \
        --peers-python .venv-peers/bin/python [--docs docs/baselines-full] [--grid one] [--seed 0]

hearbaseline.naive needs librosa < 0.10, so it runs from .venv-peers (which also holds
tympan with its kit extra); the other two run from this interpreter. Each module's run is
resumable (tympan evaluate skips what is done), so the script can be stopped and rerun.
Writes per module OUT/<module>/results.json, then the comparison table and chart to
--docs (report.md, report.png) with the command line recorded at the top of the table.
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

MODULES = ("tympan", "tympan.mfcc", "hearbaseline.naive")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--peers-python", required=True)
    parser.add_argument("--docs", help="folder for report.md and report.png (default: OUT/report)")
    parser.add_argument("--module", action="append", help=f"only these modules (default: {', '.join(MODULES)})")
    parser.add_argument("--grid", default="one", choices=["default", "one", "fast"],
                        help="downstream grid (tympan evaluate --grid); 'one' by default: see docs/baselines-full")
    parser.add_argument("--event-grid", default="fast", choices=["default", "one", "fast"],
                        help="grid of the event tasks ('fast' by default: see docs/baselines-full)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", action="append", help="only these task folders (tympan evaluate --task)")
    parser.add_argument("--model", action="append", default=[],
                        help="MODULE=PATH: the load_model argument of a module (repeatable)")
    args = parser.parse_args()
    out = Path(args.out)
    results = []
    for module in args.module or MODULES:
        python = args.peers_python if module.startswith("hearbaseline") else sys.executable
        start = time.perf_counter()
        model = dict(m.split("=", 1) for m in args.model).get(module, "")
        label = module + (f"={Path(model).stem}" if model else "")
        run_dir = out / f"{label}-{args.grid}-{args.event_grid}-seed{args.seed}"
        cmd = [python, "-m", "tympan.cli", "evaluate", module, "--tasks", args.tasks, "--out", str(run_dir),
               "--grid", args.grid, "--event-grid", args.event_grid, "--seed", str(args.seed)]
        if model:
            cmd += ["--model", model]
        for task in args.task or []:
            cmd += ["--task", task]
        # Embeddings do not depend on the grid or the seed: reuse another run's (hard links).
        if not (run_dir / "embeddings").exists():
            for other in sorted(out.glob(f"{glob.escape(label)}-*/embeddings")):
                run_dir.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-al", str(other), str(run_dir / "embeddings")], check=True)
                break
        print("$", shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", **os.environ})
        print(f"{module}: {time.perf_counter() - start:.0f} s", flush=True)
        results.append(str(run_dir / "results.json"))
    docs = Path(args.docs) if args.docs else out / "report"
    subprocess.run([sys.executable, "-m", "tympan.cli", "report", *results, "--out", str(docs)], check=True)
    table = (docs / "report.md").read_text()
    command = "python " + shlex.join(sys.argv)
    (docs / "report.md").write_text(f"Produced by `{command}` (tympan evaluate, scene tasks grid {args.grid}, event tasks grid {args.event_grid}, seed {args.seed}).\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

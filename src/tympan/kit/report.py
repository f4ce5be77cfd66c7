"""`tympan report RESULTS... --out DIR`: compare modules evaluated by `tympan evaluate`.

Writes DIR/report.md, a table of every task's primary metric (mean ± std over folds) per
module, and DIR/report.png, the same as grouped bars with the std as error bars. Tasks
missing from a module's results show as "-" in the table and as no bar in the chart.
Error rates (lower is better) are marked with a down arrow.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tympan.kit.metrics import LOWER_IS_BETTER


def load(paths: list[str]) -> list[dict]:
    """Read results.json files; ValueError naming a file that is not one."""
    runs = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            data["tasks"], data["module"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} is not a results.json written by tympan evaluate ({type(e).__name__}: {e})") from e
        runs.append(data)
    return runs


def _label(run: dict, runs: list[dict]) -> str:
    """A column name: the module, plus the weights' hash prefix when a module appears twice."""
    same = [r for r in runs if r["module"] == run["module"]]
    return run["module"] if len(same) == 1 else f"{run['module']} ({(run.get('weights_sha256') or '?')[:8]})"


def table(runs: list[dict]) -> str:
    """Markdown: one row per task, one column per run, primary metric mean ± std."""
    tasks = sorted({t for r in runs for t in r["tasks"]})
    names = [_label(r, runs) for r in runs]
    lines = ["| task | metric | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(runs)]
    for task in tasks:
        metric = next(r["tasks"][task]["primary_metric"] for r in runs if task in r["tasks"])
        cells = []
        for r in runs:
            entry = r["tasks"].get(task)
            if entry is None:
                cells.append("-")
                continue
            s = entry["scores"][entry["primary_metric"]]
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}")
        arrow = " ↓" if metric in LOWER_IS_BETTER else ""
        lines.append(f"| {task} | {metric}{arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def chart(runs: list[dict], path: Path) -> None:
    """Grouped bar chart of the primary metrics, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    tasks = sorted({t for r in runs for t in r["tasks"]})
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) * max(1, len(runs) / 2)), 4.5))
    x = np.arange(len(tasks))
    for i, r in enumerate(runs):
        means, stds = [], []
        for task in tasks:
            entry = r["tasks"].get(task)
            s = entry["scores"][entry["primary_metric"]] if entry else {"mean": np.nan, "std": 0.0}
            means.append(s["mean"])
            stds.append(s["std"])
        ax.bar(x + (i - (len(runs) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=_label(r, runs))
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel("primary metric (mean ± std over folds)")
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    try:
        runs = load(args.results)
    except ValueError as e:
        print(f"tympan report: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    (out / "report.md").write_text(text)
    chart(runs, out / "report.png")
    print(text)
    print(f"wrote {out / 'report.md'} and {out / 'report.png'}", file=sys.stderr)
    return 0

"""`tympan report RESULTS... --out DIR`: compare modules evaluated by `tympan evaluate`.

Writes DIR/report.md, a table of every task's primary metric per module, DIR/report.png,
the same as grouped bars with the std as error bars, and DIR/report.html, one self-contained
page with the table, charts, confusion matrices, event timelines and embedding maps
(kit/report_html.py; `--bench FILE` adds benchmarks/long_audio.py's speed and memory rows).
Results of the same module and weights with different seeds are pooled: a cell is the mean
± std over every (seed, fold) score and their count, so a trainvaltest task run with two
seeds shows its seed-to-seed noise. Tasks
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


def _key(run: dict) -> tuple:
    return run["module"], run.get("model_path") or "", run.get("weights_sha256") or ""


def _label(run: dict, runs: list[dict]) -> str:
    """A column name: the module, plus the name of the model it was given (a file's stem, or
    a name such as aisfx's "local"), or the weights' hash prefix when the same module appears
    with different weights."""
    if run.get("model_path"):
        return f"{run['module']}={Path(run['model_path']).stem}"
    if len({_key(r) for r in runs if r["module"] == run["module"]}) == 1:
        return run["module"]
    if run.get("weights_sha256"):
        return f"{run['module']} ({run['weights_sha256'][:8]})"
    return run["module"]  # its default weights, beside the same module given a model argument


def columns(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """(label, runs of that module and weights: one per seed), in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault(_key(r), []).append(r)
    return [(_label(group[0], runs), group) for group in groups.values()]


def pooled(group: list[dict], task: str) -> tuple[float, float, int] | None:
    """Mean, std (ddof 1; 0 for one score) and count of the primary metric over every seed
    and fold of `task` in a column's runs; None when no run has the task."""
    import numpy as np

    values = [
        v
        for r in group
        if task in r["tasks"]
        for v in r["tasks"][task]["scores"][r["tasks"][task]["primary_metric"]]["folds"].values()
    ]
    if not values:
        return None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values)


def table(runs: list[dict]) -> str:
    """Markdown: one row per task, one column per module and weights, mean ± std (n scores)."""
    tasks = sorted({t for r in runs for t in r["tasks"]})
    cols = columns(runs)
    lines = ["| task | metric | " + " | ".join(name for name, _ in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for task in tasks:
        metric = next(r["tasks"][task]["primary_metric"] for r in runs if task in r["tasks"])
        cells = []
        for _, group in cols:
            p = pooled(group, task)
            cells.append("-" if p is None else f"{p[0]:.3f} ± {p[1]:.3f} ({p[2]})")
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
    cols = columns(runs)
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(tasks) * max(1, len(cols) / 2)), 4.5))
    x = np.arange(len(tasks))
    for i, (name, group) in enumerate(cols):
        stats = [pooled(group, task) or (np.nan, 0.0, 0) for task in tasks]
        means, stds = [p[0] for p in stats], [p[1] for p in stats]
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=name)
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel("primary metric (mean ± std over seeds and folds)")
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
    from tympan.kit import report_html

    try:
        bench = report_html.read_bench(args.bench) if getattr(args, "bench", None) else None
    except report_html.BenchError as e:
        print(f"tympan report: error: {e}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(runs)
    (out / "report.md").write_text(text)
    chart(runs, out / "report.png")
    page = report_html.write(runs, args.results, out, bench)
    print(text)
    print(f"wrote {out / 'report.md'}, {out / 'report.png'} and {page}", file=sys.stderr)
    return 0

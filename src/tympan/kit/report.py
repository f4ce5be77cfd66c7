"""`tympan report RESULTS... --out DIR`: compare modules evaluated by `tympan evaluate`.

Writes DIR/report.md, a table of every task's primary metric per module, DIR/report.png,
the same as grouped bars with the std as error bars, and DIR/report.html, one self-contained
page with the table, charts, confusion matrices, event timelines and embedding maps
(kit/report_html.py, whose main() runs this one's first; `--bench FILE` adds
benchmarks/long_audio.py's speed and memory rows).
Tasks missing from a module's results show as "-" in the table and as no bar in the chart.
Error rates (lower is better) are marked with a down arrow. With two columns or more, a
second table gives each column's difference from the first and its size in standard errors
(se = sqrt(s1^2/n1 + s2^2/n2) of the two cells): about 2 se or more is unlikely to be seed
noise, under 1 se is within it.

Pooling. Only runs that differ by their seed alone are pooled into one column: same module,
model argument, weights identity, grid and event grid, and for every task they share the
same task data (the task identity each task result records; for results written before
tympan recorded it, the tasks folder's path). A cell is then the mean ± std over every
(seed, fold) score and their count, so a trainvaltest task run with two seeds shows its
seed-to-seed noise. Runs that differ in anything else get their own columns, and the
report says which and why. The same run given twice (same settings and seed on the same
task data, e.g. one results.json named twice) is refused: its scores would count twice.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tympan.kit.metrics import LOWER_IS_BETTER


class ReportError(ValueError):
    """Results that cannot be reported: not a results.json, or the same run given twice."""


def load(paths: list[str]) -> list[dict]:
    """Read results.json files; ReportError naming a file that is not one. Each run gets
    "results_path": the path it was read from, for messages."""
    runs = []
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
            _check_results(data)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ReportError(
                f"{path} is not a results.json written by tympan evaluate ({type(e).__name__}: {e}); "
                "give the OUT/results.json of a finished evaluate run"
            ) from None
        data["results_path"] = str(path)
        runs.append(data)
    return runs


def _check_results(data) -> None:
    """Raise KeyError, TypeError or ValueError unless `data` has what the report reads."""
    if not isinstance(data, dict):
        raise TypeError(f"the top level is a JSON {type(data).__name__}, not an object")
    if not isinstance(data["module"], str) or not isinstance(data["tasks"], dict):
        raise TypeError("'module' must be a string and 'tasks' an object")
    for name, entry in data["tasks"].items():
        folds = entry["scores"][entry["primary_metric"]]["folds"]
        if not isinstance(folds, dict) or not folds:
            raise ValueError(f"task {name!r} has no fold scores")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in folds.values()):
            raise TypeError(f"task {name!r} has a fold score that is not a number")


def _key(run: dict) -> tuple:
    return run["module"], run.get("model_path") or "", run.get("weights_sha256") or ""


def _settings(run: dict) -> tuple:
    """What must agree, besides each shared task's data, for two runs to be seeds of one."""
    return _key(run) + (run.get("grid"), run.get("event_grid") or run.get("grid"))


def _task_data(run: dict, task: str) -> str:
    """The identity of the data `task` was evaluated on in `run`."""
    provenance = run["tasks"][task].get("provenance") or {}
    return provenance.get("task_identity") or f"{run.get('tasks_dir')}/{task}"


def _name(run: dict) -> str:
    return f"{run.get('results_path', run['module'])} (seed {run.get('seed')})"


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


def _grouped(runs: list[dict]) -> tuple[list[list[dict]], list[str]]:
    """Runs in columns of seeds of one run, in first-seen order, and why runs of the same
    module and weights were put apart; ReportError for the same run given twice."""
    groups: list[list[dict]] = []
    notes: list[str] = []
    for run in runs:
        placed, reasons = False, []
        for group in groups:
            first = group[0]
            if _key(first) != _key(run):
                continue
            if _settings(first) != _settings(run):
                g, e = _settings(first)[3:], _settings(run)[3:]
                reasons.append(f"grid/event grid {g[0]}/{g[1]} in {_name(first)}, {e[0]}/{e[1]} here")
                continue
            data = {t: _task_data(r, t) for r in group for t in r["tasks"]}
            other = sorted(t for t in run["tasks"] if t in data and data[t] != _task_data(run, t))
            if other:
                reasons.append(f"other data for task {other[0]} than in {_name(first)} (another suite or version)")
                continue
            for r in group:
                shared = [t for t in run["tasks"] if t in r["tasks"]]
                if r.get("seed") == run.get("seed") and shared:
                    raise ReportError(
                        f"{_name(run)} and {_name(r)} are the same run (module, weights, grid, seed and data of "
                        f"task {shared[0]}): its scores would count twice; give each run once"
                    )
            group.append(run)
            placed = True
            break
        if not placed:
            groups.append([run])
            if reasons:
                notes.append(f"{_name(run)} is not pooled with the runs before it: " + "; ".join(reasons))
    return groups, notes


def columns(runs: list[dict]) -> list[tuple[str, list[dict]]]:
    """(label, runs that differ by seed alone), in first-seen order; labels are unique.

    Raises ReportError when the same run is given twice."""
    groups, _ = _grouped(runs)
    base = [_label(group[0], runs) for group in groups]
    labels = list(base)
    for i, group in enumerate(groups):
        twins = [k for k, label in enumerate(base) if label == base[i]]
        if len(twins) == 1:
            continue
        # Put apart by settings or task data: the label says by what.
        first, parts = group[0], []
        if len({_settings(groups[k][0])[3:] for k in twins}) > 1:
            grid, event_grid = _settings(first)[3:]
            parts.append(f"grid {grid}" + (f", event grid {event_grid}" if event_grid != grid else ""))
        if len({groups[k][0].get("tasks_dir") for k in twins}) > 1:
            parts.append(f"tasks {first.get('tasks_dir')}")
        labels[i] = f"{base[i]} [{', '.join(parts)}]" if parts else base[i]
    named = list(labels)
    for i in range(len(named)):
        twins = [k for k, label in enumerate(named) if label == named[i]]
        if len(twins) > 1:
            labels[i] = f"{named[i]} #{twins.index(i) + 1}"
    return list(zip(labels, groups))


def separations(runs: list[dict]) -> list[str]:
    """One line per run put apart from earlier runs of the same module and weights: which
    and why (other grid, other task data)."""
    return _grouped(runs)[1]


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


def difference(base: tuple[float, float, int] | None, other: tuple[float, float, int] | None) -> str:
    """A differences-table cell: other's mean minus base's, with its size in standard errors of the
    difference ("+0.031 (1.1 se)"); "-" when either is missing; no se when both have one score."""
    if base is None or other is None:
        return "-"
    delta = other[0] - base[0]
    se = (base[1] ** 2 / base[2] + other[1] ** 2 / other[2]) ** 0.5
    if base[2] < 2 or other[2] < 2:
        return f"{delta:+.3f} (one score: no se)"
    if se == 0:
        return f"{delta:+.3f} (no spread)"
    return f"{delta:+.3f} ({abs(delta) / se:.1f} se)"


def differences(runs: list[dict]) -> str:
    """Markdown: every column but the first minus the first, per task, in standard errors of the
    difference (see `difference`); "" with fewer than two columns."""
    cols = columns(runs)
    if len(cols) < 2:
        return ""
    tasks = sorted({t for r in runs for t in r["tasks"]})
    base_name, base = cols[0]
    names = [f"{name} - {base_name}" for name, _ in cols[1:]]
    lines = ["| task | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for task in tasks:
        first = pooled(base, task)
        lines.append(f"| {task} | " + " | ".join(difference(first, pooled(g, task)) for _, g in cols[1:]) + " |")
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
    """`tympan report`: 0 when written; 2 (one line on stderr) for a file that is not a
    results.json, the same run given twice, or an --out that is not a folder; 130 on Ctrl-C."""
    try:
        runs = load(args.results)
        columns(runs)  # refuses duplicates before anything is written
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ReportError(f"--out {out} is a file; give a folder for report.md and report.png")
        out.mkdir(parents=True, exist_ok=True)
        notes = separations(runs)
        text = table(runs)
        diffs = differences(runs)
        if diffs:
            text += ("\nDifferences from the first column (se: standard error of the difference; about 2 se or "
                     "more is beyond seed noise):\n\n" + diffs)
        if notes:
            text += "\nNot pooled as seeds of one run:\n\n" + "".join(f"- {n}\n" for n in notes)
        (out / "report.md").write_text(text)
        chart(runs, out / "report.png")
    except ReportError as e:
        print(f"tympan report: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tympan report: interrupted", file=sys.stderr)
        return 130
    print(text)
    for n in notes:
        print(f"tympan report: {n}", file=sys.stderr)
    print(f"wrote {out / 'report.md'} and {out / 'report.png'}", file=sys.stderr)
    return 0

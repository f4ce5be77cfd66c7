"""`tympan report ... --out DIR` writes DIR/report.html: one self-contained page to compare modules.

The page opens offline (no network, no script): CSS inline, every figure an inline SVG drawn
by matplotlib (scatter points rasterised inside the SVG). It holds, from the results.json
files given and what `tympan evaluate` left beside them:

- a header: per column the module, model argument, weights SHA-256, seeds, grids, suite and
  its manifest hash, device, date, git revision and package versions;
- the score table: mean ± std (n) of each task's primary metric per column (runs pooled by
  `tympan.kit.report.columns` / `pooled`), the best per task marked, the chance level, and a
  normalised summary: each column's mean over tasks of score / best score on that task;
- a bar chart per task (seed and fold scores as dots) and one overview chart;
- per scene task, each column's test confusion matrix (rows: true label, normalised) and a
  2-D map of its test scene embeddings coloured by label (PCA; t-SNE when the test split has
  at most TSNE_MAX_POINTS rows);
- per event task, one test clip's reference events against each column's decoded events;
- with `--bench FILE`, the speed and memory rows of benchmarks/long_audio.py.

Where it finds them: a run's embeddings are under `<results.json's folder>/embeddings/
<module>/<task>/` (heareval's layout), its test predictions in `<test split>.predictions.pkl`
there (written by `tympan evaluate` since this page exists). Results from older versions, or
copied without their embeddings, give the same page with what is missing left out and said
so, in a "partial report" box at the top and at each figure's place.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import io
import json
import math
import os
import pickle
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tympan.kit import report
from tympan.kit.metrics import LOWER_IS_BETTER
from tympan.kit.report import ReportError, _task_data, columns, pooled

TSNE_MAX_POINTS = 2000  # t-SNE above this many test rows costs minutes on a CPU; PCA only then
TSNE_MIN_POINTS = 5  # below this, t-SNE's perplexity (< n / 3) leaves nothing to show
MAP_MAX_POINTS = 5000  # a larger test split is subsampled (seeded) for the maps
LEGEND_MAX_LABELS = 12  # more labels than this are coloured along a colour scale, without a legend
UNIFORM_CHANCE = {"top1_acc", "pitch_acc"}  # chance = 1 / number of labels


class BenchError(ReportError):
    """A --bench file that holds no rows of benchmarks/long_audio.py."""


@dataclass
class Run:
    """One results.json and where its evaluate output folder is."""

    data: dict
    source: Path

    def emb_dir(self, task: str) -> Path:
        return self.source.parent / "embeddings" / self.data["module"] / task

    def test_splits(self, task: str) -> list[str]:
        entry = self.data["tasks"][task]
        return list(entry["scores"][entry["primary_metric"]]["folds"])


@dataclass
class Notes:
    """What the page could not show, and why (listed in the partial-report box): one line per
    column and reason, naming every task it applies to."""

    tasks: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, column: str, why: str, task: str = "") -> str:
        """Record that `why` (a sentence with "{tasks}" where the tasks go) holds for `task` in
        `column`; returns the sentence for this task alone, to show at the figure's place."""
        found = self.tasks.setdefault((column, why), [])
        if task and task not in found:
            found.append(task)
        return f"{column}: " + why.format(tasks=task)

    @property
    def items(self) -> list[str]:
        return [f"{column}: " + why.format(tasks=", ".join(tasks)) for (column, why), tasks in self.tasks.items()]


# ---------------------------------------------------------------- reading what evaluate left


def read_bench(path: str | os.PathLike) -> list[dict]:
    """Rows of benchmarks/long_audio.py from its output: its final JSON list, its per-module JSON
    lines, or a file holding either (the printed table around them is skipped)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise BenchError(f"--bench {path}: cannot read it ({e.strerror})") from e
    try:
        found = json.loads(text)
    except json.JSONDecodeError:
        found = None
        objects = []
        for line in text.splitlines():
            line = line.strip()
            if line[:1] not in "[{" or not line:
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, list):
                found = value  # the final list holds every row
            else:
                objects.append(value)
        found = found if found is not None else objects
    rows = found if isinstance(found, list) else [found]
    need = {"module", "audio_s", "timestamp_s", "scene_s", "peak_rss_mb"}
    rows = [r for r in rows if isinstance(r, dict) and need <= set(r)]
    if not rows:
        raise BenchError(
            f"--bench {path}: no rows of benchmarks/long_audio.py (JSON objects with {sorted(need)}); "
            "pass the file its output was saved to"
        )
    return rows


def _vocabulary(run: Run, task: str) -> list[str] | None:
    """The task's labels in vocabulary order, from the embeddings folder or the task folder."""
    for folder in (run.emb_dir(task), Path(run.data.get("tasks_dir") or "/nonexistent") / task):
        try:
            with open(folder / "labelvocabulary.csv", newline="") as f:
                return [row["label"] for row in csv.DictReader(f)]
        except (OSError, KeyError, csv.Error):
            continue
    return None


def _predictions(run: Run, task: str) -> list[dict] | None:
    """Every test split's kept predictions, or None when any is missing or unreadable."""
    kept = []
    for split in run.test_splits(task):
        try:
            with open(run.emb_dir(task) / f"{split}.predictions.pkl", "rb") as f:
                kept.append(pickle.load(f))
        except (OSError, pickle.UnpicklingError, EOFError):
            return None
    return kept


def _test_embeddings(run: Run, task: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Test scene embeddings (n, dim) float32 and each row's first label (n,), or None."""
    xs, labels = [], []
    for split in run.test_splits(task):
        folder = run.emb_dir(task)
        try:
            rows, dim = json.loads((folder / f"{split}.embedding-dimensions.json").read_text())
            x = np.memmap(folder / f"{split}.embeddings.npy", dtype=np.float32, mode="r", shape=(rows, dim))
            with open(folder / f"{split}.target-labels.pkl", "rb") as f:
                target = pickle.load(f)
        except (OSError, ValueError, pickle.UnpicklingError, EOFError):
            return None
        xs.append(np.array(x))
        labels += [row[0] if row else "" for row in target]
    return np.concatenate(xs), np.array(labels)


def suite_identity(data: dict) -> tuple[str, str | None]:
    """(suite name, data hash or None). The name is the tasks' common suffix ("-full"), else
    the tasks folder's name; the hash, of every task's recorded identity (kit.tasks.task_identity,
    in each task result's provenance), is None for results that record none (older versions)."""
    suffixes = {t.rsplit("-", 1)[-1] for t in data.get("tasks", {}) if "-" in t}
    name = suffixes.pop() if len(suffixes) == 1 else Path(data.get("tasks_dir") or "unknown").name
    identities = {t: (e.get("provenance") or {}).get("task_identity") for t, e in data.get("tasks", {}).items()}
    if not identities or None in identities.values():
        return name, None
    text = "\n".join(f"{t} {identities[t]}" for t in sorted(identities))
    return name, hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------- figures (matplotlib)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "tympan-report", "font.size": 9})
    return plt


def _svg(fig) -> str:
    """The figure as an inline <svg> element (XML prologue dropped), and closed."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _task_chart(cols: list[tuple[str, list[dict]]], task: str, metric: str) -> str:
    """Bars: mean per column with the std as error bar; dots: every seed and fold score."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(3.2, 0.7 * len(cols) + 1.5), 2.6))
    for i, (_, group) in enumerate(cols):
        p = pooled(group, task)
        if p is None:
            continue
        ax.bar(i, p[0], 0.6, yerr=p[1], capsize=3, color=f"C{i % 10}", alpha=0.8)
        values = [v for r in group if task in r["tasks"] for v in _fold_scores(r, task)]
        ax.plot(np.full(len(values), i) + np.linspace(-0.12, 0.12, len(values)), values, "k.", ms=3)
    ax.set_xticks(range(len(cols)), [name for name, _ in cols], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(metric + (" (lower is better)" if metric in LOWER_IS_BETTER else ""))
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(task, fontsize=9)
    return _svg(fig)


def _fold_scores(run: dict, task: str) -> list[float]:
    entry = run["tasks"][task]
    return list(entry["scores"][entry["primary_metric"]]["folds"].values())


def _overview_chart(cols, tasks: list[str], best: dict[str, float | None]) -> str:
    """Grouped bars of every column's score / the best column's score, per task."""
    plt = _pyplot()
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(max(6.5, 0.9 * len(tasks) * max(1, len(cols) / 2.5)), 3.4))
    x = np.arange(len(tasks))
    for i, (name, group) in enumerate(cols):
        values = [_normalised(pooled(group, t), best[t], _metric(cols, t)) for t in tasks]
        ax.bar(x + (i - (len(cols) - 1) / 2) * width, [np.nan if v is None else v for v in values], width,
               label=name, color=f"C{i % 10}")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xticks(x, tasks, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("score / best score on the task")
    ax.legend(fontsize=7, ncols=min(3, len(cols)), loc="lower left", framealpha=0.9)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _confusion_chart(kept: list[dict], title: str) -> str:
    """Test confusion matrix over every test split, rows normalised to the true label's count."""
    from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

    plt = _pyplot()
    vocab = kept[0]["vocabulary"]
    true = np.concatenate([k["targets"].argmax(axis=1) for k in kept])
    pred = np.concatenate([k["scores"].argmax(axis=1) for k in kept])
    present = np.union1d(true, pred)  # labels never seen nor predicted in test are left out
    matrix = confusion_matrix(true, pred, labels=present, normalize="true")
    n = len(present)
    size = min(9.0, max(2.8, 0.28 * n + 1.8))  # inches: 2 labels stay small, 88 pitches fit
    fig, ax = plt.subplots(figsize=(size, size))
    display = ConfusionMatrixDisplay(matrix, display_labels=[vocab[i] for i in present])
    display.plot(ax=ax, include_values=n <= LEGEND_MAX_LABELS, values_format=".2f", cmap="Blues",
                 colorbar=False, xticks_rotation="vertical")
    ax.images[0].set_clim(0, 1)
    if n > 30:  # keep every k-th tick readable
        step = math.ceil(n / 30)
        ax.set_xticks(range(0, n, step), [vocab[i] for i in present[::step]], fontsize=6, rotation=90)
        ax.set_yticks(range(0, n, step), [vocab[i] for i in present[::step]], fontsize=6)
    ax.set_title(f"{title}: accuracy {np.mean(true == pred):.3f} on {len(true)} clips", fontsize=9)
    return _svg(fig)


def _event_timeline(file: str, reference: list, by_column: list[tuple[str, list]]) -> str:
    """Stacked piano-roll rows: the clip's reference events, then each column's decoded ones."""
    plt = _pyplot()
    sources = [("reference", reference)] + by_column
    labels = sorted({e[0] for _, evs in sources for e in evs}, key=_label_order)
    row = {label: i for i, label in enumerate(labels)}
    height = min(2.0, max(0.9, 0.06 * len(labels) + 0.6))  # inches per row: 88 pitches stay readable
    fig, axes = plt.subplots(len(sources), 1, figsize=(8, height * len(sources)), sharex=True, squeeze=False)
    end = max([e[2] for _, evs in sources for e in evs] + [1.0]) / 1000
    for ax, (name, events) in zip(axes[:, 0], sources):
        for label, start, stop in events:
            ax.broken_barh([(start / 1000, max(stop - start, 10) / 1000)], (row[label] - 0.4, 0.8),
                           color=f"C{row[label] % 10}")
        ax.set_ylim(-0.6, len(labels) - 0.4)
        step = max(1, math.ceil(len(labels) / 12))
        ax.set_yticks(range(0, len(labels), step), labels[::step], fontsize=6)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=7)
        ax.grid(axis="x", alpha=0.3)
        ax.set_xlim(0, end * 1.02)
    axes[-1, 0].set_xlabel(f"seconds from the start of {file}")
    return _svg(fig)


def _label_order(label: str):
    """Numeric labels (MIDI pitches) in number order, others alphabetically after them."""
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


def _with_tsne(n_rows: int) -> bool:
    return TSNE_MIN_POINTS <= n_rows <= TSNE_MAX_POINTS


def _embedding_map(x: np.ndarray, labels: np.ndarray, title: str) -> str:
    """PCA of the standardised embeddings (and t-SNE when small enough), coloured by label."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    plt = _pyplot()
    rng = np.random.default_rng(0)
    if len(x) > MAP_MAX_POINTS:
        keep = np.sort(rng.choice(len(x), MAP_MAX_POINTS, replace=False))
        x, labels = x[keep], labels[keep]
    z = StandardScaler().fit_transform(x.astype(np.float64))
    views = [("PCA", PCA(n_components=2, random_state=0).fit_transform(z))]
    if _with_tsne(len(x)):
        perplexity = min(30.0, (len(x) - 1) / 3)
        views.append(("t-SNE", TSNE(2, perplexity=perplexity, init="pca", random_state=0).fit_transform(z)))
    names = sorted(set(labels.tolist()), key=_label_order)
    index = np.array([names.index(label) for label in labels])
    fig, axes = plt.subplots(1, len(views), figsize=(3.6 * len(views) + 1.4, 3.4), squeeze=False)
    for ax, (name, xy) in zip(axes[0], views):
        if len(names) <= LEGEND_MAX_LABELS:
            for i, label in enumerate(names):
                sel = index == i
                ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=f"C{i % 10}", label=label, rasterized=True)
        else:
            points = ax.scatter(xy[:, 0], xy[:, 1], s=6, c=index, cmap="viridis", rasterized=True)
        ax.set_title(f"{title}: {name}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(names) <= LEGEND_MAX_LABELS:
        axes[0, -1].legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        bar = fig.colorbar(points, ax=axes[0, -1])
        step = max(1, math.ceil(len(names) / 12))
        bar.set_ticks(range(0, len(names), step), labels=names[::step], fontsize=6)
    return _svg(fig)


# ---------------------------------------------------------------- the page


def _metric(cols, task: str) -> str:
    return next(r["tasks"][task]["primary_metric"] for _, g in cols for r in g if task in r["tasks"])


def _best(cols, task: str) -> float | None:
    means = [p[0] for _, g in cols if (p := pooled(g, task)) is not None and math.isfinite(p[0])]
    if not means:
        return None
    return min(means) if _metric(cols, task) in LOWER_IS_BETTER else max(means)


def _normalised(p, best: float | None, metric: str) -> float | None:
    """score / best (best / score for error rates): 1 for the best column, None when undefined."""
    if p is None or best is None or not math.isfinite(p[0]):
        return None
    num, den = (best, p[0]) if metric in LOWER_IS_BETTER else (p[0], best)
    return num / den if den > 0 else None


def _chance(metric: str, vocab: list[str] | None, kept: list[dict] | None) -> float | None:
    """The score of guessing without listening: a uniform guess for accuracies, 0.5 for ROC AUC,
    0 for d', the label frequency for mAP; None where it has no closed form (event metrics)."""
    if metric in UNIFORM_CHANCE and vocab:
        return 1 / len(vocab)
    if metric == "chroma_acc" and vocab:
        return 1 / len({int(v) % 12 for v in vocab})
    if metric == "aucroc":
        return 0.5
    if metric == "d_prime":
        return 0.0
    if metric == "mAP" and kept:
        return float(np.concatenate([k["targets"] for k in kept]).mean(axis=0).mean())
    return None


def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _header(cols, runs_of: dict[int, Run], notes: Notes) -> str:
    """Per column: module, model, weights, seeds, grids, suite, device, dates, git, versions."""
    rows = []
    for name, group in cols:
        first = group[0]
        seeds = sorted({r.get("seed") for r in group}, key=str)
        grids = sorted({f"{r.get('grid', '?')} / {r.get('event_grid', r.get('grid', '?'))}" for r in group})
        suites = sorted({f"{n} ({d[:12] if d else 'not recorded'})" for n, d in map(suite_identity, group)})
        dates = sorted({_date(runs_of[id(r)]) for r in group})
        gits = sorted({(r.get("git_revision") or "not recorded")[:12] for r in group})
        versions = first.get("versions") or {}
        version_text = ", ".join(f"{k} {v}" for k, v in versions.items() if v) or "not recorded"
        if not first.get("versions"):
            notes.add(name, "package versions not recorded (results from an older tympan evaluate)")
        sha = first.get("weights_sha256") or "not recorded"
        rows.append(
            f"<tr><th>{_e(name)}</th><td>{_e(first['module'])}</td><td>{_e(first.get('model_path') or '-')}</td>"
            f"<td class=sha title='{_e(sha)}'>{_e(sha[:16])}</td><td>{_e(', '.join(map(str, seeds)))}</td>"
            f"<td>{_e(', '.join(grids))}</td><td>{_e('; '.join(suites))}</td><td>{_e(first.get('device', '-'))}</td>"
            f"<td>{_e(', '.join(dates))}</td><td>{_e(', '.join(gits))}</td><td class=small>{_e(version_text)}</td></tr>"
        )
    return (
        "<table class=meta><tr><th>column</th><th>module</th><th>model</th><th>weights SHA-256</th><th>seeds</th>"
        "<th>grid / event grid</th><th>suite (hash of its task identities)</th><th>device</th><th>date</th><th>git</th>"
        "<th>versions</th></tr>" + "".join(rows) + "</table>"
    )


def _date(run: Run) -> str:
    recorded = run.data.get("date") or run.data.get("finished")
    if recorded:
        return str(recorded)[:10]
    try:
        mtime = run.source.stat().st_mtime
    except OSError:
        return "unknown"
    return dt.datetime.fromtimestamp(mtime, dt.timezone.utc).strftime("%Y-%m-%d") + " (file date)"


def _score_table(cols, tasks: list[str], vocab: dict, kept: dict, best: dict) -> str:
    head = "<tr><th>task</th><th>metric</th><th>chance</th>" + "".join(f"<th>{_e(n)}</th>" for n, _ in cols) + "</tr>"
    body = []
    for task in tasks:
        metric = _metric(cols, task)
        chance = _chance(metric, vocab.get(task), kept.get(task))
        cells = []
        for _, group in cols:
            p = pooled(group, task)
            if p is None:
                cells.append("<td class=missing>–</td>")
                continue
            is_best = best[task] is not None and math.isfinite(p[0]) and p[0] == best[task]
            mark = " class=best title='best on this task'" if is_best else ""
            below = " <span class=chance-mark title='not above chance'>≤ chance</span>" if (
                chance is not None and math.isfinite(p[0]) and
                (p[0] >= chance if metric in LOWER_IS_BETTER else p[0] <= chance)) else ""
            cells.append(f"<td{mark}>{p[0]:.3f} ± {p[1]:.3f} <span class=n>({p[2]})</span>{below}</td>")
        arrow = " ↓" if metric in LOWER_IS_BETTER else ""
        body.append(f"<tr data-task='{_e(task)}'><th>{_e(task)}</th><td>{_e(metric)}{arrow}</td>"
                    f"<td>{_fmt(chance)}</td>" + "".join(cells) + "</tr>")
    summary = []
    for _, group in cols:
        values = [v for t in tasks if (v := _normalised(pooled(group, t), best[t], _metric(cols, t))) is not None]
        summary.append(f"<td>{np.mean(values):.3f} <span class=n>({len(values)} tasks)</span></td>" if values
                       else "<td class=missing>–</td>")
    body.append("<tr class=summary><th>normalised</th><td colspan=2>mean of score / best</td>" + "".join(summary)
                + "</tr>")
    return f"<table class=scores>{head}{''.join(body)}</table>"


def _bench_table(rows: list[dict]) -> str:
    head = ("<tr><th>module</th><th>rate</th><th>audio</th><th>embedding</th><th>timestamp: wall s</th>"
            "<th>× real time</th><th>scene: wall s</th><th>× real time</th><th>peak RSS MB</th><th>threads</th>"
            "<th>torch</th></tr>")
    body = []
    for r in rows:
        shape = r.get("timestamp_shape") or []
        emb = f"{shape[1]} × {shape[2]}" if len(shape) == 3 else "-"
        body.append(
            f"<tr data-bench='{_e(r['module'])}'><th>{_e(r['module'])}</th><td>{_e(r.get('sample_rate', '-'))}</td>"
            f"<td>{r['audio_s'] / 60:.1f} min</td><td>{emb}</td><td>{r['timestamp_s']:.2f}</td>"
            f"<td>{r['audio_s'] / r['timestamp_s']:.0f}</td><td>{r['scene_s']:.2f}</td>"
            f"<td>{r['audio_s'] / r['scene_s']:.0f}</td><td>{r['peak_rss_mb']:.0f}</td>"
            f"<td>{_e(r.get('threads', '-'))}</td><td>{_e(r.get('torch', '-'))}</td></tr>"
        )
    return f"<table class=bench>{head}{''.join(body)}</table>"


def _figure(kind: str, task: str, column: str, svg: str, caption: str) -> str:
    return (f"<figure data-kind='{kind}' data-task='{_e(task)}' data-column='{_e(column)}'>{svg}"
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _missing(kind: str, task: str, column: str, why: str) -> str:
    return f"<p class=missing-figure data-kind='{kind}' data-task='{_e(task)}' data-column='{_e(column)}'>{_e(why)}</p>"


def _first_with(group: list[dict], runs_of: dict[int, Run], task: str, read):
    """The first run of a column (in the order given) for which `read` finds its files."""
    for r in group:
        if task in r["tasks"] and (found := read(runs_of[id(r)], task)) is not None:
            return r, found
    return None, None


def _columns_with(task, cols, runs_of, read):
    """(name, run, what `read` found or None) for each column that ran `task`."""
    for name, group in cols:
        if any(task in r["tasks"] for r in group):
            yield (name, *_first_with(group, runs_of, task, read))


def _scene_section(task, cols, runs_of, notes: Notes) -> str:
    parts = []
    for name, r, kept in _columns_with(task, cols, runs_of, _predictions):
        if kept is None:
            why = notes.add(name, "no test predictions kept for {tasks} (results from an older tympan evaluate, "
                            "or copied without their embeddings folder): confusion matrix left out", task)
            parts.append(_missing("confusion", task, name, why))
        elif kept[0].get("prediction_type") == "multilabel":
            parts.append(_missing("confusion", task, name, f"{name}: {task} is multilabel; no confusion matrix"))
        else:
            splits = ", ".join(k["split"] for k in kept)
            parts.append(_figure("confusion", task, name, _confusion_chart(kept, name),
                                 f"{name}, seed {r.get('seed')}: test confusion ({splits}), each row normalised"))
    for name, r, found in _columns_with(task, cols, runs_of, _test_embeddings):
        if found is None:
            why = notes.add(name, "no test embeddings found for {tasks} beside its results.json: "
                            "embedding map left out", task)
            parts.append(_missing("map", task, name, why))
            continue
        x, labels = found
        method = "PCA and t-SNE" if _with_tsne(len(x)) else f"PCA (t-SNE: {TSNE_MIN_POINTS} to {TSNE_MAX_POINTS} rows)"
        parts.append(_figure("map", task, name, _embedding_map(x, labels, name),
                             f"{name}: {len(x)} test scene embeddings ({x.shape[1]}-d, standardised), {method}"))
    return "".join(parts)


def _event_section(task, cols, runs_of, notes: Notes) -> str:
    columns_found, missing = [], ""
    for name, r, kept in _columns_with(task, cols, runs_of, _predictions):
        if kept is None:
            why = notes.add(name, "no test predictions kept for {tasks} (results from an older tympan evaluate, "
                            "or copied without their embeddings folder): left out of the timeline", task)
            missing += _missing("timeline", task, name, why)
            continue
        events = {f: evs for k in kept for f, evs in k["events"].items()}
        reference = {f: evs for k in kept for f, evs in k["reference"].items()}
        columns_found.append((name, r, events, reference))
    if not columns_found:
        return missing
    reference = columns_found[0][3]
    # The clip with the most reference events, name order breaking ties: a busy one to read.
    clip = min(reference, key=lambda f: (-len(reference[f]), f))
    svg = _event_timeline(clip, reference[clip], [(n, ev.get(clip, [])) for n, _, ev, _ in columns_found])
    seeds = ", ".join(f"{n} seed {r.get('seed')}" for n, r, _, _ in columns_found)
    caption = f"test clip {clip}: {len(reference[clip])} reference events against the decoded ones ({seeds})"
    return _figure("timeline", task, "all", svg, caption) + missing


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:1200px;padding:0 1rem;
color:#1d1d1f}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc}
h3{font-size:1rem;margin:1.2rem 0 .3rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
table.scores td{text-align:right;white-space:nowrap}td.best{font-weight:700;background:#e3f2e1}
td.best::before{content:"★ ";color:#2e7d32}.n{color:#777;font-size:11px}.small{font-size:11px}
.chance-mark{color:#b00020;font-size:11px}tr.summary{background:#f4f4f8}.missing{color:#999}
.sha{font-family:monospace}.partial{border:2px solid #b26a00;background:#fff6e5;padding:.5rem 1rem;margin:1rem 0}
.warn{border:2px solid #b00020;background:#fdecee;padding:.5rem 1rem;margin:1rem 0}
figure{display:inline-block;margin:.4rem;vertical-align:top;max-width:100%}figure svg{max-width:100%;height:auto}
figcaption{font-size:12px;color:#444;max-width:640px}.missing-figure{color:#8a5a00;font-style:italic}
@media print{body{max-width:none;margin:0}h2{break-before:auto}figure,table{break-inside:avoid}}
"""


def render(runs: list[dict], bench: list[dict] | None = None, separations: list[str] | None = None) -> str:
    """The whole page as one HTML string.

    runs: results.json contents as `tympan.kit.report.load` returns them (with "results_path",
    where each was read from), bench: rows from `read_bench` or None, separations: the lines
    of `tympan.kit.report.separations` (runs not pooled as seeds, and why).
    """
    runs_of = {id(r): Run(r, Path(r["results_path"])) for r in runs}
    cols = columns(runs)
    tasks = sorted({t for r in runs for t in r["tasks"]})
    notes = Notes()
    best = {t: _best(cols, t) for t in tasks}
    vocab, kept_any = {}, {}
    for t in tasks:
        for r in runs:
            if t in r["tasks"]:
                vocab[t] = vocab.get(t) or _vocabulary(runs_of[id(r)], t)
                kept_any[t] = kept_any.get(t) or _predictions(runs_of[id(r)], t)
    header = _header(cols, runs_of, notes)
    warn = ""
    mixed = [t for t in tasks if len({_task_data(r, t) for r in runs if t in r["tasks"]}) > 1]
    if mixed:
        suites = sorted({suite_identity(r) for r in runs}, key=str)
        listed = "; ".join(f"{n} ({d[:12] if d else 'not recorded'})" for n, d in suites)
        warn = (f"<div class=warn id=mixed-suites><strong>Results on different data for {len(mixed)} task(s)</strong> "
                f"({_e(', '.join(mixed))}; suites: {_e(listed)}): scores of different task data are not comparable, "
                "even under the same task name.</div>")
    if separations:
        warn += ("<div class=warn id=separations><strong>Not pooled as seeds of one run:</strong><ul>"
                 + "".join(f"<li>{_e(n)}</li>" for n in separations) + "</ul></div>")
    sections = []
    for task in tasks:
        metric = _metric(cols, task)
        kind = next(r["tasks"][task].get("embedding_type", "scene") for r in runs if task in r["tasks"])
        body = _figure("bars", task, "all", _task_chart(cols, task, metric),
                       f"{task}: {metric}, mean ± std over seeds and folds; dots: each score")
        body += (_scene_section if kind == "scene" else _event_section)(task, cols, runs_of, notes)
        sections.append(f"<section id='task-{_e(task)}'><h3>{_e(task)} <span class=n>({kind})</span></h3>{body}"
                        "</section>")
    overview = _figure("overview", "all", "all", _overview_chart(cols, tasks, best),
                       "every task: each column's score divided by the best column's (1 = best; error rates inverted)")
    partial = ""
    if notes.items:
        partial = ("<div class=partial id=partial><strong>Partial report.</strong> Left out:<ul>"
                   + "".join(f"<li>{_e(n)}</li>" for n in notes.items) + "</ul></div>")
    bench_html = f"<h2>Speed and memory</h2>{_bench_table(bench)}" if bench else ""
    names = ", ".join(n for n, _ in cols)
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>tympan report: {_e(names)}</title><style>{CSS}</style></head><body>"
        f"<h1>tympan report</h1><p>{len(cols)} column(s), {len(tasks)} task(s), {len(runs)} results file(s); "
        f"made {generated}. A column pools the runs of one module and weights over seeds.</p>"
        f"{warn}{partial}<h2>Runs</h2>{header}"
        f"<h2>Scores</h2><p>Primary metric per task: mean ± std (number of seed × fold scores); ★ the best "
        "column per task; chance: a uniform guess (1 / labels) for accuracies, 0.5 for ROC AUC, label "
        "frequency for mAP, none for event metrics; normalised: the mean over tasks of score / best score."
        f"</p>{_score_table(cols, tasks, vocab, kept_any, best)}{overview}{bench_html}"
        f"<h2>Per task</h2>{''.join(sections)}</body></html>\n"
    )


def write(runs: list[dict], out: Path, bench: list[dict] | None = None, separations: list[str] | None = None) -> Path:
    """Write `out/report.html` (see `render`); returns its path."""
    path = Path(out) / "report.html"
    path.write_text(render(runs, bench, separations), encoding="utf-8")
    return path


# ---------------------------------------------------------------- a real browser


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    """The path of Debian's chromium; RuntimeError saying how to install it when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError("chromium is not installed: `apt-get install chromium` (make test installs it)")
    return found


def browse(page: Path, screenshot: Path | None = None, width: int = 1280, height: int = 2400,
           timeout: float = 180) -> str:
    """Open `page` in headless chromium, offline; returns the DOM after load (`--dump-dom`) and,
    with `screenshot`, writes a PNG of the first width x height pixels."""
    with tempfile.TemporaryDirectory(prefix="tympan-chromium-") as profile:
        base = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        url = Path(page).resolve().as_uri()
        if screenshot is not None:
            shot = [f"--screenshot={Path(screenshot).resolve()}", f"--window-size={width},{height}"]
            subprocess.run([*base, *shot, url], check=True, capture_output=True, timeout=timeout)
        done = subprocess.run([*base, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=timeout)
    return done.stdout


def main(args) -> int:
    """`tympan report`: report.md and report.png (tympan.kit.report.main), then report.html.

    Exit codes as tympan.kit.report.main's; a --bench file without benchmark rows is a
    usage error (2, one line) found before anything is written."""
    import sys

    try:
        bench = read_bench(args.bench) if getattr(args, "bench", None) else None
    except BenchError as e:
        print(f"tympan report: error: {e}", file=sys.stderr)
        return 2
    code = report.main(args)
    if code != 0:
        return code
    try:
        runs = report.load(args.results)
        page = write(runs, Path(args.out), bench, report.separations(runs))
    except KeyboardInterrupt:
        print("tympan report: interrupted", file=sys.stderr)
        return 130
    print(f"wrote {page}", file=sys.stderr)
    return 0

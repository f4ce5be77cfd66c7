"""`tympan evaluate`: HEAR's evaluation protocol for any HEAR module, on today's Python.

    tympan evaluate MODULE --tasks DIR --out OUT [--model PATH] [--task NAME ...]
                    [--grid default|one|fast] [--event-grid G] [--seed 0] [--device cpu]

For every task folder under DIR (HEAR format, kit/tasks.py):

1. Embed every split with the module, as the organisers' embedding runner does: scene
   tasks through get_scene_embeddings, event tasks through get_timestamp_embeddings, in
   batches of max(1, int(0.7 * 120 / sample_duration * 16000 / sample_rate)) clips (1 when
   clips are untrimmed). The output is the official kit's on-disk layout (HEAR.md section 5)
   under OUT/embeddings/<module>/<task>/, so heareval's predictions runner reads it as its
   own. Resumable: per-file outputs are written atomically, the embedding last, and a file
   whose embedding exists is not recomputed; each split's stacked files are written under
   temporary names and renamed, the dimensions file last, so a killed run never leaves a
   half-written file that a later run would trust.
2. Train the downstream MLP with HEAR's protocol (kit/downstream.py: grid, early stopping,
   k-fold rotation), reshuffling the training batches every epoch, seeded.
3. Score the test split(s) with every metric the task lists (kit/metrics.py); event tasks
   are decoded into events first, with the post-processing (median filter, minimum
   duration) that scores best on the validation split at the best checkpoint, as heareval.

Every selected task is checked whole before anything is embedded (kit/tasks.py: metadata,
splits present and non-empty, metric names known, every audio header's channels, rate and
length), so a bad task stops the run at once with the file named (exit code 2).

Writes OUT/results.json (per task: scores per fold and their mean and std, the primary
metric first; the chosen configuration; timings; plus the module, weights SHA-256, package
versions, git revision, seed, date) and OUT/results.md; each test split's predictions go to
<split>.predictions.pkl beside the embeddings (keep_test_predictions), for `tympan report`.

Reuse and provenance. A task already scored (OUT/tasks/<task>.json) is not redone, and
embeddings already written under OUT/embeddings/<module>/<task>/ are not recomputed, but
only for the same run: each task result records what produced it (module, model argument,
weights identity by tympan.checksum.weights_identity, seed, grid, and the task's identity
by kit.tasks.task_identity), and each embeddings folder its module, weights and task
identity (provenance.json, written before the first embedding). When any of them differs
from this run's, evaluate refuses before doing any work and names the difference and the
fix (another --out, or deleting what it names): it never mixes two runs in one folder and
never deletes a result it did not make in this run. Results and embeddings from an older
tympan that recorded no provenance are refused the same way.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata as importlib_metadata
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from tympan.checksum import weights_identity
from tympan.io import atomic_write, atomic_write_json
from tympan.kit import downstream, metrics
from tympan.kit.hear import UsageError, check_device, import_hear_module, load_hear_model
from tympan.kit.tasks import (
    Task,
    TaskFormatError,
    check_clips,
    data_splits,
    frame_targets,
    list_tasks,
    read_task,
    scene_targets,
    task_identity,
)

# heareval's default post-processing grid for event tasks; a task may replace it through
# evaluation_params["event_postprocessing_grid"].
EVENT_POSTPROCESSING_GRID = {"median_filter_ms": [250], "min_duration": [125, 250]}
EMBEDDING_SEED = 0  # heareval shuffles each split's files with random.Random(0) before stacking
PROVENANCE_FILE = "provenance.json"  # in an embeddings folder: what its embeddings were made from


def batch_size_for(task: Task, sample_rate: int) -> int:
    """Clips per embedding call, by the HEAR kit's formula."""
    if task.sample_duration is None:
        return 1
    return max(1, int(0.7 * (120 / task.sample_duration) * (16000 / sample_rate)))


def embed_task(
    module: ModuleType, model, task: Task, emb_dir: Path, device: torch.device, provenance: dict | None = None
) -> float:
    """Embed every split of `task` into `emb_dir` (heareval's layout); returns seconds spent.

    Files already embedded are skipped; splits already stacked are not stacked again: the
    caller checks first that `emb_dir` holds embeddings of the same module, weights and task
    (check_reuse). provenance: written to emb_dir/provenance.json when the folder has none.
    """
    import soundfile as sf

    start = time.perf_counter()
    emb_dir.mkdir(parents=True, exist_ok=True)
    if provenance is not None and not (emb_dir / PROVENANCE_FILE).exists():
        # Before the first embedding, so that files of an interrupted run are attributed too.
        atomic_write_json(emb_dir / PROVENANCE_FILE, provenance, indent=1)
    for name in ["task_metadata.json", "labelvocabulary.csv"] + [f"{s}.json" for s in task.splits]:
        atomic_write(emb_dir / name, lambda f, src=task.path / name: f.write(src.read_bytes()))
    sample_rate = int(model.sample_rate)
    batch = batch_size_for(task, sample_rate)
    prng = random.Random(EMBEDDING_SEED)  # one generator across splits, as heareval
    for split in task.splits:
        out = emb_dir / split
        out.mkdir(exist_ok=True)
        files = list(task.labels[split])
        todo = [f for f in files if not (out / f"{f}.embedding.npy").exists()]
        for i in range(0, len(todo), batch):
            names = todo[i : i + batch]
            audio = []
            for name in names:
                samples, sr = sf.read(str(task.path / str(sample_rate) / split / name), dtype="float32")
                if sr != sample_rate:
                    raise TaskFormatError(task.path / str(sample_rate) / split / name, "sample rate", f"{sr} Hz, expected {sample_rate} Hz")
                audio.append(samples)
            x = torch.from_numpy(np.stack(audio)).to(device)
            with torch.no_grad():
                if task.embedding_type == "scene":
                    emb = module.get_scene_embeddings(x, model).detach().cpu().numpy()
                    for name, e in zip(names, emb):
                        atomic_write_json(out / f"{name}.target-labels.json", list(task.labels[split][name]))
                        atomic_write(out / f"{name}.embedding.npy", lambda f, e=e: np.save(f, e))
                else:
                    emb, ts = module.get_timestamp_embeddings(x, model)
                    emb, ts = emb.detach().cpu().numpy(), ts.detach().cpu().numpy()
                    for name, e, t in zip(names, emb, ts):
                        hot = frame_targets(task.labels[split][name], t, task.vocabulary)
                        frame_labels = [[task.vocabulary[j] for j in np.flatnonzero(row)] for row in hot]
                        atomic_write_json(out / f"{name}.timestamps.json", t.tolist())
                        atomic_write_json(out / f"{name}.target-labels.json", frame_labels, indent=4)
                        atomic_write(out / f"{name}.embedding.npy", lambda f, e=e: np.save(f, e))
        order = [out / f"{f}.embedding.npy" for f in files]
        prng.shuffle(order)
        if not (emb_dir / f"{split}.embedding-dimensions.json").exists():
            _stack_split(task, split, order, emb_dir)
    return time.perf_counter() - start


def _stack_split(task: Task, split: str, order: list[Path], emb_dir: Path) -> None:
    """Write <split>.embeddings.npy (raw float32 memmap), labels and timestamps, dimensions last."""
    embeddings = [np.load(p).astype(np.float32) for p in order]
    rows = sum(1 if e.ndim == 1 else e.shape[0] for e in embeddings)
    dim = embeddings[0].shape[-1]
    labels, filename_timestamps = [], []
    tmp = emb_dir / f"{split}.embeddings.npy.tmp-{os.getpid()}"
    memmap = np.memmap(tmp, dtype=np.float32, mode="w+", shape=(rows, dim))
    idx = 0
    for path, e in zip(order, embeddings):
        stem = str(path)[: -len(".embedding.npy")]
        lbl = json.loads(Path(stem + ".target-labels.json").read_text())
        if e.ndim == 1:
            memmap[idx] = e
            labels.append(lbl)
            idx += 1
        else:
            memmap[idx : idx + len(e)] = e
            labels += lbl
            filename_timestamps += [(stem, t) for t in json.loads(Path(stem + ".timestamps.json").read_text())]
            idx += len(e)
    memmap.flush()
    del memmap
    os.replace(tmp, emb_dir / f"{split}.embeddings.npy")
    atomic_write(emb_dir / f"{split}.target-labels.pkl", lambda f: pickle.dump(labels, f))
    if task.embedding_type == "event":
        atomic_write_json(emb_dir / f"{split}.filename-timestamps.json", filename_timestamps, indent=4)
    atomic_write_json(emb_dir / f"{split}.embedding-dimensions.json", [rows, dim])


def load_split(task: Task, emb_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray, list]:
    """The stacked split: X (n, dim) float32, multi-hot Y (n, n_labels), and for event tasks
    the (file name, timestamp ms) of every row (empty for scene tasks)."""
    rows, dim = json.loads((emb_dir / f"{split}.embedding-dimensions.json").read_text())
    x = np.array(np.memmap(emb_dir / f"{split}.embeddings.npy", dtype=np.float32, mode="r", shape=(rows, dim)))
    with open(emb_dir / f"{split}.target-labels.pkl", "rb") as f:
        y = scene_targets(pickle.load(f), task.vocabulary)
    where = []
    if task.embedding_type == "event":
        where = [(Path(stem).name, t) for stem, t in json.loads((emb_dir / f"{split}.filename-timestamps.json").read_text())]
    return x, y, where


def _events_by_file(probs: np.ndarray, where: list, vocabulary: list[str], median_filter_ms: float, min_duration: float):
    """Decode stacked frame probabilities (n_frames, n_labels) into {file: [Event]}."""
    by_file: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(where):
        by_file.setdefault(name, []).append(i)
    events = {}
    for name, rows in by_file.items():
        rows = sorted(rows, key=lambda i: where[i][1])
        t = np.array([where[i][1] for i in rows])
        events[name] = metrics.decode_events(probs[rows], t, vocabulary, median_filter_ms=median_filter_ms, min_duration_ms=min_duration)
    return events


def _postprocessing_options(task: Task) -> list[dict]:
    grid = task.evaluation_params.get("event_postprocessing_grid", EVENT_POSTPROCESSING_GRID)
    return [{"median_filter_ms": m, "min_duration": d} for m in grid["median_filter_ms"] for d in grid["min_duration"]]


def _ranked(metric: str, value: float) -> float:
    """A score to maximise: NaN ranks as 0 (as heareval ranks post-processing), error rates negated."""
    value = 0.0 if np.isnan(value) else value
    return -value if metric in metrics.LOWER_IS_BETTER else value


def _best_postprocessing(task: Task, probs: np.ndarray, where: list, reference) -> tuple[dict, float]:
    """The post-processing option that decodes `probs` (stacked frames at `where`) best against
    `reference`, and its ranked primary score; the first option wins ties, as in heareval."""
    best, best_score = None, -np.inf
    for option in _postprocessing_options(task):
        predicted = _events_by_file(probs, where, task.vocabulary, **option)
        value = _ranked(task.primary_metric, metrics.score(task.primary_metric, predicted, reference, task.vocabulary))
        if best is None or value > best_score:
            best, best_score = option, value
    return best, best_score


def keep_test_predictions(task: Task, emb_dir: Path, split: str, targets: np.ndarray, scores: np.ndarray,
                          events: dict | None) -> None:
    """Write `emb_dir/<split>.predictions.pkl`, one test split's predictions, for `tympan report`.

    Beside heareval's `<split>.target-labels.pkl` in its embedding layout: one pickled dict of
    plain types and numpy arrays with "task", "split", "embedding_type", "prediction_type",
    "vocabulary" (n_labels labels). Scene tasks: "targets" (n_files, n_labels) uint8 multi-hot
    and "scores" (n_files, n_labels) float32 probabilities, rows in the order of
    `<split>.embeddings.npy`. Event tasks: "events" and "reference", {file name: [(label,
    start ms, end ms), ...]}: the test events decoded with the post-processing chosen on
    validation (`events`), and the task's own; their frame targets and scores are not kept.
    """
    kept = {
        "task": task.name,
        "split": split,
        "embedding_type": task.embedding_type,
        "prediction_type": task.prediction_type,
        "vocabulary": list(task.vocabulary),
    }
    if events is None:
        kept["targets"] = np.asarray(targets, dtype=np.uint8)
        kept["scores"] = np.asarray(scores, dtype=np.float32)
    else:
        def plain(by_file) -> dict:
            return {name: [(e.label, float(e.start_ms), float(e.end_ms)) for e in evs] for name, evs in by_file.items()}

        kept["events"] = plain(events)
        kept["reference"] = plain(task.labels[split])
    atomic_write(emb_dir / f"{split}.predictions.pkl", lambda f: pickle.dump(kept, f))


def score_task(task: Task, emb_dir: Path, grid: str, seed: int, device: str) -> dict:
    """Train, predict and score one embedded task; returns its results entry."""
    start = time.perf_counter()
    data = {split: load_split(task, emb_dir, split) for split in task.splits}
    primary = task.primary_metric
    vocab = task.vocabulary

    def scorer(valid_split: str):
        if task.embedding_type == "scene":
            return lambda probs, y: _ranked(primary, metrics.score(primary, probs, y, vocab))
        return lambda probs, y: _best_postprocessing(task, probs, data[valid_split][2], task.labels[valid_split])[1]

    prediction_type = "multilabel" if task.embedding_type == "event" else task.prediction_type
    check_every = task.evaluation_params.get("check_every", downstream.CHECK_EVERY)
    result = downstream.evaluate_splits(
        {split: (x, y) for split, (x, y, _) in data.items()},
        data_splits(task),
        prediction_type,
        scorer,
        grid=grid,
        seed=seed,
        check_every=check_every,
        n_labels=len(vocab),
        device=device,
    )
    per_metric: dict[str, dict[str, float]] = {m: {} for m in task.evaluation}
    postprocessing = {}
    for fold in result.folds:
        x, y, where = data[fold.test]
        predicted = None
        if task.embedding_type == "scene":
            for m in task.evaluation:
                per_metric[m][fold.test] = metrics.score(m, fold.test_predictions, y, vocab)
        else:
            valid = fold.valid
            best, _ = _best_postprocessing(task, fold.info.valid_predictions, data[valid][2], task.labels[valid])
            postprocessing[fold.test] = best
            predicted = _events_by_file(fold.test_predictions, where, vocab, **best)
            for m in task.evaluation:
                per_metric[m][fold.test] = metrics.score(m, predicted, task.labels[fold.test], vocab)
        keep_test_predictions(task, emb_dir, fold.test, y, fold.test_predictions, predicted)
    scores = {}
    for m, folds in per_metric.items():  # task.evaluation order: the primary metric first
        values = np.array(list(folds.values()), dtype=np.float64)
        scores[m] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "folds": folds,
        }
    return {
        "task": task.name,
        "embedding_type": task.embedding_type,
        "prediction_type": task.prediction_type,
        "primary_metric": primary,
        "scores": scores,
        "config": asdict(result.config),
        "validation_scores": {f.test: f.valid_score for f in result.folds},
        "best_epochs": {f.test: f.info.best_epoch for f in result.folds},
        "postprocessing": postprocessing,
        "files": {split: len(task.labels[split]) for split in task.splits},
        "training_seconds": round(time.perf_counter() - start, 2),
    }


def _versions(module: ModuleType) -> dict[str, str | None]:
    names = ["tympan", "torch", "numpy", "scikit-learn", "scipy", "sed_eval", "soundfile"]
    top = module.__name__.split(".")[0]
    if top not in names:
        names.append(top)
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            found[name] = getattr(sys.modules.get(name), "__version__", None)
    return found


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def results_markdown(results: dict) -> str:
    """A Markdown table of one results.json: the primary metric (mean +- std over folds) per task."""
    lines = [
        f"# {results['module']} on {results['tasks_dir']}",
        "",
        f"weights sha256 {results['weights_sha256']}, seed {results['seed']}, grid {results['grid']}"
        + (f" (event tasks: {results['event_grid']})" if results.get("event_grid", results["grid"]) != results["grid"] else ""),
        "",
        "| task | type | primary metric | score | folds | other metrics | embed s | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["tasks"].items():
        p = r["scores"][r["primary_metric"]]
        others = ", ".join(f"{m} {s['mean']:.3f}" for m, s in r["scores"].items() if m != r["primary_metric"])
        lines.append(
            f"| {name} | {r['embedding_type']} | {r['primary_metric']} | {p['mean']:.3f} ± {p['std']:.3f} "
            f"| {len(p['folds'])} | {others} | {r['embedding_seconds']:.0f} | {r['training_seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def check_metrics(task: Task) -> None:
    """TaskFormatError naming task_metadata.json when the task lists a metric tympan cannot
    score, or one for the other kind of task (an event metric on a scene task, or back)."""
    meta = task.path / "task_metadata.json"
    for m in task.evaluation:
        if m not in metrics.METRICS:
            raise TaskFormatError(meta, "evaluation", f"unknown metric {m!r}; known: {', '.join(metrics.METRICS)}")
        if (m in metrics.EVENT_METRICS) != (task.embedding_type == "event"):
            kind = "event" if m in metrics.EVENT_METRICS else "scene"
            raise TaskFormatError(
                meta, "evaluation", f"{m!r} is a {kind} metric but embedding_type is {task.embedding_type!r}"
            )


def read_checked_task(path: Path, sample_rate: int) -> Task:
    """read_task, check_metrics and check_clips: the whole task checked, no audio decoded."""
    task = read_task(path, sample_rate=sample_rate)
    check_metrics(task)
    check_clips(task, sample_rate)
    return task


def _short(value) -> str:
    """A provenance value for a message: hashes cut to 12 characters."""
    if isinstance(value, str) and len(value) == 64:
        return value[:12]
    return repr(value)


def _differences(saved: dict, wanted: dict) -> str:
    return ", ".join(
        f"{key} {_short(saved.get(key))} there, {_short(value)} now"
        for key, value in wanted.items()
        if saved.get(key) != value
    )


def check_reuse(done: Path, task_provenance: dict, emb_dir: Path, embedding_provenance: dict) -> bool:
    """Whether the task's saved result `done` may be reused (True) or is still to be made
    (False); UsageError when `done` or the embeddings in `emb_dir` were made by another run
    (other module, weights, seed, grid or task data) or record no provenance."""
    if done.exists():
        try:
            saved = json.loads(done.read_text()).get("provenance")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise UsageError(
                f"{done} cannot be read ({type(e).__name__}: {e}); delete it to score the task again"
            ) from None
        if saved is None:
            raise UsageError(
                f"{done} records no provenance (an older tympan evaluate wrote it), so it cannot be told from "
                "another run's result; delete it to score the task again, or evaluate into another --out"
            )
        if saved != task_provenance:
            raise UsageError(
                f"{done} was scored by another run ({_differences(saved, task_provenance)}); evaluate into "
                f"another --out, or delete {done} to score the task again"
            )
    prov = emb_dir / PROVENANCE_FILE
    if prov.exists():
        try:
            saved = json.loads(prov.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UsageError(
                f"{prov} cannot be read ({type(e).__name__}: {e}); delete {emb_dir} to embed again"
            ) from None
        if saved != embedding_provenance:
            raise UsageError(
                f"{emb_dir} holds embeddings of another run ({_differences(saved, embedding_provenance)}); "
                f"evaluate into another --out, or delete {emb_dir} to embed again"
            )
    elif emb_dir.is_dir() and any(emb_dir.iterdir()):
        raise UsageError(
            f"{emb_dir} holds embeddings without {PROVENANCE_FILE} (an older tympan evaluate wrote them), so they "
            f"cannot be told from another model's; delete {emb_dir} to embed again, or evaluate into another --out"
        )
    return done.exists()


def _select_tasks(tasks_dir: Path, task_names: list[str] | None) -> list[Path]:
    """The task folders to evaluate: those named, else every subfolder of `tasks_dir`, each of
    which must be a task folder (list_tasks strict)."""
    if not tasks_dir.is_dir():
        raise UsageError(
            f"--tasks {tasks_dir}: no such folder; give the folder holding the task folders "
            "(e.g. one built by tympan tasks build)"
        )
    if not task_names:
        task_paths = list_tasks(tasks_dir, strict=True)
        if not task_paths:
            raise UsageError(f"no task folders (with task_metadata.json) in {tasks_dir}")
        return task_paths
    if (tasks_dir / "task_metadata.json").is_file():
        by_name = {tasks_dir.name: tasks_dir}
    else:
        by_name = {p.name: p for p in tasks_dir.iterdir() if p.is_dir() and not p.name.startswith(".")}
    missing = [n for n in task_names if n not in by_name]
    if missing:
        raise UsageError(f"no task {missing} in {tasks_dir}; found {sorted(by_name)}")
    return [by_name[n] for n in dict.fromkeys(task_names)]


def evaluate(
    module_name: str,
    tasks_dir: Path,
    out: Path,
    model_path: str = "",
    task_names: list[str] | None = None,
    grid: str = "default",
    seed: int = 0,
    device: str = "cpu",
    event_grid: str | None = None,
) -> dict:
    """Run the whole protocol; returns the results dict also written to OUT/results.json.

    `grid` is the downstream grid of every task, `event_grid` (default: `grid`) that of the
    event tasks, whose frame-level training costs far more on a CPU. Everything that can be
    checked is checked before the first embedding: UsageError for the command line (module,
    --tasks, --out, --model, results or embeddings in OUT from another run), TaskFormatError
    naming the file for a malformed task."""
    event_grid = event_grid or grid
    tasks_dir, out = Path(tasks_dir), Path(out)
    module = import_hear_module(module_name)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the embeddings and results (it is created)")
    task_paths = _select_tasks(tasks_dir, task_names)
    check_device(device)  # before loading, so that a missing CUDA is not blamed on the model
    model = load_hear_model(module, model_path, device)
    sample_rate = int(model.sample_rate)
    weights = weights_identity(model, model_path)
    selected = [read_checked_task(path, sample_rate) for path in task_paths]
    plan = []
    for path, task in zip(task_paths, selected):
        identity = task_identity(task, sample_rate)
        task_grid = event_grid if task.embedding_type == "event" else grid
        task_prov = {
            "module": module_name, "weights_sha256": weights, "seed": seed, "grid": task_grid, "task_identity": identity
        }
        emb_prov = {"module": module_name, "weights_sha256": weights, "task_identity": identity}
        done = out / "tasks" / f"{path.name}.json"
        emb_dir = out / "embeddings" / module_name / task.name
        plan.append((path, task, task_prov, emb_prov, done, emb_dir, check_reuse(done, task_prov, emb_dir, emb_prov)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "tasks").mkdir(exist_ok=True)
    started = time.perf_counter()
    tasks = {}
    for path, task, task_prov, emb_prov, done, emb_dir, reuse in plan:
        if reuse:
            tasks[path.name] = json.loads(done.read_text())
            print(f"{path.name}: already scored by this run's module, weights, seed and grid", file=sys.stderr)
            continue
        print(f"{task.name}: embedding ...", file=sys.stderr, flush=True)
        embed_seconds = embed_task(module, model, task, emb_dir, torch.device(device), emb_prov)
        print(f"{task.name}: training and scoring ...", file=sys.stderr, flush=True)
        entry = score_task(task, emb_dir, task_prov["grid"], seed, device)
        entry["grid"] = task_prov["grid"]
        entry["embedding_seconds"] = round(embed_seconds, 2)
        entry["provenance"] = task_prov
        atomic_write_json(done, entry, indent=1)
        tasks[path.name] = entry
        p = entry["scores"][entry["primary_metric"]]
        print(f"{task.name}: {entry['primary_metric']} {p['mean']:.4f} ± {p['std']:.4f}", file=sys.stderr, flush=True)
    results = {
        "module": module_name,
        "model_path": model_path or None,
        "weights_sha256": weights,
        "tasks_dir": str(tasks_dir),
        "seed": seed,
        "grid": grid,
        "event_grid": event_grid,
        "device": device,
        "versions": _versions(module),
        "git_revision": _git_revision(),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # when it finished
        "tasks": tasks,
    }
    atomic_write_json(out / "results.json", results, indent=1)
    atomic_write(out / "results.md", lambda f: f.write(results_markdown(results).encode()))
    return results


def main(args: argparse.Namespace) -> int:
    """`tympan evaluate`: 0 when done; 2 for a usage error or a malformed task (one line on
    stderr, before any embedding); 130 on Ctrl-C (what is finished is kept: rerun to resume)."""
    try:
        results = evaluate(
            args.module, Path(args.tasks), Path(args.out), args.model, args.task, args.grid, args.seed, args.device,
            args.event_grid,
        )
    except (UsageError, TaskFormatError) as e:
        print(f"tympan evaluate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"tympan evaluate: interrupted; finished embeddings and task scores in {args.out} are kept: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    print(results_markdown(results))
    return 0

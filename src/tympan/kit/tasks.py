"""HEAR task folders, both ways: `read_task` (strict) and `write_task` (byte-deterministic).

A task folder is what hear-preprocess writes and the HEAR evaluation kit reads:

    <task_name>-<version>-<mode>/
      task_metadata.json    task_name, version, embedding_type ("scene" | "event"),
                            prediction_type ("multiclass" | "multilabel"), split_mode
                            ("trainvaltest" | "new_split_kfold" | "presplit_kfold"),
                            sample_duration (s, or null = untrimmed), evaluation (metric
                            names, the first is the primary one), splits, nfolds (k-fold
                            only), mode, optional evaluation_params, any other keys
      labelvocabulary.csv   columns idx,label; idx 0..n-1 in order
      <split>.json          scene: {"<file>.wav": ["label", ...]}
                            event: {"<file>.wav": [{"label": L, "start": ms, "end": ms}]}
      <sample_rate>/<split>/<file>.wav    mono 16-bit PCM, padded/trimmed to sample_duration

    task = read_task("tasks/dcase2016_task2-hear2021-full")
    task.labels["train"]["a.wav"]    # [Event("speech", 1200.0, 2650.0), ...]
    audio_path(task, "train", "a.wav", 16000)

Why strict: the kit fails late and obscurely on a malformed folder (an assert deep in an
embedding run), so `read_task` checks everything up front and raises TaskFormatError
naming the file and the field, with the value found. Labels are kept as strings, as the
kit compares them (`str(label)`): NSynth's pitch labels are JSON numbers.

Times are milliseconds throughout, as in the split files. Frame targets follow HEAR.md
section 5: an event covers timestamp t when start <= t < end. (heareval's own
`get_labels_for_timestamps` uses start <= t < end + 0.0001 ms, so it also counts a frame
centred exactly on an event's end; the two differ only there.)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tympan.checksum import sha256_file
from tympan.io import RESAMPLE_QUALITY, require_extra

EMBEDDING_TYPES = ("scene", "event")
PREDICTION_TYPES = ("multiclass", "multilabel")
SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
TRAINVALTEST_SPLITS = ("train", "valid", "test")
# hear-preprocess refuses fewer folds: with k < 3 the rotation leaves no training fold.
MIN_FOLDS = 3
METADATA_FILE = "task_metadata.json"
VOCABULARY_FILE = "labelvocabulary.csv"
# Keys the Task has fields for; any other metadata key is kept in Task.extra.
REQUIRED_KEYS = (
    "task_name",
    "version",
    "embedding_type",
    "prediction_type",
    "split_mode",
    "sample_duration",
    "evaluation",
    "splits",
    "mode",
)
OPTIONAL_KEYS = ("nfolds", "evaluation_params")
JSON_INDENT = 2


class TaskFormatError(ValueError):
    """A task folder does not follow the HEAR format.

    `path` is the offending file (or folder), `field` the key, column, row or entry in it,
    `problem` what is wrong with it; the message holds all three.
    """

    def __init__(self, path: str | os.PathLike, field: str, problem: str) -> None:
        self.path = Path(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: {field}: {problem}")


@dataclass(frozen=True)
class Event:
    """One labelled sound event; times in milliseconds from the start of the file."""

    label: str
    start_ms: float
    end_ms: float


Labels = list[str] | list[Event]


@dataclass
class Task:
    """A HEAR task: its metadata, label vocabulary and per-split labels.

    vocabulary: the labels in idx order (row i of labelvocabulary.csv has idx i).
    labels: split -> file name (e.g. "a.wav") -> labels; scene tasks have a list of label
        strings per file (exactly one for multiclass), event tasks a list of Event.
    extra: metadata keys this class has no field for (download_urls, default_mode, ...),
        written back unchanged.
    path: the task folder it was read from, None for a task built in memory; not part of
        equality, so a task written and read back compares equal to the original.
    """

    task_name: str
    version: str
    embedding_type: str
    prediction_type: str
    split_mode: str
    sample_duration: float | None
    evaluation: list[str]
    splits: list[str]
    mode: str
    vocabulary: list[str]
    labels: dict[str, dict[str, Labels]]
    nfolds: int | None = None
    evaluation_params: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The task folder's name: <task_name>-<version>-<mode>."""
        return f"{self.task_name}-{self.version}-{self.mode}"

    @property
    def primary_metric(self) -> str:
        """The metric the kit selects models on: the first of `evaluation`."""
        return self.evaluation[0]


@dataclass(frozen=True)
class DataSplit:
    """Which splits train, validate and test one run of the downstream model."""

    train: list[str]
    valid: list[str]
    test: list[str]


def read_task(path: str | os.PathLike, sample_rate: int = 16000) -> Task:
    """Read and validate the task folder `path`, with its audio at `sample_rate` Hz.

    Checks the metadata (keys present, values allowed, splits consistent with split_mode),
    the vocabulary (header idx,label; idx 0..n-1; unique labels), every split file (labels
    in the vocabulary, one label per file for multiclass scene tasks, events with label,
    start and end and end >= start >= 0) and that every listed file exists as
    `<sample_rate>/<split>/<file>`. The audio itself is not decoded.
    Raises TaskFormatError naming the file and field; FileNotFoundError when `path` is not
    a folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"task folder {root} does not exist or is not a folder")
    meta_path = root / METADATA_FILE
    if not meta_path.is_file():
        raise TaskFormatError(meta_path, "file", "missing: every HEAR task folder has one")
    meta = _parse_metadata(_load_json(meta_path), meta_path)
    vocabulary = _read_vocabulary(root / VOCABULARY_FILE)

    audio_root = root / str(sample_rate)
    if not audio_root.is_dir():
        rates = sorted(int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit())
        found = ", ".join(f"{r} Hz" for r in rates) if rates else "none"
        raise TaskFormatError(
            audio_root,
            "sample rate folder",
            f"missing: no audio at {sample_rate} Hz; rates present: {found}",
        )

    known = set(vocabulary)
    labels: dict[str, dict[str, Labels]] = {}
    for split in meta["splits"]:
        split_path = root / f"{split}.json"
        if not split_path.is_file():
            raise TaskFormatError(
                split_path, "file", f"missing: split {split!r} is listed in {METADATA_FILE}"
            )
        labels[split] = _parse_split(_load_json(split_path), split_path, meta, known)
        split_dir = audio_root / split
        if not split_dir.is_dir():
            raise TaskFormatError(split_dir, "split folder", f"missing: split {split!r} has no audio folder")
        present = set(os.listdir(split_dir))
        for name in labels[split]:
            if name not in present:
                raise TaskFormatError(split_path, repr(name), f"listed but {split_dir / name} does not exist")

    return Task(vocabulary=vocabulary, labels=labels, path=root, **meta)


def list_tasks(tasks_dir: str | os.PathLike, strict: bool = False) -> list[Path]:
    """The task folders in `tasks_dir`: its subfolders holding a task_metadata.json, by name.

    A task folder given by mistake for its parent is returned alone. Folders are not
    validated here; `read_task` does that. Hidden folders (a build's temporary ones) are
    never tasks. strict: every other subfolder must be a task folder, so that a damaged task
    beside good ones is not silently left out of an evaluation; TaskFormatError names the
    first that is not. Raises FileNotFoundError when `tasks_dir` is not a folder.
    """
    root = Path(tasks_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"tasks folder {root} does not exist or is not a folder")
    if (root / METADATA_FILE).is_file():
        return [root]
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if strict:
        for p in folders:
            if not (p / METADATA_FILE).is_file():
                raise TaskFormatError(
                    p / METADATA_FILE,
                    "file",
                    f"missing: {p.name} is not a HEAR task folder; move it out of {root} or choose tasks by name",
                )
    return [p for p in folders if (p / METADATA_FILE).is_file()]


def check_clips(task: Task, sample_rate: int) -> None:
    """Check what `read_task` does not decode: every split lists at least one file, and every
    audio file's header at `sample_rate` is mono, at that rate, and of the task's length
    (round(sample_duration * sample_rate) samples) when the task is trimmed, else not empty.

    Reads headers only (soundfile.info), so a task is checked whole before anything is
    embedded. Raises TaskFormatError naming the split file or the audio file.
    """
    sf = require_extra("soundfile")
    if task.path is None:
        raise ValueError(f"task {task.name} was not read from a folder; write_task it first")
    expected = None if task.sample_duration is None else round(task.sample_duration * sample_rate)
    for split in task.splits:
        if not task.labels[split]:
            raise TaskFormatError(
                task.path / f"{split}.json", "files", f"none: split {split!r} is empty; every split needs clips"
            )
        for name in task.labels[split]:
            path = task.path / str(sample_rate) / split / name
            try:
                info = sf.info(str(path))
            except (RuntimeError, OSError) as e:  # soundfile raises LibsndfileError (a RuntimeError)
                raise TaskFormatError(path, "audio", f"cannot be read as audio: {e}") from None
            if info.channels != 1:
                raise TaskFormatError(path, "channels", f"{info.channels}; HEAR task audio is mono")
            if info.samplerate != sample_rate:
                raise TaskFormatError(
                    path, "sample rate", f"{info.samplerate} Hz in a folder for {sample_rate} Hz"
                )
            if expected is not None and info.frames != expected:
                raise TaskFormatError(
                    path,
                    "length",
                    f"{info.frames} samples; sample_duration {task.sample_duration} s at {sample_rate} Hz "
                    f"needs {expected}",
                )
            if info.frames == 0:
                raise TaskFormatError(path, "length", "0 samples: the clip is empty")


def task_identity(task: Task, sample_rate: int) -> str:
    """SHA-256 identifying a task's data as an evaluation sees it: the bytes of its metadata,
    vocabulary and split files, and the name and size of every audio file at `sample_rate`.

    Cheap (no audio is read), so every run can compute it; two suites with the same task
    names but other clips or labels get other identities. Audio rewritten in place with
    the same size is not detected.
    """
    if task.path is None:
        raise ValueError(f"task {task.name} was not read from a folder; write_task it first")
    h = hashlib.sha256()
    for name in [METADATA_FILE, VOCABULARY_FILE] + [f"{s}.json" for s in task.splits]:
        h.update(f"{name}|{sha256_file(task.path / name)}\n".encode())
    for split in task.splits:
        for name in sorted(task.labels[split]):
            size = (task.path / str(sample_rate) / split / name).stat().st_size
            h.update(f"{sample_rate}/{split}/{name}|{size}\n".encode())
    return h.hexdigest()


def audio_path(task: Task, split: str, file: str, sample_rate: int) -> Path:
    """The wav of `file` in `split` at `sample_rate` Hz: <task>/<sample_rate>/<split>/<file>.

    Raises ValueError for a task not read from disk, KeyError for an unknown split or file.
    """
    if task.path is None:
        raise ValueError(f"task {task.name} was not read from a folder; write_task it first")
    if split not in task.labels:
        raise KeyError(f"task {task.name} has no split {split!r}; its splits: {task.splits}")
    if file not in task.labels[split]:
        raise KeyError(f"split {split!r} of task {task.name} has no file {file!r}")
    return task.path / str(sample_rate) / split / file


def write_task(
    task: Task,
    audio: Mapping[tuple[str, str], np.ndarray],
    out_dir: str | os.PathLike,
    sample_rates: Iterable[int] = (16000,),
    audio_sample_rate: int = 16000,
) -> Path:
    """Write `task` as the folder `out_dir/<task.name>`, and return that folder.

    audio: (split, file) -> mono float samples in [-1, 1], shape (n_samples,), at
        `audio_sample_rate` Hz; one entry for every file of every split, no others.
    sample_rates: the rates (Hz) to write the audio at, each in its own <rate>/ folder;
        resampled with soxr, then padded with zeros or trimmed to sample_duration seconds
        (round(sample_duration * rate) samples) unless sample_duration is None. Samples are
        clipped to [-1, 1] and stored as 16-bit PCM.

    The same task and audio always give the same bytes: JSON with sorted keys and a fixed
    indent, the vocabulary as given, wavs without timestamps. The folder is built under a
    temporary name and renamed into place, so an interrupted write leaves no partial task.
    Everything is checked before anything is written. Raises TaskFormatError for a task
    that would not read back (metadata values, labels outside the vocabulary, an unsorted
    vocabulary), ValueError for missing, extra, non-mono or non-finite audio,
    FileExistsError when the task folder already exists.
    """
    require_extra("soundfile")
    require_extra("soxr")
    rates = sorted(set(sample_rates))
    out = Path(out_dir)
    final = out / task.name
    metadata = _metadata_dict(task)
    _parse_metadata(metadata, final / METADATA_FILE)
    if task.vocabulary != sort_labels(task.vocabulary):
        raise TaskFormatError(
            final / VOCABULARY_FILE,
            "label",
            "the vocabulary must be in HEAR's order; build it with sort_labels(labels)",
        )
    if set(task.labels) != set(task.splits):
        raise TaskFormatError(
            final / METADATA_FILE, "splits", f"{task.splits} but labels are given for {sorted(task.labels)}"
        )
    split_json = {}
    for split in task.splits:
        split_json[split] = _split_dict(task, split)
        _parse_split(split_json[split], final / f"{split}.json", metadata, set(task.vocabulary))
    wanted = {(split, name) for split in task.splits for name in task.labels[split]}
    if set(audio) != wanted:
        missing, extra = sorted(wanted - set(audio)), sorted(set(audio) - wanted)
        raise ValueError(f"audio does not match the task's files: missing {missing[:5]}, extra {extra[:5]}")
    for key in sorted(wanted):
        samples = np.asarray(audio[key])
        if samples.ndim != 1:
            raise ValueError(
                f"audio for {key} has shape {samples.shape}; give mono audio, shape (n_samples,)"
            )
        if not np.isfinite(samples).all():
            raise ValueError(f"audio for {key} has NaN or infinite samples")
    if final.exists():
        raise FileExistsError(f"{final} already exists; remove it or choose another out_dir")

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{task.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        _write_text(tmp / METADATA_FILE, _dump_json(metadata))
        _write_text(tmp / VOCABULARY_FILE, _vocabulary_csv(task.vocabulary))
        for split in task.splits:
            _write_text(tmp / f"{split}.json", _dump_json(split_json[split]))
        for rate in rates:
            for split in task.splits:
                (tmp / str(rate) / split).mkdir(parents=True)
                for name in sorted(task.labels[split]):
                    _write_wav(tmp / str(rate) / split / name, audio[(split, name)], audio_sample_rate, rate, task)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _write_wav(path: Path, samples, from_rate: int, rate: int, task: Task) -> None:
    """One task wav at `rate`: resampled with soxr from `from_rate`, padded or trimmed to the
    task's sample_duration, clipped to [-1, 1], 16-bit PCM."""
    sf = require_extra("soundfile")
    samples = np.asarray(samples, dtype=np.float64)
    if rate != from_rate:
        samples = require_extra("soxr").resample(samples, from_rate, rate, quality=RESAMPLE_QUALITY)
    if task.sample_duration is not None:
        samples = _pad_or_trim(samples, round(task.sample_duration * rate))
    # Clipped here so that out-of-range samples saturate whatever libsndfile's
    # float-to-integer clipping setting is.
    sf.write(path, np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16", format="WAV")


def add_sample_rate(task_dir: str | os.PathLike, rate: int, from_rate: int = 16000) -> Path:
    """Add the folder task_dir/<rate>/ to a task, resampled from its <from_rate>/ audio (soxr,
    as write_task), for modules that take another rate (HEAR's tasks come at 16, 22.05, 32,
    44.1 and 48 kHz). The content stays band-limited to from_rate / 2. Deterministic; built
    under a temporary name and renamed, so an interrupted run leaves no partial folder.
    Returns the new folder; FileExistsError when it exists."""
    sf = require_extra("soundfile")
    task = read_task(task_dir, sample_rate=from_rate)
    final = task.path / str(rate)
    if final.exists():
        raise FileExistsError(f"{final} already exists; remove it to write it again")
    tmp = task.path / f".{rate}.tmp-{secrets.token_hex(4)}"
    try:
        for split in task.splits:
            (tmp / split).mkdir(parents=True)
            for name in sorted(task.labels[split]):
                samples, sr = sf.read(str(task.path / str(from_rate) / split / name), dtype="float64")
                _write_wav(tmp / split / name, samples, sr, rate, task)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def sort_labels(labels: Iterable[str]) -> list[str]:
    """The distinct `labels` in HEAR's vocabulary order.

    hear-preprocess sorts labels as pandas reads them, so integer labels (NSynth's MIDI
    pitches) sort as numbers ("9" before "10") and any other labels as strings.
    """
    distinct = set(labels)
    if all(_is_int_string(label) for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def data_splits(task: Task) -> list[DataSplit]:
    """The train/valid/test rotation the HEAR kit runs for `task` (see split_rotation)."""
    return split_rotation(task.split_mode, task.splits)


def split_rotation(split_mode: str, splits: Iterable[str]) -> list[DataSplit]:
    """The train/valid/test rotation the HEAR kit runs for a split mode and its splits.

    trainvaltest: one DataSplit(train=["train"], valid=["valid"], test=["test"]).
    k-fold: k DataSplits over the sorted folds; the i-th tests fold i, validates on fold
    (i + 1) % k and trains on the others.
    """
    if split_mode == "trainvaltest":
        return [DataSplit(train=["train"], valid=["valid"], test=["test"])]
    folds = sorted(splits)
    k = len(folds)
    rotation = []
    for i in range(k):
        test, valid = folds[i], folds[(i + 1) % k]
        rotation.append(
            DataSplit(train=[f for f in folds if f not in (test, valid)], valid=[valid], test=[test])
        )
    return rotation


def frame_targets(events: Iterable[Event], timestamps_ms: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    """Multi-hot targets for frames centred at `timestamps_ms`.

    timestamps_ms: shape (n_frames,), frame centres in milliseconds.
    Returns float32, shape (n_frames, len(vocabulary)): entry [i, j] is 1 when an event
    labelled vocabulary[j] has start_ms <= timestamps_ms[i] < end_ms.
    Raises ValueError for an event label outside the vocabulary.
    """
    t = np.asarray(timestamps_ms, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(
            f"timestamps_ms has shape {t.shape}; give one timestamp per frame, shape (n_frames,)"
        )
    index = {label: j for j, label in enumerate(vocabulary)}
    targets = np.zeros((len(t), len(vocabulary)), dtype=np.float32)
    for event in events:
        if event.label not in index:
            raise ValueError(f"event label {event.label!r} is not in the vocabulary {vocabulary}")
        targets[(event.start_ms <= t) & (t < event.end_ms), index[event.label]] = 1.0
    return targets


def scene_targets(labels: Iterable[list[str]], vocabulary: list[str]) -> np.ndarray:
    """Multi-hot targets for scene labels, one row per file (one-hot for multiclass).

    labels: per file, its list of labels. Returns float32, shape (n_files, len(vocabulary)).
    Raises ValueError for a label outside the vocabulary.
    """
    index = {label: j for j, label in enumerate(vocabulary)}
    rows = list(labels)
    targets = np.zeros((len(rows), len(vocabulary)), dtype=np.float32)
    for i, file_labels in enumerate(rows):
        for label in file_labels:
            if label not in index:
                raise ValueError(f"label {label!r} is not in the vocabulary {vocabulary}")
            targets[i, index[label]] = 1.0
    return targets


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskFormatError(path, f"line {e.lineno} column {e.colno}", f"not valid JSON: {e.msg}") from e
    except UnicodeDecodeError as e:
        raise TaskFormatError(path, "encoding", f"not UTF-8 text: {e.reason}") from e


def _is_int_string(label: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", label) is not None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_metadata(meta: Any, path: Path) -> dict[str, Any]:
    """Validate task metadata; return the Task's metadata fields (extras under "extra")."""
    if not isinstance(meta, dict):
        raise TaskFormatError(path, "top level", f"expected a JSON object, found {type(meta).__name__}")
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise TaskFormatError(path, key, "missing key")

    def bad(key: str, expected: str) -> TaskFormatError:
        return TaskFormatError(path, key, f"{meta[key]!r} is not {expected}")

    for key in ("task_name", "version", "mode"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise bad(key, "a non-empty string")
    for key, allowed in (
        ("embedding_type", EMBEDDING_TYPES),
        ("prediction_type", PREDICTION_TYPES),
        ("split_mode", SPLIT_MODES),
    ):
        if meta[key] not in allowed:
            raise bad(key, "one of " + " | ".join(allowed))
    duration = meta["sample_duration"]
    if duration is not None and not (_is_number(duration) and duration > 0):
        raise bad("sample_duration", "a positive number of seconds or null")
    evaluation = meta["evaluation"]
    if not (isinstance(evaluation, list) and evaluation and all(isinstance(m, str) for m in evaluation)):
        raise bad("evaluation", "a non-empty list of metric names")
    splits = meta["splits"]
    if not (isinstance(splits, list) and all(isinstance(s, str) for s in splits)):
        raise bad("splits", "a list of split names")
    if len(set(splits)) != len(splits):
        raise bad("splits", "a list of distinct split names")
    params = meta.get("evaluation_params", {})
    if not isinstance(params, dict):
        raise bad("evaluation_params", "a JSON object")

    nfolds = meta.get("nfolds")
    if meta["split_mode"] == "trainvaltest":
        if nfolds is not None:
            raise bad("nfolds", "allowed with split_mode trainvaltest (it is for k-fold tasks)")
        if sorted(splits) != sorted(TRAINVALTEST_SPLITS):
            raise bad("splits", "[train, valid, test], as split_mode trainvaltest requires")
    else:
        if "nfolds" not in meta:
            raise TaskFormatError(path, "nfolds", f"missing key: split_mode {meta['split_mode']} needs it")
        if not (isinstance(nfolds, int) and not isinstance(nfolds, bool) and nfolds >= MIN_FOLDS):
            raise bad("nfolds", f"an integer >= {MIN_FOLDS}")
        folds = [f"fold{i:02d}" for i in range(nfolds)]
        if sorted(splits) != folds:
            raise bad("splits", f"the {nfolds} folds {folds[0]} ... {folds[-1]} that nfolds={nfolds} implies")

    fields = {key: meta[key] for key in REQUIRED_KEYS}
    fields["sample_duration"] = None if duration is None else float(duration)
    fields["nfolds"] = nfolds
    fields["evaluation_params"] = params
    fields["extra"] = {k: v for k, v in meta.items() if k not in REQUIRED_KEYS + OPTIONAL_KEYS}
    return fields


def _read_vocabulary(path: Path) -> list[str]:
    if not path.is_file():
        raise TaskFormatError(path, "file", "missing: every HEAR task folder has one")
    try:
        rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    except (UnicodeDecodeError, csv.Error) as e:
        raise TaskFormatError(path, "file", f"not a readable CSV file: {e}") from e
    if not rows or rows[0] != ["idx", "label"]:
        header = ",".join(rows[0]) if rows else "(empty file)"
        raise TaskFormatError(path, "header", f"{header!r}; expected the columns 'idx,label'")
    vocabulary: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise TaskFormatError(path, f"line {line}", f"{row} has {len(row)} columns, expected idx,label")
        idx, label = row
        if idx != str(len(vocabulary)):
            raise TaskFormatError(
                path,
                f"line {line} idx",
                f"{idx!r}; idx must count 0, 1, 2, ... in order (expected {len(vocabulary)})",
            )
        if not label:
            raise TaskFormatError(path, f"line {line} label", "empty label")
        if label in vocabulary:
            raise TaskFormatError(path, f"line {line} label", f"{label!r} appears twice")
        vocabulary.append(label)
    if not vocabulary:
        raise TaskFormatError(path, "label", "no labels: the vocabulary is empty")
    return vocabulary


def _label(value: Any, path: Path, where: str, known: set[str]) -> str:
    # The kit compares str(label): hear-preprocess writes numeric labels as JSON numbers.
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TaskFormatError(path, where, f"{value!r} is not a label (a string or an integer)")
    label = str(value)
    if label not in known:
        raise TaskFormatError(path, where, f"{label!r} is not in {VOCABULARY_FILE}")
    return label


def _parse_split(data: Any, path: Path, meta: Mapping[str, Any], known: set[str]) -> dict[str, Labels]:
    if not isinstance(data, dict):
        raise TaskFormatError(
            path, "top level", f"expected a JSON object file -> labels, found {type(data).__name__}"
        )
    parsed: dict[str, Labels] = {}
    for name, value in data.items():
        where = repr(name)
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise TaskFormatError(path, where, "not a plain file name")
        if not isinstance(value, list):
            raise TaskFormatError(path, where, f"expected a list of labels, found {type(value).__name__}")
        if meta["embedding_type"] == "scene":
            parsed[name] = [_label(v, path, f"{where}[{i}]", known) for i, v in enumerate(value)]
            if meta["prediction_type"] == "multiclass" and len(value) != 1:
                raise TaskFormatError(
                    path,
                    where,
                    f"{len(value)} labels {value}; a multiclass scene task has exactly one per file",
                )
        else:
            parsed[name] = [_event(v, path, f"{where}[{i}]", known) for i, v in enumerate(value)]
    return parsed


def _event(value: Any, path: Path, where: str, known: set[str]) -> Event:
    if not isinstance(value, dict):
        raise TaskFormatError(path, where, f"{value!r} is not an event {{label, start, end}}")
    for key in ("label", "start", "end"):
        if key not in value:
            raise TaskFormatError(path, f"{where}.{key}", "missing key")
    for key in ("start", "end"):
        if not _is_number(value[key]):
            raise TaskFormatError(
                path, f"{where}.{key}", f"{value[key]!r} is not a finite number of milliseconds"
            )
    if value["start"] < 0:
        raise TaskFormatError(path, f"{where}.start", f"{value['start']} ms is negative")
    if value["end"] < value["start"]:
        raise TaskFormatError(
            path, f"{where}.end", f"end {value['end']} ms is before start {value['start']} ms"
        )
    return Event(
        _label(value["label"], path, f"{where}.label", known), float(value["start"]), float(value["end"])
    )


def _metadata_dict(task: Task) -> dict[str, Any]:
    meta = dict(task.extra)
    meta.update({key: getattr(task, key) for key in REQUIRED_KEYS})
    # hear-preprocess writes nfolds only for k-fold tasks and evaluation_params only when set.
    if task.nfolds is not None:
        meta["nfolds"] = task.nfolds
    if task.evaluation_params:
        meta["evaluation_params"] = task.evaluation_params
    return meta


def _split_dict(task: Task, split: str) -> dict[str, list]:
    if task.embedding_type == "scene":
        return {name: list(labels) for name, labels in task.labels[split].items()}
    return {
        name: [{"label": e.label, "start": e.start_ms, "end": e.end_ms} for e in events]
        for name, events in task.labels[split].items()
    }


def _vocabulary_csv(vocabulary: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["idx", "label"])
    writer.writerows(enumerate(vocabulary))
    return buffer.getvalue()


def _dump_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, indent=JSON_INDENT, allow_nan=False) + "\n"


def _write_text(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


def _pad_or_trim(samples: np.ndarray, n: int) -> np.ndarray:
    if len(samples) >= n:
        return samples[:n]
    return np.concatenate([samples, np.zeros(n - len(samples), dtype=samples.dtype)])

"""HEAR's metrics, under HEAR's names, computed as the HEAR evaluation kit computes them.

    score("top1_acc", predictions, targets, vocabulary)          # scene: arrays
    score("event_onset_200ms_fms", predicted, reference, vocabulary)  # event: {file: [Event]}
    decode_events(frame_probs, timestamps_ms, vocabulary)         # frames -> [Event]

Scene metrics take `predictions`, float scores of shape (n_files, n_labels) (softmax or
sigmoid outputs), and `targets`, multi-hot {0, 1} of the same shape (one-hot for multiclass;
see tympan.kit.tasks.scene_targets); columns follow `vocabulary`. Event metrics take
{file name: [Event, ...]} for the predictions and the reference, times in milliseconds.

Each definition follows heareval/score.py (hear-eval-kit 2021.1.3), using the libraries it
uses: scikit-learn for mAP and ROC AUC, scipy for d', sed_eval with the kit's exact settings
for the event metrics. Where the kit's result depends on the library version or on input
the kit never sees, this module fixes one behaviour, the one the kit has with current
libraries:
- mAP: a class with no positive target has AP 0 and still counts in the macro mean. The
  kit leaves this to scikit-learn, whose answer has changed over versions (the kit's
  source cites scikit-learn issue 8245); 1.9, as in the kit's environment here, gives 0.
- aucroc, d_prime: NaN when any class has only one target value (all 0 or all 1), as the
  kit returns (it catches scikit-learn's ValueError; newer versions give NaN directly).
- d_prime is the mean over classes of sqrt(2) * Phi^-1(AUC_class), not d' of the macro AUC.
- chroma_acc compares pitch classes, int(label) % 12, of the argmax label. The kit compares
  vocabulary indices mod 12, which is the same only when the vocabulary is a run of
  consecutive pitches; this module uses the pitches themselves.
- Event metrics are summed over every file in the predictions or the reference (a file
  missing from one side has no events there). The kit loops over the predicted files only,
  so a reference file it was not given predictions for would silently not count; it
  always passes every file, where the two agree.
- sed_eval returns NaN for an F-measure whose precision or recall is undefined (no
  predicted or no reference events); the kit reports that NaN (it uses 0 only to rank
  post-processing settings), and so does this module.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType

import numpy as np
from scipy import stats
from scipy.ndimage import median_filter
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from tympan.kit.tasks import Event

EventLists = Mapping[str, Iterable[Event]]
SEMITONES_PER_OCTAVE = 12


def top1_acc(predictions: np.ndarray, targets: np.ndarray, vocabulary: list[str]) -> float:
    """Fraction of files whose highest-scoring label is the target's (first) label."""
    predictions, targets = _scene_arrays(predictions, targets, vocabulary)
    return float(accuracy_score(targets.argmax(axis=1), predictions.argmax(axis=1)))


def pitch_acc(predictions: np.ndarray, targets: np.ndarray, vocabulary: list[str]) -> float:
    """top1_acc under the name HEAR gives it on pitch tasks (labels are MIDI pitches)."""
    return top1_acc(predictions, targets, vocabulary)


def chroma_acc(predictions: np.ndarray, targets: np.ndarray, vocabulary: list[str]) -> float:
    """top1_acc up to octave errors: predicted and target pitch equal modulo 12.

    vocabulary: MIDI pitch numbers as strings ("60" is middle C).
    """
    predictions, targets = _scene_arrays(predictions, targets, vocabulary)
    bad = [label for label in vocabulary if not re.fullmatch(r"-?[0-9]+", label)]
    if bad:
        raise ValueError(f"chroma_acc needs MIDI pitch numbers as labels; not pitches: {bad[:5]}")
    chroma = np.array([int(label) % SEMITONES_PER_OCTAVE for label in vocabulary])
    return float(accuracy_score(chroma[targets.argmax(axis=1)], chroma[predictions.argmax(axis=1)]))


def mean_average_precision(predictions: np.ndarray, targets: np.ndarray, vocabulary: list[str]) -> float:
    """mAP: average precision per class, averaged over all classes (macro).

    A class with no positive target has AP 0 and counts in the mean (see module docstring).
    """
    predictions, targets = _scene_arrays(predictions, targets, vocabulary)
    present = targets.any(axis=0)
    ap = np.zeros(len(vocabulary))
    if present.any():
        ap[present] = average_precision_score(targets[:, present], predictions[:, present], average=None)
    return float(ap.mean())


def aucroc(predictions: np.ndarray, targets: np.ndarray, vocabulary: list[str]) -> float:
    """ROC AUC per class, averaged over classes (macro); NaN when a class has one target value."""
    per_class = _auc_per_class(predictions, targets, vocabulary)
    return float(per_class.mean())


def d_prime(predictions: np.ndarray, targets: np.ndarray, vocabulary: list[str]) -> float:
    """Mean over classes of d' = sqrt(2) * Phi^-1(AUC); NaN when a class has one target value.

    A class ranked perfectly (AUC 1) has d' = inf, and so has the mean, as in the kit.
    """
    per_class = _auc_per_class(predictions, targets, vocabulary)
    return float(np.mean(np.sqrt(2.0) * stats.norm.ppf(per_class)))


def event_onset_200ms_fms(predicted: EventLists, reference: EventLists, vocabulary: list[str]) -> float:
    """Event-based F-measure on onsets within 200 ms, micro over classes (sed_eval)."""
    return _sed_eval_score(
        "EventBasedMetrics",
        {"evaluate_onset": True, "evaluate_offset": False, "t_collar": 0.2},
        "f_measure",
        predicted,
        reference,
        vocabulary,
    )


def event_onset_50ms_fms(predicted: EventLists, reference: EventLists, vocabulary: list[str]) -> float:
    """Event-based F-measure on onsets within 50 ms, micro over classes (sed_eval)."""
    return _sed_eval_score(
        "EventBasedMetrics",
        {"evaluate_onset": True, "evaluate_offset": False, "t_collar": 0.05},
        "f_measure",
        predicted,
        reference,
        vocabulary,
    )


def event_onset_offset_50ms_20perc_fms(
    predicted: EventLists, reference: EventLists, vocabulary: list[str]
) -> float:
    """Event-based F-measure, onset within 50 ms and offset within max(50 ms, 20% of the
    reference event's length), micro over classes (sed_eval)."""
    return _sed_eval_score(
        "EventBasedMetrics",
        {"evaluate_onset": True, "evaluate_offset": True, "t_collar": 0.05, "percentage_of_length": 0.2},
        "f_measure",
        predicted,
        reference,
        vocabulary,
    )


def segment_1s_er(predicted: EventLists, reference: EventLists, vocabulary: list[str]) -> float:
    """Segment-based error rate on 1 s segments (sed_eval); lower is better.

    Each file is evaluated up to its latest event offset (predicted or reference), as
    sed_eval does without an explicit length.
    """
    return _sed_eval_score(
        "SegmentBasedMetrics", {"time_resolution": 1.0}, "error_rate", predicted, reference, vocabulary
    )


METRICS: dict[str, Callable[..., float]] = {
    "top1_acc": top1_acc,
    "pitch_acc": pitch_acc,
    "chroma_acc": chroma_acc,
    "mAP": mean_average_precision,
    "d_prime": d_prime,
    "aucroc": aucroc,
    "event_onset_200ms_fms": event_onset_200ms_fms,
    "event_onset_50ms_fms": event_onset_50ms_fms,
    "event_onset_offset_50ms_20perc_fms": event_onset_offset_50ms_20perc_fms,
    "segment_1s_er": segment_1s_er,
}
EVENT_METRICS = frozenset(
    {"event_onset_200ms_fms", "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms", "segment_1s_er"}
)
# Every other metric is better when higher; model selection must know which way to go.
LOWER_IS_BETTER = frozenset({"segment_1s_er"})


def score(
    metric_name: str,
    predictions: np.ndarray | EventLists,
    targets: np.ndarray | EventLists,
    vocabulary: list[str],
) -> float:
    """The metric `metric_name` (a HEAR name, a key of METRICS) of `predictions` vs `targets`.

    Scene metrics: arrays (n_files, n_labels); event metrics: {file: [Event]} (see the
    module docstring). Raises ValueError for an unknown name, listing the known ones.
    """
    if metric_name not in METRICS:
        raise ValueError(f"unknown metric {metric_name!r}; known metrics: {', '.join(METRICS)}")
    return METRICS[metric_name](predictions, targets, vocabulary)


def decode_events(
    frame_probs: np.ndarray,
    timestamps_ms: np.ndarray,
    vocabulary: list[str],
    threshold: float = 0.5,
    median_filter_ms: float = 250,
    min_duration_ms: float = 125,
) -> list[Event]:
    """Turn frame-wise label probabilities into events, as the HEAR kit does before scoring.

    frame_probs: shape (n_frames, len(vocabulary)), probabilities in [0, 1].
    timestamps_ms: shape (n_frames,), strictly increasing frame centres in milliseconds.
    Steps (heareval create_events_from_prediction): a median filter along time per class,
    round(median_filter_ms / mean hop) frames wide (scipy, edges reflected; skipped when
    that is 0 frames or there is a single frame); probability > threshold; each run of
    consecutive active frames of a class is one event from the first frame's timestamp to
    the LAST frame's timestamp (not its end: a one-frame event lasts 0 ms); events shorter
    than min_duration_ms are dropped. Returns events sorted by start, ties in vocabulary
    order.
    """
    probs = np.asarray(frame_probs, dtype=np.float64)
    t = np.asarray(timestamps_ms, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(vocabulary):
        raise ValueError(f"frame_probs has shape {probs.shape}; expected (n_frames, {len(vocabulary)})")
    if t.shape != (probs.shape[0],):
        raise ValueError(f"timestamps_ms has shape {t.shape}; expected ({probs.shape[0]},), one per frame")
    if np.any(np.diff(t) <= 0):
        raise ValueError("timestamps_ms must be strictly increasing")

    if median_filter_ms and len(t) > 1:
        width = round(median_filter_ms / np.mean(np.diff(t)))
        if width:
            probs = median_filter(probs, size=(width, 1))
    active = probs > threshold

    events = []
    for j, label in enumerate(vocabulary):
        frames = np.flatnonzero(active[:, j])
        # Runs of consecutive frame indices: split where the index jumps by more than 1.
        for run in np.split(frames, np.flatnonzero(np.diff(frames) > 1) + 1):
            if run.size and t[run[-1]] - t[run[0]] >= min_duration_ms:
                events.append(Event(label, float(t[run[0]]), float(t[run[-1]])))
    events.sort(key=lambda e: e.start_ms)
    return events


def _scene_arrays(predictions, targets, vocabulary: list[str]) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets)
    shape = (predictions.shape[0] if predictions.ndim else 0, len(vocabulary))
    if predictions.ndim != 2 or predictions.shape != shape or targets.shape != shape:
        raise ValueError(
            f"predictions {predictions.shape} and targets {targets.shape} must both have shape "
            f"(n_files, {len(vocabulary)}), one column per vocabulary label"
        )
    if shape[0] == 0:
        raise ValueError("no files to score: predictions and targets are empty")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("targets must be multi-hot: every entry 0 or 1")
    return predictions, targets.astype(np.int64)


def _auc_per_class(predictions, targets, vocabulary: list[str]) -> np.ndarray:
    predictions, targets = _scene_arrays(predictions, targets, vocabulary)
    positives = targets.sum(axis=0)
    if np.any((positives == 0) | (positives == len(targets))):
        return np.full(len(vocabulary), np.nan)
    return np.asarray(roc_auc_score(targets, predictions, average=None), dtype=np.float64)


def _sed_eval() -> ModuleType:
    # dcase_util (under sed_eval) imports pkg_resources, which warns on import; the warning
    # is about dcase_util's packaging, not about anything the caller can change.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        try:
            import sed_eval
        except ImportError as e:
            raise ImportError(
                f"the event metrics need sed_eval ({e}); install it with pip install sed_eval. "
                "Its dcase_util imports pkg_resources, which setuptools >= 81 no longer ships: "
                'if that is what is missing, pip install "setuptools<81"'
            ) from e
    return sed_eval


def _sed_eval_score(
    metric_class: str,
    params: dict,
    result: str,
    predicted: EventLists,
    reference: EventLists,
    vocabulary: list[str],
) -> float:
    sed_eval = _sed_eval()
    from dcase_util.containers import MetaDataContainer

    known = set(vocabulary)
    metric = getattr(sed_eval.sound_event, metric_class)(event_label_list=list(vocabulary), **params)
    for name in sorted(set(predicted) | set(reference)):
        containers = []
        for side, events in (("predicted", predicted.get(name, ())), ("reference", reference.get(name, ()))):
            rows = []
            for e in events:
                if e.label not in known:
                    raise ValueError(f"{side} event {e} in {name!r} has a label outside the vocabulary")
                # sed_eval works in seconds.
                rows.append(
                    {
                        "event_label": e.label,
                        "event_onset": e.start_ms / 1000.0,
                        "event_offset": e.end_ms / 1000.0,
                        "file": name,
                    }
                )
            containers.append(MetaDataContainer(rows))
        metric.evaluate(reference_event_list=containers[1], estimated_event_list=containers[0])
    overall = metric.results_overall_metrics()
    # results_overall_metrics nests scores by kind: {"f_measure": {"f_measure": F, ...}, ...}
    value = next(group[result] for group in overall.values() if isinstance(group, dict) and result in group)
    return float(value)

"""tympan.kit.metrics: HEAR's metrics on hand-worked examples and against heareval's own values.

The heareval values come from tests/fixtures/metrics_reference.json, recorded once by
tests/fixtures/record_metrics_reference.py in the HEAR kit's own environment (heareval is
never imported here).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tympan.kit.metrics import EVENT_METRICS, LOWER_IS_BETTER, METRICS, decode_events, score
from tympan.kit.tasks import Event

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "metrics_reference.json").read_text())
TOLERANCE = 1e-6
SQRT2_PHI_INV_075 = math.sqrt(2) * 0.6744897501960817  # sqrt(2) * Phi^-1(0.75)


def test_top1_acc_hand_worked():
    # argmax per row: a, c, a, b; targets a, c, b, b -> 3 of 4 right.
    predictions = [[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1], [0.2, 0.5, 0.3]]
    targets = [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 0]]
    assert score("top1_acc", predictions, targets, ["a", "b", "c"]) == 0.75


def test_pitch_and_chroma_acc_hand_worked():
    vocabulary = ["48", "59", "60", "72"]
    # predicted vs target pitch: 60 vs 48 (an octave off: chroma 0 = 0), 59 vs 60 (11 vs 0),
    # 72 vs 72 (right), 48 vs 59 (0 vs 11). pitch_acc 1/4, chroma_acc 2/4.
    # (heareval compares vocabulary indices mod 12 instead: 2 vs 0 on the first row, so it
    # would give 1/4 here; see the module docstring.)
    predictions = np.eye(4)[[2, 1, 3, 0]] * 0.8 + 0.05
    targets = np.eye(4)[[0, 2, 3, 1]]
    assert score("pitch_acc", predictions, targets, vocabulary) == 0.25
    assert score("chroma_acc", predictions, targets, vocabulary) == 0.5
    with pytest.raises(ValueError, match="MIDI pitch numbers"):
        score("chroma_acc", predictions, targets, ["C4", "B3", "C5", "C6"])


# Two classes, four files. Class 0: scores .9 .8 .4 .1 for targets 1 0 1 0;
# class 1: scores .1 .9 .95 .8 for targets 0 1 0 1.
PREDICTIONS = [[0.9, 0.1], [0.8, 0.9], [0.4, 0.95], [0.1, 0.8]]
TARGETS = [[1, 0], [0, 1], [1, 0], [0, 1]]


def test_map_hand_worked():
    # Class 0 ranks + - + -: precision at each positive 1/1 and 2/3, AP = 5/6.
    # Class 1 ranks - + + -: precision at each positive 1/2 and 2/3, AP = 7/12.
    # mAP = (5/6 + 7/12) / 2 = 17/24.
    assert score("mAP", PREDICTIONS, TARGETS, ["a", "b"]) == pytest.approx(17 / 24, abs=1e-12)


def test_aucroc_and_d_prime_hand_worked():
    # Class 0: positives {.9, .4} vs negatives {.8, .1}: 3 of 4 pairs ordered, AUC 3/4.
    # Class 1: positives {.9, .8} vs negatives {.1, .95}: 2 of 4, AUC 1/2. Macro AUC 5/8.
    assert score("aucroc", PREDICTIONS, TARGETS, ["a", "b"]) == pytest.approx(0.625, abs=1e-12)
    # d' per class: sqrt(2) Phi^-1(3/4) = 0.9539 and sqrt(2) Phi^-1(1/2) = 0; mean 0.4769
    # (not d' of the macro AUC, sqrt(2) Phi^-1(5/8) = 0.4506).
    assert score("d_prime", PREDICTIONS, TARGETS, ["a", "b"]) == pytest.approx(
        SQRT2_PHI_INV_075 / 2, abs=1e-12
    )


def test_a_class_absent_from_the_targets():
    # A third class, never a target: AP 0 counted in the mean, mAP = (5/6 + 7/12 + 0) / 3;
    # ROC AUC is undefined for it, so aucroc and d_prime are NaN.
    predictions = [row + [0.3] for row in PREDICTIONS]
    targets = [row + [0] for row in TARGETS]
    assert score("mAP", predictions, targets, ["a", "b", "c"]) == pytest.approx(17 / 36, abs=1e-12)
    assert math.isnan(score("aucroc", predictions, targets, ["a", "b", "c"]))
    assert math.isnan(score("d_prime", predictions, targets, ["a", "b", "c"]))


def test_a_perfectly_ranked_class_gives_infinite_d_prime():
    assert score("d_prime", [[0.9, 0.1], [0.2, 0.8]], [[1, 0], [0, 1]], ["a", "b"]) == math.inf


def test_scene_inputs_are_checked():
    with pytest.raises(ValueError, match=r"must both have shape \(n_files, 3\)"):
        score("top1_acc", PREDICTIONS, TARGETS, ["a", "b", "c"])
    with pytest.raises(ValueError, match="multi-hot"):
        score("mAP", PREDICTIONS, [[0.5, 0.5]] * 4, ["a", "b"])


# One file. Reference: dog 1000-2000, car 3000-3500, dog 6000-8000 ms.
# Predicted: dog 1040-2150 (onset 40 ms off, offset 150 ms off, within 20% of 1000 ms),
# car 3150-3520 (onset 150 ms off), dog 6020-6500 (onset 20 ms off, offset 1500 ms off),
# car 9000-9500 (nothing there).
REFERENCE_EVENTS = {"f.wav": [Event("dog", 1000, 2000), Event("car", 3000, 3500), Event("dog", 6000, 8000)]}
PREDICTED_EVENTS = {
    "f.wav": [
        Event("dog", 1040, 2150),
        Event("car", 3150, 3520),
        Event("dog", 6020, 6500),
        Event("car", 9000, 9500),
    ]
}


@pytest.mark.parametrize(
    "metric, expected",
    [
        # 200 ms onsets: 3 hits of 4 predicted, 3 reference: P 3/4, R 1, F = 2PR/(P+R) = 6/7.
        ("event_onset_200ms_fms", 6 / 7),
        # 50 ms onsets: dog 1040 and dog 6020 hit: P 2/4, R 2/3, F 4/7.
        ("event_onset_50ms_fms", 4 / 7),
        # Onset 50 ms and offset within max(50 ms, 20% of the reference length): only dog
        # 1040-2150 (150 ms <= 200 ms); dog 6020-6500 misses by 1500 > 400 ms. F = 2/7.
        ("event_onset_offset_50ms_20perc_fms", 2 / 7),
        # 1 s segments up to the last offset, 9.5 s -> 10 segments; an event covers segments
        # floor(onset) .. ceil(offset) - 1. Reference: dog {1, 6, 7}, car {3}; predicted:
        # dog {1, 2, 6}, car {3, 9}. Segment 2: 1 insertion, 7: 1 deletion, 9: 1 insertion;
        # no substitutions. ER = (S + D + I) / N_ref = 3 / 4.
        ("segment_1s_er", 3 / 4),
    ],
)
def test_event_metrics_hand_worked(metric, expected):
    assert score(metric, PREDICTED_EVENTS, REFERENCE_EVENTS, ["car", "dog"]) == pytest.approx(
        expected, abs=TOLERANCE
    )


def test_a_file_without_predictions_counts_as_missed():
    # g.wav has one reference event and no predictions: 200 ms onsets give P 3/4, R 3/4.
    reference = {**REFERENCE_EVENTS, "g.wav": [Event("dog", 0, 500)]}
    assert score("event_onset_200ms_fms", PREDICTED_EVENTS, reference, ["car", "dog"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        score("event_onset_200ms_fms", {"f.wav": [Event("cat", 0, 1)]}, REFERENCE_EVENTS, ["car", "dog"])


def test_unknown_metric_lists_the_known_ones():
    with pytest.raises(
        ValueError, match="unknown metric 'accuracy'; known metrics: top1_acc, pitch_acc, .*segment_1s_er"
    ):
        score("accuracy", PREDICTIONS, TARGETS, ["a", "b"])
    assert EVENT_METRICS <= set(METRICS) and LOWER_IS_BETTER <= EVENT_METRICS


def same(ours: float, theirs: float) -> bool:
    return (math.isnan(ours) and math.isnan(theirs)) or abs(ours - theirs) <= TOLERANCE


@pytest.mark.parametrize("case", REFERENCE["scene"], ids=lambda case: case["name"])
def test_scene_metrics_match_heareval(case):
    for metric, expected in case["expected"].items():
        ours = score(metric, case["predictions"], case["targets"], case["vocabulary"])
        assert same(ours, expected), f"{metric}: ours {ours}, heareval {expected}"


def as_events(files: dict) -> dict[str, list[Event]]:
    return {name: [Event(e["label"], e["start"], e["end"]) for e in events] for name, events in files.items()}


@pytest.mark.parametrize("metric", sorted(EVENT_METRICS))
def test_event_metrics_match_heareval(metric):
    case = REFERENCE["event"]
    ours = score(metric, as_events(case["predicted"]), as_events(case["reference"]), case["vocabulary"])
    assert same(ours, case["expected"][metric]), f"ours {ours}, heareval {case['expected'][metric]}"


def test_decoder_median_filter_removes_a_one_frame_blip():
    # 50 ms hop, 150 ms filter = 3 frames. Label a: a blip at frame 2 (its 3-frame median
    # is 0.1) and frames 6-9 on (medians at 6 and 9 stay 0.9, at 5 and 10 drop to 0.1):
    # one event from frame 6 to frame 9, 300-450 ms, 150 ms >= 100 ms kept.
    t = np.arange(12) * 50.0
    a = np.array([0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1])
    probs = np.stack([a, np.full(12, 0.1)], axis=1)
    events = decode_events(probs, t, ["a", "b"], median_filter_ms=150, min_duration_ms=100)
    assert events == [Event("a", 300.0, 450.0)]


def test_decoder_merges_consecutive_frames_and_drops_short_events():
    # No filter, 50 ms hop, min 100 ms; threshold 0.5 is strict.
    # Frames 0-2 on: merged into one event 0-100 ms (last frame's timestamp), 100 ms kept.
    # Frames 4-5 on: 200-250 ms, 50 ms < 100 ms, dropped. Frame 7: 350-350 ms, dropped.
    # Frame 9 at exactly 0.5: not on. Label b: frames 1-4 on, 50-200 ms, kept; it starts
    # later than a's first event, so it comes second.
    t = np.arange(10) * 50.0
    a = [0.9, 0.9, 0.9, 0.1, 0.6, 0.6, 0.1, 0.9, 0.1, 0.5]
    b = [0.0, 0.7, 0.7, 0.7, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0]
    events = decode_events(np.array([a, b]).T, t, ["a", "b"], median_filter_ms=0, min_duration_ms=100)
    assert events == [Event("a", 0.0, 100.0), Event("b", 50.0, 200.0)]


def test_decoder_inputs_are_checked():
    with pytest.raises(ValueError, match="strictly increasing"):
        decode_events(np.zeros((3, 1)), [0.0, 20.0, 20.0], ["a"])
    with pytest.raises(ValueError, match=r"expected \(n_frames, 2\)"):
        decode_events(np.zeros((3, 1)), [0.0, 20.0, 40.0], ["a", "b"])
    # A single frame has no hop to size the filter: decoded unfiltered.
    assert decode_events(np.array([[0.9]]), [40.0], ["a"], min_duration_ms=0) == [Event("a", 40.0, 40.0)]


@pytest.mark.parametrize("case", REFERENCE["decoder"], ids=lambda case: f"hop{case['timestamps_ms'][1]:g}ms")
def test_decoder_matches_heareval(case):
    probs = np.array(case["frame_probs"], dtype=np.float32)
    for run in case["runs"]:
        events = decode_events(
            probs,
            np.array(case["timestamps_ms"]),
            case["vocabulary"],
            median_filter_ms=run["median_filter_ms"],
            min_duration_ms=run["min_duration_ms"],
        )
        assert [e.label for e in events] == [label for label, _, _ in run["expected"]]
        times = [(e.start_ms, e.end_ms) for e in events]
        np.testing.assert_allclose(
            times, [(start, end) for _, start, end in run["expected"]], rtol=0, atol=TOLERANCE
        )

"""The synthetic speech tasks (tympan.suite.speech), built at suite="tiny".

Each task is built twice, into two folders: the second build must give the same bytes.
Needs espeak-ng, flite and festival with its voices (see speech.FESTIVAL_VOICES).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.kit.tasks import read_task
from tympan.suite import speech
from tympan.suite.build import manifest

BUILDERS = {
    "keywords": (speech.build_keywords, speech.KEYWORDS_PER_LABEL["tiny"]),
    "language": (speech.build_language, speech.LANGUAGE_PER_LABEL["tiny"]),
    "speaker-count": (speech.build_speaker_count, speech.COUNT_PER_LABEL["tiny"]),
}


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """name -> (first build's folder, second build's folder), each task built on first use."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in done:
            build = BUILDERS[name][0]
            first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
            done[name] = (build(first, "tiny"), build(second, "tiny"))
        return done[name]

    return get


@pytest.fixture(params=sorted(BUILDERS))
def built(request, builds) -> tuple[str, Path, Path]:
    """(task name, first build's folder, second build's folder) for each task."""
    return (request.param, *builds(request.param))


def test_builds_are_byte_identical(built):
    _, first, second = built
    assert first.name == second.name
    digests = manifest([first], first)
    assert any(name.endswith(".wav") for name in digests)
    assert digests == manifest([second], second)


def test_folder_reads_back_with_the_planned_labels(built):
    name, folder, _ = built
    task = read_task(folder)
    assert folder.name == f"{name}-v1-tiny"
    assert (task.embedding_type, task.prediction_type, task.split_mode) == ("scene", "multiclass", "trainvaltest")
    assert task.evaluation[0] == "top1_acc"
    per_label = BUILDERS[name][1]
    for split in speech.SPLITS:
        counts = Counter(labels[0] for labels in task.labels[split].values())
        assert set(counts) == set(task.vocabulary), split
        assert set(counts.values()) == {per_label[split]}, split


def test_expected_vocabularies(built):
    name, folder, _ = built
    vocabulary = read_task(folder).vocabulary
    expected = {
        "keywords": {*speech.KEYWORDS, speech.UNKNOWN, speech.SILENCE},
        "language": set(speech.LANGUAGES),
        "speaker-count": {str(k) for k in range(speech.MAX_TALKERS + 1)},
    }[name]
    assert set(vocabulary) == expected


def test_audio_is_16k_mono_full_length_and_not_silent(built):
    _, folder, _ = built
    task = read_task(folder)
    n = round(task.sample_duration * speech.SAMPLE_RATE)
    for split, files in task.labels.items():
        for file in files:
            x, rate = sf.read(folder / "16000" / split / file, always_2d=True)
            assert (rate, x.shape) == (16000, (n, 1)), file
            assert 1e-3 < np.sqrt(np.mean(x**2)) < 0.5, file


def test_no_source_group_in_two_splits(built):
    name, folder, _ = built
    task = read_task(folder)
    groups = task.extra["source_groups"]
    assert {s: set(files) for s, files in groups.items()} == {s: set(f) for s, f in task.labels.items()}
    per_split = {s: {g for gs in files.values() for g in gs} for s, files in groups.items()}
    for a, b in [("train", "valid"), ("train", "test"), ("valid", "test")]:
        assert not per_split[a] & per_split[b], (a, b)
    for split in ("train", "valid"):
        assert all(g.startswith("espeak-ng:") for g in per_split[split])
        assert {speech.variant_split(g.split(":")[1]) for g in per_split[split]} == {split}
    if name == "keywords":  # test speakers come from other engines only
        assert not any(g.startswith("espeak-ng:") for g in per_split["test"])


def test_language_test_voices_are_unseen_engines_where_they_exist(builds):
    task = read_task(builds("language")[0])
    groups = task.extra["source_groups"]["test"]
    for file, (label,) in task.labels["test"].items():
        (group,) = groups[file]
        if speech.LANGUAGES[label][1]:
            assert not group.startswith("espeak-ng:"), (label, group)
        else:
            assert speech.variant_split(group.split(":")[1]) == "test", (label, group)


def test_speaker_count_has_that_many_distinct_speakers(builds):
    task = read_task(builds("speaker-count")[0])
    for split, files in task.labels.items():
        for file, (label,) in files.items():
            groups = task.extra["source_groups"][split][file]
            assert len(groups) == len(set(groups)) == int(label), (split, file)


def test_variant_split_covers_every_split():
    counts = Counter(speech.variant_split(v) for v in speech.espeak_variants())
    assert set(counts) == set(speech.SPLITS)
    assert counts["train"] > counts["valid"] >= 5 and counts["test"] >= 5


def test_unknown_suite_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown suite"):
        speech.build_keywords(tmp_path, "medium")

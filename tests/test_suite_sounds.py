"""The real-recording sound tasks (drum-hits, music-speech, sound-events), built tiny.

Each task is built twice into separate folders: the first build is checked for format,
labels, sizes and split disjointness by source group, the second must match it byte for
byte. The Debian packages are fetched into the tympan cache on first use (~1 GB).
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.kit.tasks import Event, read_task
from tympan.suite import sounds
from tympan.suite.build import manifest

BUILDERS = {
    "drum-hits": sounds.build_drum_hits,
    "music-speech": sounds.build_music_speech,
    "sound-events": sounds.build_sound_events,
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """task name -> (first build's folder, second build's folder)."""
    out = {}
    for name, build in BUILDERS.items():
        first = build(tmp_path_factory.mktemp(f"{name}-a"), "tiny")
        second = build(tmp_path_factory.mktemp(f"{name}-b"), "tiny")
        out[name] = (Path(first), Path(second))
    return out


def _check_common(folder: Path, name: str, duration: float):
    task = read_task(folder)
    assert folder.name == f"{name}-v1-tiny"
    assert (task.task_name, task.mode, task.split_mode) == (name, "tiny", "trainvaltest")
    assert task.splits == ["train", "valid", "test"]
    assert task.sample_duration == duration
    groups = task.extra["source_groups"]
    assert set(groups) == set(task.splits)
    for split in task.splits:
        assert task.labels[split], f"split {split} is empty"
        assert set(groups[split]) == set(task.labels[split])
        for file in task.labels[split]:
            info = sf.info(str(folder / "16000" / split / file))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == round(duration * 16000)
    # No source group (kit author, package) in two splits.
    per_split = {split: {g for gs in groups[split].values() for g in gs} for split in task.splits}
    for a in task.splits:
        for b in task.splits:
            if a < b:
                assert not per_split[a] & per_split[b], f"groups in both {a} and {b}: {per_split[a] & per_split[b]}"
    assert task.extra["source_versions"]
    return task


@pytest.mark.parametrize("name", list(BUILDERS))
def test_deterministic(built, name):
    first, second = built[name]
    assert manifest([first], first) == manifest([second], second)


def test_drum_hits(built):
    folder = built["drum-hits"][0]
    task = _check_common(folder, "drum-hits", 1.0)
    assert task.vocabulary == ["clap", "cowbell", "crash", "hihat", "kick", "ride", "snare", "tom"]
    assert (task.embedding_type, task.prediction_type, task.evaluation) == ("scene", "multiclass", ["top1_acc"])
    for split in task.splits:
        counts = Counter(labels[0] for labels in task.labels[split].values())
        assert set(counts) == set(task.vocabulary), f"{split} lacks {set(task.vocabulary) - set(counts)}"
        assert max(counts.values()) <= sounds.DRUM_TINY_PER_LABEL
        groups = task.extra["source_groups"][split]
        assert all(len(g) == 1 and g[0].startswith("hydrogen-drumkits:") for g in groups.values())
    # A hit starts within the 30 ms pre-roll: the clip is not a silent or late one.
    x, _ = sf.read(str(folder / "16000" / "test" / sorted(task.labels["test"])[0]))
    assert np.argmax(np.abs(x) > 0.5 * np.abs(x).max()) < 0.1 * 16000


def test_music_speech(built):
    folder = built["music-speech"][0]
    task = _check_common(folder, "music-speech", 5.0)
    assert task.vocabulary == ["music", "speech"]
    for split in task.splits:
        counts = Counter(labels[0] for labels in task.labels[split].values())
        per_label = sounds.MUSIC_SPEECH_PER_LABEL["tiny"][split]
        assert counts == {"music": per_label, "speech": per_label}
        for file, labels in task.labels[split].items():
            (package,) = task.extra["source_groups"][split][file]
            assert package in sounds.MUSIC_SPEECH_SOURCES[split][labels[0]]
            x, _ = sf.read(str(folder / "16000" / split / file))
            rms_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
            assert -33 < rms_db < -17, f"{split}/{file} at {rms_db:.1f} dBFS"


def test_sound_events(built):
    folder = built["sound-events"][0]
    task = _check_common(folder, "sound-events", 10.0)
    assert task.vocabulary == sorted(["bell", "clap", "cymbal", "explosion", "hihat", "kick", "snare", "speech", "tom"])
    assert (task.embedding_type, task.prediction_type) == ("event", "multilabel")
    assert task.evaluation == ["event_onset_200ms_fms", "segment_1s_er"]
    for split in task.splits:
        for file, events in task.labels[split].items():
            assert sounds.EVENTS_PER_CLIP[0] <= len(events) <= sounds.EVENTS_PER_CLIP[1]
            assert all(isinstance(e, Event) for e in events)
            assert events == sorted(events, key=lambda e: (e.start_ms, e.label))
            for e in events:
                assert 0 <= e.start_ms < e.end_ms <= 10000
                assert e.end_ms - e.start_ms >= min(sounds.MIN_EVENT * 1000, 10000 - e.start_ms) - 1e-6
            by_label: dict[str, list[Event]] = {}
            for e in events:
                by_label.setdefault(e.label, []).append(e)
            for same in by_label.values():
                assert all(a.end_ms <= b.start_ms for a, b in zip(same, same[1:])), f"{file}: same-class events overlap"
            # Every event is audible where it is labelled: its first 50 ms are louder than
            # the quietest 50 ms of the clip (the background alone).
            x, _ = sf.read(str(folder / "16000" / split / file))
            frames = x[: len(x) // 800 * 800].reshape(-1, 800)
            floor = np.sqrt(np.mean(frames**2, axis=1)).min()
            for e in events:
                start = round(e.start_ms * 16)
                onset_rms = np.sqrt(np.mean(x[start : start + 800] ** 2))
                assert onset_rms > floor, f"{file}: {e} is not above the background"


def test_loop_is_seamless():
    x = np.sin(2 * np.pi * 5 * np.arange(1000) / 1000)  # whole periods: a perfect loop
    y = sounds.loop(x, 3500, 250)
    assert y.shape == (3500,)
    assert np.max(np.abs(np.diff(y))) < 2 * np.max(np.abs(np.diff(x)))


def test_fit_pads_and_fades():
    assert np.array_equal(sounds.fit(np.ones(3), 5), [1, 1, 1, 0, 0])
    cut = sounds.fit(np.ones(1000), 500)
    assert cut.shape == (500,) and cut[0] == 1 and cut[-1] == 0

"""The rendered music tasks (pitch, instrument, note-onsets), built tiny, and their renderer.

Each task is built twice into separate folders: the first build is checked for format,
labels, sizes and split disjointness by source group (sound-set group, and score for
note-onsets), the second must match it byte for byte. The renderer is checked directly:
notes start on the labelled sample and sound at the labelled pitch in both engines. The
Debian sound sets are fetched into the tympan cache on first use (~290 MB); fluidsynth's
library and TiMidity++ must be installed.
"""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.kit.tasks import read_task
from tympan.suite import music
from tympan.suite.build import manifest
from tympan.suite.music import Note

BUILDERS = {
    "pitch": music.build_pitch,
    "instrument": music.build_instrument,
    "note-onsets": music.build_note_onsets,
}
SPLIT_GROUP = {"train": "soundset:fluid", "valid": "soundset:freepats", "test": "soundset:timgm6mb"}
SETS_BY_NAME = {s.name: s for s in music.SOUND_SETS}


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
    sources = task.extra["clip_sources"]
    for split in task.splits:
        assert len(task.labels[split]) == music.SIZES[name]["tiny"][split]
        assert set(groups[split]) == set(sources[split]) == set(task.labels[split])
        for file in task.labels[split]:
            info = sf.info(str(folder / "16000" / split / file))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == round(duration * 16000)
            assert groups[split][file][0] == SPLIT_GROUP[split]
            # The sound set named for the file belongs to its split's group.
            sound_set = SETS_BY_NAME[sources[split][file].split()[0]]
            assert f"soundset:{sound_set.group}" == SPLIT_GROUP[split]
    per_split = {split: {g for gs in groups[split].values() for g in gs} for split in task.splits}
    for a in task.splits:
        for b in task.splits:
            if a < b:
                assert not per_split[a] & per_split[b], f"groups in both {a} and {b}: {per_split[a] & per_split[b]}"
    assert {"fluid-soundfont-gm", "freepats", "timgm6mb-soundfont"} <= set(task.extra["source_versions"])
    return task


@pytest.mark.parametrize("name", list(BUILDERS))
def test_deterministic(built, name):
    first, second = built[name]
    assert manifest([first], first) == manifest([second], second)


def test_pitch(built):
    task = _check_common(built["pitch"][0], "pitch", music.NOTE_SECONDS)
    # All 88 keys in numeric order, so that index % 12 is the pitch class (chroma_acc).
    assert task.vocabulary == [str(p) for p in range(21, 109)]
    assert (task.embedding_type, task.prediction_type, task.evaluation) == (
        "scene", "multiclass", ["pitch_acc", "chroma_acc"],
    )  # fmt: skip
    for split in task.splits:
        for file, (label,) in task.labels[split].items():
            description = task.extra["clip_sources"][split][file]
            program = int(description.split()[2])
            assert f"key {label} " in description
            assert program in music.PITCHED_PROGRAMS
            assert music.PROGRAMS[program][1] <= int(label) <= music.PROGRAMS[program][2]
    # Keys are balanced: no key more than once in a tiny split.
    assert max(Counter(labels[0] for labels in task.labels["train"].values()).values()) == 1


def test_instrument(built):
    task = _check_common(built["instrument"][0], "instrument", music.NOTE_SECONDS)
    assert task.vocabulary == list(music.FAMILIES)
    assert len(task.vocabulary) == 11
    assert (task.embedding_type, task.prediction_type, task.evaluation) == ("scene", "multiclass", ["top1_acc"])
    # tiny train has every family exactly once.
    assert Counter(labels[0] for labels in task.labels["train"].values()) == Counter(music.FAMILIES)
    for split in task.splits:
        for file, (label,) in task.labels[split].items():
            program = int(task.extra["clip_sources"][split][file].split()[2])
            assert music.PROGRAMS[program][0] == label
            if split == "valid":
                assert program not in music.FREEPATS_SHARED


def test_note_onsets(built):
    task = _check_common(built["note-onsets"][0], "note-onsets", music.CLIP_SECONDS)
    assert task.vocabulary == [str(p) for p in range(21, 109)]
    assert (task.embedding_type, task.prediction_type) == ("event", "multilabel")
    assert task.evaluation[0] == "event_onset_50ms_fms"
    assert task.evaluation_params["event_postprocessing_grid"] == {"median_filter_ms": [150], "min_duration": [50]}
    sources = task.extra["clip_sources"]
    for split in task.splits:
        kinds = Counter("score" if " score " in d else "random" for d in sources[split].values())
        assert kinds == {"score": 1, "random": 1} if split != "train" else {"score": 2, "random": 2}
        for file, events in task.labels[split].items():
            assert len(events) >= 5
            by_label: dict[str, list] = {}
            for e in events:
                assert 0 <= e.start_ms < e.end_ms <= 10000
                assert e.start_ms % music.GRID_MS == 0 and e.end_ms % music.GRID_MS == 0
                assert e.end_ms - e.start_ms >= music.MIN_NOTE_MS or e.end_ms == 10000
                by_label.setdefault(e.label, []).append(e)
            # Events of one key never overlap: a re-struck key ends the earlier note.
            for same in by_label.values():
                same.sort(key=lambda e: e.start_ms)
                assert all(a.end_ms <= b.start_ms for a, b in zip(same, same[1:]))
            score_groups = [g for g in task.extra["source_groups"][split][file] if g.startswith("score:")]
            assert len(score_groups) == (1 if " score " in sources[split][file] else 0)


def test_clean_notes():
    notes = [
        Note(0, 100, 60, 80, 0),
        Note(50, 120, 60, 80, 1),  # re-strikes key 60 on another channel: cuts the first at 50
        Note(50, 60, 60, 90, 0),  # struck with the previous one: the longer one is kept
        Note(200, 205, 62, 80, 0),  # 20 ms: too short
        Note(2600, 2700, 64, 80, 0),  # starts after the clip
    ]
    assert music.clean_notes(notes, n_steps=2500) == [Note(0, 50, 60, 80, 0), Note(50, 120, 60, 80, 1)]


def test_score_groups():
    assert music._score_group("bach", "bwv18.5-lz") == music._score_group("bach", "bwv18.5-w") == "bach/bwv18.5"
    assert music._score_group("palestrina", "Kyrie_44") == music._score_group("palestrina", "Credo_44_a")
    assert music._score_group("palestrina", "Agnus_I") == "palestrina/mass-unnumbered"
    splits = Counter(music.score_split(f"bach/bwv{i}") for i in range(1000))
    assert 0.65 < splits["train"] / 1000 < 0.75 and splits["valid"] > 100 and splits["test"] > 100
    # No score group of music21's corpus is in two splits.
    found = music.scores()
    for collection in music.SCORE_COLLECTIONS:
        per_split = [{s.group for s in found[split][collection]} for split in music.SPLITS]
        assert all(per_split)
        assert not (per_split[0] & per_split[1] or per_split[0] & per_split[2] or per_split[1] & per_split[2])


def test_patch_programs():
    config = (
        "drumset 0\n 35 Drum_000/035_Kick.pat\n"
        "bank 0\n\n 0 Tone_000/000_Piano.pat amp=120  # piano\n 40 Tone_000/040_Violin.pat\n"
    )
    assert music._patch_programs(config) == {0, 40}


def _f0(x: np.ndarray) -> float:
    """Fundamental frequency (Hz) of a steady 100 ms stretch of x, by autocorrelation."""
    frame = x[:1600] - x[:1600].mean()
    ac = np.correlate(frame, frame, "full")[len(frame) - 1 :]
    low, high = music.SAMPLE_RATE // 1000, music.SAMPLE_RATE // 60
    lag = low + int(np.argmax(ac[low:high]))
    # Parabolic interpolation around the peak for sub-sample lag.
    a, b, c = ac[lag - 1], ac[lag], ac[lag + 1]
    return music.SAMPLE_RATE / (lag + 0.5 * (a - c) / (a - 2 * b + c))


@pytest.mark.parametrize("set_name", ["TimGM6mb", "freepats"])
@pytest.mark.parametrize("program", [0, 40, 73])
def test_render_onset_and_pitch(set_name, program):
    """A note starts on its labelled sample and sounds at its key, in both engines."""
    sound_sets = music._SoundSets()
    onset = 1000 // music.GRID_MS  # 1 s
    note = Note(onset, onset + 1500 // music.GRID_MS, 69, 100, 0)
    x = music.render(sound_sets, SETS_BY_NAME[set_name], {0: program}, [note], 3.0, -6.0)
    assert x.shape == (3 * 16000,)
    assert np.max(np.abs(x)) == pytest.approx(10 ** (-6 / 20))
    start = 16000  # 1 s at 16 kHz
    # Silence until the onset (but for the resampler's ~1 ms pre-ringing), sound right after.
    assert np.max(np.abs(x[: start - 32])) < 1e-4
    assert np.max(np.abs(x[start : start + 160])) > 1e-3
    semitones = 12 * np.log2(_f0(x[start + 4000 :]) / 440.0)
    assert abs(semitones) < 0.3


def test_timidity_deterministic():
    """TiMidity renders a busy note sequence to the same samples every time (its note cache is off)."""
    sound_sets = music._SoundSets()
    notes = [Note(i * 100, i * 100 + 150, key, 100, 0) for i, key in enumerate(range(21, 109, 6))]
    first, *others = (music.render(sound_sets, SETS_BY_NAME["freepats"], {0: 0}, notes, 7.0, -6.0) for _ in range(3))
    assert all(np.array_equal(first, other) for other in others)

"""tympan.kit.tasks: the HEAR task folder, read strictly and written byte for byte the same."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tympan.kit.tasks import (
    DataSplit,
    Event,
    Task,
    TaskFormatError,
    add_sample_rate,
    audio_path,
    data_splits,
    frame_targets,
    list_tasks,
    read_task,
    scene_targets,
    sort_labels,
    write_task,
)

FIXTURE = Path(__file__).parent / "fixtures" / "metrics_reference.json"


def scene_task(**changes) -> Task:
    """A multiclass scene task, trainvaltest, 0.25 s clips."""
    fields = dict(
        task_name="toy_scene",
        version="v1",
        embedding_type="scene",
        prediction_type="multiclass",
        split_mode="trainvaltest",
        sample_duration=0.25,
        evaluation=["top1_acc", "mAP"],
        splits=["train", "valid", "test"],
        mode="full",
        vocabulary=["bark", "meow", "moo"],
        labels={
            "train": {"a.wav": ["bark"], "b.wav": ["meow"], "c.wav": ["moo"]},
            "valid": {"d.wav": ["meow"]},
            "test": {"e.wav": ["bark"], "f.wav": ["moo"]},
        },
        extra={
            "default_mode": "full",
            "download_urls": [{"split": "train", "url": "https://example.org/x.zip"}],
        },
    )
    fields.update(changes)
    return Task(**fields)


def event_task(**changes) -> Task:
    """A multilabel event task in 3 new folds, untrimmed audio."""
    fields = dict(
        task_name="toy_events",
        version="2021",
        embedding_type="event",
        prediction_type="multilabel",
        split_mode="new_split_kfold",
        sample_duration=None,
        evaluation=["event_onset_200ms_fms", "segment_1s_er"],
        splits=["fold00", "fold01", "fold02"],
        nfolds=3,
        mode="5h",
        vocabulary=["car", "dog"],
        labels={
            "fold00": {"x.wav": [Event("dog", 10.0, 120.5), Event("car", 50.0, 50.0)]},
            "fold01": {"y.wav": [], "z.wav": [Event("car", 0.0, 200.0)]},
            "fold02": {"w.wav": [Event("dog", 100.0, 180.0)]},
        },
        evaluation_params={"event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]}},
    )
    fields.update(changes)
    return Task(**fields)


def noise_for(task: Task, seconds: float = 0.3, rate: int = 16000) -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        (split, name): rng.uniform(-0.5, 0.5, round(seconds * rate) + i * 37)
        for split in task.splits
        for i, name in enumerate(sorted(task.labels[split]))
    }


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("make", [scene_task, event_task])
def test_write_then_read_gives_the_same_task(tmp_path, make):
    task = make()
    folder = write_task(task, noise_for(task), tmp_path)

    assert folder == tmp_path / task.name
    back = read_task(folder)
    assert back == task
    assert back.path == folder
    assert back.primary_metric == task.evaluation[0]


def test_written_audio_is_mono_16bit_pcm_trimmed_or_padded_at_every_rate(tmp_path):
    task = scene_task()
    audio = noise_for(task, seconds=0.2)  # shorter than 0.25 s for some files, longer for others
    audio[("train", "a.wav")] = np.full(8000, 1.5)  # out of range: clipped, not wrapped
    folder = write_task(task, audio, tmp_path, sample_rates=(16000, 22050))

    for rate in (16000, 22050):
        read_task(folder, sample_rate=rate)
        for split in task.splits:
            for name in task.labels[split]:
                info = sf.info(audio_path(read_task(folder, rate), split, name, rate))
                assert (info.channels, info.subtype, info.format) == (1, "PCM_16", "WAV")
                assert info.samplerate == rate
                assert info.frames == round(0.25 * rate)
    clipped, _ = sf.read(folder / "16000" / "train" / "a.wav")
    assert clipped[:8000].min() > 0.99 and np.all(clipped[8000:] == 0)  # clipped, then zero-padded


def test_untrimmed_audio_keeps_its_length(tmp_path):
    task = event_task()
    audio = noise_for(task)
    folder = write_task(task, audio, tmp_path)
    for (split, name), samples in audio.items():
        assert sf.info(folder / "16000" / split / name).frames == len(samples)


@pytest.mark.parametrize("make", [scene_task, event_task])
def test_writing_twice_gives_identical_bytes(tmp_path, make):
    task = make()
    first = write_task(task, noise_for(task), tmp_path / "one", sample_rates=(16000, 44100))
    second = write_task(task, noise_for(task), tmp_path / "two", sample_rates=(44100, 16000))

    assert digests(first) == digests(second)
    assert len(digests(first)) == 2 + len(task.splits) + 2 * sum(map(len, task.labels.values()))


@pytest.mark.parametrize("make", [scene_task, event_task])
def test_add_sample_rate_resamples_the_16k_audio_like_write_task(tmp_path, make):
    task = make()
    audio = {k: 0.5 * v for k, v in noise_for(task).items()}
    direct = write_task(task, audio, tmp_path / "direct", sample_rates=(16000, 44100))
    later = write_task(task, audio, tmp_path / "later")
    added = add_sample_rate(later, 44100)
    assert added == later / "44100"
    read_task(later, sample_rate=44100)
    for split in task.splits:
        for name in task.labels[split]:
            a, ra = sf.read(direct / "44100" / split / name)
            b, rb = sf.read(later / "44100" / split / name)
            # Same length and rate; the added folder was resampled from the 16-bit 16 kHz files,
            # so it differs from the direct write by about the 16-bit quantisation step, except
            # in the last few ms of a trimmed clip, where the direct write still saw the audio
            # beyond the cut.
            assert ra == rb == 44100 and a.shape == b.shape
            assert np.abs(a[:-300] - b[:-300]).max() < 5e-4
    with pytest.raises(FileExistsError, match="44100 already exists"):
        add_sample_rate(later, 44100)
    assert not list(later.glob(".44100.tmp-*"))


def test_written_files_follow_the_hear_layout(tmp_path):
    task = event_task()
    folder = write_task(task, noise_for(task), tmp_path)

    assert (folder / "labelvocabulary.csv").read_text() == "idx,label\n0,car\n1,dog\n"
    meta = json.loads((folder / "task_metadata.json").read_text())
    assert meta["nfolds"] == 3 and meta["evaluation_params"] == task.evaluation_params
    fold0 = json.loads((folder / "fold00.json").read_text())
    assert fold0 == {
        "x.wav": [{"label": "dog", "start": 10.0, "end": 120.5}, {"label": "car", "start": 50.0, "end": 50.0}]
    }
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    scene_meta = json.loads(
        (write_task(scene_task(), noise_for(scene_task()), tmp_path) / "task_metadata.json").read_text()
    )
    assert "nfolds" not in scene_meta and "evaluation_params" not in scene_meta
    assert scene_meta["default_mode"] == "full"  # extra keys written back


def test_write_task_refuses_what_would_not_read_back(tmp_path):
    task = scene_task()
    with pytest.raises(TaskFormatError, match="labelvocabulary.csv: label: .*sort_labels"):
        write_task(scene_task(vocabulary=["moo", "bark", "meow"]), noise_for(task), tmp_path)
    with pytest.raises(
        TaskFormatError, match=r"test.json: 'e.wav'\[0\]: 'oink' is not in labelvocabulary.csv"
    ):
        write_task(scene_task(labels={**task.labels, "test": {"e.wav": ["oink"]}}), noise_for(task), tmp_path)
    with pytest.raises(TaskFormatError, match="task_metadata.json: prediction_type"):
        write_task(scene_task(prediction_type="regression"), noise_for(task), tmp_path)
    audio = noise_for(task)
    del audio[("valid", "d.wav")]
    with pytest.raises(ValueError, match=r"missing \[\('valid', 'd.wav'\)\]"):
        write_task(task, audio, tmp_path)
    audio = noise_for(task)
    audio[("train", "a.wav")] = np.zeros((2, 100))
    with pytest.raises(ValueError, match="mono"):
        write_task(task, audio, tmp_path)
    audio[("train", "a.wav")] = np.array([0.0, np.nan])
    with pytest.raises(ValueError, match="NaN"):
        write_task(task, audio, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written

    write_task(task, noise_for(task), tmp_path)
    with pytest.raises(FileExistsError, match="toy_scene-v1-full already exists"):
        write_task(task, noise_for(task), tmp_path)


# Each case breaks one thing in a valid task folder, and names the file and the field that
# the error message must give.
def set_meta(key, value):
    def edit(folder: Path):
        meta = json.loads((folder / "task_metadata.json").read_text())
        if value is KeyError:
            del meta[key]
        else:
            meta[key] = value
        (folder / "task_metadata.json").write_text(json.dumps(meta))

    return edit


def set_split(split, name, value):
    def edit(folder: Path):
        data = json.loads((folder / f"{split}.json").read_text())
        data[name] = value
        (folder / f"{split}.json").write_text(json.dumps(data))

    return edit


def write_file(relpath, text):
    return lambda folder: (folder / relpath).write_text(text)


def remove(relpath):
    return lambda folder: (folder / relpath).unlink()


SCENE_ERRORS = {
    "no metadata": (remove("task_metadata.json"), "task_metadata.json", "file", "missing"),
    "metadata not json": (
        write_file("task_metadata.json", "{oops"),
        "task_metadata.json",
        "line 1 column 2",
        "not valid JSON",
    ),
    "missing key": (set_meta("split_mode", KeyError), "task_metadata.json", "split_mode", "missing key"),
    "bad embedding_type": (
        set_meta("embedding_type", "timestamp"),
        "task_metadata.json",
        "embedding_type",
        "'timestamp'",
    ),
    "bad prediction_type": (
        set_meta("prediction_type", "regression"),
        "task_metadata.json",
        "prediction_type",
        "multiclass | multilabel",
    ),
    "bad split_mode": (set_meta("split_mode", "kfold"), "task_metadata.json", "split_mode", "'kfold'"),
    "bad duration": (set_meta("sample_duration", -1), "task_metadata.json", "sample_duration", "positive"),
    "empty evaluation": (set_meta("evaluation", []), "task_metadata.json", "evaluation", "non-empty"),
    "wrong splits": (
        set_meta("splits", ["train", "test"]),
        "task_metadata.json",
        "splits",
        "train, valid, test",
    ),
    "nfolds in trainvaltest": (set_meta("nfolds", 5), "task_metadata.json", "nfolds", "trainvaltest"),
    "no vocabulary": (remove("labelvocabulary.csv"), "labelvocabulary.csv", "file", "missing"),
    "bad header": (
        write_file("labelvocabulary.csv", "id,name\n0,bark\n"),
        "labelvocabulary.csv",
        "header",
        "'id,name'",
    ),
    "idx out of order": (
        write_file("labelvocabulary.csv", "idx,label\n0,bark\n2,meow\n"),
        "labelvocabulary.csv",
        "line 3 idx",
        "expected 1",
    ),
    "three columns": (
        write_file("labelvocabulary.csv", "idx,label\n0,bark,x\n"),
        "labelvocabulary.csv",
        "line 2",
        "3 columns",
    ),
    "duplicate label": (
        write_file("labelvocabulary.csv", "idx,label\n0,bark\n1,bark\n"),
        "labelvocabulary.csv",
        "line 3 label",
        "twice",
    ),
    "empty vocabulary": (
        write_file("labelvocabulary.csv", "idx,label\n"),
        "labelvocabulary.csv",
        "label",
        "empty",
    ),
    "no split file": (remove("valid.json"), "valid.json", "file", "split 'valid' is listed"),
    "no wav": (remove("16000/test/f.wav"), "test.json", "'f.wav'", "16000/test/f.wav does not exist"),
    "label not in vocabulary": (
        set_split("test", "e.wav", ["oink"]),
        "test.json",
        "'e.wav'[0]",
        "'oink' is not in labelvocabulary.csv",
    ),
    "two labels, multiclass": (
        set_split("train", "a.wav", ["bark", "moo"]),
        "train.json",
        "'a.wav'",
        "exactly one",
    ),
    "no label, multiclass": (set_split("train", "a.wav", []), "train.json", "'a.wav'", "exactly one"),
    "path as file name": (
        set_split("train", "../a.wav", ["bark"]),
        "train.json",
        "'../a.wav'",
        "plain file name",
    ),
}

EVENT_ERRORS = {
    "end before start": (
        set_split("fold01", "z.wav", [{"label": "car", "start": 300, "end": 200}]),
        "fold01.json",
        "'z.wav'[0].end",
        "before start 300",
    ),
    "event without start": (
        set_split("fold01", "z.wav", [{"label": "car", "end": 200}]),
        "fold01.json",
        "'z.wav'[0].start",
        "missing key",
    ),
    "event without label": (
        set_split("fold02", "w.wav", [{"label": "dog", "start": 1, "end": 2}, {"start": 1, "end": 2}]),
        "fold02.json",
        "'w.wav'[1].label",
        "missing key",
    ),
    "event label not in vocabulary": (
        set_split("fold02", "w.wav", [{"label": "cat", "start": 1, "end": 2}]),
        "fold02.json",
        "'w.wav'[0].label",
        "'cat' is not in labelvocabulary.csv",
    ),
    "non-numeric time": (
        set_split("fold02", "w.wav", [{"label": "dog", "start": "1s", "end": 2}]),
        "fold02.json",
        "'w.wav'[0].start",
        "not a finite number",
    ),
    "no nfolds": (set_meta("nfolds", KeyError), "task_metadata.json", "nfolds", "missing key"),
    "folds do not match nfolds": (set_meta("nfolds", 4), "task_metadata.json", "splits", "fold00 ... fold03"),
    "too few folds": (set_meta("nfolds", 2), "task_metadata.json", "nfolds", ">= 3"),
}


@pytest.mark.parametrize(
    "make, edit, file, field, problem",
    [pytest.param(scene_task, *case, id=name) for name, case in SCENE_ERRORS.items()]
    + [pytest.param(event_task, *case, id=name) for name, case in EVENT_ERRORS.items()],
)
def test_read_task_names_the_file_and_field_of_each_error(tmp_path, make, edit, file, field, problem):
    task = make()
    folder = write_task(task, noise_for(task, seconds=0.05), tmp_path)
    edit(folder)

    with pytest.raises(TaskFormatError) as info:
        read_task(folder)
    message = str(info.value)
    assert info.value.path.name == Path(file).name and info.value.field == field, message
    assert f"{file}: {field}: " in message and problem in message, message


def test_missing_sample_rate_folder_says_which_rates_exist(tmp_path):
    task = scene_task()
    folder = write_task(task, noise_for(task, seconds=0.05), tmp_path, sample_rates=(16000, 48000))

    with pytest.raises(
        TaskFormatError, match="no audio at 44100 Hz; rates present: 16000 Hz, 48000 Hz"
    ) as info:
        read_task(folder, sample_rate=44100)
    assert info.value.path == folder / "44100" and info.value.field == "sample rate folder"


def test_missing_split_audio_folder_is_named(tmp_path):
    task = scene_task()
    folder = write_task(task, noise_for(task, seconds=0.05), tmp_path)
    for wav in (folder / "16000" / "valid").iterdir():
        wav.unlink()
    (folder / "16000" / "valid").rmdir()

    with pytest.raises(TaskFormatError, match="16000/valid: split folder: missing"):
        read_task(folder)


def test_numeric_labels_are_read_as_strings(tmp_path):
    # hear-preprocess writes NSynth's pitch labels as JSON numbers and sorts them as numbers.
    task = scene_task(
        vocabulary=["9", "10", "100"],
        labels={
            "train": {"a.wav": ["9"]},
            "valid": {"b.wav": ["100"]},
            "test": {"c.wav": ["10"]},
        },
    )
    folder = write_task(task, noise_for(task, seconds=0.05), tmp_path)
    (folder / "train.json").write_text('{"a.wav": [9]}')

    assert read_task(folder) == task


def test_list_tasks_and_audio_path(tmp_path):
    scene, events = scene_task(), event_task()
    write_task(scene, noise_for(scene, seconds=0.05), tmp_path)
    write_task(events, noise_for(events, seconds=0.05), tmp_path)
    (tmp_path / "notes").mkdir()

    found = list_tasks(tmp_path)
    assert found == [tmp_path / "toy_events-2021-5h", tmp_path / "toy_scene-v1-full"]
    assert list_tasks(found[0]) == [found[0]]
    task = read_task(found[1])
    assert audio_path(task, "valid", "d.wav", 16000) == found[1] / "16000" / "valid" / "d.wav"
    with pytest.raises(KeyError, match="no split 'fold00'"):
        audio_path(task, "fold00", "d.wav", 16000)
    with pytest.raises(KeyError, match="no file 'zz.wav'"):
        audio_path(task, "valid", "zz.wav", 16000)
    with pytest.raises(ValueError, match="not read from a folder"):
        audio_path(scene, "valid", "d.wav", 16000)
    with pytest.raises(FileNotFoundError):
        list_tasks(tmp_path / "nowhere")


def test_frame_targets_hand_worked():
    # Frames at 0, 100, 200, 300, 400 ms; rule start <= t < end.
    # dog 100-300: t=100 yes (start included), 200 yes, 300 no (end excluded).
    # car 250-400: t=300 yes, 400 no.
    events = [Event("dog", 100.0, 300.0), Event("car", 250.0, 400.0)]
    targets = frame_targets(events, np.array([0.0, 100.0, 200.0, 300.0, 400.0]), ["car", "dog"])

    expected = [[0, 0], [0, 1], [0, 1], [1, 0], [0, 0]]
    np.testing.assert_array_equal(targets, np.array(expected, dtype=np.float32))
    assert targets.dtype == np.float32
    with pytest.raises(ValueError, match="'cat' is not in the vocabulary"):
        frame_targets([Event("cat", 0, 1)], np.zeros(3), ["car", "dog"])


def test_frame_targets_match_heareval_off_the_boundaries():
    case = json.loads(FIXTURE.read_text())["frame_targets"]
    events = [Event(e["label"], e["start"], e["end"]) for e in case["events"]]
    targets = frame_targets(events, np.array(case["timestamps_ms"]), case["vocabulary"])
    np.testing.assert_array_equal(targets, np.array(case["expected"], dtype=np.float32))


def test_scene_targets():
    targets = scene_targets([["meow"], [], ["bark", "moo"]], ["bark", "meow", "moo"])
    np.testing.assert_array_equal(targets, [[0, 1, 0], [0, 0, 0], [1, 0, 1]])
    with pytest.raises(ValueError, match="'oink'"):
        scene_targets([["oink"]], ["bark"])


def test_fold_rotation():
    five = event_task(splits=[f"fold{i:02d}" for i in (4, 2, 0, 1, 3)], nfolds=5)
    rotation = data_splits(five)

    assert rotation[0] == DataSplit(train=["fold02", "fold03", "fold04"], valid=["fold01"], test=["fold00"])
    assert rotation[3] == DataSplit(train=["fold00", "fold01", "fold02"], valid=["fold04"], test=["fold03"])
    assert rotation[4] == DataSplit(train=["fold01", "fold02", "fold03"], valid=["fold00"], test=["fold04"])
    assert [r.test[0] for r in rotation] == [f"fold{i:02d}" for i in range(5)]
    assert data_splits(scene_task()) == [DataSplit(train=["train"], valid=["valid"], test=["test"])]


def test_sort_labels_follows_hear_preprocess():
    assert sort_labels(["100", "9", "10", "9"]) == ["9", "10", "100"]
    assert sort_labels(["b", "a", "B", "10", "9"]) == ["10", "9", "B", "a", "b"]


def test_task_identity_follows_the_data_not_the_place(tmp_path):
    import shutil

    from tympan.kit.tasks import task_identity

    task = scene_task()
    folder = write_task(task, noise_for(task, seconds=0.05), tmp_path / "a")
    identity = task_identity(read_task(folder), 16000)
    moved = Path(shutil.copytree(folder, tmp_path / "b" / folder.name))
    assert task_identity(read_task(moved), 16000) == identity
    (moved / "test.json").write_text(json.dumps({"e.wav": ["moo"], "f.wav": ["moo"]}))  # a relabelled clip
    assert task_identity(read_task(moved), 16000) != identity
    shutil.rmtree(moved)
    moved = Path(shutil.copytree(folder, moved))
    sf.write(moved / "16000" / "train" / "a.wav", np.zeros(123), 16000, subtype="PCM_16")  # another clip
    assert task_identity(read_task(moved), 16000) != identity


def test_list_tasks_strict_names_a_folder_that_is_not_a_task(tmp_path):
    scene = scene_task()
    write_task(scene, noise_for(scene, seconds=0.05), tmp_path)
    (tmp_path / ".toy.tmp-1234").mkdir()  # a build's temporary folder is never a task
    assert list_tasks(tmp_path, strict=True) == [tmp_path / "toy_scene-v1-full"]
    (tmp_path / "notes").mkdir()
    assert list_tasks(tmp_path) == [tmp_path / "toy_scene-v1-full"]
    with pytest.raises(TaskFormatError, match="notes/task_metadata.json: file: missing: notes is not a HEAR task"):
        list_tasks(tmp_path, strict=True)

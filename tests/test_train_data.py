"""The training-data generator (tympan.train.data, tympan.train.augment).

A tiny build of every kind is made twice (same manifest), resumed after losing a clip,
and refused with other settings; the held-out guard is checked against the suite's split
rules and against a tiny built suite's task_metadata.json; labels are checked to land on
the 20 ms frame of a known onset, in the clean clip and through the time-moving
augmentation. Needs the suite's programs and Debian packages (as tests/test_suite_*.py).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tympan.audio import HOP, SAMPLE_RATE, n_frames
from tympan.suite import music, sounds, speech
from tympan.train import augment, data

HOURS = 0.01  # one clip of each kind


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(first build's folder, its report, second build's folder, its report)."""
    first, second = tmp_path_factory.mktemp("first"), tmp_path_factory.mktemp("second")
    return first, data.build(first, HOURS, seed=3), second, data.build(second, HOURS, seed=3)


def test_two_tiny_builds_give_the_same_manifest(tiny):
    first, report, second, _ = tiny
    manifest = json.loads((first / "manifest.json").read_text())
    assert report["all"]["clips"] == len(data.KINDS)
    for kind in data.KINDS:
        for suffix in (".wav", ".aug.wav", ".npz"):
            assert f"{kind}/{kind}-000000{suffix}" in manifest
    assert manifest == json.loads((second / "manifest.json").read_text())


def test_clips_and_labels_have_the_documented_shapes(tiny):
    first = tiny[0]
    settings = json.loads((first / "settings.json").read_text())
    assert len(settings["languages"]) > 50  # espeak-ng's languages, not the suite's 20
    for kind in data.KINDS:
        clean, rate = sf.read(first / kind / f"{kind}-000000.wav")
        augmented, _ = sf.read(first / kind / f"{kind}-000000.aug.wav")
        assert rate == SAMPLE_RATE and len(clean) == data.CLIP_SAMPLES
        with np.load(first / kind / f"{kind}-000000.npz") as z:
            meta = json.loads(str(z["meta"]))
            recipe = augment.Recipe(**meta["recipe"])
            assert len(augmented) == augment.augmented_length(len(clean), recipe.speed)
            assert z["piano_roll"].shape == (n_frames(len(clean)), 88)
            assert z["aug_event_roll"].shape == (n_frames(len(augmented)), len(data.EVENT_CLASSES))
            if kind in ("speech", "mix"):
                assert meta["phonemes"] and settings["languages"][int(z["language"])] == meta["language"]
                assert z["activity"][:, 0].any()
            if kind in ("music", "mix"):
                assert z["onsets"].sum() == len(z["notes"])  # every note starts inside the clip
            if kind == "events":
                assert z["event_onsets"].sum() == len(z["events"])


def test_read_clip_gives_audio_and_labels_of_one_view(tiny):
    first = tiny[0]
    audio, labels, meta = data.read_clip(first / "music" / "music-000000.npz", "augmented")
    clean, clean_labels, _ = data.read_clip(first / "music" / "music-000000.wav", "clean")
    assert audio.dtype == np.float32 and len(clean) == data.CLIP_SAMPLES
    assert len(audio) == augment.augmented_length(len(clean), meta["recipe"]["speed"])
    assert labels["piano_roll"].shape == (n_frames(len(audio)), 88)
    assert clean_labels["piano_roll"].shape == (n_frames(len(clean)), 88)
    shift = round(augment.Recipe(**meta["recipe"]).pitch_offset)
    # The augmented roll is the clean one moved by whole keys (notes that stay on the keyboard).
    kept = [k for k in range(88) if 0 <= k + shift < 88]
    assert labels["piano_roll"][:, [k + shift for k in kept]].sum() > 0
    assert clean_labels["onsets"][:, kept].sum() == labels["onsets"][:, [k + shift for k in kept]].sum()


def test_a_rerun_resumes_and_other_settings_are_refused(tiny):
    second = tiny[2]
    before = (second / "manifest.json").read_text()
    (second / "music" / "music-000000.npz").unlink()
    report = data.build(second, HOURS, seed=3)
    assert report["all"]["made"] == 1
    assert (second / "manifest.json").read_text() == before
    with pytest.raises(data.TrainDataError, match=r"\(seed differ\)"):
        data.build(second, HOURS, seed=4)
    # Built with another version of a package: refused too, never mixed.
    settings = json.loads((second / "settings.json").read_text())
    settings["versions"]["espeak-ng"] = "0.0-older"
    (second / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(data.TrainDataError, match=r"\(versions differ\)"):
        data.build(second, HOURS, seed=3)


def test_a_non_empty_folder_without_settings_is_refused(tmp_path):
    (tmp_path / "something.txt").write_text("not a training set")
    with pytest.raises(data.TrainDataError, match="no settings.json"):
        data.build(tmp_path, HOURS, kinds=("speech",))


def test_cli_usage_errors_are_one_line_with_exit_code_2(tmp_path):
    for args in (["--hours", "0"], ["--hours", "1", "--kinds", "speech,poetry"]):
        done = subprocess.run(
            [sys.executable, "-m", "tympan.cli", "train", "data", "--out", str(tmp_path / "x"), *args],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("tympan train data: error:") and done.stderr.count("\n") == 1


# --------------------------------------------------------------------------- held-out guard


def test_the_real_plan_uses_no_group_the_split_rules_hold_out():
    sources = data.Sources(data.KINDS)
    held = data.held_out_by_rule(sources)
    # The rules cover every kind of group the suite splits by.
    expected = {"flite:awb", "soundset:freepats", "soundset:timgm6mb", "sonic-pi-samples", "colobot-common-sounds"}
    assert expected <= set(held)
    assert any(g.startswith("score:") for g in held) and any(g.startswith("hydrogen-drumkits:") for g in held)
    assert [v for v in speech.espeak_variants() if f"espeak-ng:{v}" in held] == [
        v for v in speech.espeak_variants() if speech.variant_split(v) != "train"
    ]
    plan = [data.plan_clip(sources, 0, kind, i) for kind in data.KINDS for i in range(40)]
    assert not {g for clip in plan for g in clip.groups} & set(held)
    data.check_held_out(plan, held)


def test_a_plan_drawing_test_sound_sets_fails_naming_the_group(tmp_path, monkeypatch):
    # As if the music sources had been wired to the test split by mistake.
    of_split = music._SoundSets.of_split
    monkeypatch.setattr(music._SoundSets, "of_split", lambda self, split: of_split(self, "test"))
    with pytest.raises(data.HeldOutError, match=r"'soundset:timgm6mb'.*pitch, instrument and note-onsets \(test"):
        data.build(tmp_path, HOURS, kinds=("music",))
    assert not any(tmp_path.iterdir())  # refused before writing anything


@pytest.fixture(scope="module")
def tiny_suite(tmp_path_factory):
    """A tiny built suite with one task per generator module (speech, music, sounds)."""
    out = tmp_path_factory.mktemp("suite")
    speech.build_keywords(out, "tiny")
    music.build_pitch(out, "tiny")
    sounds.build_sound_events(out, "tiny")
    return out


def test_the_guard_reads_the_built_suites_metadata(tiny_suite, tmp_path):
    held = data.held_out_in_suite(tiny_suite)
    # keywords tests flite and festival voices; pitch validates on freepats; sound-events tests sonic-pi.
    assert held["flite:awb"] == "keywords (test)"
    assert held["soundset:freepats"] == "pitch (valid)"
    assert held["sonic-pi-samples"] == "sound-events (test)"
    sources = data.Sources(data.KINDS)
    plan = [data.plan_clip(sources, 0, kind, i) for kind in data.KINDS for i in range(20)]
    data.check_held_out(plan, held)  # the real plan passes
    meta = json.loads(next(tiny_suite.glob("keywords-*/task_metadata.json")).read_text())
    variant = next(g for groups in meta["source_groups"]["valid"].values() for g in groups)
    assert variant.startswith("espeak-ng:")
    speaking = next(clip for clip in plan if clip.kind == "speech")
    spec = dataclasses.replace(speaking.spec, voice=speech.Voice("espeak-ng", f"en-us+{variant.split(':')[1]}"))
    bad = dataclasses.replace(speaking, spec=spec, groups=(spec.voice.group,))
    with pytest.raises(data.HeldOutError, match=rf"{bad.id} would use source group '{variant}'.*keywords \(valid\)"):
        data.check_held_out([*plan, bad], held)
    # And through the build, as `--suite` gives it.
    assert data.build(tmp_path, 0.002, kinds=("speech",), suite_dir=tiny_suite)["all"]["clips"] == 1


# --------------------------------------------------------------------------- alignment


def test_onset_labels_land_on_the_frame_of_the_onset():
    notes = np.array([[1003.0, 1500.0, 69, 0], [2000.0, 2600.0, 60, 3]])
    labels = data.frame_labels({"notes": notes}, 501)
    assert np.flatnonzero(labels["onsets"][:, 69 - 21]).tolist() == [50]  # 1003 ms -> centre 1000 ms
    assert np.flatnonzero(labels["onsets"][:, 60 - 21]).tolist() == [100]
    assert labels["piano_roll"][51:75, 69 - 21].all() and not labels["piano_roll"][75:, 69 - 21].any()
    assert labels["pitch_midi"][60] == 69 and np.isclose(labels["f0_hz"][60], 440.0)
    assert np.isnan(labels["pitch_midi"][200])
    # Through a speed change of 1.25 and a pitch offset of +2: 1003 ms -> 802.4 ms (frame 40), key 71.
    warped = data.frame_labels({"notes": notes}, 401, speed=1.25, pitch_offset=2)
    assert np.flatnonzero(warped["onsets"][:, 71 - 21]).tolist() == [40]


def test_the_augmented_audio_starts_on_its_labelled_frame():
    """A tone burst at 1 s, augmented with speed, room, band limit, codec, and (as speech is)
    pitch shift and VTLP: the augmented onset label names the frame of 1 s / speed, and the
    sound starts (first sample above -20 dB of its peak) within 5 ms of that time."""
    t = np.arange(data.CLIP_SAMPLES) / SAMPLE_RATE
    clean = np.where((t >= 1.0) & (t < 1.5), np.sin(2 * np.pi * 440 * t), 0.0)
    truth = {"notes": np.array([[1000.0, 1500.0, 69, 0]])}
    for speed, shift, alpha, codec in ((1.1, 0.0, 1.0, "mp3"), (0.9, 0.0, 1.0, "gsm8k"), (1.05, 2.5, 1.12, "ulaw8k")):
        recipe = augment.Recipe(speed, shift, alpha, 7, 60.0, 1.0, 100.0, 6000.0, -2.0, codec, -20.0, 1)
        y, measured = augment.apply(clean, recipe)
        assert measured["rt60_s"] > 0.1
        labels = data.frame_labels(truth, n_frames(len(y)), speed)
        labelled = int(np.flatnonzero(labels["onsets"][:, 69 - 21])[0])
        expected = SAMPLE_RATE / speed  # the clean onset's sample, moved by the speed change
        assert labelled == round(expected / HOP)
        envelope = np.abs(y)
        first = int(np.flatnonzero(envelope > 0.1 * envelope.max())[0])
        assert abs(first - expected) <= SAMPLE_RATE * 0.005, (speed, codec, first, expected)


def test_music_recipes_move_pitch_by_whole_semitones_through_speed_alone():
    rng = np.random.default_rng(0)
    for _ in range(50):
        recipe = augment.draw_recipe(rng, "music")
        assert recipe.pitch_semitones == 0.0 and recipe.vtlp == 1.0
        assert abs(recipe.pitch_offset - round(recipe.pitch_offset)) < 1e-9 and abs(round(recipe.pitch_offset)) <= 2
    assert {augment.draw_recipe(rng, "events").pitch_semitones for _ in range(20)} == {0.0}


def test_warp_frames_maps_clean_targets_onto_the_augmented_grid():
    targets = np.arange(501)[:, None] * np.ones((1, 4))
    warped = augment.warp_frames(targets, 1.25, 401)
    assert warped.shape == (401, 4)
    assert warped[40, 0] == 50 and warped[-1, 0] == 500

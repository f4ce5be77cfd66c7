"""`tympan train encoder`: the training loop of tympan v1 on a tiny training set.

The training set is made here in the layout of `tympan train data` (clean and augmented wavs,
labels .npz written with tympan.train.data's own functions, settings.json, manifest.json):
short speech-like clips with phonemes, a language and a voice, and music clips of tones with
notes; the teacher is CREPE tiny (the cheapest), computed by `tympan train targets`. The
network is a tiny v1 config so that the whole file runs in well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import tympan
from tympan.checksum import sha256_file
from tympan.cli import main as cli
from tympan.experts import cache, crepe
from tympan.model import TympanV1, init_v1
from tympan.suite import music
from tympan.train import augment, data, encoder

pytest.importorskip("pyarrow")
SR = 16000
SECONDS = 3.0
TINY = {"width": 32, "expansion": 2, "kernel": 7, "blocks": [[1, 1], [2, 1], [2, 2]], "taps": [0, 1, 2]}
PHONEMES = {"en": "həlˈoʊ wˈɜːld", "de": "ɡˈuːtən tˈaːk"}


def _tone(rng, keys, starts, ends, n):
    t = np.arange(n) / SR
    x = 0.01 * rng.standard_normal(n)
    for key, a, b in zip(keys, starts, ends):
        f0 = 440 * 2 ** ((key - 69) / 12)
        on = (t >= a / 1000) & (t < b / 1000)
        for h in (1, 2, 3):
            x[on] += 0.2 / h * np.sin(2 * np.pi * h * f0 * t[on])
    return x


def make_train_data(folder: Path, n: int = 6) -> None:
    """n clips of SECONDS: even ones speech-like (phonemes, language, voice), odd ones music (notes)."""
    languages = ["en", "de"]
    settings = {"format_version": data.FORMAT_VERSION, "hours": n * SECONDS / 3600, "seed": 0,
                "languages": languages, "families": list(music.FAMILIES), "activity": list(data.ACTIVITY),
                "event_classes": list(data.EVENT_CLASSES)}
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps(settings))
    samples = round(SECONDS * SR)
    for i in range(n):
        rng = np.random.default_rng(i)
        kind = "speech" if i % 2 == 0 else "music"
        if kind == "speech":
            lang = languages[(i // 2) % 2]
            # a glide of harmonics standing in for a voice, from 300 to 2500 ms
            clean = _tone(rng, [57 + (i // 2) % 2 * 7], [300], [2500], samples)
            truth = {"speech": np.array([[300.0, 2500.0]])}
            meta = {"phonemes": PHONEMES[lang], "language": lang, "voice": f"{lang}+{'f3' if i % 4 else 'm1'}"}
            recipe = augment.Recipe(float(rng.uniform(0.9, 1.1)), 0.0, 1.0, -1, 30.0, 1.0, 0.0, SR / 2, 0.0,
                                    "none", -23.0, i)
        else:
            keys = [int(k) for k in rng.integers(50, 80, 3)]
            starts = [200.0, 1100.0, 2000.0]
            ends = [1000.0, 1900.0, 2800.0]
            clean = _tone(rng, keys, starts, ends, samples)
            truth = {"notes": np.array([[a, b, k, 0] for k, a, b in zip(keys, starts, ends)], dtype=np.float64)}
            meta = {"description": "tones"}
            recipe = augment.Recipe(float(2 ** (1 / 12)), 0.0, 1.0, -1, 30.0, 1.0, 0.0, SR / 2, 0.0,
                                    "none", -23.0, i)
        augmented, measured = augment.apply(clean, recipe)
        clip_id = f"{kind}-{i:06d}"
        (folder / kind).mkdir(exist_ok=True)
        sf.write(folder / kind / f"{clip_id}.wav", clean, SR, subtype="PCM_16")
        sf.write(folder / kind / f"{clip_id}.aug.wav", augmented, SR, subtype="PCM_16")
        shift = round(recipe.pitch_offset) if kind == "music" else 0
        arrays = dict(data.frame_labels(truth, data.n_frames(len(clean))))
        for key, value in data.frame_labels(truth, data.n_frames(len(augmented)), recipe.speed, shift,
                                            noise=True).items():
            arrays[f"aug_{key}"] = value
        arrays.update(
            notes=truth.get("notes", np.zeros((0, 4))), events=np.zeros((0, 3)),
            speech=truth.get("speech", np.zeros((0, 2))),
            language=np.int16(languages.index(meta["language"]) if "language" in meta else -1),
            rt60_s=np.float64(measured["rt60_s"]), snr_db=np.float64(recipe.snr_db),
            meta=np.array(json.dumps({"id": clip_id, "kind": kind, "recipe": recipe.to_dict(), **meta})),
        )
        with open(folder / kind / f"{clip_id}.npz", "wb") as f:
            data._write_npz(f, arrays)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    manifest = {p.relative_to(folder).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                for p in files}
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(data folder, targets folder, model-config file)."""
    try:
        crepe.load_model()
    except cache.ExpertWeightsMissing:
        pytest.skip("crepe weights are not in the cache: run `tympan experts fetch --expert crepe`")
    root = tmp_path_factory.mktemp("train")
    make_train_data(root / "data")
    assert cli(["train", "targets", "--data", str(root / "data"), "--out", str(root / "targets"),
                "--teachers", "crepe"]) == 0
    (root / "tiny.json").write_text(json.dumps(TINY))
    return root / "data", root / "targets", root / "tiny.json"


def argv(built, run: Path, *more: str) -> list[str]:
    d, t, config = built
    return ["train", "encoder", "--data", str(d), "--targets", str(t), "--out", str(run), "--model-config",
            str(config), "--batch", "4", "--crop-min", "1", "--crop-max", "2", "--warmup", "5", "--lr", "3e-3",
            "--log-every", "5", *more]


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]


def test_a_smoke_run_lowers_every_heads_loss(built, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(argv(built, run, "--steps", "60", "--checkpoint-every", "30")) == 0
    err = capsys.readouterr().err
    assert "step 60/60 loss" in err and "crepe" in err and "ctc" in err
    records = history(run)
    assert [r["step"] for r in records] == list(range(1, 61))
    order = ["crepe", "ctc", "language", "voice", "pitch", "onsets", "roll", "activity"]
    assert all(list(r["losses"]) == [h for h in order if h in r["losses"]] for r in records)  # one order
    heads = {"crepe", "ctc", "language", "voice", "pitch", "onsets", "roll", "activity"}
    assert set().union(*(r["losses"] for r in records)) == heads
    for head in sorted(heads):  # the voice head too: it learns; only its gradient into the student is reversed
        seen = [r["losses"][head] for r in records if head in r["losses"]]
        first, last = np.mean(seen[:8]), np.mean(seen[-8:])
        assert last < first, f"{head}: mean loss of the first 8 steps {first:.4f}, of the last 8 {last:.4f}"


def test_the_voice_head_learns_while_its_gradient_into_the_student_is_reversed():
    x = torch.randn(3, 4, requires_grad=True)
    (encoder.reverse_gradient(x, 0.5) * torch.arange(4.0)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.tile(-0.5 * np.arange(4.0), (3, 1)))


def test_a_killed_run_resumed_with_the_same_command_ends_as_an_uninterrupted_one(built, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole, killed = tmp_path / "whole", tmp_path / "killed"
        assert cli(argv(built, whole, "--steps", "9", "--checkpoint-every", "3")) == 0

        def kill_at_7(step):
            if step == 7:
                raise KeyboardInterrupt

        original = encoder.train
        monkeypatch.setattr(encoder, "train", lambda *a, **k: original(*a, **k, on_step=kill_at_7))
        assert cli(argv(built, killed, "--steps", "9", "--checkpoint-every", "3")) == 130
        assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 6
        assert len(history(killed)) == 7  # step 7 was logged, then the run died before its checkpoint
        monkeypatch.setattr(encoder, "train", original)
        assert cli(argv(built, killed, "--steps", "9", "--checkpoint-every", "3")) == 0
    finally:
        torch.set_num_threads(threads)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 9
    for part in ("model", "heads"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key} differs after the resume"
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for i, state in a["optimizer"]["state"].items():
        assert all(torch.equal(state[k], b["optimizer"]["state"][i][k]) for k in state)
    assert sha256_file(whole / "tympan-v1.pt") == sha256_file(killed / "tympan-v1.pt")
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in history(whole)]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in history(killed)]


def test_a_run_folder_of_another_configuration_is_refused(built, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli(argv(built, run, "--steps", "2")) == 0
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    assert cli(argv(built, run, "--steps", "2", "--seed", "1")) == 2
    err = capsys.readouterr().err
    assert "another configuration (seed differ)" in err and "never mixed" in err and len(err.splitlines()) == 1
    assert cli(argv(built, run, "--steps", "2", "--no-augment")) == 2
    assert "(augment differ)" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert cli(argv(built, tmp_path / "busy", "--steps", "2")) == 2
    assert "not empty and holds no run.json" in capsys.readouterr().err
    # the same configuration is a resume: nothing left to do at step 2, the export is rewritten
    assert cli(argv(built, run, "--steps", "2")) == 0
    assert len(history(run)) == 2


def test_the_exported_file_is_the_student_alone_and_loads_with_load_model(built, tmp_path):
    run = tmp_path / "run"
    assert cli(argv(built, run, "--steps", "3")) == 0
    model = tympan.load_model(str(run / "tympan-v1.pt"))
    assert isinstance(model, TympanV1) and model.version == "v1" and model.config == TINY
    assert model.state_dict().keys() == init_v1(TINY).state_dict().keys()  # no heads
    trained = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(model.state_dict()[k], trained[k]) for k in trained)
    assert not torch.equal(model.state_dict()["encoder.stem.weight"], init_v1(TINY).state_dict()["encoder.stem.weight"])
    audio = torch.rand(2, SR) * 0.2 - 0.1
    emb, ts = tympan.get_timestamp_embeddings(audio, model)
    assert emb.shape == (2, 51, 96) and ts.shape == (2, 51) and torch.isfinite(emb).all()
    assert tympan.get_scene_embeddings(audio, model).shape == (2, 192)
    assert cli(argv(built, tmp_path / "fresh", "--steps", "3", "--export")) == 2
    assert not (tmp_path / "fresh").exists()
    # --export rewrites it from the last checkpoint without training
    (run / "tympan-v1.pt").unlink()
    assert cli(argv(built, run, "--steps", "3", "--export")) == 0
    assert tympan.load_model(str(run / "tympan-v1.pt")).weights_sha256 == model.weights_sha256


def test_ablation_flags_drop_their_heads_and_views(built, tmp_path):
    d, _, config = built
    run = tmp_path / "nd"
    base = ["train", "encoder", "--data", str(d), "--model-config", str(config), "--batch", "2",
            "--crop-min", "1", "--crop-max", "1", "--steps", "2"]
    assert cli([*base, "--out", str(run), "--no-distill"]) == 0  # no --targets needed
    assert all("crepe" not in r["losses"] and "pitch" in r["losses"] for r in history(run))
    run = tmp_path / "ns"
    assert cli(argv(built, run, "--steps", "2", "--no-supervised")) == 0
    assert all(set(r["losses"]) == {"crepe"} for r in history(run))
    ds = encoder.Dataset(d, None, "clean")
    clip = ds.clips[1]
    assert clip.speed == 1.0 and len(ds.audio(clip)) == round(SECONDS * SR)
    assert len(encoder.Dataset(d, None, "augmented").audio(clip)) != round(SECONDS * SR)


def test_usage_errors_are_one_line_with_exit_code_2(built, tmp_path, capsys):
    d, _, _ = built
    cases = [
        (argv(built, tmp_path / "a"), "give one of --steps N or --minutes M"),
        (["train", "encoder", "--data", str(d), "--out", str(tmp_path / "b"), "--steps", "1"],
         "--targets is required unless --no-distill"),
        (argv(built, tmp_path / "c", "--steps", "1", "--no-distill", "--no-supervised"), "leave nothing to train"),
        (argv(built, tmp_path / "e", "--steps", "1", "--checkpoint-every", "0"), "give positive whole numbers"),
        (["train", "encoder", "--data", str(tmp_path), "--no-distill", "--steps", "1", "--out", str(tmp_path / "d")],
         "give a folder made by tympan train data"),
    ]
    for args, message in cases:
        assert cli(args) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err


def test_history_lines_after_the_checkpoint_and_a_line_cut_by_a_kill_are_dropped(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps({"step": i, "loss": 1.0}) + "\n" for i in (1, 2, 3)) + '{"step": 4, "lo')
    encoder._truncate_history(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_fidelity_scores_the_heads_and_rises_with_training(built, tmp_path, capsys):
    """`tympan train fidelity`: per teacher cosine and R^2 of the heads (R^2 as scikit-learn's
    variance-weighted r2_score over every frame), higher after 40 steps than after 1; the clip heads'
    accuracies; another data folder than the run's is refused."""
    from sklearn.metrics import r2_score

    d, t, _ = built
    short, longer = tmp_path / "short", tmp_path / "longer"
    assert cli(argv(built, short, "--steps", "1")) == 0
    assert cli(argv(built, longer, "--steps", "40")) == 0
    scores = {}
    for run in (short, longer):
        out = tmp_path / f"{run.name}.json"
        capsys.readouterr()
        assert cli(["train", "fidelity", "--run", str(run), "--train-data", str(d), "--train-targets", str(t),
                    "--data", str(d), "--targets", str(t), "--json", str(out)]) == 0
        assert "| crepe |" in capsys.readouterr().out
        scores[run.name] = json.loads(out.read_text())
    a, b = scores["short"]["teachers"]["crepe"], scores["longer"]["teachers"]["crepe"]
    assert a["frames"] == b["frames"] > 6 * 100  # six clips of about 3 s, every frame
    assert b["cosine"] > a["cosine"] + 0.05 and b["r2"] > a["r2"], (a, b)
    assert scores["longer"]["language"]["clips"] == 3 and scores["longer"]["voice"]["clips"] == 3

    trainer = encoder.load_run(longer, d, t)
    held = encoder.Dataset(d, t, "augmented")
    held.teacher_stats = trainer.ds.teacher_stats
    preds, targets = [], []
    with torch.no_grad():
        for i, clip in enumerate(held.clips):
            item = encoder.make_item(held, trainer.model.frontend, i, 0, len(clip.labels["activity"]))
            preds.append(trainer.heads.teachers["crepe"](trainer.model.encoder(item.features)).numpy())
            targets.append(item.teachers["crepe"].numpy())
    expected = r2_score(np.concatenate(targets), np.concatenate(preds), multioutput="variance_weighted")
    assert b["r2"] == pytest.approx(expected, abs=1e-4)

    other = tmp_path / "other"
    make_train_data(other, n=4)
    capsys.readouterr()
    assert cli(["train", "fidelity", "--run", str(longer), "--train-data", str(other), "--train-targets", str(t),
                "--data", str(d), "--targets", str(t)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and len(err.splitlines()) == 1, err


def test_clean_share_draws_clean_crops_with_their_own_labels_and_exact_targets(built, tmp_path):
    """--clean-share P: about P of the crops come from the clean clip, with the clean labels and the
    teachers' frames unwarped; 0 keeps the crops of runs made before it existed; refused with
    --no-augment or outside 0..1."""
    d, t, _ = built
    ds = encoder.Dataset(d, t, "augmented", clean_too=True)
    base = encoder.Settings(batch=4, crop_seconds=(1.0, 2.0))
    old = [draw[:3] for step in range(30) for draw in encoder.draw(ds, base, step)]
    half = encoder.Settings(batch=4, crop_seconds=(1.0, 2.0), clean_share=0.5)
    draws = [draw for step in range(100) for draw in encoder.draw(ds, half, step)]
    share = np.mean([clean for *_, clean in draws])
    assert 0.4 < share < 0.6, share
    assert not any(clean for step in range(30) for *_, clean in encoder.draw(ds, base, step))
    assert [dr[:3] for step in range(30) for dr in encoder.draw(ds, base, step)] == old
    assert all(clean for step in range(5) for *_, clean in
               encoder.draw(ds, encoder.Settings(batch=4, clean_share=1.0), step))

    frontend = init_v1(TINY).frontend
    music = 1  # clip 1 is music: its augmented view is a semitone up and shorter
    clean_item = encoder.make_item(ds, frontend, music, 0, 40, clean=True)
    aug_item = encoder.make_item(ds, frontend, music, 0, 40)
    clip = ds.clips[music]
    x, _ = sf.read(clip.npz.with_name(clip.npz.name.replace(".npz", ".wav")), dtype="float32")
    with torch.no_grad():
        want = frontend.frames(frontend.padded(torch.from_numpy(x)), 0, 40)
    assert torch.equal(clean_item.features, want) and not torch.equal(aug_item.features, want)
    assert torch.equal(clean_item.frames["roll"][:, :88], torch.from_numpy(clip.clean_labels["piano_roll"][:40]).float())
    mean, std = ds.teacher_stats["crepe"]
    exact = (torch.from_numpy(clip.targets["crepe"][:40].astype(np.float32)) - mean) / std
    assert torch.equal(clean_item.teachers["crepe"], exact)

    run = tmp_path / "clean"
    assert cli(argv(built, run, "--steps", "4", "--clean-share", "0.5")) == 0
    assert json.loads((run / "run.json").read_text())["settings"]["clean_share"] == 0.5
    for bad in (["--clean-share", "1.5"], ["--clean-share", "0.5", "--no-augment"]):
        assert cli(argv(built, tmp_path / "bad", "--steps", "1", *bad)) == 2
    assert not (tmp_path / "bad").exists()


def test_a_run_json_from_before_clean_share_resumes_and_scores(built, tmp_path):
    run = tmp_path / "old"
    assert cli(argv(built, run, "--steps", "2")) == 0
    record = json.loads((run / "run.json").read_text())
    del record["settings"]["clean_share"]  # as the runs made before the option wrote it
    (run / "run.json").write_text(json.dumps(record))
    assert cli(argv(built, run, "--steps", "2")) == 0  # the same run: resumed (nothing left), not refused
    assert len(history(run)) == 2
    d, t, _ = built
    assert encoder.load_run(run, d, t).step == 2  # and tympan train fidelity can load it
    assert cli(argv(built, run, "--steps", "2", "--clean-share", "0.5")) == 2  # another configuration


def test_augmented_targets_replace_the_warped_clean_frames_of_their_teachers(built, tmp_path, capsys):
    d, t, _ = built
    aug = tmp_path / "aug"
    assert cli(["train", "targets", "--data", str(d), "--out", str(aug), "--teachers", "crepe",
                "--view", "augmented"]) == 0
    plain = encoder.Dataset(d, t, "augmented", clean_too=True)
    ds = encoder.Dataset(d, t, "augmented", clean_too=True, augmented_dir=aug)
    frontend = init_v1(TINY).frontend
    music = 1  # a semitone up: the clean frames warped are not the teacher on the audio the student hears
    clip = ds.clips[music]
    n_aug = len(clip.labels["activity"])
    assert clip.augmented_targets["crepe"].shape == (n_aug, 256)
    item = encoder.make_item(ds, frontend, music, 3, 30)
    mean, std = ds.teacher_stats["crepe"]  # standardised with the clean targets' constants
    want = (torch.from_numpy(clip.augmented_targets["crepe"][3:33].astype(np.float32)) - mean) / std
    assert torch.equal(item.teachers["crepe"], want)
    warped = encoder.make_item(plain, frontend, music, 3, 30).teachers["crepe"]
    assert not torch.allclose(warped, want, atol=0.1)
    assert torch.equal(item.features, encoder.make_item(plain, frontend, music, 3, 30).features)
    # a clean crop keeps the clean frames as computed
    clean = encoder.make_item(ds, frontend, music, 3, 30, clean=True).teachers["crepe"]
    assert torch.equal(clean, (torch.from_numpy(clip.targets["crepe"][3:33].astype(np.float32)) - mean) / std)

    run = tmp_path / "run"
    assert cli(argv(built, run, "--steps", "3", "--augmented-targets", str(aug))) == 0
    record = json.loads((run / "run.json").read_text())
    assert record["augmented_targets"]["teachers"] == ["crepe"] and record["augmented_targets"]["view"] == "augmented"
    assert cli(argv(built, run, "--steps", "3")) == 2  # without them it is another run
    assert "augmented_targets" in capsys.readouterr().err
    assert encoder.load_run(run, d, t).step == 3  # fidelity needs only the clean targets
    # refused: clean-view targets, --no-augment, --no-distill; nothing written
    for bad in (["--augmented-targets", str(t)], ["--augmented-targets", str(aug), "--no-augment"],
                ["--augmented-targets", str(aug), "--no-distill"]):
        assert cli(argv(built, tmp_path / "bad", "--steps", "1", *bad)) == 2
        err = capsys.readouterr().err
        assert "--augmented-targets" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad").exists()

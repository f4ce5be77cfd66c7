"""`tympan train targets`: teachers' frames of the clean (or augmented) clips, stored once, exactly once, never stale.

A few short clips in the layout of a `tympan train data` folder (clean .wav, augmented .aug.wav,
settings.json, manifest.json with SHA-256s) and CREPE tiny, the cheapest teacher.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tympan.checksum import sha256_file
from tympan.cli import main as cli
from tympan.corpus import shards
from tympan.corpus.units import Header, Layout
from tympan.experts import cache, crepe

pytest.importorskip("pyarrow")
SR = 16000


@pytest.fixture(scope="module")
def crepe_tiny():
    try:
        return crepe.load_model()
    except cache.ExpertWeightsMissing:
        pytest.skip("crepe weights are not in the cache: run `tympan experts fetch --expert crepe`")


def clip_audio(seed: int, seconds: float) -> np.ndarray:
    """A tone with a seeded pitch plus a little noise, exactly representable in PCM 16."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * rng.uniform(110, 880) * t) + 0.01 * rng.standard_normal(t.size)
    return (np.round(x * 32767) / 32767).astype(np.float32)


def write_manifest(data: Path) -> None:
    files = sorted(p for p in data.rglob("*") if p.is_file() and p.name != "manifest.json")
    entries = {p.relative_to(data).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files}
    (data / "manifest.json").write_text(json.dumps(entries, indent=1))


def make_data(data: Path, n: int = 6, seconds: float = 1.5) -> list[str]:
    """n clips speech-000000.. in the layout of tympan train data; returns the clean keys."""
    (data / "speech").mkdir(parents=True)
    (data / "settings.json").write_text(json.dumps({"seed": 0, "hours": n * seconds / 3600}))
    keys = []
    for i in range(n):
        clean = clip_audio(i, seconds)
        sf.write(data / "speech" / f"speech-{i:06d}.wav", clean, SR, subtype="PCM_16")
        # The augmented view differs (another length and content): targets must never read it.
        sf.write(data / "speech" / f"speech-{i:06d}.aug.wav", clip_audio(100 + i, seconds * 1.1), SR, subtype="PCM_16")
        np.savez(data / "speech" / f"speech-{i:06d}.npz", language=np.int16(-1))
        keys.append(f"speech/speech-{i:06d}.wav")
    write_manifest(data)
    return keys


def targets_argv(data: Path, out: Path, *more: str) -> list[str]:
    return ["train", "targets", "--data", str(data), "--out", str(out), "--teachers", "crepe", *more]


def crepe_frames(model, path: Path) -> np.ndarray:
    audio, _ = sf.read(path, dtype="float32")
    emb, _ = crepe.get_timestamp_embeddings(torch.from_numpy(audio)[None], model)
    return emb[0].numpy()


def test_targets_are_the_teacher_on_the_clean_clip_in_float16(tmp_path, crepe_tiny, capsys):
    from tympan.train.targets import Targets

    data, out = tmp_path / "data", tmp_path / "targets"
    keys = make_data(data, n=3)
    assert cli(targets_argv(data, out)) == 0
    assert "3 embedded" in capsys.readouterr().err
    targets = Targets(out, data)
    assert sorted(targets.keys()) == keys  # the clean clips only: no .aug.wav row
    for key in keys:
        got = targets.read(key)
        assert list(got) == ["crepe"]
        want = crepe_frames(crepe_tiny, data / key)
        assert got["crepe"].dtype == np.float16 and got["crepe"].shape == want.shape == (1.5 * SR // 320 + 1, 256)
        np.testing.assert_array_equal(got["crepe"], want.astype(np.float16))
        # float16 loses nothing that matters: each frame vector within 1e-3 relative
        rel = np.linalg.norm(got["crepe"].astype(np.float32) - want, axis=1) / np.linalg.norm(want, axis=1)
        assert rel.max() < 1e-3
    # every form of a clip's name finds its row
    np.testing.assert_array_equal(targets.read("speech/speech-000001")["crepe"], targets.read(keys[1])["crepe"])
    np.testing.assert_array_equal(targets.read(data / "speech" / "speech-000001.aug.wav")["crepe"],
                                  targets.read(keys[1])["crepe"])
    manifest = json.loads((out / "corpus" / "manifest.json").read_text())
    assert manifest["layout"] == {"precision": "float16", "scene": False, "sha256": True}
    # each clip's frames own their memory: a view into the shard's table kept one shard (80 MB)
    # alive per clip, and a 6 h build read out of storage order took more than 24 GB
    assert all(a.base is None for a in targets.read(keys[0]).values())
    every = targets.read_all(list(reversed(keys)))
    assert sorted(every) == keys and all(np.array_equal(every[k]["crepe"], targets.read(k)["crepe"]) for k in keys)


def test_the_augmented_view_is_the_teacher_on_the_student_clip_and_never_mixed_with_clean(tmp_path, crepe_tiny, capsys):
    from tympan.train.targets import Targets

    data, clean, aug = tmp_path / "data", tmp_path / "clean", tmp_path / "aug"
    keys = make_data(data, n=2)
    assert cli(targets_argv(data, aug, "--view", "augmented")) == 0
    targets = Targets(aug, data)
    assert targets.view == "augmented"
    assert sorted(targets.keys()) == [k.replace(".wav", ".aug.wav") for k in keys]
    for key in keys:
        got = targets.read(key)["crepe"]  # any form of the clip's name: the augmented row
        want = crepe_frames(crepe_tiny, data / key.replace(".wav", ".aug.wav"))
        assert got.shape == want.shape == (round(1.5 * 1.1 * SR) // 320 + 1, 256)  # the .aug.wav's frames
        np.testing.assert_array_equal(got, want.astype(np.float16))
        assert json.loads((aug / "targets.json").read_text())["view"] == "augmented"
    # clean and augmented targets never share a folder, either way round
    capsys.readouterr()
    assert cli(targets_argv(data, aug)) == 2
    assert "the augmented clips (this run: clean)" in capsys.readouterr().err
    assert cli(targets_argv(data, clean)) == 0
    assert Targets(clean, data).view == "clean"
    assert cli(targets_argv(data, clean, "--view", "augmented")) == 2
    assert "the clean clips (this run: augmented)" in capsys.readouterr().err
    # targets.json written before --view existed (no "view") are clean targets
    settings = json.loads((clean / "targets.json").read_text())
    del settings["view"]
    (clean / "targets.json").write_text(json.dumps(settings))
    assert Targets(clean, data).view == "clean"
    assert cli(targets_argv(data, clean)) == 0


def test_a_rerun_with_other_teachers_or_other_data_is_refused_and_changes_nothing(tmp_path, crepe_tiny, capsys):
    data, out = tmp_path / "data", tmp_path / "targets"
    make_data(data, n=2)
    assert cli(targets_argv(data, out)) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    capsys.readouterr()
    argv = ["train", "targets", "--data", str(data), "--out", str(out), "--teachers", "crepe,fcpe"]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "teachers crepe (this run: crepe,fcpe)" in err and "never mixed" in err and len(err.splitlines()) == 1
    other = tmp_path / "other"
    make_data(other, n=2)
    (other / "settings.json").write_text(json.dumps({"seed": 1}))
    write_manifest(other)
    assert cli(targets_argv(other, out)) == 2
    assert "the data folder" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert cli(["train", "targets", "--data", str(data), "--out", str(tmp_path / "new"), "--teachers", "x,nope"]) == 2
    err = capsys.readouterr().err
    assert "teachers 'x,nope': give distinct names among" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "new").exists()
    # a folder of something else is refused too
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert cli(targets_argv(data, tmp_path / "busy")) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_changed_clip_is_detected_as_stale_and_a_rerun_recomputes_only_it(tmp_path, crepe_tiny, capsys):
    from tympan.train.targets import Targets, TargetsError

    data, out = tmp_path / "data", tmp_path / "targets"
    keys = make_data(data, n=3)
    assert cli(targets_argv(data, out)) == 0
    # The data folder is rebuilt with one clip changed (same settings): its manifest follows.
    changed = data / keys[1]
    sf.write(changed, clip_audio(999, 1.5), SR, subtype="PCM_16")
    write_manifest(data)
    targets = Targets(out, data)
    with pytest.raises(TargetsError, match="stale targets"):
        targets.read(keys[1])
    targets.read(keys[0])  # the others are still good
    capsys.readouterr()
    assert cli(targets_argv(data, out)) == 0
    assert "1 embedded, 2 skipped" in capsys.readouterr().err
    got = Targets(out, data).read(keys[1])["crepe"]
    np.testing.assert_array_equal(got, crepe_frames(crepe_tiny, changed).astype(np.float16))
    # a clip whose bytes no longer match the data manifest is refused before anything runs
    sf.write(changed, clip_audio(5, 1.5), SR, subtype="PCM_16")
    assert cli(targets_argv(data, out)) == 2
    assert "does not match" in capsys.readouterr().err
    # targets of another build of the data (its settings differ) are refused as a whole
    (data / "settings.json").write_text(json.dumps({"seed": 2}))
    with pytest.raises(TargetsError, match="another build of the training data"):
        Targets(out, data)


def test_killed_then_rerun_gives_every_clip_exactly_once(tmp_path, crepe_tiny):
    import pyarrow.parquet as pq

    from tympan.train.targets import Targets

    data, out = tmp_path / "data", tmp_path / "targets"
    keys = make_data(data, n=10, seconds=3.0)
    argv = [sys.executable, "-m", "tympan.cli", *targets_argv(data, out, "--shard-rows", "1", "--batch-size", "1")]
    log = tmp_path / "log"
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    manifest = out / "corpus" / "manifest.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if len(json.loads(manifest.read_text())["shards"]) >= 2:
                break
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, log.read_text()[-2000:]
    committed = sum(s["rows"] for s in json.loads(manifest.read_text())["shards"])
    assert 2 <= committed < len(keys), "the run was not caught mid-way"
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{len(keys) - committed} embedded, {committed} skipped" in done.stderr
    rows = shards.read_embeddings(out / "corpus", columns=["path"]).column("path").to_pylist()
    assert sorted(rows) == keys  # each clip exactly once
    listed = {s["file"] for s in json.loads(manifest.read_text())["shards"]}
    assert {f"shards/{p.name}" for p in (out / "corpus" / "shards").iterdir()} == listed  # no garbage left
    targets = Targets(out, data)
    for key in keys:
        want = crepe_frames(crepe_tiny, data / key).astype(np.float16)
        np.testing.assert_array_equal(targets.read(key)["crepe"], want)
    stored = pq.read_schema(out / "corpus" / sorted(listed)[0]).field("embeddings").type
    assert stored.value_type.value_type == "halffloat"


def test_a_store_keeps_its_layout_and_tympan_embed_manifests_record_none(tmp_path):
    header = Header("m", None, SR, 4, 8)
    with shards.Store(tmp_path / "plain", header):
        pass
    assert "layout" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())
    half = Layout(precision="float16", scene=False, sha256=True)
    with shards.Store(tmp_path / "half", header, half) as store:
        store.commit(shards.rows_table([_row(np.full((3, 4), 70000.0 / 7))], header, half))
    with pytest.raises(shards.StoreError, match="stores rows as"):
        with shards.Store(tmp_path / "half", header):
            pass
    table = shards.read_embeddings(tmp_path / "half")
    assert table.column_names[-1] == "sha256" and "scene" not in table.column_names
    np.testing.assert_array_equal(shards.embedding_arrays(table, 0)["embeddings"], np.full((3, 4), 1e4, np.float16))


def test_float16_overflow_is_an_error_row_not_an_infinite_target():
    from tympan.corpus.units import Source, embed_unit

    class Loud:
        @staticmethod
        def get_timestamp_embeddings(audio, model):
            n = audio.shape[1] // 320 + 1
            return torch.full((audio.shape[0], n, 4), 1e5), torch.zeros(audio.shape[0], n)

    source = Source("a.wav", "/a.wav", "a.wav", 1, 1, SR, SR, "ab" * 32)
    [row] = embed_unit([(source, np.zeros(SR, np.float32), None)], Loud, None, torch.device("cpu"), None,
                       Layout(precision="float16", scene=False, sha256=True))
    assert "NaN or infinite" in row["error"] and row["sha256"] == "ab" * 32


def _row(embeddings: np.ndarray) -> dict:
    n = len(embeddings)
    return {"path": "x.wav", "source": "/x.wav", "size": 1, "mtime_ns": 1, "sample_rate": SR, "duration_s": 1.0,
            "weights_sha256": None, "sha256": "0" * 64, "error": None, "timestamps": np.arange(n) * 20.0,
            "embeddings": embeddings}


def test_ray_engine_gives_the_local_targets(tmp_path, crepe_tiny, capsys):
    """--engine ray on a local Ray (2 CPUs). Ray's CPU actors run torch on one thread, so the
    local run does too (float32 results may change in the last bits with the thread count)."""
    ray = pytest.importorskip("ray")
    from tympan.train.targets import Targets

    data = tmp_path / "data"
    keys = make_data(data, n=4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli(targets_argv(data, tmp_path / "local")) == 0
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        assert cli(targets_argv(data, tmp_path / "ray", "--engine", "ray")) == 0
    finally:
        ray.shutdown()
    assert capsys.readouterr().err.count("4 embedded, 0 skipped (already done), 0 failed") == 2
    local, on_ray = Targets(tmp_path / "local", data), Targets(tmp_path / "ray", data)
    assert sorted(on_ray.keys()) == keys
    for key in keys:
        np.testing.assert_array_equal(on_ray.read(key)["crepe"], local.read(key)["crepe"])

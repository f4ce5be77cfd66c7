"""`tympan embed` (npz): one .npz per file, resumable, atomic, batching that never changes results.

Most tests use tests/embedmods/fakehear.py, a small deterministic HEAR module, so they
test the embedder itself; the last one runs the real tympan model.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import tympan
from tympan import cli
from tympan.corpus import units
from tympan.io import read_audio

EMBEDMODS = Path(__file__).parent / "embedmods"

# (relative path, seconds, file rate, channels): four clips of exactly 16000 samples at
# 16 kHz once resampled (to batch together), two other lengths, one stereo.
GOOD_FILES = [
    ("a.wav", 1.0, 16000, 1),
    ("b.flac", 1.0, 16000, 1),
    ("e.wav", 0.75, 16000, 1),
    ("sub/c.wav", 1.0, 44100, 1),
    ("sub/d.flac", 0.5, 22050, 1),
    ("sub/deeper/f.wav", 1.0, 16000, 2),
]


@pytest.fixture
def fakehear(monkeypatch):
    monkeypatch.syspath_prepend(str(EMBEDMODS))
    import fakehear

    return fakehear


@pytest.fixture
def tree(tmp_path) -> Path:
    """A folder of the GOOD_FILES, one corrupt .wav and a file that is not audio."""
    root = tmp_path / "in"
    rng = np.random.default_rng(0)
    for rel, seconds, rate, channels in GOOD_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / rel, rng.uniform(-0.5, 0.5, (round(seconds * rate), channels)).astype(np.float32), rate)
    (root / "sub" / "bad.wav").write_bytes(b"RIFF\x00\x01 this is not a wave file")
    (root / "notes.txt").write_text("ignored")
    return root


def run_embed(*argv: str) -> int:
    return cli.main(["embed", *map(str, argv)])


def expected(module, model, path: Path) -> dict[str, np.ndarray]:
    """The module called directly on one file, alone: what its .npz must hold."""
    audio = torch.from_numpy(read_audio(path, model.sample_rate))[None]
    emb, ts = module.get_timestamp_embeddings(audio, model)
    scene = module.get_scene_embeddings(audio, model)
    return {"embeddings": emb[0].numpy(), "timestamps": ts[0].numpy(), "scene": scene[0].numpy()}


def assert_npz_matches(path: Path, want: dict[str, np.ndarray], model) -> None:
    with np.load(path) as got:
        assert sorted(got.files) == ["embeddings", "scene", "timestamps"]
        assert all(got[key].dtype == np.float32 for key in got.files)
        n_timestamps = got["timestamps"].shape[0]
        assert got["embeddings"].shape == (n_timestamps, model.timestamp_embedding_size)
        assert got["scene"].shape == (model.scene_embedding_size,)
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=f"{path} {key}")


def npz_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.npz"))


def test_embeds_a_tree_like_the_module_alone_and_reports_the_corrupt_file(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    assert run_embed(tree, "--out", out, "--module", "fakehear", "--batch-size", "3") == 1

    assert npz_files(out) == sorted(f"{rel}.npz" for rel, *_ in GOOD_FILES)
    model = fakehear.load_model()
    for rel, *_ in GOOD_FILES:
        assert_npz_matches(out / f"{rel}.npz", expected(fakehear, model, tree / rel), model)
    err = capsys.readouterr().err
    assert re.search(r"failed: .*bad\.wav: ", err)
    summary = err[err.index("tympan embed: 6 embedded") :]
    assert "6 embedded, 0 skipped (already done), 1 failed" in summary
    assert "bad.wav" in summary


def test_second_run_skips_done_files_and_a_third_embeds_only_a_new_one(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    run_embed(tree, "--out", out, "--module", "fakehear")
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    capsys.readouterr()

    assert run_embed(tree, "--out", out, "--module", "fakehear") == 1  # only bad.wav fails
    assert "0 embedded, 6 skipped (already done), 1 failed" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")} == mtimes

    sf.write(tree / "sub" / "new.wav", np.full(8000, 0.1, np.float32), 16000)
    assert run_embed(tree, "--out", out, "--module", "fakehear") == 1
    assert "1 embedded, 6 skipped (already done), 1 failed" in capsys.readouterr().err
    assert (out / "sub" / "new.wav.npz").exists()


def test_only_equal_lengths_are_batched_up_to_batch_size(tree, tmp_path, fakehear, monkeypatch):
    calls: list[tuple[int, int]] = []
    real = fakehear.get_scene_embeddings  # called once per batch by the embedder

    def recording(audio, model):
        calls.append(tuple(audio.shape))
        return real(audio, model)

    monkeypatch.setattr(fakehear, "get_scene_embeddings", recording)
    run_embed(tree, "--out", tmp_path / "out", "--module", "fakehear", "--batch-size", "3")

    # the four 1 s clips (16000 samples) in batches of at most 3, the others alone
    one_second = sorted(n for n, length in calls if length == 16000)
    assert one_second == [1, 3]
    assert sorted(length for n, length in calls if length != 16000) == [8000, 12000]


def test_long_files_are_embedded_alone(tree, tmp_path, fakehear, monkeypatch):
    calls: list[int] = []
    real = fakehear.get_scene_embeddings  # called once per batch by the embedder
    monkeypatch.setattr(fakehear, "get_scene_embeddings", lambda a, m: calls.append(a.shape[0]) or real(a, m))
    monkeypatch.setattr(units, "MAX_BATCHED_SECONDS", 0.9)  # the 1 s clips count as long

    run_embed(tree, "--out", tmp_path / "out", "--module", "fakehear", "--batch-size", "8")

    assert calls == [1] * len(GOOD_FILES)


def test_a_failing_batch_is_retried_file_by_file(tree, tmp_path, fakehear, monkeypatch, capsys):
    monkeypatch.setattr(fakehear, "MAX_BATCH", 1)  # "out of memory" on any batch of 2 or more
    out = tmp_path / "out"

    assert run_embed(tree, "--out", out, "--module", "fakehear", "--batch-size", "4") == 1

    assert len(npz_files(out)) == len(GOOD_FILES)
    assert "6 embedded, 0 skipped (already done), 1 failed" in capsys.readouterr().err


def test_a_file_the_module_cannot_embed_is_reported_and_skipped(tmp_path, fakehear, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "tiny.wav", np.zeros(100, np.float32), 16000)  # shorter than one frame
    sf.write(folder / "ok.wav", np.zeros(1600, np.float32), 16000)

    assert run_embed(folder, "--out", tmp_path / "out", "--module", "fakehear") == 1

    assert npz_files(tmp_path / "out") == ["ok.wav.npz"]
    err = capsys.readouterr().err
    assert re.search(r"tiny\.wav: embedding failed: ValueError: audio shorter than one frame", err)


def test_a_run_killed_mid_write_leaves_no_partial_file(tree, tmp_path, fakehear, monkeypatch):
    out = tmp_path / "out"

    def savez_then_killed(file, **arrays):
        file.write(b"PK\x03\x04 the first bytes of an archive")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(np, "savez", savez_then_killed)
        assert run_embed(tree, "--out", out, "--module", "fakehear") == 130  # Ctrl-C
    # No .npz and no temporary file: only the record (its header) and the lock.
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == [".lock", "tympan-embed.jsonl"]

    assert run_embed(tree, "--out", out, "--module", "fakehear") == 1  # resumes from nothing
    assert len(npz_files(out)) == len(GOOD_FILES)


def test_model_file_is_passed_to_load_model(tmp_path, fakehear):
    (tmp_path / "in").mkdir()
    wav = tmp_path / "in" / "x.wav"
    sf.write(wav, np.random.default_rng(1).uniform(-0.5, 0.5, 4000).astype(np.float32), 16000)
    weights = tmp_path / "seed.txt"
    weights.write_text("7")

    assert run_embed(wav, "--out", tmp_path / "out", "--module", "fakehear", "--model", weights) == 0

    model = fakehear.load_model(str(weights))
    want = expected(fakehear, model, wav)
    assert_npz_matches(tmp_path / "out" / "x.wav.npz", want, model)
    assert not np.allclose(want["scene"], expected(fakehear, fakehear.load_model(), wav)["scene"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
        (["--module", "no_such_module_xyz"], "no module named 'no_such_module_xyz'"),
        (["--module", "json"], "'json' is not a HEAR module: it has no load_model"),
        (["--device", "nodevice"], "--device 'nodevice' cannot be used"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_error(tree, tmp_path, fakehear, capsys, argv, message):
    argv = ["--module", "fakehear", *argv]  # a later --module wins
    assert run_embed(tree, "--out", tmp_path / "out", *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_path_and_colliding_outputs_exit_2(tree, tmp_path, fakehear, capsys):
    assert run_embed(tree, tmp_path / "nowhere", "--out", tmp_path / "out", "--module", "fakehear") == 2
    assert "no such file or folder: " in capsys.readouterr().err

    other = tmp_path / "other"
    other.mkdir()
    sf.write(other / "a.wav", np.zeros(1000, np.float32), 16000)  # tree has a.wav too
    assert run_embed(tree, other, "--out", tmp_path / "out", "--module", "fakehear") == 2
    err = capsys.readouterr().err
    assert re.search(r"in/a\.wav and .*other/a\.wav would both be stored as a\.wav .*separate --out folders", err)
    assert not (tmp_path / "out").exists()


def test_default_module_is_tympan(tmp_path, model):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(2)
    sf.write(folder / "one.wav", rng.uniform(-0.5, 0.5, 8000).astype(np.float32), 16000)
    sf.write(folder / "two.flac", rng.uniform(-0.5, 0.5, 13230).astype(np.float32), 44100)

    assert run_embed(folder, "--out", tmp_path / "out") == 0

    for name in ["one.wav", "two.flac"]:
        assert_npz_matches(tmp_path / "out" / f"{name}.npz", expected(tympan, model, folder / name), model)


# ----------------------------------------------------------------------------------------
# Both formats: what an output records, what it refuses, and errors in one line.

PARQUET = ["--format", "parquet"]
FORMATS = pytest.mark.parametrize("fmt", [[], PARQUET], ids=["npz", "parquet"])


def one_line_error(err: str, *needles: str) -> None:
    """stderr is one `tympan embed: error:` line (no traceback) holding every needle."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tympan embed: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def record(out: Path) -> dict[str, dict]:
    """The npz record's entries by path (later lines win)."""
    import json

    lines = (out / "tympan-embed.jsonl").read_text().splitlines()
    return {e["path"]: e for e in map(json.loads, lines[1:])}


def parquet_sources(out: Path) -> dict[str, str]:
    from tympan.corpus import read_embeddings

    t = read_embeddings(out, columns=["path", "source"])
    return dict(zip(t.column("path").to_pylist(), t.column("source").to_pylist()))


@FORMATS
def test_two_input_roots_into_one_output_the_second_is_refused_naming_both(tmp_path, fakehear, capsys, fmt):
    """Issue 11.4: a second run from another root kept the first file under the shared name (npz,
    "skipped") or silently replaced it (Parquet); each output now records its source."""
    first, second, out = tmp_path / "A", tmp_path / "B", tmp_path / "out"
    for root, seed in ((first, 1), (second, 2)):
        root.mkdir()
        sf.write(root / "x.wav", np.random.default_rng(seed).uniform(-0.5, 0.5, 4000 + seed).astype(np.float32), 16000)
    assert run_embed(first, "--out", out, "--module", "fakehear", *fmt) == 0
    sources = record(out) if not fmt else parquet_sources(out)
    recorded = sources["x.wav"]["source"] if not fmt else sources["x.wav"]
    assert recorded == str((first / "x.wav").absolute())
    capsys.readouterr()

    assert run_embed(second, "--out", out, "--module", "fakehear", *fmt) == 2
    one_line_error(capsys.readouterr().err, str(first / "x.wav"), str(second / "x.wav"), "another --out")
    assert (parquet_sources(out) if fmt else {k: e["source"] for k, e in record(out).items()}) == {
        "x.wav": str(first / "x.wav")
    }
    if not fmt:
        model = fakehear.load_model()
        assert_npz_matches(out / "x.wav.npz", expected(fakehear, model, first / "x.wav"), model)
    # The same root again (given by another spelling of its path) is the same source: nothing to do.
    assert run_embed(tmp_path / "A" / ".." / "A", "--out", out, "--module", "fakehear", *fmt) == 0
    assert "0 embedded, 1 skipped (already done), 0 failed" in capsys.readouterr().err


@FORMATS
def test_a_module_returning_nan_or_inf_fails_those_files_and_writes_nothing_for_them(tree, tmp_path, capsys, fmt,
                                                                                      monkeypatch):
    """Issue 11.6: non-finite module outputs were written (exit 0); now they are per-file failures."""
    monkeypatch.syspath_prepend(str(EMBEDMODS))
    out = tmp_path / "out"
    assert run_embed(tree, "--out", out, "--module", "nanhear", *fmt) == 1
    err = capsys.readouterr().err
    # e.wav: 0.75 s (NaN in its embeddings); sub/d.flac: 0.5 s (infinite scene); bad.wav: corrupt
    assert re.search(r"failed: \S*e\.wav: embedding failed: the module returned NaN or infinite values "
                     r"\(1 of 584 in embeddings\)", err), err
    assert re.search(r"failed: \S*d\.flac: .*NaN or infinite values \(1 of 8 in scene\)", err), err
    assert "4 embedded, 0 skipped (already done), 3 failed" in err
    if fmt:
        from tympan.corpus import read_embeddings

        table = read_embeddings(out)
        rows = {r["path"]: r for r in table.to_pylist()}
        assert rows["e.wav"]["embeddings"] is None and "NaN" in rows["e.wav"]["error"]
        assert rows["sub/d.flac"]["scene"] is None
        good = [r for r in rows.values() if r["error"] is None]
        assert len(good) == 4 and all(np.isfinite(np.asarray(r["embeddings"])).all() for r in good)
    else:
        assert npz_files(out) == sorted(f"{rel}.npz" for rel in ["a.wav", "b.flac", "sub/c.wav", "sub/deeper/f.wav"])


def test_a_truncated_or_emptied_npz_is_embedded_again(tree, tmp_path, fakehear, capsys):
    """Issue 11.5: a zero-byte or truncated .npz counted as done."""
    out = tmp_path / "out"
    run_embed(tree, "--out", out, "--module", "fakehear")
    whole = (out / "a.wav.npz").read_bytes()
    (out / "a.wav.npz").write_bytes(whole[: len(whole) // 2])
    (out / "b.flac.npz").write_bytes(b"")
    capsys.readouterr()

    assert run_embed(tree, "--out", out, "--module", "fakehear") == 1  # bad.wav
    assert "2 embedded, 4 skipped (already done), 1 failed" in capsys.readouterr().err
    model = fakehear.load_model()
    for rel in ["a.wav", "b.flac"]:
        assert_npz_matches(out / f"{rel}.npz", expected(fakehear, model, tree / rel), model)
    assert (out / "a.wav.npz").read_bytes() == whole


def test_a_changed_input_is_embedded_again(tree, tmp_path, fakehear, capsys):
    """An input replaced since its .npz was written (other samples, so another size or mtime)
    is embedded again, as Parquet outputs do; its unchanged neighbours are skipped."""
    out = tmp_path / "out"
    run_embed(tree, "--out", out, "--module", "fakehear")
    before = np.load(out / "a.wav.npz")["embeddings"]
    sf.write(tree / "a.wav", np.full(16000, 0.25, np.float32), 16000)  # same length, other samples
    capsys.readouterr()

    assert run_embed(tree, "--out", out, "--module", "fakehear") == 1  # bad.wav
    assert "1 embedded, 5 skipped (already done), 1 failed" in capsys.readouterr().err
    model = fakehear.load_model()
    assert_npz_matches(out / "a.wav.npz", expected(fakehear, model, tree / "a.wav"), model)
    assert not np.array_equal(np.load(out / "a.wav.npz")["embeddings"], before)


def test_an_npz_tympan_did_not_write_is_never_overwritten(tree, tmp_path, fakehear, capsys):
    """Issue 11.5: an .npz that is not tympan's (no record of it) is refused, not replaced or skipped."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.wav.npz").write_bytes(b"")  # somebody's file, or a truncated one of unknown origin
    (out / "notes.txt").write_text("other files in the folder are fine")
    assert run_embed(tree, "--out", out, "--module", "fakehear") == 2
    one_line_error(capsys.readouterr().err, str(out / "a.wav.npz"), "does not record it", "delete or move it")
    assert (out / "a.wav.npz").read_bytes() == b"" and npz_files(out) == ["a.wav.npz"]

    (out / "a.wav.npz").unlink()
    assert run_embed(tree, "--out", out, "--module", "fakehear") == 1
    assert len(npz_files(out)) == len(GOOD_FILES) and set(record(out)) == {rel for rel, *_ in GOOD_FILES}


def test_npz_output_of_another_model_is_refused(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    run_embed(tree, "--out", out, "--module", "fakehear")
    seed = tmp_path / "seed.txt"
    seed.write_text("7")
    capsys.readouterr()
    assert run_embed(tree, "--out", out, "--module", "fakehear", "--model", seed) == 2
    one_line_error(capsys.readouterr().err, "holds embeddings from module 'fakehear'", "use another --out")


def flip_a_bit(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :]


@FORMATS
@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
def test_a_bad_model_file_is_one_line_and_exit_2(tree, tmp_path, capsys, fmt, damage):
    """Issue 11.8: the module's own error (tympan's WeightsError, or any other) escaped as a traceback."""
    weights = tmp_path / "w.pt"
    good = Path(tympan.__file__).parent / "weights" / "tympan-v0.pt"
    if damage != "missing":
        data = good.read_bytes()
        weights.write_bytes(data[: len(data) // 2] if damage == "truncated" else flip_a_bit(data))
    assert run_embed(tree / "a.wav", "--out", tmp_path / "out", "--model", weights, *fmt) == 2
    one_line_error(capsys.readouterr().err, "tympan.load_model could not load --model", str(weights), "another --model")
    assert not (tmp_path / "out").exists()


@FORMATS
def test_out_that_is_a_file_is_one_line_and_exit_2(tree, tmp_path, fakehear, capsys, fmt):
    (tmp_path / "out").write_text("a file")
    assert run_embed(tree, "--out", tmp_path / "out", "--module", "fakehear", *fmt) == 2
    one_line_error(capsys.readouterr().err, f"--out {tmp_path / 'out'} exists and is not a folder")
    assert (tmp_path / "out").read_text() == "a file"


@FORMATS
def test_fifos_and_broken_or_looping_links_are_reported_as_failures_and_never_opened(tmp_path, fakehear, capsys, fmt):
    """Issue 11.8: such entries of a folder were dropped without a word. A FIFO must not be opened
    (it would wait for a writer forever): the alarm turns a hang into a failure."""
    import os
    import signal

    folder = tmp_path / "in"
    folder.mkdir()
    sf.write(folder / "ok.wav", np.zeros(1600, np.float32), 16000)
    os.mkfifo(folder / "pipe.wav")
    (folder / "broken.wav").symlink_to(folder / "gone.wav")
    (folder / "loop1.wav").symlink_to(folder / "loop2.wav")
    (folder / "loop2.wav").symlink_to(folder / "loop1.wav")

    def hung(signum, frame):
        raise TimeoutError("tympan embed hung (a FIFO opened for reading?)")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code = run_embed(folder, "--out", tmp_path / "out", "--module", "fakehear", *fmt)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "1 embedded, 0 skipped (already done), 4 failed" in err
    assert re.search(r"failed: \S*pipe\.wav: a FIFO \(named pipe\), not a regular file", err)
    assert re.search(r"failed: \S*broken\.wav: a broken symbolic link \(its target \S*gone\.wav does not exist\)", err)
    assert re.search(r"failed: \S*loop1\.wav: a symbolic link loop", err) and re.search(r"loop2\.wav: a symbolic", err)


@FORMATS
def test_ctrl_c_while_loading_the_model_exits_130_in_one_line(tree, tmp_path, fakehear, capsys, monkeypatch, fmt):
    """Issue 11.8: Ctrl-C outside the embedding loop escaped as a KeyboardInterrupt traceback."""

    def interrupted(path=""):
        raise KeyboardInterrupt

    monkeypatch.setattr(fakehear, "load_model", interrupted)
    assert run_embed(tree, "--out", tmp_path / "out", "--module", "fakehear", *fmt) == 130
    assert capsys.readouterr().err == "tympan embed: interrupted; run the same command again to finish\n"


@pytest.mark.parametrize("missing, fmt, message", [
    ("tqdm", [], 'tqdm is needed to read audio files and show progress; install it with pip install "tympan[cli]"'),
    ("pyarrow", PARQUET, '--format parquet needs pyarrow: pip install "tympan[parquet]"'),
])  # fmt: skip
def test_a_missing_optional_package_is_one_line_and_exit_2(tree, tmp_path, fakehear, capsys, monkeypatch,
                                                           missing, fmt, message):
    """Issue 11.8: the ImportError escaped as a traceback."""
    import sys

    import tympan.corpus

    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` fails
    for name in ["driver", "shards", "local"]:  # imported again, without it
        monkeypatch.delitem(sys.modules, f"tympan.corpus.{name}", raising=False)
        monkeypatch.delattr(tympan.corpus, name, raising=False)
    assert run_embed(tree, "--out", tmp_path / "out", "--module", "fakehear", *fmt) == 2
    assert capsys.readouterr().err == f"tympan embed: error: {message}\n"

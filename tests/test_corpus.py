"""`tympan embed --format parquet [--engine local|ray]`: shards, manifest, exactly once, resume.

Most tests use small deterministic modules (tests/embedmods/fakehear.py, and
tests/corpusmods/chaoshear.py, which can be slowed down or made to kill its own process);
the Ray-versus-local comparison runs the real tympan model on a generated corpus. The Ray
tests share one local Ray (2 CPUs) started by a fixture; they need `ray[data]` installed.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

import tympan
from tympan import cli
from tympan.checksum import state_dict_sha256
from tympan.corpus import embedding_arrays, read_embeddings, shards
from tympan.corpus.units import Header, Source, make_units
from tympan.io import read_audio

TESTS = Path(__file__).parent
EMBEDMODS = TESTS / "embedmods"
CORPUSMODS = TESTS / "corpusmods"
GOOD = [  # (relative path, seconds, file rate, channels)
    ("a.wav", 1.0, 16000, 1),
    ("b.flac", 1.0, 16000, 1),
    ("e.wav", 0.75, 16000, 1),
    ("sub/c.wav", 1.0, 44100, 1),
    ("sub/d.flac", 0.5, 22050, 1),
    ("sub/deeper/f.wav", 1.0, 16000, 2),
]


def write(path: Path, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(path, rng.uniform(-0.5, 0.5, (round(seconds * rate), channels)).astype(np.float32), rate)


def run_embed(*argv) -> int:
    return cli.main(["embed", *map(str, argv)])


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def assert_exactly_once(out: Path, paths: set[str]) -> None:
    """Every path in exactly one row of the committed shards, and no other shard on disk."""
    got = read_embeddings(out, columns=["path"]).column("path").to_pylist()
    assert len(got) == len(set(got)), f"duplicates: {sorted(p for p in set(got) if got.count(p) > 1)[:5]}"
    assert set(got) == paths
    listed = {Path(s["file"]).name for s in manifest(out)["shards"]}
    assert {p.name for p in (out / "shards").iterdir()} == listed


def sorted_table(out: Path):
    return read_embeddings(out).sort_by("path")


@pytest.fixture
def fakehear(monkeypatch):
    monkeypatch.syspath_prepend(str(EMBEDMODS))
    import fakehear

    return fakehear


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "in"
    for i, (rel, seconds, rate, channels) in enumerate(GOOD):
        write(root / rel, seconds, rate, channels, seed=i)
    (root / "sub" / "bad.wav").write_bytes(b"RIFF\x00\x01 this is not a wave file")
    (root / "notes.txt").write_text("ignored")
    return root


def test_import_tympan_imports_neither_ray_nor_pyarrow():
    code = (
        "import sys, tympan, tympan.io, tympan.cli, tympan.corpus, tympan.corpus.npz\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'pyarrow', 'pandas'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_units_group_equal_lengths_and_keep_long_and_unreadable_files_alone():
    def src(path, rate, frames):
        return Source(path, path, path, 1, 1, rate, frames)

    sources = [
        src("a", 16000, 16000), src("b", 44100, 44100), src("c", 16000, 16000), src("d", 22050, 22050),
        src("e", 16000, 8000), src("f", 16000, 16001), src("long1", 16000, 16000 * 61),
        src("long2", 16000, 16000 * 61), Source("bad", "bad", "bad", 1, 1),
    ]  # fmt: skip
    units = [[s.path for s in u] for u in make_units(sources, batch_size=3, sample_rate=16000)]
    assert units == [["e"], ["a", "b", "c"], ["d"], ["f"], ["long1"], ["long2"], ["bad"]]


def test_local_parquet_rows_schema_manifest_and_failures(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    assert run_embed(tree, "--out", out, "--module", "fakehear", "--format", "parquet", "--batch-size", "3") == 1
    err = capsys.readouterr().err
    assert "failed: sub/bad.wav: " in err
    assert "6 embedded, 0 skipped (already done), 1 failed" in err

    model = fakehear.load_model()
    m = manifest(out)
    assert m["format"] == "tympan-corpus/2" and m["module"] == "fakehear"
    assert m["weights_sha256"] == state_dict_sha256(model.state_dict())
    assert (m["sample_rate"], m["timestamp_embedding_size"], m["scene_embedding_size"]) == (16000, 8, 8)
    assert sum(s["rows"] for s in m["shards"]) == 7 and sum(s["failed"] for s in m["shards"]) == 1
    for s in m["shards"]:
        assert pq.read_schema(out / s["file"]).remove_metadata() == shards.schema(8, 8)
    assert_exactly_once(out, {rel for rel, *_ in GOOD} | {"sub/bad.wav"})

    table = read_embeddings(out)
    rows = {r["path"]: i for i, r in enumerate(table.select(["path"]).to_pylist())}
    for rel, seconds, rate, _ in GOOD:
        row = table.slice(rows[rel], 1).to_pylist()[0]
        st = os.stat(tree / rel)
        assert (row["size"], row["mtime_ns"], row["source"]) == (st.st_size, st.st_mtime_ns, str(tree / rel))
        assert (row["sample_rate"], row["duration_s"], row["module"], row["error"]) == (rate, seconds, "fakehear", None)
        audio = torch.from_numpy(read_audio(tree / rel, 16000))[None]
        emb, ts = fakehear.get_timestamp_embeddings(audio, model)
        got = embedding_arrays(table, rows[rel])
        np.testing.assert_array_equal(got["embeddings"], emb[0].numpy())
        np.testing.assert_array_equal(got["timestamps"], ts[0].numpy())
        np.testing.assert_array_equal(got["scene"], fakehear.get_scene_embeddings(audio, model)[0].numpy())
    bad = table.slice(rows["sub/bad.wav"], 1).to_pylist()[0]
    assert bad["error"] and bad["embeddings"] is None and bad["scene"] is None and bad["timestamps"] is None
    with pytest.raises(ValueError, match="bad.wav failed: "):
        embedding_arrays(table, rows["sub/bad.wav"])

    # The documented ways to read it without tympan (docs/corpus.md) see the same rows.
    import pandas as pd

    files = [out / s["file"] for s in json.loads((out / "manifest.json").read_text())["shards"]]
    df = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert sorted(df.path) == sorted(rows)
    a = df.set_index("path").loc["a.wav"]
    np.testing.assert_array_equal(np.stack(a.embeddings), embedding_arrays(table, rows["a.wav"])["embeddings"])
    assert len(pd.read_parquet(out / "shards")) == 7


def test_progress_lines_in_a_log_give_files_hours_speed_eta_and_failures(tree, tmp_path, fakehear, capsys, monkeypatch):
    from tympan.corpus import driver

    monkeypatch.setattr(driver, "PROGRESS_SECONDS", 0.0)  # stderr is not a terminal here: lines, no bar
    run_embed(tree, "--out", tmp_path / "out", "--module", "fakehear", "--format", "parquet", "--batch-size", "1")
    lines = [line for line in capsys.readouterr().err.splitlines() if "h of audio" in line]
    assert re.fullmatch(r"tympan embed: 1/7 files, 0\.000/0\.001 h of audio, [\d.]+x real time, ETA .+, 0 failed", lines[0])
    assert re.fullmatch(r"tympan embed: 7/7 files, 0\.001/0\.001 h of audio, .*, ETA 0\.00 s, 1 failed", lines[-1])


def test_rerun_skips_done_files_and_recomputes_changed_ones_exactly_once(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    argv = (tree, "--out", out, "--module", "fakehear", "--format", "parquet", "--shard-rows", "2")
    run_embed(*argv)
    before = {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in manifest(out)["shards"]}
    capsys.readouterr()

    assert run_embed(*argv) == 1  # bad.wav is still recorded as failed
    err = capsys.readouterr().err
    assert "0 embedded, 7 skipped (already done), 1 failed (1 recorded by earlier runs)" in err
    assert {s["file"]: (out / s["file"]).stat().st_mtime_ns for s in manifest(out)["shards"]} == before

    write(tree / "a.wav", 0.5, 16000, seed=99)  # changed: other length and content
    write(tree / "sub" / "new.wav", 0.25, 16000, seed=98)
    write(tree / "sub" / "bad.wav", 0.25, 16000, seed=97)  # fixed
    assert run_embed(*argv) == 0
    assert "3 embedded, 5 skipped (already done), 0 failed" in capsys.readouterr().err
    assert_exactly_once(out, {rel for rel, *_ in GOOD} | {"sub/bad.wav", "sub/new.wav"})
    table = read_embeddings(out)
    i = table.column("path").to_pylist().index("a.wav")
    model = fakehear.load_model()
    audio = torch.from_numpy(read_audio(tree / "a.wav", 16000))[None]
    np.testing.assert_array_equal(embedding_arrays(table, i)["scene"], fakehear.get_scene_embeddings(audio, model)[0])
    assert table.column("error").null_count == table.num_rows
    # Shards that held none of the changed files were not touched.
    untouched = [f for f in before if f in {s["file"] for s in manifest(out)["shards"]}]
    assert untouched and all((out / f).stat().st_mtime_ns == before[f] for f in untouched)


def test_ctrl_c_during_a_commit_keeps_the_manifest_exact(tree, tmp_path, fakehear, monkeypatch):
    out = tmp_path / "out"
    argv = (tree, "--out", out, "--module", "fakehear", "--format", "parquet", "--shard-rows", "2")
    real = shards.Store._write_manifest
    calls = []

    def interrupted_third_commit(self, manifest):
        if len(manifest["shards"]) == 3 and not calls:  # listing the third shard, renamed already
            calls.append(1)
            raise KeyboardInterrupt
        real(self, manifest)

    monkeypatch.setattr(shards.Store, "_write_manifest", interrupted_third_commit)
    assert run_embed(*argv) == 130  # Ctrl-C: the held rows are committed again, in a new shard
    monkeypatch.setattr(shards.Store, "_write_manifest", real)
    assert [s["rows"] for s in manifest(out)["shards"]] == [2, 2, 2]
    assert_exactly_once(out, {r for r in read_embeddings(out, columns=["path"]).column("path").to_pylist()})

    assert run_embed(*argv) == 1
    assert_exactly_once(out, {rel for rel, *_ in GOOD} | {"sub/bad.wav"})


def test_a_shard_renamed_but_not_in_the_manifest_is_collected_on_open(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    argv = (tree, "--out", out, "--module", "fakehear", "--format", "parquet", "--shard-rows", "4")
    run_embed(*argv)
    header = Header(**{k: manifest(out)[k] for k in Header.__dataclass_fields__})
    store = shards.Store(out, header).__enter__()
    table = read_embeddings(out).slice(0, 3)
    store._write_shard(table)  # the rename happened, then the process died (no GC, no manifest)
    (out / "shards" / ".part-000099.parquet.tmp").write_bytes(b"half a shard")
    store._lock.__exit__()
    assert len(list((out / "shards").iterdir())) == len(manifest(out)["shards"]) + 2

    capsys.readouterr()
    assert run_embed(*argv) == 1
    assert "0 embedded, 7 skipped (already done)" in capsys.readouterr().err
    assert_exactly_once(out, {rel for rel, *_ in GOOD} | {"sub/bad.wav"})


def test_shard_bytes_bound(tree, tmp_path, fakehear):
    out = tmp_path / "out"
    # 1 s at fakehear's 10 ms hop: 98 timestamps x 8 floats = 3 KiB per file; 4 KiB per shard.
    run_embed(tree, "--out", out, "--module", "fakehear", "--format", "parquet", "--shard-mb", 4 / 1024, "--batch-size", "1")
    assert all(s["rows"] <= 2 for s in manifest(out)["shards"])
    assert_exactly_once(out, {rel for rel, *_ in GOOD} | {"sub/bad.wav"})


def test_another_model_or_a_running_writer_is_refused(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    argv = (tree, "--out", out, "--module", "fakehear", "--format", "parquet")
    run_embed(*argv)
    seed = tmp_path / "seed.txt"
    seed.write_text("7")
    capsys.readouterr()
    assert run_embed(*argv, "--model", seed) == 2
    assert "holds embeddings from module 'fakehear'" in capsys.readouterr().err

    with open(out / ".lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert run_embed(*argv) == 2
    assert "another tympan embed is writing to" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "npz", "--engine", "ray"], "--engine needs --format parquet"),
        (["--shard-rows", "5"], "--shard-rows needs --format parquet"),
        (["--format", "parquet", "--ray-address", "h:6379"], "--ray-address applies to --engine ray only"),
        (["--format", "parquet", "--shard-rows", "0"], "--shard-rows must be at least 1, got 0"),
        (["--format", "parquet", "--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    ],
)
def test_bad_corpus_arguments_exit_2(tree, tmp_path, fakehear, capsys, argv, message):
    assert run_embed(tree, "--out", tmp_path / "out", "--module", "fakehear", *argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------
# Kills: a driver killed with SIGKILL or stopped with SIGINT, a Ray worker killed.


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> Path:
    """The chaoshear control folder; set in the environment before any Ray worker starts."""
    folder = tmp_path_factory.mktemp("control")
    old = {k: os.environ.get(k) for k in ("TYMPAN_TEST_CONTROL", "PYTHONPATH")}
    os.environ["TYMPAN_TEST_CONTROL"] = str(folder)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CORPUSMODS), old["PYTHONPATH"]]))
    sys.path.insert(0, str(CORPUSMODS))
    yield folder
    sys.path.remove(str(CORPUSMODS))
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def chaos(control):
    for name in ("slow", "arm_kill", "killed"):
        (control / name).unlink(missing_ok=True)
    yield control
    for name in ("slow", "arm_kill", "killed"):
        (control / name).unlink(missing_ok=True)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> tuple[Path, set[str]]:
    """60 short files of 5 lengths, and 2 corrupt ones: units of up to 4 files."""
    root = tmp_path_factory.mktemp("small")
    for i in range(60):
        write(root / f"d{i % 3}" / f"s{i:03d}.wav", 0.25 + 0.125 * (i % 5), 16000, seed=i)
    (root / "d0" / "broken.wav").write_bytes(b"RIFF nonsense")
    (root / "d1" / "empty.flac").write_bytes(b"")
    paths = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    return root, paths


@pytest.fixture(scope="module")
def small_reference(small_corpus, control, tmp_path_factory):
    """The small corpus embedded by chaoshear, locally and uninterrupted."""
    out = tmp_path_factory.mktemp("ref") / "out"
    assert run_embed(small_corpus[0], "--out", out, "--module", "chaoshear", "--format", "parquet", "--batch-size", "4") == 1
    return sorted_table(out)


def start_cli(argv: list, log: Path) -> subprocess.Popen:
    # As a user at a terminal: SIGINT at its default. A test run started in the background
    # (nohup ... &) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt.
    return subprocess.Popen(
        [sys.executable, "-m", "tympan.cli", "embed", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for_shards(out: Path, n: int, proc: subprocess.Popen, log: Path, timeout: float = 150) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (exit {proc.returncode}) before {n} shards:\n{log.read_text()[-3000:]}")
        try:
            m = manifest(out)
            if len(m["shards"]) >= n:
                return m
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no {n} shards after {timeout} s:\n{log.read_text()[-3000:]}")


def kill(argv: list, out: Path, sig: int, log: Path) -> tuple[dict, dict[str, int]]:
    """Start the CLI, send `sig` once 2 shards are committed, check that the job was left
    unfinished; return the manifest after the kill and its shards' inodes."""
    proc = start_cli(argv, log)
    wait_for_shards(out, 2, proc, log)
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code == (-signal.SIGKILL if sig == signal.SIGKILL else 130), log.read_text()[-3000:]
    after = manifest(out)
    assert 16 <= sum(s["rows"] for s in after["shards"]) < 62  # the job was left unfinished
    inodes = {s["file"]: (out / s["file"]).stat().st_ino for s in after["shards"]}
    return after, inodes


def finish(argv: list, out: Path, paths: set[str], after: dict, inodes: dict[str, int], reference, label: str) -> None:
    """Rerun the same command; check it embeds only what was left, and exactly once."""
    done = subprocess.run(
        [sys.executable, "-m", "tympan.cli", "embed", *map(str, argv)], check=False, capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr  # the two corrupt files
    committed = sum(s["rows"] for s in after["shards"])
    todo = len(paths) - committed
    failed_before = sum(s["failed"] for s in after["shards"])
    assert f"{todo - 2 + failed_before} embedded, {committed} skipped (already done)" in done.stderr
    assert_exactly_once(out, paths)
    assert sorted_table(out).equals(reference)
    for f, ino in inodes.items():  # shards committed before the kill were kept, not rewritten
        assert (out / f).stat().st_ino == ino
    summary = next(line for line in done.stderr.splitlines() if " embedded, " in line)
    got = read_embeddings(out, columns=["path"]).column("path").to_pylist()
    print(
        f"\n{label}: killed with {len(after['shards'])} shards ({committed} of {len(paths)} files) committed; "
        f"rerun: {summary.split('; ')[0]}; final: {len(got)} rows, {len(set(got))} distinct paths"
    )


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_local_driver_killed_then_rerun_finishes_exactly_once(small_corpus, small_reference, chaos, tmp_path, sig):
    root, paths = small_corpus
    out = tmp_path / "out"
    argv = [root, "--out", out, "--module", "chaoshear", "--format", "parquet", "--batch-size", "4", "--shard-rows", "8"]
    (chaos / "slow").write_text("1.0")  # seconds per batch: long enough to be caught mid-run on a loaded machine
    after, inodes = kill(argv, out, sig, tmp_path / "log")
    (chaos / "slow").unlink()
    finish(argv, out, paths, after, inodes, small_reference, f"local driver, {signal.Signals(sig).name}")


# ----------------------------------------------------------------------------------------
# Ray: one local cluster (2 CPUs) for the tests below.


@pytest.fixture(scope="module")
def ray_cluster(control):
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield context.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, set[str]]:
    """300 short files (5 lengths, 3 rates, some stereo or flac), 3 long ones (> 60 s) and 3 corrupt."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(300):
        rate = (16000, 22050, 44100)[i % 7 % 3]
        ext, channels = ("flac", 2) if i % 11 == 0 else ("wav", 1)
        write(root / f"g{i % 10}" / f"clip{i:03d}.{ext}", 0.2 + 0.2 * (i % 5), rate, channels, seed=i)
    for i, seconds in enumerate([61.0, 63.5, 70.0]):
        write(root / "long" / f"long{i}.wav", seconds, 16000, seed=1000 + i)
    (root / "g0" / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunk")
    (root / "g1" / "empty.wav").write_bytes(b"")
    (root / "g2" / "noise.mp3").write_bytes(os.urandom(2000))
    paths = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert len(paths) == 306
    return root, paths


def test_ray_equals_local_value_for_value_on_a_generated_corpus(corpus, ray_cluster, control, tmp_path, capsys):
    root, paths = corpus
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    argv = [root, "--module", "chaoshear", "--batch-size", "8", "--shard-rows", "64"]
    assert run_embed(*argv, "--out", local_out, "--format", "parquet") == 1
    assert run_embed(*argv, "--out", ray_out, "--engine", "ray") == 1
    err = capsys.readouterr().err
    assert err.count("303 embedded, 0 skipped (already done), 3 failed") == 2
    assert_exactly_once(ray_out, paths)
    assert sorted_table(ray_out).equals(sorted_table(local_out))
    table = sorted_table(ray_out)
    i = table.column("path").to_pylist().index("long/long2.wav")
    assert table.column("duration_s")[i].as_py() == 70.0


def test_ray_equals_local_with_the_tympan_model(corpus, ray_cluster, tmp_path, capsys):
    """tympan itself, on part of the corpus (its first call on each new length is slow on 2 busy
    cores). Ray's CPU actors run torch on one thread, so the local run does too: tympan's
    float32 results change in the last bits with the number of intra-op threads."""
    root, _ = corpus
    parts = [root / "g3", root / "long" / "long0.wav", root / "g2" / "noise.mp3"]
    local_out, ray_out = tmp_path / "local", tmp_path / "ray"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_embed(*parts, "--out", local_out, "--format", "parquet") == 1
    finally:
        torch.set_num_threads(threads)
    assert run_embed(*parts, "--out", ray_out, "--engine", "ray") == 1
    assert capsys.readouterr().err.count("31 embedded, 0 skipped (already done), 1 failed") == 2
    model = tympan.load_model()
    assert manifest(ray_out)["weights_sha256"] == model.weights_sha256  # the default's own identity (v1: state_dict + config)
    assert sorted_table(ray_out).equals(sorted_table(local_out))
    table = sorted_table(ray_out)
    i = table.column("path").to_pylist().index("long0.wav")
    assert embedding_arrays(table, i)["embeddings"].shape == (61 * 50 + 1, model.timestamp_embedding_size)


def test_ray_pipeline_decodes_in_tasks_and_embeds_in_actors(small_corpus, ray_cluster, control):
    from tympan.corpus import ray_engine
    from tympan.corpus.units import ModelSpec, header_of, list_sources, load, probe

    _, model = load(ModelSpec("chaoshear", "", 4, None), "cpu")
    spec = ModelSpec("chaoshear", "", 4, header_of("chaoshear", model, ""))
    units = make_units([probe(s) for s in list_sources([str(small_corpus[0] / "d2")])], 4, 16000)
    ds = ray_engine.dataset(units, spec, None)
    assert sum(t.num_rows for t in ds.iter_batches(batch_size=None, batch_format="pyarrow")) == 20
    stats = ds.stats()
    assert "Operator 1 MapBatches(_decode):" in stats and "Operator 2 MapBatches(_Embedder):" in stats


def test_ray_driver_killed_then_rerun_finishes_exactly_once(small_corpus, small_reference, ray_cluster, chaos, tmp_path):
    root, paths = small_corpus
    out = tmp_path / "out"
    argv = [root, "--out", out, "--module", "chaoshear", "--engine", "ray", "--ray-address", ray_cluster,
            "--batch-size", "4", "--shard-rows", "8"]  # fmt: skip
    (chaos / "slow").write_text("0.3")
    after, inodes = kill(argv, out, signal.SIGKILL, tmp_path / "log")
    (chaos / "slow").unlink()
    finish(argv, out, paths, after, inodes, small_reference, "ray driver, SIGKILL")


def test_ray_worker_killed_mid_run_is_retried_exactly_once(small_corpus, small_reference, ray_cluster, chaos, tmp_path, capsys):
    root, paths = small_corpus
    out = tmp_path / "out"
    (chaos / "arm_kill").write_text("")
    code = run_embed(root, "--out", out, "--module", "chaoshear", "--engine", "ray", "--batch-size", "4", "--shard-rows", "8")
    assert (chaos / "killed").exists()  # an actor did die mid-unit
    err = capsys.readouterr().err
    assert code == 1, err  # only the two corrupt files
    assert f"{len(paths) - 2} embedded, 0 skipped (already done), 2 failed" in err
    assert_exactly_once(out, paths)
    assert sorted_table(out).equals(small_reference)
    got = read_embeddings(out, columns=["path"]).column("path").to_pylist()
    print(
        f"\nray worker: actor process {(chaos / 'killed').read_text()} SIGKILLed itself in its first model call; "
        f"run: {next(line for line in err.splitlines() if ' embedded, ' in line).split('; ')[0]}; "
        f"final: {len(got)} rows, {len(set(got))} distinct paths"
    )


# ----------------------------------------------------------------------------------------
# What tympan may delete, and damaged output folders (issue 11.5, 11.8).


def one_line_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tympan embed: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_a_folder_with_shards_but_no_manifest_is_refused_and_left_as_it_is(tree, tmp_path, fakehear, capsys):
    """Issue 11.5: its shards/part-*.parquet files were deleted as garbage."""
    out = tmp_path / "out"
    (out / "shards").mkdir(parents=True)
    theirs = {"shards/part-000000.parquet": b"PAR1 somebody's data", "shards/part-000007.parquet": b"PAR1 more"}
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    assert run_embed(tree, "--out", out, "--module", "fakehear", "--format", "parquet") == 2
    one_line_error(capsys.readouterr().err, f"{out} is not empty (shards) and has no manifest.json", "another --out")
    assert {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()} == theirs

    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine
    assert run_embed(tree, "--out", empty, "--module", "fakehear", "--format", "parquet") == 1


def test_an_unrecorded_file_among_the_shards_is_neither_deleted_nor_overwritten(tree, tmp_path, fakehear, capsys):
    """Issue 11.5: garbage collection deleted any unlisted part-N.parquet, recorded or not."""
    out = tmp_path / "out"
    argv = (tree, "--out", out, "--module", "fakehear", "--format", "parquet", "--shard-rows", "4")
    run_embed(*argv)
    n = manifest(out)["next_shard"]
    foreign = out / "shards" / f"part-{n:06d}.parquet"  # the name the next shard would take
    foreign.write_bytes(b"not tympan's")
    write(tree / "sub" / "new.wav", 0.25, 16000, seed=5)
    assert run_embed(*argv) == 1
    assert foreign.read_bytes() == b"not tympan's"
    assert f"shards/part-{n + 1:06d}.parquet" in {s["file"] for s in manifest(out)["shards"]}
    assert "sub/new.wav" in read_embeddings(out, columns=["path"]).column("path").to_pylist()


@pytest.mark.parametrize("damage", ["manifest-not-json", "manifest-no-shards", "shard-missing", "shard-corrupt"])
def test_a_damaged_output_folder_is_one_line_and_exit_2(tree, tmp_path, fakehear, capsys, damage):
    """Issue 11.8: a damaged manifest or a missing or corrupt listed shard gave a traceback."""
    out = tmp_path / "out"
    argv = (tree, "--out", out, "--module", "fakehear", "--format", "parquet")
    run_embed(*argv)
    shard = out / manifest(out)["shards"][0]["file"]
    if damage == "manifest-not-json":
        (out / "manifest.json").write_text('{"format": "tympan-corpus/2", "shards": [')
    elif damage == "manifest-no-shards":
        (out / "manifest.json").write_text(json.dumps({k: v for k, v in manifest(out).items() if k != "shards"}))
    elif damage == "shard-missing":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:100])
    capsys.readouterr()
    assert run_embed(*argv) == 2
    needle = f"{out / 'manifest.json'} is damaged" if damage.startswith("manifest") else f"{shard}, a committed shard"
    one_line_error(capsys.readouterr().err, needle, "restore it from a backup, or use another --out")


def test_an_older_output_without_sources_is_read_but_not_added_to(tree, tmp_path, fakehear, capsys):
    out = tmp_path / "out"
    argv = (tree, "--out", out, "--module", "fakehear", "--format", "parquet")
    run_embed(*argv)
    m = manifest(out)
    for s in m["shards"]:  # as tympan-corpus/1 wrote it: no source column
        pq.write_table(pq.read_table(out / s["file"]).drop_columns(["source"]), out / s["file"])
    (out / "manifest.json").write_text(json.dumps({**m, "format": "tympan-corpus/1"}))
    table = read_embeddings(out)
    assert table.num_rows == 7 and "source" not in table.column_names
    capsys.readouterr()
    assert run_embed(*argv) == 2
    one_line_error(capsys.readouterr().err, "written by an older tympan (tympan-corpus/1", "use another --out")


def test_layers_io_imports_no_tympan_kit_and_experts_import_no_corpus_or_fusion():
    """Issue 12.1: io.py imported corpus (lazily), kit/embed.py corpus.driver, experts/cache.py fusion."""
    import ast

    src = Path(tympan.__file__).parent

    def imported(path: Path) -> set[str]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return {n for n in names if n == "tympan" or n.startswith("tympan.")}

    assert imported(src / "io.py") == set()
    for path in [*(src / "kit").glob("*.py"), *(src / "experts").glob("*.py")]:
        bad = {n for n in imported(path) if n.startswith(("tympan.corpus", "tympan.fusion", "tympan.cli"))}
        assert not bad, f"{path.name} imports {bad}"

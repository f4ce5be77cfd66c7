"""One weights identity: results.json (tympan evaluate) and the Parquet manifest (tympan embed)
name the same SHA-256 for the same model, whatever kind of model it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from test_evaluate import scene_task, tone

import tympan
from tympan import fusion
from tympan.checksum import sha256_file, state_dict_sha256, weights_identity
from tympan.cli import main as cli
from tympan.experts import cache

HEARMODS = Path(__file__).parent / "hearmods"


@pytest.fixture(scope="module")
def packed_fusion(tmp_path_factory):
    """v0 + crepe tiny, packed into one file as `tympan experts pack --blocks v0,crepe` writes it."""
    assert (cache.cache_dir() / "crepe-tiny.pt").exists(), "crepe-tiny is not in the cache: run make experts"
    path = tmp_path_factory.mktemp("pack") / "fusion.pt"
    fusion.pack(path, blocks=["v0", "crepe"])
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny scene task for evaluate, and a folder of two clips for embed."""
    import numpy as np

    root = tmp_path_factory.mktemp("inputs")
    task = scene_task(root / "tasks", n_clips=3)
    clips = root / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i, freq in enumerate((220.0, 440.0)):
        sf.write(clips / f"c{i}.wav", tone(freq, 0.5, rng), 16000)
    return task.parent, clips


@pytest.mark.parametrize("kind", ["tympan v0", "packed fusion", "foreign module"])
def test_results_json_and_the_corpus_manifest_name_the_same_weights(kind, inputs, packed_fusion, tmp_path,
                                                                   monkeypatch):
    tasks, clips = inputs
    monkeypatch.syspath_prepend(str(HEARMODS))
    module, model = {
        "tympan v0": ("tympan", ""),
        "packed fusion": ("tympan.fusion", str(packed_fusion)),
        "foreign module": ("hearmod_good", ""),
    }[kind]
    extra = ["--model", model] if model else []

    assert cli(["embed", str(clips), "--out", str(tmp_path / "emb"), "--format", "parquet", "--module", module,
                *extra]) == 0
    manifest = json.loads((tmp_path / "emb" / "manifest.json").read_text())
    assert cli(["evaluate", module, "--tasks", str(tasks), "--out", str(tmp_path / "ev"), "--grid", "fast",
                *extra]) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())

    assert len(manifest["weights_sha256"]) == 64
    assert results["weights_sha256"] == manifest["weights_sha256"]
    # and it is the hash of what was loaded: v0's checked state, the pack's whole state
    # (not the file's bytes, which pickling may vary), the foreign module's built-in buffers
    if kind == "tympan v0":
        assert manifest["weights_sha256"] == tympan.load_model().weights_sha256
    if kind == "packed fusion":
        loaded = fusion.load_model(model)
        assert manifest["weights_sha256"] == state_dict_sha256(loaded.state_dict())
        assert manifest["weights_sha256"] != sha256_file(model)
    if kind == "foreign module":
        import hearmod_good

        assert manifest["weights_sha256"] == weights_identity(hearmod_good.load_model())

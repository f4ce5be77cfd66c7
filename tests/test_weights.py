"""The shipped weights (v0, the default, and v1): inside the package, licensed, checked; v0
reproducible from its script (v1 from `tympan train encoder`, docs/encoder.md: two hours of CPU)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import torch

import tympan
from tympan.model import DEFAULT_VERSION, DEFAULT_WEIGHTS, V0_WEIGHTS, V1_WEIGHTS, V1_CONFIG, WEIGHTS_LICENCE
from tympan.train import v0

REPO = Path(__file__).resolve().parents[1]


def test_shipped_weights_metadata():
    for name, path in (("v0", V0_WEIGHTS), ("v1", V1_WEIGHTS)):
        payload = torch.load(path, weights_only=True)
        assert payload["model"] == "tympan" and payload["version"] == name
        assert payload["licence"] == WEIGHTS_LICENCE == "CC BY 4.0"
        assert tympan.load_model(name).weights_sha256 == payload["sha256"]
    assert torch.load(V1_WEIGHTS, weights_only=True)["config"] == V1_CONFIG
    assert V1_WEIGHTS.stat().st_size < 50 * 2**20  # issue 13: under 50 MB


def test_load_model_loads_the_default_version_and_both_names_load():
    # v1 is the default: at least v0's score on every task within seed noise (docs/encoder.md, "Scores")
    assert DEFAULT_VERSION == "v1" and DEFAULT_WEIGHTS == V1_WEIGHTS
    default = tympan.load_model()
    assert isinstance(default, tympan.TympanV1) and default.version == "v1" and default.timestamp_embedding_size == 877
    assert default.weights_sha256 == tympan.load_model("v1").weights_sha256
    v0 = tympan.load_model("v0")
    assert isinstance(v0, tympan.Tympan) and v0.version == "v0" and v0.timestamp_embedding_size == 301


def test_v0_weights_are_reproduced_by_their_script():
    rebuilt = v0.build()
    shipped = tympan.load_model("v0")
    torch.testing.assert_close(rebuilt.encoder.mean, shipped.encoder.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rebuilt.encoder.std, shipped.encoder.std, rtol=1e-5, atol=1e-6)


def test_a_non_editable_wheel_ships_the_weights(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
    )
    (wheel,) = tmp_path.glob("tympan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tympan/weights/tympan-v0.pt" in names and "tympan/weights/tympan-v1.pt" in names
    assert "tympan/weights/LICENSE.md" in names

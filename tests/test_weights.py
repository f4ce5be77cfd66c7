"""The shipped v0 weights: inside the package, licensed, reproducible from their script."""

import subprocess
import sys
import zipfile
from pathlib import Path

import torch

import tympan
from tympan.model import DEFAULT_WEIGHTS, WEIGHTS_LICENCE
from tympan.train import v0

REPO = Path(__file__).resolve().parents[1]


def test_shipped_weights_metadata():
    payload = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    assert payload["model"] == "tympan" and payload["version"] == "v0"
    assert payload["licence"] == WEIGHTS_LICENCE == "CC BY 4.0"
    assert tympan.load_model().weights_sha256 == payload["sha256"]


def test_v0_weights_are_reproduced_by_their_script():
    rebuilt = v0.build()
    shipped = tympan.load_model()
    torch.testing.assert_close(rebuilt.encoder.mean, shipped.encoder.mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rebuilt.encoder.std, shipped.encoder.std, rtol=1e-5, atol=1e-6)


def test_a_non_editable_wheel_ships_the_weights(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True,
    )
    (wheel,) = tmp_path.glob("tympan-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tympan/weights/tympan-v0.pt" in names
    assert "tympan/weights/LICENSE.md" in names

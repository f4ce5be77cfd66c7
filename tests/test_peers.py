"""Cross-checks with the organisers' tools, run from their own environment (.venv-peers,
built by `make peers`: hear-validator imports TensorFlow, hearbaseline needs librosa < 0.10)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from tympan.model import V1_WEIGHTS

PEERS_PYTHON = os.environ.get("TYMPAN_PEERS_PYTHON", "")
needs_peers = pytest.mark.skipif(
    not (PEERS_PYTHON and Path(PEERS_PYTHON).exists()),
    reason="TYMPAN_PEERS_PYTHON is not set to the python of `make peers` (make test sets it)",
)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


@needs_peers
@pytest.mark.parametrize("model", [[], ["--model", str(V1_WEIGHTS)]], ids=["default", "v1"])
def test_official_hear_validator_says_looks_good(model):
    validator = Path(PEERS_PYTHON).parent / "hear-validator"
    out = subprocess.run([str(validator), "tympan", *model, "--device", "cpu"], capture_output=True, text=True, env=ENV,
                         timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Looks good!" in out.stdout, out.stdout + out.stderr
    assert "Interval between timestamps is 20.0ms" in out.stdout


@needs_peers
def test_strict_validator_runs_on_the_naive_hear_baseline():
    # Another team's module: passes, with the warnings its design earns (50 ms hop, train mode).
    out = subprocess.run(
        [PEERS_PYTHON, "-m", "tympan.cli", "validate", "hearbaseline.naive", "--long-minutes", "0.5", "--json"],
        capture_output=True, text=True, env=ENV, timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["hop_size"]["status"] == "pass" and "50" in checks["hop_size"]["message"]
    assert checks["hop_coarse"]["status"] == "warn"

"""The tiny suite end to end: `tympan tasks build --suite tiny`, then `tympan evaluate tympan` on it."""

import json
import math

import pytest

from tympan.kit.tasks import read_task
from tympan.suite import TASKS


@pytest.fixture
def tiny(tiny_suite):
    return tiny_suite  # built once per session (conftest.py): the HTML report's test reuses it


def test_tiny_suite_builds_every_task_with_a_manifest(tiny):
    report = json.loads((tiny / "build-tiny.json").read_text())
    assert set(report) == set(TASKS)
    manifest = json.loads((tiny / "manifest-tiny.json").read_text())
    for name, entry in report.items():
        task = read_task(tiny / entry["folder"])
        assert entry["clips"] == sum(len(files) for files in task.labels.values()) > 0, name
        assert any(path.startswith(entry["folder"] + "/16000/") for path in manifest), name
    assert all(len(v["sha256"]) == 64 and v["bytes"] > 0 for v in manifest.values())
    families = {read_task(tiny / e["folder"]).embedding_type for e in report.values()}
    assert families == {"scene", "event"}


def test_tympan_evaluates_on_the_tiny_suite(tiny_tympan_results):
    results = json.loads(tiny_tympan_results.read_text())
    assert len(results["tasks"]) == len(TASKS)
    for name, entry in results["tasks"].items():
        primary = entry["scores"][entry["primary_metric"]]["mean"]
        assert math.isfinite(primary) and 0.0 <= primary <= 1.0, (name, primary)

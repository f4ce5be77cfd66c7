"""What every suite generator shares: suite and split names, per-split seeding, task writing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from tympan.kit.tasks import Task, sort_labels, write_task

SUITES = ("tiny", "full")
SPLITS = ("train", "valid", "test")
VERSION = "v1"


def check_suite(suite: str) -> None:
    """ValueError unless `suite` is one of SUITES."""
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")


def split_rng(namespace: str, task: str, split: str) -> np.random.Generator:
    """A generator seeded from the names alone, so a split's draws never depend on the others."""
    key = hashlib.sha256(f"{namespace}/{task}/{split}".encode()).digest()
    return np.random.default_rng(int.from_bytes(key[:8], "little"))


def write_suite_task(
    tasks_dir: str | os.PathLike,
    suite: str,
    task_name: str,
    embedding_type: str,
    prediction_type: str,
    sample_duration: float,
    evaluation: list[str],
    vocabulary,
    labels: dict[str, dict],
    audio: dict[tuple[str, str], np.ndarray],
    groups: dict[str, dict[str, list[str]]],
    versions: dict[str, str],
    evaluation_params: dict | None = None,
    details: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Write a trainvaltest task of the suite with its provenance in task_metadata.json:
    `source_groups` (split -> file -> groups), `source_versions` (package -> Debian version)
    and, when given, `clip_sources` (split -> file -> a readable description)."""
    extra = {"source_groups": groups, "source_versions": dict(sorted(versions.items()))}
    if details is not None:
        extra["clip_sources"] = details
    task = Task(
        task_name=task_name,
        version=VERSION,
        embedding_type=embedding_type,
        prediction_type=prediction_type,
        split_mode="trainvaltest",
        sample_duration=sample_duration,
        evaluation=evaluation,
        splits=list(SPLITS),
        mode=suite,
        vocabulary=sort_labels(vocabulary),
        labels=labels,
        evaluation_params=evaluation_params or {},
        extra=extra,
    )
    return write_task(task, audio, tasks_dir)

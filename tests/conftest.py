import os

import pytest
import torch

import tympan
from tympan.cli import main as cli


@pytest.fixture(scope="session")
def model():
    return tympan.load_model()


@pytest.fixture
def noise():
    """noise(n_sounds, n_samples, seed=0, scale=0.3) -> seeded uniform noise (n_sounds, n_samples)."""

    def make(n_sounds: int, n_samples: int, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(n_sounds, n_samples, generator=g) * 2 - 1) * scale

    return make


@pytest.fixture(scope="session")
def tiny_suite(tmp_path_factory):
    """The tiny task suite, built once per session (`tympan tasks build --suite tiny`)."""
    out = tmp_path_factory.mktemp("tiny")
    assert cli(["tasks", "build", "--suite", "tiny", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_tympan_results(tiny_suite, tmp_path_factory):
    """results.json of `tympan evaluate tympan` on the tiny suite (--grid fast), once per session."""
    out = tmp_path_factory.mktemp("tiny-eval") / "tympan"
    assert cli(["evaluate", "tympan", "--tasks", str(tiny_suite), "--out", str(out), "--grid", "fast"]) == 0
    return out / "results.json"


def _skipped(config):
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return reporter.stats.get("skipped", []) if reporter else []


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if os.environ.get("CI") and _skipped(config):
        terminalreporter.write_line(
            f"CI: {len(_skipped(config))} test(s) skipped; skips are failures in CI", red=True
        )


def pytest_sessionfinish(session, exitstatus):
    # In CI nothing may skip silently: any skip turns the run red.
    if os.environ.get("CI") and exitstatus == 0 and _skipped(session.config):
        session.exitstatus = 1

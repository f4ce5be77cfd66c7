"""`tympan validate` on small fake HEAR modules (tests/hearmods): one correct, the others
each broken in one way that must fail exactly the check aimed at it, with a message that
names the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tympan import cli
from tympan.kit.validate import REQUIRED_CHECKS, validate

HEARMODS = Path(__file__).parent / "hearmods"
LONG_MINUTES = 0.2  # keeps each run well under a second; the real 20 minutes has its own test


@pytest.fixture(autouse=True)
def hearmods_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HEARMODS))


def failed(report) -> set[str]:
    return {c.name for c in report.failures}


def test_good_module_passes_every_check():
    report = validate("hearmod_good", long_minutes=LONG_MINUTES)
    assert report.passed, report.text()
    assert report.exit_code == 0
    assert [c.name for c in report.checks] == list(REQUIRED_CHECKS)
    statuses = {c.name: c.status for c in report.checks}
    assert statuses.pop("gpu_memory") == "skip"  # measured on CUDA only
    assert set(statuses.values()) == {"pass"}
    assert report.warnings == []
    assert report.check("hop_size").figures["hop_ms"] == pytest.approx(25.0)
    assert report.check("determinism").figures["max_difference"] == 0.0


def test_long_clip_figures_are_reported():
    report = validate("hearmod_good", long_minutes=LONG_MINUTES)
    figures = report.long_clip
    assert figures["n_samples"] == round(LONG_MINUTES * 60 * 16000)
    assert figures["timestamp_seconds"] > 0 and figures["scene_seconds"] > 0
    assert figures["peak_rss_bytes"] >= figures["peak_rss_before_bytes"] > 0
    assert "peak RSS" in report.check("long_clip").message


def test_long_clip_at_full_length():
    # 20 minutes at 16 kHz, batch 1: the HEAR maximum; float32 timestamps there are spaced
    # 0.125 ms apart, which the hop and coverage checks must tolerate.
    report = validate("hearmod_good", long_minutes=20.0)
    assert report.passed, report.text()
    assert report.long_clip["n_samples"] == 20 * 60 * 16000
    assert report.long_clip["realtime_factor"] > 0
    assert "48001 timestamps" in report.check("long_clip").message


BROKEN = [
    # module, the one check it must fail, words its message must hold
    ("hearmod_seconds", "timestamp_units", "look like seconds"),
    ("hearmod_samples", "timestamp_units", "look like sample indices"),
    ("hearmod_float64", "embedding_dtype", "float64 embeddings"),
    ("hearmod_nan", "finite", "NaN"),
    ("hearmod_hop100", "hop_size", "the hop is 100 ms"),
    ("hearmod_irregular", "hop_regular", "deviate from the mean hop 25 ms by up to 3 ms"),
    ("hearmod_batch_dependent", "batch_independence", "depends on the other sounds in its batch"),
    # Before (a target sound that was the loudest of a batch of 3), both passed every check.
    ("hearmod_batch_peak", "batch_independence", "depends on the other sounds in its batch"),
    ("hearmod_batch_size_path", "batch_independence", "of a batch of 16 differ by up to"),
    ("hearmod_random", "determinism", "two calls on the same 2 x 2 s input differ"),
    ("hearmod_crash_short", "short_clips", "shorter than the 800-sample window"),
    ("hearmod_no_scene", "api", "lacks get_scene_embeddings"),
    ("hearmod_rate_8k", "sample_rate", "8000 Hz"),
    ("hearmod_float_size", "embedding_sizes", "timestamp_embedding_size is 9.0 (float), not a Python int"),
    ("hearmod_past_end", "coverage", "the last centre 2012.5 ms is past the end of the 2000 ms clip"),
]


@pytest.mark.parametrize("module, check, words", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_module_fails_exactly_its_check(module, check, words):
    report = validate(module, long_minutes=LONG_MINUTES)
    assert failed(report) == {check}, report.text()
    assert words in report.check(check).message
    assert report.exit_code == 1
    assert report.verdict().startswith(f"VERDICT: FAIL - {module}: {check}")


def test_failure_messages_say_why_and_how_to_fix():
    assert "multiply them by 1000" in validate("hearmod_seconds", long_minutes=0).check("timestamp_units").message
    hop = validate("hearmod_hop100", long_minutes=0).check("hop_size").message
    assert "official validator only warns" in hop and "50 ms or less" in hop
    crash = validate("hearmod_crash_short", long_minutes=0).check("short_clips").message
    assert "ValueError" in crash and "hearmod_crash_short.py" in crash and "2 x 1 ms (16 samples)" in crash


def test_checks_that_depend_on_a_failure_are_skipped():
    seconds = validate("hearmod_seconds", long_minutes=0)
    for name in ("hop_regular", "hop_size", "coverage"):
        assert seconds.check(name).status == "skip"
        assert "timestamp_units" in seconds.check(name).message
    assert validate("hearmod_random", long_minutes=0).check("batch_independence").status == "skip"
    no_scene = validate("hearmod_no_scene", long_minutes=0)
    assert no_scene.check("scene_embeddings").status == "skip"
    assert no_scene.check("timestamp_embeddings").status == "pass"
    assert "get_scene_embeddings not called" in no_scene.check("short_clips").message


def test_missing_module_is_a_failed_check_not_a_crash():
    report = validate("hearmod_does_not_exist", long_minutes=0)
    assert failed(report) == {"import"}
    assert "ModuleNotFoundError" in report.check("import").message
    assert {c.status for c in report.checks if c.name not in ("device", "import")} == {"skip"}


def test_load_model_exception_is_reported_and_model_checks_skipped():
    report = validate("hearmod_load_crash", long_minutes=0)
    assert failed(report) == {"load_model"}
    assert "FileNotFoundError: no weights at ''" in report.check("load_model").message
    assert report.check("timestamp_embeddings").status == "skip"
    assert report.check("timestamp_embeddings").message == "load_model failed"


def test_unusable_device_fails_the_device_check():
    report = validate("hearmod_good", device="no-such-device", long_minutes=0)
    assert failed(report) == {"device"}
    assert "no-such-device" in report.check("device").message


def test_warnings_do_not_change_the_verdict():
    report = validate("hearmod_warnings", long_minutes=0.1)
    assert report.passed, report.text()
    assert {w.name for w in report.warnings} == {"eval_mode", "hop_coarse", "hop_samples", "speed"}
    assert "1543.5 samples at 44100 Hz" in report.check("hop_samples").message
    text = report.text().splitlines()
    warnings_at = text.index("warnings (do not change the verdict):")
    assert all(line.startswith("WARN") for line in text[warnings_at + 1 : -1])
    assert text[-1].startswith("VERDICT: PASS")


def test_text_report_has_one_line_per_check_and_a_verdict():
    lines = validate("hearmod_past_end", long_minutes=0).text().splitlines()
    body = lines[1:-1]
    assert len(body) == len(REQUIRED_CHECKS)
    assert all(line.split()[0] in {"PASS", "FAIL", "SKIP"} for line in body)
    assert any(line.startswith("FAIL  coverage - ") for line in body)
    assert lines[-1].startswith("VERDICT: FAIL")


def test_cli_exit_codes_and_text(capsys):
    assert cli.main(["validate", "hearmod_good", "--long-minutes", "0"]) == 0
    assert "VERDICT: PASS" in capsys.readouterr().out
    assert cli.main(["validate", "hearmod_nan", "--long-minutes", "0"]) == 1
    assert "FAIL  finite" in capsys.readouterr().out


def test_cli_json_is_parseable_even_when_the_module_prints(capsys):
    code = cli.main(["validate", "hearmod_warnings", "--long-minutes", "0.1", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0
    assert report["verdict"] == "pass" and report["module"] == "hearmod_warnings"
    assert report["long_clip"]["n_samples"] == round(0.1 * 60 * 44100)
    assert {c["status"] for c in report["checks"]} == {"pass", "skip", "warn"}
    assert "hearmod_warnings: loading" in captured.err  # the module's print, kept off stdout
    assert "long clip" in captured.err  # progress


def test_cli_json_failure(capsys):
    assert cli.main(["validate", "hearmod_seconds", "--long-minutes", "0", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "fail" and report["exit_code"] == 1
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"] == ["timestamp_units"]


def test_tympan_itself_passes():
    report = validate("tympan", long_minutes=0.1)
    assert report.passed, report.text()


def test_tympan_is_batch_independent_over_random_batches(model):
    """Property: for random batches (sizes 1-16, lengths 1 sample to 1.3 s, peaks 1e-4 to 10,
    noise, tones or silence, seeded), every sound's embeddings, timestamps and scene
    embedding inside the batch equal those of the sound alone, bitwise (README's promise)."""
    import numpy as np
    import torch

    import tympan

    rng = np.random.default_rng(11)
    sizes_seen = set()
    for trial in range(8):
        size = int(rng.integers(1, 17)) if trial else 16
        sizes_seen.add(size)
        n = int(rng.choice([1, 319, 320, 321, int(rng.integers(2, 21000))]))
        sounds = []
        for _ in range(size):
            kind = rng.choice(["noise", "tone", "silence"], p=[0.5, 0.4, 0.1])
            peak = 10 ** rng.uniform(-4, 1)
            if kind == "noise":
                x = rng.uniform(-1, 1, n)
            elif kind == "tone":
                x = np.sin(2 * np.pi * rng.uniform(50, 7000) * np.arange(n) / 16000 + rng.uniform(0, 6))
            else:
                x = np.zeros(n)
            sounds.append(torch.from_numpy((peak * x).astype(np.float32)))
        batch = torch.stack(sounds)
        emb, ts = tympan.get_timestamp_embeddings(batch, model)
        scene = tympan.get_scene_embeddings(batch, model)
        for i, sound in enumerate(sounds):
            e1, t1 = tympan.get_timestamp_embeddings(sound[None], model)
            s1 = tympan.get_scene_embeddings(sound[None], model)
            where = f"trial {trial}: sound {i} of a batch of {size} x {n} samples"
            assert torch.equal(emb[i : i + 1], e1) and torch.equal(ts[i : i + 1], t1), where
            assert torch.equal(scene[i : i + 1], s1), where
    assert 16 in sizes_seen and len(sizes_seen) > 3


def test_cli_unusable_device_is_a_usage_error_and_ctrl_c_exits_130(capsys, monkeypatch):
    """Before: an unusable --device gave exit code 1 (the code of a failed module) and a
    report of skipped checks; Ctrl-C escaped as a KeyboardInterrupt traceback."""
    assert cli.main(["validate", "hearmod_good", "--device", "no-such-device", "--long-minutes", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("tympan validate: error: cannot use device 'no-such-device'")
    assert captured.err.count("\n") == 1 and captured.out == ""

    from tympan.kit import validate as validate_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(validate_module._Validator, "check_official_inputs", interrupted)
    try:
        code = cli.main(["validate", "hearmod_good", "--long-minutes", "0"])
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped tympan validate")
    assert code == 130 and "interrupted" in capsys.readouterr().err

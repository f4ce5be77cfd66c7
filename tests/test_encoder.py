"""tympan v1's network (TympanV1, untrained): exact chunking, batch independence, determinism,
shapes, finite outputs, and its weights file. Every model here is random-init, built in the test."""

import io
import random
import struct
import zipfile
from pathlib import Path

import pytest
import torch

import tympan
from tympan.audio import HOP, n_frames
from tympan.cli import main as cli
from tympan.model import (
    V0_WEIGHTS,
    V1_CONFIG,
    TympanV1,
    WeightsError,
    init_v1,
    receptive_field,
    save_weights,
)

from payloads import same_payload  # tests/payloads.py

TINY = {"width": 8, "expansion": 2, "kernel": 3, "blocks": [[1, 1], [2, 2]], "taps": [0, 1]}


def _lively(config=None, seed=0) -> TympanV1:
    """A random-init v1 whose every parameter is drawn at scale 0.5: unlike the near-identity
    init, every block changes its output a lot, so a wrong halo or a mixed-up frame shows."""
    model = init_v1(config, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.fixture(scope="module")
def v1():
    return _lively()


@pytest.fixture
def v1_file(tmp_path):
    path = tmp_path / "tympan-v1-untrained.pt"
    save_weights(_lively(TINY), path, "v1")
    return path


def _whole(model: TympanV1, sound: torch.Tensor) -> torch.Tensor:
    """The network on the whole clip at once: no chunks, no halos."""
    with torch.no_grad():
        return model.encoder(model.frontend(sound))


def _chunked(model: TympanV1, sound: torch.Tensor, chunk_frames: int) -> torch.Tensor:
    model.chunk_frames = chunk_frames
    try:
        return tympan.get_timestamp_embeddings(sound[None], model)[0][0]
    finally:
        model.chunk_frames = 3000


# ---- the architecture -------------------------------------------------------------------------


def test_default_architecture_size():
    model = init_v1()
    params = sum(p.numel() for p in model.parameters())
    assert 2_000_000 <= params <= 5_000_000, params
    assert model.timestamp_embedding_size == 301 + 3 * 192 == 877
    assert model.scene_embedding_size == 1754
    assert receptive_field(V1_CONFIG) == 136 and model.halo == 136


def test_the_input_tap_is_v0s_embedding(noise):
    """With tap -1 (V1_CONFIG) the first 301 dimensions of v1's timestamp embedding are v0's
    embedding exactly, so a downstream model sees everything v0 gives it; without it they are gone."""
    audio = noise(2, 16000 * 3 + 5, seed=11)
    v0 = tympan.load_model("v0")
    v0_emb = tympan.get_timestamp_embeddings(audio, v0)[0]
    v1_emb = tympan.get_timestamp_embeddings(audio, init_v1(seed=2))[0]
    assert torch.equal(v1_emb[..., :301], v0_emb)
    no_input = init_v1({**V1_CONFIG, "taps": [0, 4, 7]}, seed=2)
    assert no_input.timestamp_embedding_size == 576
    assert not torch.equal(tympan.get_timestamp_embeddings(audio, no_input)[0][..., :301], v0_emb)


def test_receptive_field_is_what_the_network_reaches(v1):
    """An impulse in one frame's features moves the outputs of exactly the frames the computed
    receptive field says, on one side (the down/upsampling's extra frame), one frame less on the
    other, whichever the frame's parity."""
    field = receptive_field(V1_CONFIG)
    n, centre = 2 * field + 101, field + 50
    features = torch.randn(n, 301, generator=torch.Generator().manual_seed(1))
    for at in (centre, centre + 1):
        bumped = features.clone()
        bumped[at] += 5.0
        with torch.no_grad():
            moved = (v1.encoder(bumped) - v1.encoder(features)).abs().amax(dim=1) > 0
        reach = torch.nonzero(moved).flatten()
        left, right = at - int(reach[0]), int(reach[-1]) - at
        assert sorted([left, right]) == [field - 1, field], (at, left, right, field)


# ---- chunks with exact halos ------------------------------------------------------------------


@pytest.mark.parametrize("chunk_frames", [50, 136, 272, 3000])
def test_chunked_equals_unchunked_at_chunk_boundaries(v1, noise, chunk_frames):
    sound = noise(1, 16000 * 7 + 123, seed=3)[0]  # 351 frames: boundaries inside, odd length
    whole = _whole(v1, sound)
    chunked = _chunked(v1, sound, chunk_frames)
    assert chunked.shape == whole.shape == (n_frames(sound.shape[0]), 877)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_a_halo_smaller_than_the_receptive_field_is_caught(v1, noise):
    """The check above has teeth: with half the halo the chunk edges differ. (Two frames less move
    them by only ~1e-6: the outermost frames reach a frame through a product of eight taps, so the
    exact reach is tested by test_receptive_field_is_what_the_network_reaches instead.)"""
    sound = noise(1, 16000 * 7 + 123, seed=3)[0]
    whole = _whole(v1, sound)
    halo = v1.halo
    v1.halo = halo // 2
    try:
        chunked = _chunked(v1, sound, 50)
    finally:
        v1.halo = halo
    assert (chunked - whole).abs().max() > 1e-3


def test_the_network_never_sees_more_than_a_chunk_and_its_halos(v1, noise, monkeypatch):
    """Memory stays bounded on long clips: every encoder call gets at most chunk + 2 halos frames."""
    sizes = []
    forward = v1.encoder.forward
    monkeypatch.setattr(v1.encoder, "forward", lambda f: sizes.append(f.shape[0]) or forward(f))
    _chunked(v1, noise(1, HOP * 999)[0], 200)
    assert len(sizes) == 5 and max(sizes) == 200 + 2 * v1.halo, sizes


def test_chunk_frames_must_be_even(v1, noise):
    v1.chunk_frames = 51
    try:
        with pytest.raises(ValueError, match="even"):
            tympan.get_timestamp_embeddings(noise(1, 4000), v1)
    finally:
        v1.chunk_frames = 3000


def test_scene_is_mean_and_std_of_the_frames(v1, noise):
    audio = noise(2, 16000 * 2 + 5)
    emb, _ = tympan.get_timestamp_embeddings(audio, v1)
    scene = tympan.get_scene_embeddings(audio, v1)
    expected = torch.cat([emb.double().mean(dim=1), emb.double().std(dim=1, unbiased=False)], dim=1).float()
    torch.testing.assert_close(scene, expected, rtol=1e-5, atol=1e-5)


# ---- batch independence, determinism, shapes, finiteness -------------------------------------


def test_batch_independence_quiet_and_loud(v1, noise):
    quiet = noise(1, 16000, seed=4, scale=1e-4)
    loud = noise(1, 16000, seed=5, scale=8.0)
    alone_q, _ = tympan.get_timestamp_embeddings(quiet, v1)
    alone_l, _ = tympan.get_timestamp_embeddings(loud, v1)
    for size in (2, 5, 16):
        others = noise(size - 2, 16000, seed=size) if size > 2 else torch.empty(0, 16000)
        batch = torch.cat([quiet, others, loud])
        emb, _ = tympan.get_timestamp_embeddings(batch, v1)
        assert torch.equal(emb[0], alone_q[0]) and torch.equal(emb[-1], alone_l[0]), size
        scene = tympan.get_scene_embeddings(batch, v1)
        assert torch.equal(scene[0], tympan.get_scene_embeddings(quiet, v1)[0])


def test_deterministic_across_calls_and_builds(noise):
    audio = noise(2, 16000 * 2)
    a, b = _lively(seed=7), _lively(seed=7)
    first = tympan.get_timestamp_embeddings(audio, a)[0]
    assert torch.equal(first, tympan.get_timestamp_embeddings(audio, a)[0])
    assert torch.equal(first, tympan.get_timestamp_embeddings(audio, b)[0])
    assert not torch.equal(first, tympan.get_timestamp_embeddings(audio, _lively(seed=8))[0])
    assert same_payload(init_v1(seed=3).state_dict(), init_v1(seed=3).state_dict())
    assert not same_payload(init_v1(seed=3).state_dict(), init_v1(seed=4).state_dict())


@pytest.mark.parametrize("n_samples", [1, HOP - 1, HOP, HOP + 1, 16000 * 3 + 7])
def test_shapes_and_timestamps(v1, noise, n_samples):
    emb, ts = tympan.get_timestamp_embeddings(noise(2, n_samples), v1)
    n = n_samples // HOP + 1
    assert emb.shape == (2, n, 877) and emb.dtype == torch.float32
    assert ts.shape == (2, n) and ts.dtype == torch.float32
    assert torch.equal(ts[1], torch.arange(n, dtype=torch.float32) * 20)
    assert torch.isfinite(emb).all()
    assert tympan.get_scene_embeddings(noise(2, n_samples), v1).shape == (2, 1754)


def test_extreme_finite_inputs_give_finite_embeddings(v1, noise):
    big = torch.finfo(torch.float32).max
    audio = torch.stack(
        [
            torch.zeros(8000),
            torch.full((8000,), 1e-40),  # denormal
            noise(1, 8000)[0] * 1e-30,
            noise(1, 8000)[0] * 1e20,
            torch.where(noise(1, 8000)[0] > 0, big, -big),
        ]
    )
    emb, _ = tympan.get_timestamp_embeddings(audio, v1)
    scene = tympan.get_scene_embeddings(audio, v1)
    assert torch.isfinite(emb).all() and torch.isfinite(scene).all()


# ---- the v1 weights file ----------------------------------------------------------------------


def test_v1_weights_round_trip(tmp_path, noise):
    model = _lively(TINY, seed=2)
    path = tmp_path / "v1.pt"
    sha = save_weights(model, path, "v1")
    loaded = tympan.load_model(str(path))
    assert isinstance(loaded, TympanV1) and not loaded.training
    assert loaded.version == "v1" and loaded.weights_sha256 == sha and loaded.config == TINY
    assert same_payload(loaded.state_dict(), model.state_dict())
    audio = noise(2, 16000)
    embed = tympan.get_timestamp_embeddings
    assert torch.equal(embed(audio, loaded)[0], embed(audio, model)[0])
    payload = torch.load(path, weights_only=True)
    assert payload["licence"] == "CC BY 4.0" and payload["config"] == TINY
    # the same tensors under another architecture are other weights: the SHA-256 covers the config
    other = _lively({**TINY, "blocks": [[1, 1], [2, 4]]}, seed=2)
    assert same_payload(other.state_dict(), model.state_dict())
    assert save_weights(other, tmp_path / "other.pt", "v1") != sha


def test_save_weights_refuses_a_version_of_another_class(tmp_path):
    with pytest.raises(ValueError, match="TympanV1"):
        save_weights(tympan.load_model("v0"), tmp_path / "x.pt", "v1")
    with pytest.raises(ValueError, match="Tympan,"):
        save_weights(init_v1(TINY), tmp_path / "x.pt", "v0")


def _edited(path, tmp_path, edit):
    payload = torch.load(path, weights_only=True)
    edit(payload)
    out = tmp_path / "edited.pt"
    torch.save(payload, out)
    return out


def _set(key, value):
    return lambda p: p.__setitem__(key, value)


def _set_config(key, value):
    return lambda p: p["config"].__setitem__(key, value)


@pytest.mark.parametrize(
    "edit, words",
    [
        (_set_config("blocks", [[1, 1], [2, 4]]), "checksum mismatch"),  # same tensor shapes, other network
        (_set_config("taps", [1]), "checksum mismatch"),
        (_set_config("blocks", [[2, 1], [1, 2]]), "strides"),
        (_set_config("kernel", 4), "kernel"),
        (_set_config("width", "8"), "width"),
        (_set_config("taps", [0, 5]), "taps"),
        (_set_config("taps", [-2, 0]), "taps"),
        (_set_config("taps", [0, -1]), "taps"),
        (lambda p: p["config"].pop("taps"), "fields"),
        (_set("config", [1, 2]), "fields"),
        (lambda p: p.pop("config"), "fields"),
        (_set("version", "v0"), "fields"),
        (_set("licence", "MIT"), "licence 'MIT'"),
        (lambda p: p["state_dict"]["encoder.stem.weight"].add_(1.0), "checksum mismatch"),
        (lambda p: p["state_dict"].pop("encoder.tap_norms.1.bias"), "checksum mismatch"),
    ],
)
def test_every_edit_of_a_v1_file_is_a_weights_error(v1_file, tmp_path, edit, words):
    with pytest.raises(WeightsError, match=words) as info:
        tympan.load_model(str(_edited(v1_file, tmp_path, edit)))
    assert "edited.pt" in str(info.value)


def test_a_v1_state_dict_that_does_not_fit_its_config_is_a_weights_error(tmp_path):
    """Resealed with a matching SHA-256, a config that builds another network still fails."""
    model = init_v1(TINY)
    model.config = {**TINY, "width": 16}  # what the file says, not what the tensors are
    save_weights(model, tmp_path / "mismatch.pt", "v1")
    with pytest.raises(WeightsError, match="does not fit"):
        tympan.load_model(str(tmp_path / "mismatch.pt"))


def _member_bytes(data: bytes) -> list[int]:
    """Positions of every zip member's name (in its local header) and contents."""
    positions = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : start])
            body = start + name_len + extra_len
            positions += [*range(start, start + name_len), *range(body, body + info.compress_size)]
    return positions


def test_fuzz_flipped_bits_and_truncations_of_a_v1_file(v1_file, tmp_path):
    """A seeded sample of bit flips in member names and contents (pickled metadata with the config,
    tensors, torch's records) and of truncations: each one is a WeightsError naming the file."""
    data = v1_file.read_bytes()
    rng = random.Random(20261206)
    members = _member_bytes(data)
    path = tmp_path / "damaged.pt"
    for position in rng.sample(members, 2000):
        damaged = bytearray(data)
        damaged[position] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        with pytest.raises(WeightsError, match="damaged.pt"):
            tympan.load_model(str(path))
    for length in sorted(rng.sample(range(len(data)), 100)):
        path.write_bytes(data[:length])
        with pytest.raises(WeightsError, match="damaged.pt"):
            tympan.load_model(str(path))


# ---- names: load_model("v0") ------------------------------------------------------------------


def test_load_model_v0_is_the_shipped_v0_even_beside_a_file_named_v0(tmp_path, monkeypatch, noise):
    monkeypatch.chdir(tmp_path)
    save_weights(init_v1(TINY), tmp_path / "v0", "v1")  # a file named v0 that is not v0
    named = tympan.load_model("v0")
    assert type(named).__name__ == "Tympan" and named.version == "v0"
    assert named.weights_sha256 == torch.load(V0_WEIGHTS, weights_only=True)["sha256"]
    audio = noise(1, 8000)
    v0_file = tympan.get_scene_embeddings(audio, tympan.load_model(str(V0_WEIGHTS)))
    assert torch.equal(tympan.get_scene_embeddings(audio, named), v0_file)
    # the file itself loads by path
    assert isinstance(tympan.load_model("./v0"), TympanV1)
    assert isinstance(tympan.load_model(Path("v0")), TympanV1)


def test_load_model_v1_is_the_shipped_v1_and_a_version_that_does_not_ship_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_weights(init_v1(TINY), tmp_path / "v1", "v1")  # a file named v1 that is not the shipped v1
    shipped = tympan.load_model("v1")
    assert shipped.config == V1_CONFIG and shipped.version == "v1"
    assert tympan.load_model("./v1").config == TINY
    monkeypatch.delitem(tympan.SHIPPED_WEIGHTS, "v1")
    with pytest.raises(WeightsError, match=r"no v1 weights ship.*\./v1"):
        tympan.load_model("v1")


# ---- the strict validator ---------------------------------------------------------------------


def test_validate_passes_on_a_random_init_v1_file(tmp_path, capsys):
    path = tmp_path / "v1.pt"
    save_weights(init_v1(), path, "v1")
    assert cli(["validate", "tympan", "--model", str(path), "--long-minutes", "1"]) == 0
    out = capsys.readouterr().out
    assert "VERDICT: PASS" in out and "batch_independence" in out

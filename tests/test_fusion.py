"""tympan.fusion: aligned blocks, per-block scaling, packing, and its errors."""

from __future__ import annotations

import math

import pytest
import torch

from tympan import fusion
from tympan.audio import n_frames
from tympan.checksum import sha256_file
from tympan.experts import cache
from tympan.model import GridModel
from tympan.model import WeightsError
from tympan.train.fusion import principal_axes

from payloads import same_payload  # tests/payloads.py


class Ramp(GridModel):
    """A fake block: frame k of a sound -> scale * (k + sum(sound)) in every one of `width` dims,
    yielded in chunks of `step` frames (so that blocks' chunks do not line up)."""

    def __init__(self, width: int, step: int, scale: float):
        super().__init__()
        self.register_buffer("w", torch.full((width,), float(scale)))
        self.step = step
        self.timestamp_embedding_size = width
        self.scene_embedding_size = width

    def chunks(self, sound):
        n = n_frames(sound.shape[0])
        for k0 in range(0, n, self.step):
            k = torch.arange(k0, min(n, k0 + self.step), dtype=torch.float32)
            yield (k[:, None] + sound.sum()) * self.w

    def scene(self, sound):
        return torch.cat(list(self.chunks(sound))).mean(dim=0)


def _stats(widths: dict[str, int]):
    return {
        name: {
            "timestamp": (torch.full((w,), 1.0), torch.full((w,), 2.0)),
            "scene": (torch.zeros(w), torch.full((w,), 4.0)),
        }
        for name, w in widths.items()
    }


def test_blocks_are_aligned_frame_by_frame_and_scaled_by_width():
    blocks = {"a": Ramp(4, 7, 1.0), "b": Ramp(16, 50, 10.0)}
    model = fusion.Fusion(blocks, _stats({"a": 4, "b": 16})).eval()
    audio = torch.zeros(2, 16000)
    emb, ts = model.timestamp_embeddings(audio)
    assert torch.equal(ts[1], torch.arange(51.0) * 20)
    assert emb.shape == (2, 51, 20) and model.timestamp_embedding_size == 20
    k = torch.arange(51, dtype=torch.float32)[:, None]
    # widths 4 and 16: each block's share of variance is 20 / 2 = 10, so block a is scaled by
    # sqrt(10 / 4) / 2 and block b by sqrt(10 / 16) / 2 after subtracting the mean 1
    assert torch.allclose(emb[0, :, :4], ((k - 1) * math.sqrt(10 / 4) / 2).expand(51, 4))
    assert torch.allclose(emb[0, :, 4:], ((10 * k - 1) * math.sqrt(10 / 16) / 2).expand(51, 16))
    scene = model.scene_embeddings(audio)
    assert scene.shape == (2, 20)
    assert torch.allclose(scene[0, :4], torch.full((4,), 25.0 * math.sqrt(10 / 4) / 4))
    assert torch.allclose(scene[0, 4:], torch.full((16,), 250.0 * math.sqrt(10 / 16) / 4))


def test_equal_variance_blocks_weigh_the_same_whatever_their_width():
    """Standardised by their own stats, a 4-d and a 64-d block reach the same squared norm,
    (4 + 64) / 2 each: equal shares, unit variance per dimension on average."""
    gen = torch.Generator().manual_seed(0)
    x4, x64 = 5 + 3 * torch.randn(20000, 4, generator=gen), -2 + 0.1 * torch.randn(20000, 64, generator=gen)
    stats = {
        "a": {"timestamp": (x4.mean(0), x4.std(0)), "scene": (torch.zeros(4), torch.ones(4))},
        "b": {"timestamp": (x64.mean(0), x64.std(0)), "scene": (torch.zeros(64), torch.ones(64))},
    }
    model = fusion.Fusion({"a": Ramp(4, 1, 1.0), "b": Ramp(64, 1, 1.0)}, stats)
    a = model._scaled("timestamp", "a", x4).square().sum(1).mean()
    b = model._scaled("timestamp", "b", x64).square().sum(1).mean()
    assert a == pytest.approx(34.0, rel=0.02) and b == pytest.approx(34.0, rel=0.02)


def test_a_block_is_scaled_whole_keeping_its_dimensions_relative_scales():
    """One number per block: a 2-d block whose dimensions vary 1 and 10 keeps that ratio, and
    its total variance is still the share (2 + 3) / 2 of the 3-d block beside it."""
    gen = torch.Generator().manual_seed(0)
    x2 = torch.randn(20000, 2, generator=gen) * torch.tensor([1.0, 10.0])
    x3 = 4 + 0.5 * torch.randn(20000, 3, generator=gen)
    stats = {
        "a": {"timestamp": (x2.mean(0), x2.std(0)), "scene": (torch.zeros(2), torch.ones(2))},
        "b": {"timestamp": (x3.mean(0), x3.std(0)), "scene": (torch.zeros(3), torch.ones(3))},
    }
    model = fusion.Fusion({"a": Ramp(2, 1, 1.0), "b": Ramp(3, 1, 1.0)}, stats)
    a = model._scaled("timestamp", "a", x2)
    assert a.std(0)[1] / a.std(0)[0] == pytest.approx(10.0, rel=0.03)
    assert a.var(0).sum() == pytest.approx(2.5, rel=0.02)
    assert model._scaled("timestamp", "b", x3).var(0).sum() == pytest.approx(2.5, rel=0.02)


def test_blocks_that_disagree_on_frames_are_an_error():
    class Short(Ramp):
        def chunks(self, sound):
            yield from list(super().chunks(sound))[:-1]

    model = fusion.Fusion({"a": Ramp(2, 5, 1.0), "b": Short(2, 5, 1.0)}, _stats({"a": 2, "b": 2}))
    with pytest.raises(RuntimeError, match="different numbers of frames"):
        model.timestamp_embeddings(torch.zeros(1, 16000))


def test_unknown_blocks_and_missing_files_name_the_fix(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="distinct names among"):
        fusion.pack(tmp_path / "f.pt", blocks=["v0", "nope"])
    with pytest.raises(WeightsError, match="tympan experts pack --out FILE"):
        fusion.load_model(str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not torch")
    with pytest.raises(WeightsError, match="tympan experts pack"):
        fusion.load_model(str(tmp_path / "junk.pt"))
    expert_blocks = [b for b in fusion.DEFAULT_BLOCKS if fusion.BLOCKS[b].keys]
    if expert_blocks:
        monkeypatch.setenv("TYMPAN_EXPERTS_DIR", str(tmp_path / "empty"))
        with pytest.raises(cache.ExpertWeightsMissing, match="tympan experts fetch"):
            fusion.load_model()


def test_constants_measured_with_other_weights_are_refused():
    stats = fusion.read_stats()
    expert_blocks = [b for b in stats["blocks"] if fusion.BLOCKS[b].keys]
    assert expert_blocks, "the shipped constants cover the experts"
    name = expert_blocks[0]
    key = fusion.BLOCKS[name].keys[0]
    stats = {**stats, "expert_sha256": {**stats["expert_sha256"], key: "0" * 64}}
    with pytest.raises(WeightsError, match="measured with 0000"):
        fusion._build([name], {key: {"w": torch.zeros(1)}}, stats)


def test_shipped_constants_cover_every_block():
    stats = fusion.read_stats()
    assert set(stats["blocks"]) == set(fusion.BLOCKS)
    for name, block in stats["blocks"].items():
        for kind in ("timestamp", "scene"):
            mean, std = block[kind]
            assert mean.shape == std.shape and bool(torch.isfinite(mean).all()) and bool((std >= 0).all()), name
        rank = fusion.BLOCKS[name].rank
        assert ("axes" in block) == bool(rank), name
        if rank:  # orthonormal axes, in decreasing order of their standard deviations
            axes, std = block["axes"]
            assert axes.shape == (block["timestamp"][0].numel(), rank) and std.shape == (rank,)
            assert torch.allclose(axes.T @ axes, torch.eye(rank), atol=1e-5)
            assert bool((std[:-1] >= std[1:]).all()) and float(std[-1]) > 0


def test_principal_axes_are_found_with_their_spread_and_a_fixed_sign():
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    rows = (
        3
        + (torch.randn(50000, 6, generator=gen, dtype=torch.float64) * torch.tensor([5.0, 2.0, 1, 0.1, 0.1, 0.1]))
        @ basis.T
    )
    axes, std = principal_axes(rows, 2)
    assert axes.shape == (6, 2) and std.shape == (2,)
    assert torch.allclose(
        (axes.double().T @ basis[:, :2]).abs().diagonal(), torch.ones(2, dtype=torch.float64), atol=1e-3
    )
    assert std.tolist() == pytest.approx([5.0, 2.0], rel=0.02)
    assert bool((axes.gather(0, axes.abs().argmax(dim=0, keepdim=True)) > 0).all())  # the sign convention
    flipped, _ = principal_axes(-rows, 2)  # the same axes whatever the data's orientation
    assert torch.allclose(flipped, axes, atol=1e-5)


def test_a_reduced_block_gives_its_principal_axes_its_share_and_keeps_its_scene():
    """A block with rank > 0 contributes (x - mean) @ axes, scaled whole to its share like any
    block, and its scene embedding is unchanged: the shipped default's scene part is the same
    with its reduced aisfx-local-pcN as with the full aisfx-local (same constants, same widths)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(40000, 5, generator=gen) * torch.tensor([4.0, 1.0, 0.5, 0.1, 0.1]) + 2
    axes, std = principal_axes(x, 2)
    stats = {
        "a": {"timestamp": (x.mean(0), x.std(0)), "scene": (torch.zeros(5), torch.ones(5)), "axes": (axes, std)},
        "b": {"timestamp": (torch.zeros(4), torch.ones(4)), "scene": (torch.zeros(4), torch.ones(4))},
    }
    model = fusion.Fusion({"a": Ramp(5, 3, 1.0), "b": Ramp(4, 3, 1.0)}, stats)
    assert model.timestamp_embedding_size == 2 + 4 and model.scene_embedding_size == 5 + 4
    a = model._scaled("timestamp", "a", x)
    assert a.shape == (40000, 2) and a.var(0).sum() == pytest.approx(3.0, rel=0.02)  # share (2 + 4) / 2
    assert torch.allclose(a / model._stat("timestamp", "scale", "a"), (x - x.mean(0)) @ axes, atol=1e-4)
    emb, _ = model.timestamp_embeddings(torch.zeros(1, 16000))
    assert emb.shape == (1, 51, 6)
    shipped = fusion.read_stats()["blocks"]
    reduced = fusion.DEFAULT_BLOCKS
    rank = fusion.BLOCKS[reduced[-1]].rank
    assert reduced[-1] == f"aisfx-local-pc{rank}" and rank > 0
    full = (*reduced[:-1], "aisfx-local")
    fakes = lambda names: {n: Ramp(shipped[n]["scene"][0].numel(), 50, 1.0) for n in names}
    m_full = fusion.Fusion(fakes(full), {n: shipped[n] for n in full})
    m_reduced = fusion.Fusion(fakes(reduced), {n: shipped[n] for n in reduced})
    assert m_reduced.scene_embedding_size == m_full.scene_embedding_size
    assert m_reduced.timestamp_embedding_size == m_full.timestamp_embedding_size - 512 + rank
    for n_full, n_red in zip(full, reduced, strict=True):
        for what in ("mean", "scale"):
            assert torch.equal(m_full._stat("scene", what, n_full), m_reduced._stat("scene", what, n_red))


def _need_experts():
    missing = [
        k for b in fusion.DEFAULT_BLOCKS for k in fusion.BLOCKS[b].keys if not (cache.cache_dir() / f"{k}.pt").exists()
    ]
    if missing:
        pytest.skip(f"expert weights {missing} not in the cache: run tympan experts fetch")


def test_default_fusion_and_its_packed_file_agree(tmp_path):
    _need_experts()
    model = fusion.load_model()
    digest = fusion.pack(tmp_path / "fusion.pt")
    assert digest == sha256_file(tmp_path / "fusion.pt")
    packed = fusion.load_model(str(tmp_path / "fusion.pt"))
    audio = torch.randn(2, 16000 * 3, generator=torch.Generator().manual_seed(1)) * 0.1
    a, ts = fusion.get_timestamp_embeddings(audio, model)
    b, _ = fusion.get_timestamp_embeddings(audio, packed)
    assert a.shape == (2, n_frames(48000), model.timestamp_embedding_size) and torch.equal(a, b)
    assert torch.equal(ts[0], torch.arange(n_frames(48000), dtype=torch.float32) * 20)
    s = fusion.get_scene_embeddings(audio, model)
    assert s.shape == (2, model.scene_embedding_size) and torch.equal(s, fusion.get_scene_embeddings(audio, packed))
    # batch independence: a sound's embedding does not depend on its neighbours
    assert torch.allclose(fusion.get_scene_embeddings(audio[1:], model)[0], s[1], atol=1e-6)


def test_pack_command_names_bad_blocks(tmp_path, capsys):
    from tympan.cli import main

    assert main(["experts", "pack", "--out", str(tmp_path / "f.pt"), "--blocks", "v0,nope"]) == 2
    assert "distinct names among" in capsys.readouterr().err and not (tmp_path / "f.pt").exists()


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory):
    """A packed fusion of v0 and crepe (tiny): 2 MB, the same format as the default's."""
    if not (cache.cache_dir() / "crepe-tiny.pt").exists():
        pytest.skip("crepe-tiny is not in the cache: run tympan experts fetch --expert crepe")
    path = tmp_path_factory.mktemp("pack") / "small.pt"
    fusion.pack(path, blocks=["v0", "crepe"])
    return path


def test_fuzz_flipped_bits_in_a_packed_fusion_raise_weights_error_or_change_nothing(small_pack, tmp_path):
    """Seeded bit flips in the pickled metadata, in the tensors and in the zip's own records: a flip
    in any member's name or contents raises WeightsError naming the file (before: KeyError, or the
    scaling constants silently changed); one elsewhere may load only the very same payload and model."""
    import io
    import random
    import struct
    import zipfile

    data = small_pack.read_bytes()
    original = torch.load(small_pack, map_location="cpu", weights_only=True)
    model = fusion.load_model(str(small_pack))
    members, pickles = set(), set()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset + 30
            name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26 : start])
            body = range(start + name_len + extra_len, start + name_len + extra_len + info.compress_size)
            members.update(range(start, start + name_len), body)
            if info.filename.endswith("data.pkl"):
                pickles.update(body)
    others = sorted(set(range(len(data))) - members)
    rng = random.Random(7)
    positions = (
        rng.sample(sorted(pickles), 150) + rng.sample(sorted(members - pickles), 150) + rng.sample(others, 150)
    )
    path = tmp_path / "flipped.pt"
    errors = 0
    for position in positions:
        damaged = bytearray(data)
        damaged[position] ^= 1 << rng.randrange(8)
        path.write_bytes(damaged)
        try:
            loaded = fusion.load_model(str(path))
        except WeightsError as err:
            assert str(path) in str(err), err
            errors += 1
            continue
        assert position not in members, f"flip at byte {position}, inside a member, loaded"
        assert same_payload(torch.load(path, map_location="cpu", weights_only=True), original)
        assert same_payload(loaded.state_dict(), model.state_dict())
    assert errors >= 300


def test_truncated_or_incomplete_packed_fusion_raises_weights_error(small_pack, tmp_path):
    data = small_pack.read_bytes()
    path = tmp_path / "cut.pt"
    for length in [0, 10, 100, *range(1000, len(data), len(data) // 40), len(data) - 1]:
        path.write_bytes(data[:length])
        with pytest.raises(WeightsError, match="cut.pt"):
            fusion.load_model(str(path))
    payload = torch.load(small_pack, weights_only=True)
    for key in ("stats", "states", "blocks"):
        torch.save({k: v for k, v in payload.items() if k != key}, path)
        with pytest.raises(WeightsError, match="cut.pt"):  # was KeyError
            fusion.load_model(str(path))
    payload["stats"]["blocks"]["crepe"]["timestamp"] = (torch.zeros(3), torch.ones(3))
    torch.save(payload, path)
    with pytest.raises(WeightsError, match="cut.pt"):
        fusion.load_model(str(path))

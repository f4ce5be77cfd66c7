"""The network: front end -> encoder -> pooling, and its versioned weights file.

    audio (n_samples,) 16 kHz
      -> FrontEnd (audio.py)      features   (n_frames, N_FEATURES)    fixed DSP, no weights
      -> Encoder                  embeddings (n_frames, N_FEATURES)    the learnable part
      -> pooling                  scene      (2 * N_FEATURES,)         mean and std over time

v0's encoder is a fixed per-dimension standardisation (constants measured once on
generated calibration audio by `python -m tympan.train.v0`); trained weights will replace
the encoder and keep the front end and the pooling.

Scene pooling is the mean and the standard deviation of the frame embeddings over time:
the mean says what the clip sounds like on average, the std how much it changes (speech
and music move, a drone or noise does not), which the mean alone cannot tell apart.

GridModel is the base of every model on tympan's grid (Tympan here, the experts, the fusion,
tympan.mfcc, the trained encoder to come): a subclass yields frame embeddings chunk by chunk
and the base does the HEAR plumbing (checks, one sound at a time, timestamps, pooling).

Weights file: torch.save of a dict holding exactly "format", "model", "version", "sha256"
(of the state_dict's canonical bytes), "licence", "feature_blocks" and "state_dict". At load
the zip archive's structure and the CRC-32 of every member are checked first (verify_archive),
then every field and the SHA-256: a damaged file is a WeightsError, never other weights. It
loads with torch.load(weights_only=True): no pickled code is ever executed.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from tympan.audio import (
    FEATURE_BLOCKS,
    N_FEATURES,
    SAMPLE_RATE,
    FrontEnd,
    check_audio,
    n_frames,
    timestamps_ms,
)
from tympan.checksum import state_dict_sha256
from tympan.io import atomic_write

MODEL_NAME = "tympan"
WEIGHTS_FORMAT = "tympan-weights/1"
SUPPORTED_VERSIONS = ("v0",)
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "tympan-v0.pt"
WEIGHTS_LICENCE = "CC BY 4.0"


class WeightsError(ValueError):
    """A weights file that is missing, unreadable, of another model or version, or corrupt."""


class Encoder(torch.nn.Module):
    """Features (n_frames, N_FEATURES) -> embeddings (n_frames, N_FEATURES): (x - mean) / std."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(N_FEATURES))
        self.register_buffer("std", torch.ones(N_FEATURES))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.std


class GridModel(torch.nn.Module):
    """Base of every HEAR model on tympan's grid (v0, the experts, the fusion, MFCC, the trained
    encoder to come): 16 kHz input, one embedding every 20 ms (frame k centred on k * 20 ms).

    A subclass sets `timestamp_embedding_size` and `scene_embedding_size` (ints) and implements
    `chunks(sound)`; it may override `scene(sound)` (default: mean and std over frames). This
    class does the rest the same way for all: input checks (audio.check_audio), the device
    check, one sound at a time (so a sound's embeddings never depend on the rest of its batch),
    the timestamps in milliseconds, and float32 outputs on the audio's device.
    """

    sample_rate = SAMPLE_RATE
    timestamp_embedding_size: int
    scene_embedding_size: int

    def _device(self) -> torch.device:
        """The device of the model's first parameter, else of its first buffer."""
        tensor = next(iter(self.parameters()), None)
        if tensor is None:
            tensor = next(iter(self.buffers()))
        return tensor.device

    def _checked(self, audio) -> torch.Tensor:
        """Checked float32 audio (n_sounds, n_samples) on the model's device; a numpy array is
        moved there, a tensor on another device is refused (moving it would hide a slow copy)."""
        if isinstance(audio, torch.Tensor) and audio.device != self._device():
            raise ValueError(
                f"audio is on {audio.device} but the model is on {self._device()}; "
                f"move one of them, e.g. model.to(audio.device)"
            )
        return check_audio(audio).to(self._device())

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) float32 on the model's device -> yields (n_i, timestamp_embedding_size)
        float32 for consecutive grid frames; together they cover frames 0 .. n_frames(n_samples) - 1.
        No checks here: the HEAR methods check the audio (tympan.fusion calls this per sound)."""
        raise NotImplementedError(f"{type(self).__name__} must implement chunks(sound)")

    def scene(self, sound: torch.Tensor) -> torch.Tensor:
        """sound (n_samples,) -> (scene_embedding_size,): by default [mean, std] over its frames."""
        return pool_mean_std(self.chunks(sound))

    @torch.no_grad()
    def timestamp_embeddings(self, audio) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (n_sounds, n_samples) -> embeddings (n_sounds, n_frames, timestamp_embedding_size)
        float32 and timestamps (n_sounds, n_frames) float32 milliseconds, on the audio's device,
        n_frames = n_samples // 320 + 1."""
        audio = self._checked(audio)
        n_sounds, n_samples = audio.shape
        n = n_frames(n_samples)
        out = torch.empty(n_sounds, n, self.timestamp_embedding_size, dtype=torch.float32, device=audio.device)
        for i in range(n_sounds):  # one sound at a time: no computation ever mixes sounds of a batch
            k = 0
            for emb in self.chunks(audio[i]):
                out[i, k : k + emb.shape[0]] = emb
                k += emb.shape[0]
            if k != n:
                raise RuntimeError(f"{type(self).__name__}.chunks gave {k} frames for {n_samples} samples, not {n}")
        return out, timestamps_ms(n, audio.device).expand(n_sounds, n).contiguous()

    @torch.no_grad()
    def scene_embeddings(self, audio) -> torch.Tensor:
        """audio (n_sounds, n_samples) -> (n_sounds, scene_embedding_size) float32 on the audio's device."""
        audio = self._checked(audio)
        out = torch.empty(audio.shape[0], self.scene_embedding_size, dtype=torch.float32, device=audio.device)
        for i in range(audio.shape[0]):
            out[i] = self.scene(audio[i])
        return out


class Tympan(GridModel):
    """The tympan model: front end -> encoder, timestamp embeddings (N_FEATURES,) every 20 ms,
    scene embedding (2 * N_FEATURES,) = [mean, std] over frames. HEAR attributes: sample_rate,
    timestamp_embedding_size, scene_embedding_size. Use the module-level HEAR functions in
    `tympan` to call it."""

    timestamp_embedding_size = N_FEATURES
    scene_embedding_size = 2 * N_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.frontend = FrontEnd()
        self.encoder = Encoder()
        self.version = "untrained"
        self.weights_sha256 = ""

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) float32 -> yields embeddings (n_i, N_FEATURES) of consecutive grid
        frames, covering frames 0 .. n_frames(n_samples) - 1."""
        for _, features in self.frontend.chunks(sound):
            yield self.encoder(features)


def pool_mean_std(chunks) -> torch.Tensor:
    """[mean, std] over time of frame embeddings given chunk by chunk: chunks of (n_i, dim)
    -> (2 * dim,) float32. Accumulates in float64, so a 20-minute clip never holds all frames."""
    total = total_sq = None
    count = 0
    for emb in chunks:
        e = emb.double()
        total = e.sum(dim=0) if total is None else total + e.sum(dim=0)
        total_sq = e.square().sum(dim=0) if total_sq is None else total_sq + e.square().sum(dim=0)
        count += e.shape[0]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0.0).sqrt()
    return torch.cat([mean, std]).float()


def save_weights(model: Tympan, path: str | Path, version: str) -> str:
    """Write `model`'s weights with their metadata to `path` atomically; returns the SHA-256."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    sha = state_dict_sha256(state)
    payload = {
        "format": WEIGHTS_FORMAT,
        "model": MODEL_NAME,
        "version": version,
        "sha256": sha,
        "licence": WEIGHTS_LICENCE,
        "feature_blocks": [list(b) for b in FEATURE_BLOCKS],
        "state_dict": state,
    }
    atomic_write(path, lambda f: torch.save(payload, f))
    return sha


def verify_archive(
    path: str | Path, fix: str = "re-copy it or use the shipped weights", what: str = "weights file"
) -> None:
    """Check that `path` is an intact torch.save archive before torch.load reads it: its zip
    structure and the CRC-32 of every member (Python's zipfile). Raises WeightsError naming the
    file (as `what`), the problem and `fix` (what the user should do).

    torch's reader checks neither: a flipped bit in the pickled metadata loads as other metadata,
    and one in the central directory can make it read bytes it never wrote (what it returns then
    changes from run to run). Costs one extra read of the file.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as exc:  # zipfile raises many types on damaged archives (BadZipFile, EOFError, ...)
        raise WeightsError(
            f"cannot read {what} {str(path)!r} ({type(exc).__name__}: {exc}); "
            f"it is truncated or not a torch file: {fix}"
        ) from exc
    if bad is not None:
        raise WeightsError(f"{str(path)!r} is damaged: its member {bad!r} fails its CRC-32 check; {fix}")


PAYLOAD_KEYS = frozenset({"format", "model", "version", "sha256", "licence", "feature_blocks", "state_dict"})


def load_weights(path: str | Path) -> Tympan:
    """Build a Tympan model from a weights file, checking its structure, model name, version,
    front-end layout and SHA-256.

    Raises WeightsError naming the file and what is wrong with it, for every damaged file: a
    missing, truncated or garbled file, one of another model or version, or one whose metadata or
    tensors were changed (the SHA-256 covers the tensors; every metadata field is checked).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"weights file not found: {str(path)!r}; pass an existing file, or '' for the shipped weights"
        )
    verify_archive(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/garbled files
        raise WeightsError(
            f"cannot read weights file {str(path)!r} ({type(exc).__name__}: {exc}); "
            "it is truncated or not a torch file: re-copy it or use the shipped weights"
        ) from exc
    if not isinstance(payload, dict) or payload.get("model") != MODEL_NAME or payload.get("format") != WEIGHTS_FORMAT:
        got = payload.get("model") if isinstance(payload, dict) else type(payload).__name__
        raise WeightsError(
            f"{str(path)!r} is not a tympan weights file (model: {got!r}, expected {MODEL_NAME!r} "
            f"in format {WEIGHTS_FORMAT!r})"
        )
    version = payload.get("version")
    if version not in SUPPORTED_VERSIONS:
        raise WeightsError(
            f"{str(path)!r} holds tympan weights version {version!r}; this tympan reads {SUPPORTED_VERSIONS}: "
            "upgrade tympan or use matching weights"
        )
    damaged = "; the file is damaged or was edited: re-copy it or use the shipped weights"
    if set(payload) != PAYLOAD_KEYS:
        raise WeightsError(
            f"{str(path)!r} has the fields {sorted(map(str, payload))}, expected {sorted(PAYLOAD_KEYS)}{damaged}"
        )
    if payload["licence"] != WEIGHTS_LICENCE:
        raise WeightsError(
            f"{str(path)!r} names the licence {payload['licence']!r}, expected {WEIGHTS_LICENCE!r}{damaged}"
        )
    blocks = [list(b) for b in FEATURE_BLOCKS]
    if payload["feature_blocks"] != blocks:
        raise WeightsError(
            f"{str(path)!r} was made for the front-end blocks {payload['feature_blocks']!r}, but this tympan "
            f"computes {blocks}{damaged}"
        )
    state = payload["state_dict"]
    named_tensors = isinstance(state, dict) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    )
    if not named_tensors:
        raise WeightsError(f"{str(path)!r}: its state_dict is not a dict of named tensors{damaged}")
    sha = state_dict_sha256(state)
    if sha != payload["sha256"]:
        raise WeightsError(
            f"checksum mismatch in {str(path)!r}: its tensors hash to {sha[:16]}..., its metadata says "
            f"{str(payload['sha256'])[:16]}...; the file is corrupt or was edited"
        )
    model = Tympan()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch's message spans several lines
        raise WeightsError(f"{str(path)!r} does not fit this tympan's network: {detail}") from exc
    model.version = version
    model.weights_sha256 = sha
    return model.eval()

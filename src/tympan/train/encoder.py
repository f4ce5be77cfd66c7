"""`tympan train encoder`: train tympan v1 (TympanV1) by distillation of stored teacher targets and
supervised heads on the exact labels of a `tympan train data` build.

    tympan train encoder --data DATA --targets TARGETS [--augmented-targets AUG] [--out RUN] [--seed 0]
                         [--steps N | --minutes M] [--batch 8] [--clean-share P]
                         [--no-distill] [--no-supervised] [--no-augment] [--export]

What one step does (docs/encoder.md, "Training"):

- Draws `batch` clips (a seeded permutation per epoch) and, per clip, a random crop of
  `crop_seconds` (4-8 s) of its AUGMENTED view (the clean view with --no-augment); a clip with
  phonemes is cropped to hold its whole utterance (CTC needs the whole transcript).
- The student (TympanV1, init_v1(config, seed)) embeds the crop: (n, 877) every 20 ms.
- Heads on that embedding (training only; RUN/tympan-v1.pt holds the student alone):
  distillation, one Linear head per teacher, L1 + -log sigmoid(cosine) (DistilHuBERT) against
  the teacher's frames computed on the clean clip, standardised per dimension and moved onto the
  augmented frames (augment.warp_frames), or, for the teachers of --augmented-targets, computed
  on the augmented clip itself (a pitch teacher must hear the pitch the student hears); supervised: "ctc" (phonemes, one IPA string per clip,
  symbols = the data's code points), "language" (clip-level, mean-pooled), "voice" (the espeak-ng
  variant, behind a gradient reversal: adversarial), "pitch" (88 keys, frames where one key
  sounds), "onsets" (BCE: note and event onsets), "roll" (BCE: piano roll, families, events),
  "activity" (BCE: speech, music, noise).
- Loss = weights["distill"] x mean of the teacher heads + weights["supervised"] x mean of the
  supervised heads present in the batch (0.9 / 0.1, ENCODER.md); AdamW, warmup then cosine
  to --steps (constant after the warmup with --minutes).

Everything a step draws comes from (seed, step) alone, so the data order needs no state; a
checkpoint (RUN/checkpoint.pt, written atomically every `checkpoint_every` steps) holds the
student, the heads, the optimiser, the scheduler, torch's RNG state and the step, and a run
killed and started again with the same command continues to the same result as one never
interrupted (bitwise on the CPU with the same thread count). RUN/run.json records the
configuration: a RUN of another configuration is refused. RUN/history.jsonl: one JSON line
per logged step. RUN/tympan-v1.pt (model.save_weights, version v1): written at the end and by
--export.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tympan.audio import HOP_MS, n_frames
from tympan.checksum import sha256_file
from tympan.io import atomic_write, atomic_write_json
from tympan.model import V1_CONFIG, TympanV1, check_v1_config, init_v1, save_weights
from tympan.train import augment, data

RUN_FORMAT = "tympan-train-run/1"
DEFAULT_RUNS = Path.home() / ".cache" / "tympan" / "runs"
SUPERVISED = ("ctc", "language", "voice", "pitch", "onsets", "roll", "activity")
N_KEYS = data.N_KEYS
SPEECH_MARGIN_FRAMES = 5  # frames kept around an utterance when a crop must hold all of it
COSINE_SAFE = 1e-8


class TrainError(ValueError):
    """A usage error: bad options, a data or targets folder that cannot be used, another run's folder."""


@dataclass
class Settings:
    """What defines a run (RUN/run.json). A RUN holds one configuration: any difference is refused.

    crop_seconds: (low, high) uniform crop lengths; weights: group weights "distill" and
    "supervised"; grl: the gradient reversal's factor for the voice head; steps: the schedule's
    length (None: --minutes, constant learning rate after the warmup); clean_share: the share of
    crops taken from the clean clip instead of the augmented one (there the teachers' frames are
    exact: docs/encoder.md, "Ablations" and "Fidelity")."""

    seed: int = 0
    batch: int = 8
    crop_seconds: tuple[float, float] = (4.0, 8.0)
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup: int = 100
    steps: int | None = None
    clip_norm: float = 5.0
    weights: dict = field(default_factory=lambda: {"distill": 0.9, "supervised": 0.1})
    grl: float = 1.0
    distill: bool = True
    supervised: bool = True
    augment: bool = True
    clean_share: float = 0.0
    model_config: dict = field(default_factory=lambda: copy.deepcopy(V1_CONFIG))

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["crop_seconds"] = list(self.crop_seconds)
        return d


# --------------------------------------------------------------------------- data


@dataclass
class Clip:
    npz: Path  # DATA/<kind>/<id>.npz
    speed: float  # of the view the student sees (1 with --no-augment)
    labels: dict
    meta: dict
    targets: dict | None  # {teacher: (n_clean, width) float16}, clean frames
    clean_labels: dict | None = None  # the clean view's labels, when crops may come from it (clean_share)
    augmented_targets: dict | None = None  # {teacher: (n_aug, width) float16}, teachers on the .aug.wav


class Dataset:
    """The clips of a data build (and their teacher targets), held in memory but for the audio.

    Vocabularies come from the data: `symbols` (IPA code points of every clip's phonemes, sorted;
    CTC class i + 1, 0 is the blank), `languages` (settings.json), `voices` (espeak-ng variants).
    `augmented_dir`: targets of some of the teachers computed on the augmented clips (tympan train
    targets --view augmented); an augmented crop takes those teachers' frames from there as they
    are, instead of the clean frames time-warped (make_item)."""

    def __init__(self, data_dir: Path, targets_dir: Path | None, view: str, clean_too: bool = False,
                 augmented_dir: Path | None = None) -> None:
        settings_path = data_dir / "settings.json"
        if not settings_path.is_file() or not (data_dir / "manifest.json").is_file():
            raise TrainError(
                f"{data_dir} has no settings.json and manifest.json: give a folder made by tympan train data"
            )
        self.data, self.view = data_dir, view
        self.settings = json.loads(settings_path.read_text(encoding="utf-8"))
        self.settings_sha256 = sha256_file(settings_path)
        manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
        npzs = sorted(k for k in manifest if k.endswith(".npz"))
        if not npzs:
            raise TrainError(f"{data_dir / 'manifest.json'} lists no clips (<kind>/<id>.npz)")
        self.targets_info = None
        reader = None
        if targets_dir is not None:
            from tympan.train.targets import Targets, TargetsError

            try:
                reader = Targets(targets_dir, data_dir)
            except TargetsError as e:
                raise TrainError(str(e)) from None
            self.targets_info = {k: reader.settings[k] for k in ("teachers", "widths", "data_settings_sha256")}
        self.augmented_info, moved = None, None
        if augmented_dir is not None:
            moved = self._augmented_reader(augmented_dir, data_dir, view)
            self.augmented_info = {k: moved.settings[k] for k in ("teachers", "widths", "view", "data_settings_sha256")}
        try:  # TargetsError: missing, failed or stale rows
            targets = reader.read_all(npzs) if reader is not None else {}
            augmented = moved.read_all(npzs) if moved is not None else {}
        except Exception as e:
            raise TrainError(str(e)) from None
        self.clips: list[Clip] = []
        for key in npzs:
            _, labels, meta = data.read_clip(data_dir / key, view)  # reads the audio once too: checks it
            speed = float(meta["recipe"]["speed"]) if view == "augmented" else 1.0
            clean_labels = data.read_clip(data_dir / key, "clean")[1] if clean_too else None
            for name, frames in augmented.get(key, {}).items():
                if len(frames) != len(labels["activity"]):
                    raise TrainError(f"the augmented targets of {key} have {len(frames)} frames ({name}), its "
                                     f".aug.wav {len(labels['activity'])}: they were computed from other audio; "
                                     "rerun tympan train targets")
            self.clips.append(Clip(data_dir / key, speed, labels, meta, targets.get(key), clean_labels,
                                   augmented.get(key)))
        self.languages: list[str] = list(self.settings.get("languages", []))
        self.symbols = sorted({ch for p in self._phonemes() for ch in p if not ch.isspace()})
        self.voices = sorted({v for c in self.clips if (v := _variant(c.meta))})
        self.teacher_stats = self._teacher_stats() if reader is not None else {}

    def _augmented_reader(self, augmented_dir: Path, data_dir: Path, view: str):
        """The Targets of --augmented-targets, refused unless they are augmented-view targets of
        teachers the (clean) targets also hold, for a run whose student hears augmented clips."""
        from tympan.train.targets import Targets, TargetsError

        if self.targets_info is None:
            raise TrainError("--augmented-targets replaces some teachers' frames of --targets: give --targets too "
                             "(and not --no-distill)")
        if view != "augmented":
            raise TrainError("--augmented-targets with --no-augment: the student hears only clean clips; "
                             "drop one of them")
        try:
            moved = Targets(augmented_dir, data_dir)
        except TargetsError as e:
            raise TrainError(str(e)) from None
        if moved.view != "augmented":
            raise TrainError(f"--augmented-targets {augmented_dir} holds targets of the {moved.view} clips: make "
                             f"them with tympan train targets --view augmented")
        clean = self.targets_info
        other = [t for t in moved.teachers if t not in clean["teachers"] or moved.widths[t] != clean["widths"][t]]
        if other:
            raise TrainError(f"--augmented-targets {augmented_dir} holds teachers {', '.join(other)} that --targets "
                             f"does not ({', '.join(clean['teachers'])}): their standardisation comes from --targets")
        return moved

    def _phonemes(self) -> list[str]:
        return [c.meta["phonemes"] for c in self.clips if c.meta.get("phonemes")]

    def _teacher_stats(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per teacher: mean and std (width,) over every frame of every clip, float32 (std >= 1e-3
        of its largest value, so a constant dimension does not blow up).

        Two passes over the clips in float64 (sum, then squares around the mean), one clip at a
        time: the frames of a 6 h build as one float64 array were 4.4 GB for fcpe alone, and two
        runs side by side ran out of memory."""
        stats = {}
        for name in self.targets_info["teachers"]:
            n = sum(len(c.targets[name]) for c in self.clips)
            mean = sum(c.targets[name].astype(np.float64).sum(axis=0) for c in self.clips) / n
            var = sum(np.square(c.targets[name].astype(np.float64) - mean).sum(axis=0) for c in self.clips) / n
            std = np.sqrt(var)
            std = np.maximum(std, 1e-3 * max(std.max(), 1e-6))
            stats[name] = (torch.from_numpy(mean).float(), torch.from_numpy(std).float())
        return stats

    def audio(self, clip: Clip, clean: bool = False) -> np.ndarray:
        """The clip's audio in the dataset's view, or its clean view with `clean`."""
        import soundfile as sf

        stem = clip.npz.name[: -len(".npz")]
        suffix = data.VIEW_SUFFIX["clean" if clean else self.view]
        x, _ = sf.read(str(clip.npz.with_name(stem + suffix)), dtype="float32")
        return x


def _variant(meta: dict) -> str:
    """The espeak-ng variant of a speech clip's voice ("en-us+f3" -> "f3"): the speaker, not the language."""
    voice = meta.get("voice") or ""
    return voice.split("+", 1)[1] if "+" in voice else ""


@dataclass
class Item:
    """One crop: features (n, 301), and its per-frame and clip-level targets."""

    features: torch.Tensor
    frames: dict  # name -> tensor (n, ...)
    teachers: dict  # name -> tensor (n, width) float32, standardised
    phonemes: torch.Tensor | None  # int64 (k,) CTC classes (1..)
    language: int
    voice: int
    audio_seconds: float


def draw(ds: Dataset, settings: Settings, step: int) -> list[tuple[int, int, int, bool]]:
    """The batch of `step`: (clip index, first frame, frames, clean view) per item, from (seed, step)
    alone. With clean_share 0 the crops are those of the runs made before it existed."""
    n = len(ds.clips)
    out = []
    for j in range(settings.batch):
        g = step * settings.batch + j
        epoch, pos = divmod(g, n)
        clip_index = int(np.random.default_rng([settings.seed, 1, epoch]).permutation(n)[pos])
        rng = np.random.default_rng([settings.seed, 2, step, j])
        clip = ds.clips[clip_index]
        # its own stream, so that the crops of clean_share 0 stay what they were
        share = settings.clean_share
        clean = share > 0 and np.random.default_rng([settings.seed, 3, step, j]).random() < share
        labels, speed = (clip.clean_labels, 1.0) if clean else (clip.labels, clip.speed)
        total = len(labels["activity"])
        length = min(total, round(rng.uniform(*settings.crop_seconds) * 1000 / HOP_MS))
        low, high = 0, total - length
        speech = labels["speech"]
        if settings.supervised and clip.meta.get("phonemes") and len(speech):
            first = max(0, math.floor(speech[:, 0].min() / speed / HOP_MS) - SPEECH_MARGIN_FRAMES)
            last = min(total, math.ceil(speech[:, 1].max() / speed / HOP_MS) + SPEECH_MARGIN_FRAMES)
            length = max(length, last - first)
            low, high = max(0, last - length), min(first, total - length)
        out.append((clip_index, int(rng.integers(low, high + 1)), length, bool(clean)))
    return out


def make_item(ds: Dataset, frontend, clip_index: int, k0: int, length: int, clean: bool = False) -> Item:
    """One crop of the clip in the dataset's view (or its clean view with `clean`: clean labels,
    the teachers' frames as computed, no warp). An augmented crop takes the frames of teachers
    in the augmented targets (Dataset's augmented_dir) from them, the others' clean frames warped."""
    clip = ds.clips[clip_index]
    audio = torch.from_numpy(ds.audio(clip, clean))
    total = n_frames(len(audio))
    k1 = k0 + length
    with torch.no_grad():
        features = frontend.frames(frontend.padded(audio), k0, k1)
    lab = clip.clean_labels if clean else clip.labels
    frames = {
        "activity": torch.from_numpy(lab["activity"][k0:k1].astype(np.float32)),
        "onsets": torch.from_numpy(np.concatenate([lab["onsets"], lab["event_onsets"]], 1)[k0:k1].astype(np.float32)),
        "roll": torch.from_numpy(
            np.concatenate([lab["piano_roll"], lab["family"], lab["event_roll"]], 1)[k0:k1].astype(np.float32)
        ),
        "pitch": torch.from_numpy(lab["pitch_midi"][k0:k1].astype(np.float32)),
    }
    teachers = {}
    moved = {} if clean or clip.augmented_targets is None else clip.augmented_targets
    for name, (mean, std) in ds.teacher_stats.items():
        if name in moved:  # on the augmented clip's frames already (checked when the Dataset was loaded)
            t = moved[name][k0:k1]
        else:
            t = augment.warp_frames(clip.targets[name], 1.0 if clean else clip.speed, total)[k0:k1]
        teachers[name] = (torch.from_numpy(t.astype(np.float32)) - mean) / std
    phonemes = None
    if clip.meta.get("phonemes"):
        phonemes = torch.tensor([ds.symbols.index(c) + 1 for c in clip.meta["phonemes"] if not c.isspace()])
    voice = _variant(clip.meta)
    return Item(features, frames, teachers, phonemes, int(lab["language"]),
                ds.voices.index(voice) if voice else -1, length * HOP_MS / 1000)


# --------------------------------------------------------------------------- heads


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.factor * grad, None


def reverse_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; the gradient times -factor backward (Ganin & Lempitsky's gradient reversal)."""
    return _Reverse.apply(x, factor)


class Heads(torch.nn.Module):
    """The training-only heads on the timestamp embedding (n, dim). Linear each (the student must
    carry the information, not the heads). Teacher standardisation constants are buffers."""

    def __init__(self, dim: int, ds: Dataset, settings: Settings) -> None:
        super().__init__()
        self.grl = settings.grl
        self.teachers = torch.nn.ModuleDict()
        if settings.distill:
            for name, width in ds.targets_info["widths"].items():
                self.teachers[name] = torch.nn.Linear(dim, width)
        self.sup = torch.nn.ModuleDict()
        if settings.supervised:
            sizes = {
                "ctc": len(ds.symbols) + 1 if ds.symbols else 0,
                "language": len(ds.languages) if len(ds.languages) > 1 else 0,
                "voice": len(ds.voices) if len(ds.voices) > 1 else 0,
                "pitch": N_KEYS,
                "onsets": N_KEYS + len(data.EVENT_CLASSES),
                "roll": N_KEYS + len(ds.settings.get("families", [])) + len(data.EVENT_CLASSES),
                "activity": len(data.ACTIVITY),
            }
            for name in SUPERVISED:
                if sizes[name]:
                    self.sup[name] = torch.nn.Linear(dim, sizes[name])

    def losses(self, emb: torch.Tensor, item: Item) -> dict[str, torch.Tensor]:
        """emb (n, dim) -> {head: scalar loss} for the heads that this item has targets for."""
        out = {}
        for name, head in self.teachers.items():
            pred, target = head(emb), item.teachers[name]
            cos = F.cosine_similarity(pred, target, dim=1, eps=COSINE_SAFE)
            out[name] = F.l1_loss(pred, target) - F.logsigmoid(cos).mean()
        sup = self.sup
        if "ctc" in sup and item.phonemes is not None and len(item.phonemes):
            logp = F.log_softmax(sup["ctc"](emb), dim=1)[:, None]
            out["ctc"] = F.ctc_loss(logp, item.phonemes[None], [emb.shape[0]], [len(item.phonemes)],
                                    zero_infinity=True)
        pooled = emb.mean(dim=0, keepdim=True)
        if "language" in sup and item.language >= 0:
            out["language"] = F.cross_entropy(sup["language"](pooled), torch.tensor([item.language]))
        if "voice" in sup and item.voice >= 0:
            out["voice"] = F.cross_entropy(sup["voice"](reverse_gradient(pooled, self.grl)), torch.tensor([item.voice]))
        if "pitch" in sup:
            keyed = torch.isfinite(item.frames["pitch"])
            if keyed.any():
                target = (item.frames["pitch"][keyed] - data.music.MIDI_PITCHES[0]).long()
                out["pitch"] = F.cross_entropy(sup["pitch"](emb[keyed]), target)
        for name in ("onsets", "roll", "activity"):
            if name in sup:
                out[name] = F.binary_cross_entropy_with_logits(sup[name](emb), item.frames[name])
        return out


# --------------------------------------------------------------------------- the run


class Trainer:
    def __init__(self, ds: Dataset, settings: Settings) -> None:
        self.ds, self.settings = ds, settings
        self.model = init_v1(settings.model_config, seed=settings.seed).train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed + 1)
            self.heads = Heads(self.model.timestamp_embedding_size, ds, settings)
        params = list(self.model.encoder.parameters()) + list(self.heads.parameters())
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._factor)
        self.step = 0
        self.seconds = 0.0  # training time over every session of the run

    def _factor(self, step: int) -> float:
        s = self.settings
        if step < s.warmup:
            return (step + 1) / s.warmup
        if s.steps is None:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - s.warmup) / max(1, s.steps - s.warmup))))

    def train_step(self) -> dict:
        """One optimiser step; returns its history record (losses per head, learning rate, audio seconds)."""
        s = self.settings
        items = [make_item(self.ds, self.model.frontend, *d) for d in draw(self.ds, s, self.step)]
        per_head: dict[str, list[torch.Tensor]] = {}
        for item in items:
            emb = self.model.encoder(item.features)
            for name, loss in self.heads.losses(emb, item).items():
                per_head.setdefault(name, []).append(loss)
        # in the heads' order, so that progress lines and history list them alike at every step
        means = {n: torch.stack(per_head[n]).mean() for n in [*self.heads.teachers, *self.heads.sup] if n in per_head}
        groups = []
        distilled = [means[n] for n in self.heads.teachers if n in means]
        supervised = [means[n] for n in self.heads.sup if n in means]
        if distilled:
            groups.append(s.weights["distill"] * torch.stack(distilled).mean())
        if supervised:
            groups.append(s.weights["supervised"] * torch.stack(supervised).mean())
        total = torch.stack(groups).sum()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], s.clip_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        return {
            "step": self.step,
            "loss": float(total.detach()),
            "losses": {n: float(v.detach()) for n, v in means.items()},
            "lr": lr,
            "audio_seconds": sum(i.audio_seconds for i in items),
        }

    def state(self) -> dict:
        return {
            "step": self.step,
            "seconds": self.seconds,
            "model": self.model.state_dict(),
            "heads": self.heads.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.heads.load_state_dict(state["heads"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step, self.seconds = int(state["step"]), float(state["seconds"])


def run_record(ds: Dataset, settings: Settings) -> dict:
    """RUN/run.json: the settings and what they were applied to (data build, teachers, vocabularies)."""
    return {
        "format": RUN_FORMAT,
        "settings": settings.to_dict(),
        "data_settings_sha256": ds.settings_sha256,
        "targets": ds.targets_info if settings.distill else None,
        "augmented_targets": ds.augmented_info,
        "symbols": ds.symbols,
        "voices": ds.voices,
    }


# Settings added after the first runs, with the value that reproduces those runs: a run.json
# without them holds that value (so its run resumes and its fidelity is scored).
ADDED_SETTINGS = {"clean_share": 0.0}


def _read_record(path: Path) -> dict:
    record = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(record.get("settings"), dict):
        record["settings"] = {**ADDED_SETTINGS, **record["settings"]}
    return record


def _differences(before: dict, record: dict) -> list[str]:
    """The run.json fields (and settings) in which two records differ."""
    differ = sorted(k for k in set(before) | set(record) if before.get(k) != record.get(k))
    if "settings" in differ:
        a, b = before.get("settings", {}), record["settings"]
        differ.remove("settings")
        differ += sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return differ


def _dataset(data_dir, targets_dir, settings: Settings, augmented_dir=None) -> Dataset:
    """The Dataset a run of `settings` trains on: its view, its targets unless --no-distill (and
    the augmented targets of some teachers)."""
    if augmented_dir is not None and not settings.distill:
        raise TrainError("--augmented-targets with --no-distill: there are no teacher heads to use them")
    return Dataset(Path(data_dir), Path(targets_dir) if settings.distill else None,
                   "augmented" if settings.augment else "clean", clean_too=settings.clean_share > 0,
                   augmented_dir=Path(augmented_dir) if augmented_dir is not None else None)


def check_run(run: Path, record: dict) -> None:
    """Refuse a RUN that holds another configuration (naming what differs), or other files."""
    path = run / "run.json"
    if path.is_file():
        differ = _differences(_read_record(path), record)
        if differ:
            raise TrainError(
                f"{run} holds a run of another configuration ({', '.join(differ)} differ): runs are never mixed; "
                "give another --out, or delete the folder to start over"
            )
    elif run.exists() and any(run.iterdir()):
        raise TrainError(f"{run} is not empty and holds no run.json: give a new or empty --out folder")


def _format(record: dict, total: int | None, rate: float) -> str:
    heads = " ".join(f"{n} {v:.3f}" for n, v in record["losses"].items())
    of = f"/{total}" if total else ""
    return f"step {record['step']}{of} loss {record['loss']:.4f} | {heads} | {rate:.2f} steps/s"


def train(data_dir, targets_dir, run, settings: Settings, minutes: float | None = None, log_every: int = 10,
          checkpoint_every: int = 100, export_only: bool = False, on_step=None, out=None,
          augmented_targets=None) -> Path:
    """Train (or resume, or with export_only just export) the run in `run`; returns RUN/tympan-v1.pt.
    `augmented_targets`: a folder of tympan train targets --view augmented (Dataset's augmented_dir).

    Stops at settings.steps, or when the run's training time reaches `minutes`. `on_step(step)`
    is called after every step (tests use it to interrupt a run)."""
    run, out = Path(run), sys.stderr if out is None else out
    problem = check_v1_config(settings.model_config)
    if problem:
        raise TrainError(f"--model-config: {problem}")
    if settings.batch < 1 or settings.steps is not None and settings.steps < 1 or min(log_every, checkpoint_every) < 1:
        raise TrainError(
            f"--batch {settings.batch}, --steps {settings.steps}, --log-every {log_every} and --checkpoint-every "
            f"{checkpoint_every}: give positive whole numbers"
        )
    if (settings.steps is None) == (minutes is None) and not export_only:
        raise TrainError("give one of --steps N or --minutes M")
    if not (settings.distill or settings.supervised):
        raise TrainError("--no-distill and --no-supervised together leave nothing to train")
    if settings.distill and targets_dir is None:
        raise TrainError("--targets is required unless --no-distill")
    if not 0 <= settings.clean_share <= 1 or settings.clean_share > 0 and not settings.augment:
        raise TrainError(f"--clean-share {settings.clean_share}: give a share in 0..1, and not with --no-augment "
                         "(every crop is clean then)")
    ds = _dataset(data_dir, targets_dir, settings, augmented_targets)
    record = run_record(ds, settings)
    check_run(run, record)
    checkpoint = run / "checkpoint.pt"
    if export_only and not checkpoint.is_file():
        raise TrainError(f"--export: {run} holds no checkpoint.pt yet; train first (the same command without --export)")
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / "run.json", record, indent=1, sort_keys=True)
    trainer = Trainer(ds, settings)
    if checkpoint.is_file():
        trainer.load(torch.load(checkpoint, map_location="cpu", weights_only=True))
    history = run / "history.jsonl"
    _truncate_history(history, trainer.step)
    exported = run / "tympan-v1.pt"
    if export_only:
        export(trainer.model, exported)
        return exported

    def save() -> None:
        atomic_write(checkpoint, lambda f: torch.save(trainer.state(), f))

    start = time.perf_counter()
    done_before = trainer.seconds
    window = (trainer.step, start)
    while True:
        trainer.seconds = done_before + time.perf_counter() - start
        if settings.steps is not None and trainer.step >= settings.steps:
            break
        if minutes is not None and trainer.seconds >= minutes * 60:
            break
        rec = trainer.train_step()
        rec["seconds"] = round(done_before + time.perf_counter() - start, 3)
        with open(history, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if trainer.step % log_every == 0 or trainer.step == 1:
            now = time.perf_counter()
            rate = (trainer.step - window[0]) / max(now - window[1], 1e-9)
            window = (trainer.step, now)
            print(_format(rec, settings.steps, rate), file=out, flush=True)
        if trainer.step % checkpoint_every == 0:
            trainer.seconds = rec["seconds"]
            save()
        if on_step is not None:
            on_step(trainer.step)
    save()
    export(trainer.model, exported)
    return exported


def _truncate_history(path: Path, step: int) -> None:
    """Drop history lines of steps after the checkpoint (a killed run logged them; they are redone)."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _logged_step(line) <= step]
    if len(kept) != len(lines):
        atomic_write(path, lambda f: f.write("".join(line + "\n" for line in kept).encode()))


def _logged_step(line: str) -> float:
    """The step of a history line; infinity for a line cut short by a kill (dropped like later steps)."""
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf


def export(model: TympanV1, path: Path) -> str:
    """The student alone as a v1 weights file (model.save_weights); returns its SHA-256."""
    student = copy.deepcopy(model).eval()
    return save_weights(student, path, "v1")


# --------------------------------------------------------------------------- fidelity


def load_run(run: Path, data_dir: Path, targets_dir: Path | None) -> Trainer:
    """The Trainer of RUN's last checkpoint over the data (and targets) it was trained on: refused
    (TrainError) when they are not the run's (run.json), or when RUN holds no checkpoint."""
    path = run / "run.json"
    if not path.is_file() or not (run / "checkpoint.pt").is_file():
        raise TrainError(f"{run} holds no run.json and checkpoint.pt: give a folder of tympan train encoder")
    record = _read_record(path)
    raw = dict(record["settings"])
    raw["crop_seconds"] = tuple(raw["crop_seconds"])
    settings = Settings(**raw)
    ds = _dataset(data_dir, targets_dir, settings)
    # The augmented targets only chose which frames training compared the heads with; the heads
    # are scored against the held-out build's own targets, so they are not needed (nor compared).
    differ = [k for k in _differences(record, run_record(ds, settings)) if k != "augmented_targets"]
    if differ:
        raise TrainError(f"{data_dir} (and its targets) are not what {run} was trained on ({', '.join(differ)} differ)")
    trainer = Trainer(ds, settings)
    trainer.load(torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True))
    trainer.model.eval()
    trainer.heads.eval()
    return trainer


@torch.no_grad()
def fidelity(trainer: Trainer, data_dir: Path, targets_dir: Path, view: str = "augmented") -> dict:
    """How well the student's heads predict what they were trained on, on clips it never saw.

    data_dir / targets_dir: another `tympan train data` build (e.g. another --seed) and its
    teachers' targets; each clip is embedded whole (`view`: "augmented" or "clean"). Teacher
    frames are standardised with the TRAINING set's constants, as in training. Returns, per
    teacher, "cosine" (mean over frames of the cosine between head output and target), "r2"
    (1 - sum of squared errors / sum of squares around the held-out mean, over every dimension)
    and "r2_dims" (the median over dimensions of each dimension's R^2: a few near-constant
    dimensions make the mean meaningless), with "frames"; and for the clip heads, "language" / "voice" accuracy on the clips that have one in the training
    vocabulary (voice: the reversed head, lower means the embedding hides the speaker better).
    """
    train_ds = trainer.ds
    held = Dataset(data_dir, targets_dir, view)
    if held.targets_info["teachers"] != train_ds.targets_info["teachers"]:
        raise TrainError(f"{targets_dir} holds teachers {held.targets_info['teachers']}, the run "
                         f"{train_ds.targets_info['teachers']}")
    held.teacher_stats = train_ds.teacher_stats
    held.voices = train_ds.voices
    # CTC is not scored here: phonemes only have to map to some index (unseen symbols past the head's)
    held.symbols = train_ds.symbols + sorted(set(held.symbols) - set(train_ds.symbols))
    heads = trainer.heads
    sums = {n: {"cos": 0.0, "frames": 0, "sse_d": 0, "s_d": 0, "ss_d": 0} for n in heads.teachers}
    clip_heads = {n: [0, 0] for n in ("language", "voice") if n in heads.sup}
    for i, clip in enumerate(held.clips):
        variant = _variant(clip.meta)
        if variant and variant not in held.voices:
            clip.meta = {**clip.meta, "voice": ""}  # a speaker the run never heard: no voice target
        item = make_item(held, trainer.model.frontend, i, 0, len(clip.labels["activity"]))
        emb = trainer.model.encoder(item.features)
        for name, head in heads.teachers.items():
            pred, target = head(emb).double(), item.teachers[name].double()
            acc = sums[name]
            acc["cos"] += float(F.cosine_similarity(pred, target, dim=1, eps=COSINE_SAFE).sum())
            acc["frames"] += target.shape[0]
            acc["sse_d"] = acc["sse_d"] + (pred - target).square().sum(0)
            acc["s_d"] = acc["s_d"] + target.sum(0)
            acc["ss_d"] = acc["ss_d"] + target.square().sum(0)
        pooled = emb.mean(dim=0, keepdim=True)
        for name, label in (("language", item.language), ("voice", item.voice)):
            if name in clip_heads and label >= 0:
                clip_heads[name][0] += int(heads.sup[name](pooled).argmax()) == label
                clip_heads[name][1] += 1
    out: dict = {"view": view, "clips": len(held.clips), "teachers": {}}
    for name, acc in sums.items():
        n = acc["frames"]
        sst_d = acc["ss_d"] - acc["s_d"].square() / n
        out["teachers"][name] = {
            "frames": n,
            "cosine": acc["cos"] / n,
            "r2": float(1 - acc["sse_d"].sum() / sst_d.sum()),
            "r2_dims": float((1 - acc["sse_d"] / sst_d.clamp_min(1e-12)).median()),
        }
    for name, (right, total) in clip_heads.items():
        out[name] = {"accuracy": right / total if total else None, "clips": total}
    return out


def fidelity_main(args: argparse.Namespace) -> int:
    prog = "tympan train fidelity"
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        trainer = load_run(Path(args.run), Path(args.train_data), Path(args.train_targets))
        result = fidelity(trainer, Path(args.data), Path(args.targets), args.view)
    except TrainError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    result["run"], result["data"] = str(args.run), str(args.data)
    print(f"| teacher | cosine | R^2 (pooled) | R^2 (median over dims) | frames |\n|---|---|---|---|---|")
    for name, r in result["teachers"].items():
        print(f"| {name} | {r['cosine']:.3f} | {r['r2']:.3f} | {r['r2_dims']:.3f} | {r['frames']} |")
    for name in ("language", "voice"):
        if name in result and result[name]["accuracy"] is not None:
            print(f"{name} head accuracy: {result[name]['accuracy']:.3f} on {result[name]['clips']} clips")
    if args.json:
        atomic_write_json(args.json, result, indent=1)
    return 0


def main(args: argparse.Namespace) -> int:
    prog = "tympan train encoder"
    try:
        config = copy.deepcopy(V1_CONFIG)
        if args.model_config:
            try:
                config = json.loads(Path(args.model_config).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise TrainError(f"--model-config {args.model_config}: cannot read it as JSON ({e})") from None
        settings = Settings(
            seed=args.seed, batch=args.batch, steps=args.steps, lr=args.lr, warmup=args.warmup,
            crop_seconds=(args.crop_min, args.crop_max),
            weights={"distill": args.distill_weight, "supervised": args.supervised_weight},
            distill=not args.no_distill, supervised=not args.no_supervised, augment=not args.no_augment,
            clean_share=args.clean_share,
            model_config=config,
        )
        if not 0 < args.crop_min <= args.crop_max:
            raise TrainError(f"--crop-min {args.crop_min} / --crop-max {args.crop_max}: need 0 < min <= max")
        if args.threads:
            torch.set_num_threads(args.threads)
        out = Path(args.out) if args.out else DEFAULT_RUNS / _default_name(settings)
        path = train(args.data, args.targets, out, settings, minutes=args.minutes, log_every=args.log_every,
                     checkpoint_every=args.checkpoint_every, export_only=args.export,
                     augmented_targets=args.augmented_targets)
    except TrainError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to continue from the last checkpoint",
              file=sys.stderr)
        return 130
    print(f"{prog}: wrote {path}")
    return 0


def _default_name(settings: Settings) -> str:
    flags = "".join(f"-no-{n}" for n in ("distill", "supervised", "augment") if not getattr(settings, n))
    flags += f"-clean{settings.clean_share:g}" if settings.clean_share else ""
    return f"encoder-seed{settings.seed}{flags}"

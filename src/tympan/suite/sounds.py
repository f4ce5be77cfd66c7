"""Real-recording sound tasks: drum hit type, music vs speech, and sound event detection.

Every sound here is a real recording that ships in a Debian data package (drum-kit
one-shots, game soundtracks, recorded game and teaching-software speech, game and
sampler sound effects, ambience loops), fetched and unpacked by `sources.debian_package`.
Labels come from hand-curated lists (data/sounds_drums.json, data/sounds_events.json and
the constants below), so they are exact by construction: a clip is labelled with what
was put into it.

Splits are by source group, never by file: a drum kit's author, or a whole package for
everything else, belongs to one split only, so a model is always tested on recordings
from sources (kits, games, speakers, studios) it never trained on. Each task records the
groups of every file in task_metadata.json under "source_groups" ({split: {file:
[group, ...]}}) and the Debian versions of its packages under "source_versions".

Randomness comes from one seeded numpy Generator per task and split (and one per clip,
seeded from it), drawn in a fixed order from sorted file lists, so a build is
byte-identical for the same package versions. Audio is mono float64 at SAMPLE_RATE Hz
throughout; durations are in seconds, event times in milliseconds.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tympan.audio import SAMPLE_RATE
from tympan.io import RESAMPLE_QUALITY, read_audio
from tympan.kit.tasks import Event, sort_labels
from tympan.suite.common import SPLITS, check_suite, split_rng, write_suite_task
from tympan.suite.dsp import add_noise, coloured_noise, set_level, tape, trim_silence
from tympan.suite.sources import SuiteSourceError, debian_package

DATA_DIR = Path(__file__).parent / "data"

# Noise spectral slope: power ~ 1/f^beta (0 white, 1 pink, 2 brown).
NOISE_BETA_RANGE = (0.0, 2.0)
# A 10 ms fade where a clip cuts a sound short, so the cut is not a click.
CUT_FADE = SAMPLE_RATE // 100


@lru_cache(maxsize=None)
def _data(name: str) -> dict:
    return json.loads((DATA_DIR / name).read_text(encoding="utf-8"))


class _Packages:
    """Unpacked Debian packages of one build, remembering each one's version."""

    def __init__(self) -> None:
        self.versions: dict[str, str] = {}

    def root(self, name: str) -> Path:
        root, version = debian_package(name)
        self.versions[name] = version
        return root


def _existing(root: Path, relative: str, package: str) -> Path:
    path = root / relative
    if not path.is_file():
        raise SuiteSourceError(
            f"{package}: curated file {relative} is missing from the unpacked package at {root}; "
            "the package version changed: update the lists in tympan/suite/data"
        )
    return path


@lru_cache(maxsize=4096)
def _decoded(path: Path) -> np.ndarray:
    # One-shots and utterances are used several times each; decoding once saves most of a
    # build. Kept as float32, as decoded, to halve the cache.
    x = read_audio(path, SAMPLE_RATE)
    x.flags.writeable = False
    return x


def load(path: Path) -> np.ndarray:
    """A whole sound file as float64 mono at SAMPLE_RATE, shape (n_samples,); decoded once per process."""
    return _decoded(path).astype(np.float64)


def load_segment(path: Path, start_s: float, duration_s: float) -> np.ndarray:
    """`duration_s` seconds of a file from `start_s`, float64 mono at SAMPLE_RATE.

    Seeks instead of decoding the whole file (a long opus track takes ~10 s to decode);
    libsndfile's seek is sample-exact for ogg and opus. Shape (round(duration_s * 16000),),
    zero-padded if the file ends first.
    """
    import soundfile as sf
    import soxr

    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        f.seek(min(round(start_s * rate), f.frames))
        data = f.read(round(duration_s * rate), dtype="float64", always_2d=True)
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    return fit(mono, round(duration_s * SAMPLE_RATE))


def fit(x: np.ndarray, n: int) -> np.ndarray:
    """`x` cut to n samples (with a CUT_FADE fade-out when sound is cut) or zero-padded to n."""
    if len(x) <= n:
        return np.concatenate([x, np.zeros(n - len(x))])
    y = x[:n].copy()
    fade = min(CUT_FADE, n)
    y[n - fade :] *= np.linspace(1.0, 0.0, fade)
    return y


def _rms_db(x: np.ndarray) -> float:
    rms = float(np.sqrt(np.mean(x**2))) if len(x) else 0.0
    return 20 * np.log10(rms) if rms > 0 else -np.inf


# --------------------------------------------------------------------------- drum hits


@dataclass(frozen=True)
class OneShot:
    """One recorded sound file and its label; `group` is the source group (never in two splits)."""

    path: Path
    label: str
    group: str


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _kit_instruments(xml_path: Path) -> dict[str, list[str]]:
    """Instrument name -> its layer file names, from a Hydrogen drumkit.xml (any schema version)."""
    instruments: dict[str, list[str]] = {}
    for node in ET.parse(xml_path).getroot().iter():
        if _local(node.tag) != "instrument":
            continue
        name = next((c.text or "" for c in node if _local(c.tag) == "name"), "").strip()
        files = [e.text.strip() for e in node.iter() if _local(e.tag) == "filename" and e.text]
        instruments.setdefault(name, []).extend(files)
    return instruments


def drum_oneshots(packages: _Packages) -> dict[str, list[OneShot]]:
    """The labelled hydrogen-drumkits layers of each split: {split: [OneShot, ...]}, sorted by path.

    Labels and source groups are data/sounds_drums.json's. A file that two listed
    instruments of a kit share (e.g. one tom sample as "Tom Mid" and "Tom Hi") is one
    OneShot. Raises SuiteSourceError when a listed instrument or file is not in the package.
    """
    spec = _data("sounds_drums.json")
    root = packages.root(spec["package"]) / spec["root"]
    shots: dict[Path, OneShot] = {}
    for kit, kit_spec in sorted(spec["kits"].items()):
        instruments = _kit_instruments(root / kit / "drumkit.xml")
        group = f"{spec['package']}:{kit_spec['group']}"
        for name, label in sorted(kit_spec["instruments"].items()):
            if name not in instruments:
                raise SuiteSourceError(
                    f"{spec['package']}: kit {kit!r} has no instrument {name!r}; the package version "
                    "changed: update tympan/suite/data/sounds_drums.json"
                )
            for file in instruments[name]:
                path = _existing(root / kit, file, spec["package"])
                if path in shots and shots[path].label != label:
                    raise SuiteSourceError(
                        f"{path} is labelled both {shots[path].label} and {label} in sounds_drums.json"
                    )
                shots[path] = OneShot(path, label, group)
    by_split: dict[str, list[OneShot]] = {split: [] for split in SPLITS}
    for path in sorted(shots):
        shot = shots[path]
        by_split[spec["group_splits"][shot.group.split(":", 1)[1]]].append(shot)
    return by_split


DRUM_CLIP = 1.0
DRUM_VARIANTS = {"tiny": 1, "full": 4}
# tiny: at most this many one-shots per label and split, drawn at random.
DRUM_TINY_PER_LABEL = 4
DRUM_TAPE_RANGE = (0.97, 1.03)  # +-0.5 semitone
DRUM_PEAK_DB_RANGE = (-20.0, -1.0)
DRUM_NOISE_BELOW_PEAK_DB = (45.0, 65.0)
DRUM_MAX_PREROLL = 0.03


def drum_clip(x: np.ndarray, seed: int) -> np.ndarray:
    """A one-shot as a DRUM_CLIP-second clip: shape (n,), n = DRUM_CLIP * SAMPLE_RATE.

    Tape speed x0.97-1.03, silence trimmed (40 dB below the loudest 10 ms), a 0-30 ms
    pre-roll, cut to the clip with a fade, peak at -20 to -1 dBFS, and coloured noise
    45-65 dB below the peak so that no clip is digital silence.
    """
    rng = np.random.default_rng(seed)
    factor, preroll = rng.uniform(*DRUM_TAPE_RANGE), rng.uniform(0, DRUM_MAX_PREROLL)
    peak_db, noise_db = rng.uniform(*DRUM_PEAK_DB_RANGE), rng.uniform(*DRUM_NOISE_BELOW_PEAK_DB)
    beta = rng.uniform(*NOISE_BETA_RANGE)
    n = round(DRUM_CLIP * SAMPLE_RATE)
    hit = trim_silence(tape(x, factor))
    if not np.any(hit):
        raise SuiteSourceError("a drum one-shot is silent; drop it from tympan/suite/data/sounds_drums.json")
    clip = fit(np.concatenate([np.zeros(round(preroll * SAMPLE_RATE)), hit]), n)
    clip *= 10 ** (peak_db / 20) / np.max(np.abs(clip))
    return clip + 10 ** ((peak_db - noise_db) / 20) * coloured_noise(rng, n, beta)


def build_drum_hits(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Drum hit type: which drum or percussion instrument one recorded hit is, in 1 s.

    Measures whether an embedding separates percussive timbres (membranes, metal, hands)
    across drum kits, recording rooms and microphones. Labels (8): clap cowbell crash hihat
    kick ride snare tom.
    Sources: the real one-shot samples (every velocity layer) of 13 Hydrogen drum kits in
    Debian's hydrogen-drumkits, labelled by hand from each kit's instrument names
    (data/sounds_drums.json says which instruments were dropped and why).
    Split rule: by kit author (kits by one author may share recordings): train Glen
    MacArthur (The Black Pearl, Gimme A Hand), BJA Pacific, Forzee; valid ArtemioLabs
    (Electric Empire, HardElectro1), Emanuel Rumpf, Colombo, VariBreaks; test emillo (three
    Millo kits), Audiophob. Every label is in every split, though unevenly: hi-hats, snares
    and toms have the most layers, and valid has one cowbell and one ride sample.
    Each clip: tape speed x0.97-1.03, silence trimmed, 0-30 ms pre-roll, cut to 1 s with a
    10 ms fade, peak -20 to -1 dBFS, coloured noise 45-65 dB below the peak.
    Size: full, each of the 454 one-shots 4 times = 1,816 clips = 30 min (train 1,028,
    valid 360, test 428); tiny, one rendering of up to 4 one-shots per label and split =
    86 clips = 1.4 min.
    """
    check_suite(suite)
    packages = _Packages()
    by_split = drum_oneshots(packages)
    labels: dict[str, dict[str, list[str]]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "drum-hits", split)
        shots = by_split[split]
        if suite == "tiny":
            picked = []
            for label in sort_labels(s.label for s in shots):
                of_label = [j for j, s in enumerate(shots) if s.label == label]
                picked += sorted(rng.permutation(of_label)[:DRUM_TINY_PER_LABEL])
            shots = [shots[i] for i in picked]
        plan = [(shot, int(rng.integers(2**32))) for shot in shots for _ in range(DRUM_VARIANTS[suite])]
        order = rng.permutation(len(plan))  # file names do not give the label or kit away
        labels[split], groups[split] = {}, {}
        for index, i in enumerate(order):
            shot, seed = plan[i]
            name = f"{split}-{index:05d}.wav"
            audio[(split, name)] = drum_clip(load(shot.path), seed)
            labels[split][name] = [shot.label]
            groups[split][name] = [shot.group]
    vocabulary = _data("sounds_drums.json")["classes"]
    return write_suite_task(
        tasks_dir, suite, "drum-hits", "scene", "multiclass", DRUM_CLIP, ["top1_acc"],
        vocabulary, labels, audio, groups, packages.versions,
    )  # fmt: skip


# --------------------------------------------------------------------------- music vs speech

# Game soundtracks: package -> glob of its music files under the unpacked package.
MUSIC_GLOBS = {
    "colobot-common-sounds": "usr/share/games/colobot/music/*.ogg",
    "hedgewars-data": "usr/share/games/hedgewars/Data/Music/**/*.ogg",
    "singularity-music": "usr/share/games/singularity/music/**/*.ogg",
    "supertux-data": "usr/share/games/supertux2/music/**/*.ogg",
    "warzone2100-music": "usr/share/games/warzone2100/music/**/*.opus",
    "wesnoth-1.16-music": "usr/share/games/wesnoth/1.16/data/core/music/*.ogg",
}
# Recorded speech: package -> glob of its utterance files. An utterance's folder is one
# speaker (ktuberling, klettres: a language's recordings; fillets: one level's dialogue
# in one dubbing; hedgewars: one voice pack), so excerpts join utterances of one folder.
SPEECH_GLOBS = {
    "fillets-ng-data-cs": "usr/share/games/fillets-ng/sound/**/*.ogg",
    "fillets-ng-data-nl": "usr/share/games/fillets-ng/sound/**/*.ogg",
    "klettres-data": "usr/share/klettres/*/*/*.ogg",
    "ktuberling-data": "usr/share/ktuberling/sounds/*/*.*",
}
HEDGEWARS_VOICES = "usr/share/games/hedgewars/Data/Sounds/voices"
# Hedgewars voice-pack lines that are words; grunts, screams, laughs, coughs and jump
# noises are left out, as are the sung "Singer" and processed "Robot" packs.
HEDGEWARS_PHRASES = (
    "Amazing", "Boring", "Brilliant", "Bugger", "Byebye", "Comeonthen", "Coward", "Cutitout", "Drat", "Enemydown",
    "Excellent", "Fire", "Firstblood", "Flawless", "Flyaway", "Gonnagetyou", "Grenade", "Hello", "Hurry", "Illgetyou",
    "Incoming", "Justyouwait", "Kamikaze", "Leavemealone", "Melon", "Missed", "Nutter", "Ohdear", "Oops",
    "Reinforcements", "Revenge", "Runaway", "Sameteam", "Solong", "Stupid", "Takecover", "Thisoneismine", "Traitor",
    "Victory", "Watchit", "Watchthis", "Whatthe", "Yessir", "Youllregretthat",
)  # fmt: skip
HEDGEWARS_EXCLUDED_PACKS = ("Robot", "Singer")
# Which packages feed each split; tiny uses only the first of each list (the smallest
# downloads that still give every split both labels).
MUSIC_SPEECH_SOURCES = {
    "train": {"music": ("warzone2100-music", "wesnoth-1.16-music", "supertux-data"),
              "speech": ("fillets-ng-data-nl", "fillets-ng-data-cs")},
    "valid": {"music": ("singularity-music",), "speech": ("ktuberling-data",)},
    "test": {"music": ("colobot-common-sounds", "hedgewars-data"), "speech": ("klettres-data", "hedgewars-data")},
}  # fmt: skip
MUSIC_SPEECH_CLIP = 5.0
MUSIC_SPEECH_PER_LABEL = {
    "tiny": {"train": 4, "valid": 2, "test": 2},
    "full": {"train": 150, "valid": 45, "test": 45},
}
# Music: tracks shorter than this are jingles; excerpts avoid the first and last seconds
# (fades) and any excerpt quieter than MUSIC_MIN_DB (a pause) is redrawn.
MIN_TRACK = 20.0
TRACK_MARGIN = 5.0
MUSIC_MIN_DB = -45.0
MUSIC_DRAWS = 20
# Speech: utterances joined with natural pauses, the excerpt starting up to 0.5 s in.
SPEECH_GAP_RANGE = (0.15, 0.6)
SPEECH_MAX_LEAD = 0.5
MUSIC_SPEECH_SNR = (25.0, 45.0)
LEVEL_DB_RANGE = (-32.0, -18.0)


def music_tracks(packages: _Packages, package: str) -> list[Path]:
    """The package's soundtrack files of at least MIN_TRACK seconds, sorted."""
    import soundfile as sf

    root = packages.root(package)
    tracks = [p for p in sorted(root.glob(MUSIC_GLOBS[package])) if sf.info(str(p)).duration >= MIN_TRACK]
    if not tracks:
        raise SuiteSourceError(f"{package}: no music matching {MUSIC_GLOBS[package]} under {root}")
    return tracks


def speech_folders(packages: _Packages, package: str) -> list[list[Path]]:
    """The package's utterance files grouped by folder (one speaker each): sorted lists, sorted."""
    root = packages.root(package)
    if package == "hedgewars-data":
        packs = sorted(
            p for p in (root / HEDGEWARS_VOICES).iterdir() if p.is_dir() and p.name not in HEDGEWARS_EXCLUDED_PACKS
        )
        folders = [[p / f"{w}.ogg" for w in HEDGEWARS_PHRASES if (p / f"{w}.ogg").is_file()] for p in packs]
    else:
        by_folder: dict[Path, list[Path]] = {}
        for path in sorted(root.glob(SPEECH_GLOBS[package])):
            if path.suffix in (".ogg", ".wav", ".opus"):
                by_folder.setdefault(path.parent, []).append(path)
        folders = [by_folder[f] for f in sorted(by_folder)]
    folders = [f for f in folders if f]
    if not folders:
        raise SuiteSourceError(f"{package}: no speech recordings found under {root}")
    return folders


def music_excerpt(tracks: list[Path], k: int, rng: np.random.Generator) -> np.ndarray:
    """The k-th excerpt of a package: MUSIC_SPEECH_CLIP s of track k mod n at a random offset."""
    import soundfile as sf

    for draw in range(MUSIC_DRAWS):
        track = tracks[(k + draw) % len(tracks)]
        duration = sf.info(str(track)).duration
        margin = min(TRACK_MARGIN, (duration - MUSIC_SPEECH_CLIP) / 2)
        x = load_segment(track, rng.uniform(margin, duration - MUSIC_SPEECH_CLIP - margin), MUSIC_SPEECH_CLIP)
        if _rms_db(x) > MUSIC_MIN_DB:
            return x
    raise SuiteSourceError(
        f"no excerpt louder than {MUSIC_MIN_DB} dBFS in {MUSIC_DRAWS} draws near {tracks[k % len(tracks)]}"
    )


def speech_excerpt(folders: list[list[Path]], rng: np.random.Generator) -> np.ndarray:
    """MUSIC_SPEECH_CLIP s of consecutive utterances of one speaker, pauses of 0.15-0.6 s between."""
    folder = folders[rng.integers(len(folders))]
    i = int(rng.integers(len(folder)))
    lead = round(rng.uniform(0, SPEECH_MAX_LEAD) * SAMPLE_RATE)
    n = round(MUSIC_SPEECH_CLIP * SAMPLE_RATE)
    pieces, total, empty = [], 0, 0
    while total < lead + n:
        utterance = trim_silence(load(folder[i % len(folder)]))
        i += 1
        empty = empty + 1 if len(utterance) == 0 else 0
        if empty > len(folder):
            raise SuiteSourceError(f"every recording in {folder[0].parent} is silent")
        gap = np.zeros(round(rng.uniform(*SPEECH_GAP_RANGE) * SAMPLE_RATE))
        pieces += [utterance, gap]
        total += len(utterance) + len(gap)
    return fit(np.concatenate(pieces)[lead:], n)


def build_music_speech(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Music vs speech: is a 5 s excerpt of a real recording music or speech.

    Measures the coarsest content distinction across sources (GTZAN music/speech style),
    with both classes taken from games so that production style does not give the answer.
    Labels (2): music speech.
    Sources: music, game soundtracks (warzone2100-music, wesnoth-1.16-music, supertux-data,
    singularity-music, colobot-common-sounds, hedgewars-data), tracks of 20 s or more,
    excerpts at seeded offsets away from the ends, redrawn if quieter than -45 dBFS;
    speech, recorded game dialogue and teaching-software words (fillets-ng-data-nl/-cs,
    ktuberling-data, klettres-data, the word lines of hedgewars-data's voice packs), one
    speaker's consecutive utterances joined with 0.15-0.6 s pauses.
    Split rule: by package (hedgewars-data gives both labels, in test only):
    train warzone2100, wesnoth, supertux / fillets nl+cs; valid singularity / ktuberling;
    test colobot, hedgewars / klettres, hedgewars. Each label's clips are shared equally by
    its packages in a split; tiny uses only the first package of each list.
    Each clip: coloured noise 25-45 dB below the signal (no digital silence in either
    class), RMS -32 to -18 dBFS.
    Size: full, 2 x (150 train, 45 valid, 45 test) = 480 clips of 5 s = 40 min; tiny,
    2 x (4, 2, 2) = 16 clips = 1.3 min.
    """
    check_suite(suite)
    packages = _Packages()
    labels: dict[str, dict[str, list[str]]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "music-speech", split)
        plan = []  # (label, package, index of the clip within its package, clip seed)
        for label in ("music", "speech"):
            sources = MUSIC_SPEECH_SOURCES[split][label][: 1 if suite == "tiny" else None]
            for k in range(MUSIC_SPEECH_PER_LABEL[suite][split]):
                plan.append((label, sources[k % len(sources)], k // len(sources), int(rng.integers(2**32))))
        order = rng.permutation(len(plan))
        used = {label: sorted({p for lab, p, _, _ in plan if lab == label}) for label in ("music", "speech")}
        tracks = {p: music_tracks(packages, p) for p in used["music"]}
        folders = {p: speech_folders(packages, p) for p in used["speech"]}
        labels[split], groups[split] = {}, {}
        for index, i in enumerate(order):
            label, package, k, seed = plan[i]
            clip_rng = np.random.default_rng(seed)
            if label == "music":
                x = music_excerpt(tracks[package], k, clip_rng)
            else:
                x = speech_excerpt(folders[package], clip_rng)
            snr, beta = clip_rng.uniform(*MUSIC_SPEECH_SNR), clip_rng.uniform(*NOISE_BETA_RANGE)
            level = clip_rng.uniform(*LEVEL_DB_RANGE)
            name = f"{split}-{index:05d}.wav"
            audio[(split, name)] = set_level(add_noise(clip_rng, x, snr, beta), level)
            labels[split][name] = [label]
            groups[split][name] = [package]
    return write_suite_task(
        tasks_dir, suite, "music-speech", "scene", "multiclass", MUSIC_SPEECH_CLIP, ["top1_acc"],
        ["music", "speech"], labels, audio, groups, packages.versions,
    )  # fmt: skip


# --------------------------------------------------------------------------- sound events

EVENT_CLIP = 10.0
EVENTS_PER_CLIP = (3, 8)
EVENT_CLIPS = {
    "tiny": {"train": 6, "valid": 3, "test": 3},
    "full": {"train": 120, "valid": 40, "test": 40},
}
# Sources shorter than this (after trimming at -40 dB) are not used: the kit's event
# decoder drops predicted events shorter than 125-250 ms, so they could never be found.
MIN_EVENT = 0.15
MAX_EVENT = 4.0
EVENT_TAPE_RANGE = (0.94, 1.06)  # +-1 semitone
# Event level over the background's RMS, in dB, measured over the event's own length.
EVENT_SNR_RANGE = (0.0, 15.0)
# The background: an ambience loop of the split (when it has one) with this chance, with
# coloured noise 10-30 dB below it, else coloured noise alone.
AMBIENCE_CHANCE = 0.75
AMBIENCE_NOISE_DB = (10.0, 30.0)
LOOP_FADE = SAMPLE_RATE // 10
EVENT_LEVEL_DB_RANGE = (-30.0, -18.0)
# Two events of one class never overlap: same-class overlaps have no agreed annotation.
EVENT_DRAWS = 1000


@dataclass
class _EventPool:
    """One split's sources: label -> group -> one-shot files, and (group, loop file) backgrounds."""

    shots: dict[str, dict[str, list[Path]]]
    backgrounds: list[tuple[str, Path]]


def event_pools(packages: _Packages) -> dict[str, _EventPool]:
    """Every split's event sources (data/sounds_events.json and the drum kits), all sorted."""
    spec = _data("sounds_events.json")
    pools = {split: _EventPool({label: {} for label in spec["classes"]}, []) for split in SPLITS}
    for split, shots in drum_oneshots(packages).items():
        for shot in shots:
            if shot.label in spec["drum_classes"]:
                pools[split].shots[spec["drum_classes"][shot.label]].setdefault(shot.group, []).append(shot.path)
    for package, p in sorted(spec["packages"].items()):
        pool, root = pools[p["split"]], packages.root(package) / p["root"]
        for label, files in sorted(p.get("files", {}).items()):
            pool.shots[label].setdefault(package, []).extend(_existing(root, f, package) for f in files)
        for label, globs in sorted(p.get("globs", {}).items()):
            found = sorted({path for g in globs for path in root.glob(g) if path.is_file()})
            if not found:
                raise SuiteSourceError(f"{package}: nothing matches {globs} under {root}")
            pool.shots[label].setdefault(package, []).extend(found)
        if p.get("voice_pack_lines"):
            folders = speech_folders(packages, package)
            pool.shots["speech"].setdefault(package, []).extend(f for folder in folders for f in folder)
        pool.backgrounds += [(package, _existing(root, f, package)) for f in p.get("backgrounds", [])]
    for split, pool in pools.items():
        for label, by_group in pool.shots.items():
            if not by_group:
                raise SuiteSourceError(f"sound-events: no source of {label!r} for split {split}")
            for group in by_group:
                by_group[group] = sorted(set(by_group[group]))
    return pools


def event_sound(path: Path, factor: float) -> np.ndarray:
    """A one-shot at tape speed `factor`, silence trimmed (40 dB below its loudest 10 ms),
    cut to at most MAX_EVENT s: float64, shape (n_samples,)."""
    x = trim_silence(tape(load(path), factor))
    return fit(x, round(MAX_EVENT * SAMPLE_RATE)) if len(x) > MAX_EVENT * SAMPLE_RATE else x


def loop(x: np.ndarray, n: int, start: int) -> np.ndarray:
    """`x` played as a loop from sample `start` for n samples, joins cross-faded over LOOP_FADE."""
    fade = min(LOOP_FADE, len(x) // 4)
    ramp = np.linspace(0.0, 1.0, fade)
    body = x[: len(x) - fade].copy()
    body[:fade] = x[:fade] * ramp + x[len(x) - fade :] * (1 - ramp)  # the tail fades into the head
    reps = -(-(start % len(body) + n) // len(body))
    return np.tile(body, reps)[start % len(body) : start % len(body) + n]


@dataclass(frozen=True)
class _PlannedEvent:
    label: str
    group: str
    path: Path
    onset: int
    tape: float
    snr_db: float
    length: int


def _plan_clip(pool: _EventPool, rng: np.random.Generator) -> tuple[list[_PlannedEvent], tuple[str, Path] | None, dict]:
    """Draw one clip's events (class, group, file, onset, tape factor, SNR) and background."""
    n = round(EVENT_CLIP * SAMPLE_RATE)
    labels = sorted(pool.shots)
    events: list[_PlannedEvent] = []
    wanted = int(rng.integers(EVENTS_PER_CLIP[0], EVENTS_PER_CLIP[1] + 1))
    for _ in range(EVENT_DRAWS):
        if len(events) == wanted:
            break
        label = labels[rng.integers(len(labels))]
        groups = sorted(pool.shots[label])
        group = groups[rng.integers(len(groups))]
        path = pool.shots[label][group][rng.integers(len(pool.shots[label][group]))]
        factor, snr = float(rng.uniform(*EVENT_TAPE_RANGE)), float(rng.uniform(*EVENT_SNR_RANGE))
        onset = int(rng.integers(0, n - round(MIN_EVENT * SAMPLE_RATE)))
        # Redraw sources too short to be found and events that would overlap one of their class.
        length = min(len(event_sound(path, factor)), n - onset)
        if length < MIN_EVENT * SAMPLE_RATE or any(
            e.label == label and onset < e.onset + e.length and e.onset < onset + length for e in events
        ):
            continue
        events.append(_PlannedEvent(label, group, path, onset, factor, snr, length))
    if len(events) < wanted:
        raise SuiteSourceError(f"sound-events: could not place {wanted} events in {EVENT_DRAWS} draws")
    background = None
    if pool.backgrounds and rng.uniform() < AMBIENCE_CHANCE:
        background = pool.backgrounds[rng.integers(len(pool.backgrounds))]
    mix = {
        "loop_start": float(rng.uniform()),
        "noise_db": float(rng.uniform(*AMBIENCE_NOISE_DB)),
        "beta": float(rng.uniform(*NOISE_BETA_RANGE)),
        "level_db": float(rng.uniform(*EVENT_LEVEL_DB_RANGE)),
        "seed": int(rng.integers(2**32)),
    }
    return events, background, mix


def render_clip(
    events: list[_PlannedEvent], background: tuple[str, Path] | None, mix: dict
) -> tuple[np.ndarray, list[Event]]:
    """A planned clip's audio, shape (EVENT_CLIP * SAMPLE_RATE,), and its events sorted by onset.

    An event runs from its onset to where its sound has decayed 40 dB below its loudest
    10 ms (or MAX_EVENT s, or the clip's end).
    """
    n = round(EVENT_CLIP * SAMPLE_RATE)
    rng = np.random.default_rng(mix["seed"])
    noise = coloured_noise(rng, n, mix["beta"])
    if background is None:
        bed = noise
    else:
        ambience = load(background[1])
        ambience = loop(ambience, n, round(mix["loop_start"] * len(ambience)))
        ambience = ambience / max(np.sqrt(np.mean(ambience**2)), 1e-9)
        bed = ambience + 10 ** (-mix["noise_db"] / 20) * noise
    bed = bed / np.sqrt(np.mean(bed**2))  # unit RMS: event SNRs are then event levels
    out = bed.copy()
    labelled = []
    for e in events:
        sound = fit(event_sound(e.path, e.tape), e.length)  # cut (with a fade) at the clip's end
        rms = np.sqrt(np.mean(sound**2))
        out[e.onset : e.onset + e.length] += sound * (10 ** (e.snr_db / 20) / rms)
        labelled.append(Event(e.label, e.onset * 1000 / SAMPLE_RATE, (e.onset + e.length) * 1000 / SAMPLE_RATE))
    labelled.sort(key=lambda ev: (ev.start_ms, ev.label))
    return set_level(out, mix["level_db"]), labelled


def build_sound_events(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Sound event detection: which sounds occur when, in 10 s clips (DCASE 2016 task 2 style).

    Measures whether an embedding's frames locate and identify short real sounds over
    real ambience: 3-8 events per clip at known onsets, overlapping freely except that two
    events of one class never overlap. Labels (9): bell clap cymbal explosion hihat kick
    snare speech tom; each event runs from its onset to where its sound has decayed 40 dB
    below its loudest 10 ms (at most 4 s, or the clip's end).
    Sources (data/sounds_events.json): drums, the hydrogen-drumkits layers of
    data/sounds_drums.json (crash and ride as cymbal), lmms-common and sonic-pi-samples
    drum samples; explosions and bells, hand-picked sound effects of lmms-common,
    wesnoth-1.16-data, supertux-data, sonic-pi-samples and hedgewars-data; speech, single
    utterances of ktuberling-data, klettres-data and hedgewars-data's voice packs;
    backgrounds, ambience loops (wesnoth birds, campfire, night, ship; supertux rain and
    waterfall; sonic-pi vinyl hiss) or coloured noise. Sources shorter than 250 ms are not
    used (the kit's decoder drops shorter events).
    Split rule: by package, and by kit author for the drum kits as in drum-hits: train
    lmms-common, wesnoth-1.16-data, ktuberling-data + train kits; valid supertux-data,
    klettres-data + valid kits; test sonic-pi-samples, hedgewars-data + test kits. Every
    label has sources in every split.
    Each event: class drawn uniformly, then a source group, then a file; tape speed
    x0.94-1.06; level 0-15 dB over the background's RMS. Each clip: the background at unit
    RMS, then the mix at RMS -30 to -18 dBFS.
    Size: full, 120 train + 40 valid + 40 test = 200 clips of 10 s = 33 min; tiny, 6 + 3 +
    3 = 12 clips = 2 min.
    """
    check_suite(suite)
    packages = _Packages()
    pools = event_pools(packages)
    labels: dict[str, dict[str, list[Event]]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "sound-events", split)
        labels[split], groups[split] = {}, {}
        for index in range(EVENT_CLIPS[suite][split]):
            events, background, mix = _plan_clip(pools[split], rng)
            name = f"{split}-{index:05d}.wav"
            audio[(split, name)], labels[split][name] = render_clip(events, background, mix)
            used = {e.group for e in events} | ({background[0]} if background else set())
            groups[split][name] = sorted(used)
    return write_suite_task(
        tasks_dir, suite, "sound-events", "event", "multilabel", EVENT_CLIP,
        ["event_onset_200ms_fms", "segment_1s_er"], _data("sounds_events.json")["classes"],
        labels, audio, groups, packages.versions,
    )  # fmt: skip

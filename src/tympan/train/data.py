"""`tympan train data`: generated training audio with exact labels, for tympan's own encoder.

    tympan train data --out DIR --hours H [--seed S] [--kinds speech,music,events,noise,mix] [--suite SUITE_DIR]

Every clip is CLIP_SECONDS of 16 kHz mono audio made by the offline suite's own generators
(tympan.suite.speech, .music, .sounds) from the sources of the suite's TRAIN split only,
and labelled by construction. Kinds (default shares of the hours in SHARES):

    speech  espeak-ng: its language voices that read their own words (language_pools: 104 of
            130) x the suite's train variants; random sentences (the suite's word pools),
            phonemes from espeak-ng --ipa
    music   the train sound sets (FluidR3_GM, FluidR3Mono_GM, MuseScore_General) playing
            music21 scores of the train works or random polyphony (the suite's note-onsets clips)
    events  the suite's sound-events clips from its train packages and drum kits, less any
            package another task holds out (ktuberling-data: music-speech's valid speech)
    noise   ambience loops of the train packages and coloured noise, no events
    mix     a speech clip over a music clip (speech-to-music ratio -5..10 dB)

Each clip is stored clean (what teachers see) and augmented (what the student sees,
tympan.train.augment: speed, pitch, VTLP, room, noise, band limits, tilt, codec), with one
labels file:

    DIR/<kind>/<id>.wav      clean audio, PCM 16-bit, CLIP_SECONDS
    DIR/<kind>/<id>.aug.wav  augmented audio, PCM 16-bit, CLIP_SECONDS / speed
    DIR/<kind>/<id>.npz      labels (below); written last, so its presence marks a finished clip
    DIR/settings.json        what was asked (hours, seed, kinds, counts, languages, vocabularies,
                             package versions): a rerun with other settings is refused
    DIR/manifest.json        SHA-256 and size of every file above, sorted by path
    DIR/build.json           clips, hours and seconds per kind (what varies between runs)

The .npz (numpy, no pickles) holds, for the clean clip's frames (n = n_samples // 320 + 1,
frame k centred on k * 20 ms) and, prefixed "aug_", for the augmented clip's frames:

    activity      uint8 (n, 3)   speech, music, noise sounding (ACTIVITY)
    piano_roll    uint8 (n, 88)  MIDI keys 21..108 sounding (note-on to note-off)
    onsets        uint8 (n, 88)  a key's note starts nearest this frame's centre
    pitch_midi    float32 (n,)   the key when exactly one key sounds, else NaN
    f0_hz         float32 (n,)   440 * 2 ** ((pitch_midi - 69) / 12)
    family        uint8 (n, 11)  instrument families sounding (music.FAMILIES)
    event_roll    uint8 (n, 9)   sound-event classes sounding (EVENT_CLASSES)
    event_onsets  uint8 (n, 9)   an event of the class starts nearest this frame's centre

and the exact truth in milliseconds of the clean clip, from which both views are made:
notes float64 (k, 4) [onset, offset, MIDI key, family index], events float64 (k, 3) [onset,
offset, class index], speech float64 (k, 2) [start, end] of voiced stretches; language
int16 () (index into settings.json "languages", -1 without speech); rt60_s and snr_db
float64 () of the augmented view (0 s without a room); meta: a JSON string with the clip's
id, kind, source groups, text, phonemes (espeak-ng IPA, one string per clip, for CTC;
language-switch marks removed and counted in language_switches), voice, description and
augmentation recipe. Teacher targets computed on the clean clip map
to the augmented one with augment.warp_frames(targets, recipe speed, n_aug_frames).

Held-out guard: before any audio is made, every source group the plan would use (voice,
sound set, score, kit, package) is checked against the groups that the suite's split rules
put in valid or test, and, with --suite, against the source_groups of every valid and test
file in the built suite's task_metadata.json; one match stops the build naming the group
and the task. Determinism: clip i of a kind draws from a generator seeded by
sha256(seed, kind, i) alone, so a build, a resumed build and a partial build give the same
bytes for the same package versions.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from tympan.audio import HOP_MS, SAMPLE_RATE, n_frames
from tympan.checksum import file_digests
from tympan.io import atomic_write, atomic_write_json
from tympan.suite import music, sounds, speech
from tympan.suite.dsp import TRIM_DB, TRIM_FRAME, set_level
from tympan.suite.sources import SuiteSourceError
from tympan.train import augment

FORMAT_VERSION = 1
CLIP_SECONDS = 10.0
CLIP_SAMPLES = round(CLIP_SECONDS * SAMPLE_RATE)
KINDS = ("speech", "music", "events", "noise", "mix")
# A clip's two views and the audio file of each: the clean one (what teachers hear) and the
# augmented one (what the student hears).
VIEWS = ("augmented", "clean")
VIEW_SUFFIX = {"clean": ".wav", "augmented": ".aug.wav"}
SHARES = {"speech": 0.40, "music": 0.25, "events": 0.15, "noise": 0.10, "mix": 0.10}
ACTIVITY = ("speech", "music", "noise")
EVENT_CLASSES = tuple(sounds._data("sounds_events.json")["classes"])
N_KEYS = len(music.MIDI_PITCHES)
# Speech: words per sentence (fewer when the utterance does not fit), silence before it (s).
SPEECH_WORDS = (6, 25)
SPEECH_LEAD = (0.1, 1.0)
SPEECH_TAIL = 0.1
CLEAN_LEVEL_DB = -23.0  # RMS of clean speech, noise and mix clips (music and events keep the suite's levels)
MIN_LANGUAGE_WORDS = 100  # a language voice needs this many words in its pools to be used
# A language voice is used when espeak-ng switches to another language's rules for at most
# this share of the words of a PROBE_WORDS-word probe sentence.
PROBE_WORDS = 40
MAX_SWITCH_SHARE = 0.1
SWITCH_MARK = re.compile(r"\([a-z]{2,3}(?:-[a-z0-9]+)*\)")
# Noise clips: an ambience loop of the train packages with this chance, else coloured noise.
AMBIENCE_CHANCE = 0.5
MIX_SMR_DB = (-5.0, 10.0)  # speech-to-music ratio of mix clips
# What of a clip's truth goes into its meta JSON, where the clip has it.
META_KEYS = ("text", "phonemes", "language_switches", "voice", "language", "description")


class TrainDataError(ValueError):
    """A usage error: bad options, or an output folder built with other settings."""


class HeldOutError(TrainDataError):
    """The plan would use a source group that the offline suite holds out for valid or test."""


# --------------------------------------------------------------------------- sources


def _script(language: str) -> str | None:
    """The script of a language's CLDR language names (first word of their letters' Unicode
    names, e.g. "CYRILLIC"), or None when babel does not know the language."""
    import unicodedata
    from collections import Counter

    from babel import Locale, UnknownLocaleError

    try:
        names = Locale.parse(language).languages.values()
    except (UnknownLocaleError, ValueError):
        return None
    letters = Counter(unicodedata.name(c, "?").split()[0] for n in names for c in n if c.isalpha())
    return letters.most_common(1)[0][0] if letters else None


def espeak_languages() -> list[str]:
    """espeak-ng's language voices that `-v` accepts by their language name (e.g. "en-us",
    "pt-br"; not "chr-US-Qaaa-x-west"), sorted and unique."""
    listing = subprocess.run(["espeak-ng", "--voices"], check=True, capture_output=True, text=True).stdout
    names = sorted({line.split()[1] for line in listing.splitlines()[1:] if line.strip()})
    def accepted(name: str) -> bool:
        return subprocess.run(["espeak-ng", "-q", "-v", name, ""], capture_output=True).returncode == 0

    return [name for name in names if accepted(name)]


def _usable(language: str) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The word pools of an espeak-ng language voice, or None when it is left out: babel does
    not know it, its pools hold under MIN_LANGUAGE_WORDS words, espeak-ng fails on its text
    (1.51 crashes on Burmese), or reads more than MAX_SWITCH_SHARE of a probe sentence's
    words with another language's rules (it marks the switch, e.g. "(en)"): such clips
    would teach the wrong language."""
    base = language.split("-")[0]
    script = _script(base)
    if script is None:
        return None
    frequent, names = speech.word_pools(base, script)
    if len(frequent) + len(names) < MIN_LANGUAGE_WORDS:
        return None
    probe = speech.sentence(clip_rng(0, f"probe/{language}", 0), frequent, names, PROBE_WORDS)
    try:
        switches = _phonemes(speech.Voice("espeak-ng", language), probe)[1]
    except RuntimeError:
        return None
    return (frequent, names) if switches <= MAX_SWITCH_SHARE * PROBE_WORDS else None


@lru_cache(maxsize=1)
def language_pools() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """{espeak-ng language voice: (frequent words, name words)} of the voices speech clips use."""
    languages = espeak_languages()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # the work is in espeak-ng
        usable = list(pool.map(_usable, languages))
    return {language: pools for language, pools in zip(languages, usable) if pools is not None}


class Sources:
    """What the plan draws from: the suite's train-split sources of the kinds asked for.

    Each is loaded on first use; `versions` collects the package versions of what was loaded.
    """

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self.versions: dict[str, str] = {}

    @cached_property
    def speech(self) -> tuple[list[str], dict[str, tuple], list[str]]:
        """(language voices, {language voice: word pools}, train variants)."""
        speech.require_commands(espeak_ng="espeak-ng")
        pools = language_pools()
        self.versions.update(speech.engine_versions())
        return sorted(pools), pools, speech.split_variants("train")

    @cached_property
    def music(self) -> tuple[music._SoundSets, list[music.SoundSet], list[music.Score]]:
        """(sound sets, the train sets, the train split's scores)."""
        music._require_engines()
        sets = music._SoundSets()
        by_split = music.scores()
        self.versions.update(sets.versions)
        self.versions.update(music.engine_versions())
        self.versions["music21 (PyPI)"] = music._import("music21", "music21").__version__
        train = [s for c in music.SCORE_COLLECTIONS for s in by_split["train"][c]]
        return sets, sets.of_split("train"), train

    @cached_property
    def events(self) -> dict[str, sounds._EventPool]:
        """The suite's sound-event pools of every split (train is drawn from, the others guard)."""
        packages = sounds._Packages()
        pools = sounds.event_pools(packages)
        self.versions.update(packages.versions)
        return pools

    @cached_property
    def train_events(self) -> sounds._EventPool:
        """sound-events' train pool less every group another task holds out: ktuberling-data is
        train in sound-events but valid in music-speech, so its speech is not used (the event
        class "speech" then has no source and is left out of events clips)."""
        held = held_out_by_rule(self)
        pool = self.events["train"]
        shots = {
            label: kept
            for label, by_group in pool.shots.items()
            if (kept := {group: files for group, files in by_group.items() if group not in held})
        }
        return sounds._EventPool(shots, [(g, path) for g, path in pool.backgrounds if g not in held])

    def python_versions(self) -> dict[str, str]:
        """Versions of the Python packages (and libsndfile) whose output enters the clips."""
        import importlib.metadata as md

        import soundfile

        names = ("numpy", "scipy", "soxr", "soundfile", "pyroomacoustics", "librosa", "wordfreq", "babel", "num2words")
        got = {f"{n} (PyPI)": md.version(n) for n in names}
        got["libsndfile"] = soundfile.__libsndfile_version__
        return got


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class SpeechPlan:
    voice: speech.Voice
    language: str
    text: str
    rate: float
    lead_s: float


@dataclass(frozen=True)
class MusicPlan:
    clip: music.PolyClip


@dataclass(frozen=True)
class EventsPlan:
    events: tuple
    background: tuple[str, Path] | None
    mix: dict


@dataclass(frozen=True)
class MixPlan:
    speech: SpeechPlan
    music: MusicPlan
    smr_db: float


@dataclass(frozen=True)
class ClipPlan:
    """One clip: its kind, index, the source groups it uses, what to render and how to augment it."""

    kind: str
    index: int
    groups: tuple[str, ...]
    spec: SpeechPlan | MusicPlan | EventsPlan | MixPlan
    recipe: augment.Recipe

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.index:06d}"


def clip_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The generator of clip `index` of `kind`, seeded by these alone (order-free, resumable)."""
    key = hashlib.sha256(f"{__name__}/{seed}/{kind}/{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(key[:8], "little"))


def _plan_speech(sources: Sources, rng: np.random.Generator) -> SpeechPlan:
    languages, pools, variants = sources.speech
    language = languages[rng.integers(len(languages))]
    voice = speech.Voice("espeak-ng", f"{language}+{variants[rng.integers(len(variants))]}")
    text = speech.sentence(rng, *pools[language], int(rng.integers(*SPEECH_WORDS)))
    return SpeechPlan(voice, language, text, speech.draw_rate(rng), float(rng.uniform(*SPEECH_LEAD)))


def _plan_music(sources: Sources, rng: np.random.Generator) -> MusicPlan:
    sets, train_sets, scores = sources.music
    while True:
        sound_set = train_sets[rng.integers(len(train_sets))]
        available = sets.programs(sound_set, pitched=True)
        if rng.uniform() < 0.5:
            clip = music.score_clip(scores[rng.integers(len(scores))], sound_set, available, rng)
        else:
            clip = music.random_clip(sound_set, available, rng)
        if clip is not None and clip.notes:
            return MusicPlan(clip)


def _plan_noise(sources: Sources, rng: np.random.Generator) -> EventsPlan:
    backgrounds = sources.train_events.backgrounds
    background = backgrounds[rng.integers(len(backgrounds))] if rng.uniform() < AMBIENCE_CHANCE else None
    mix = {
        "loop_start": float(rng.uniform()),
        "noise_db": float(rng.uniform(*sounds.AMBIENCE_NOISE_DB)),
        "beta": float(rng.uniform(*sounds.NOISE_BETA_RANGE)),
        "level_db": CLEAN_LEVEL_DB,
        "seed": int(rng.integers(2**32)),
    }
    return EventsPlan((), background, mix)


def _groups(spec) -> tuple[str, ...]:
    if isinstance(spec, SpeechPlan):
        return (spec.voice.group,)
    if isinstance(spec, MusicPlan):
        return spec.clip.groups
    if isinstance(spec, MixPlan):
        return tuple(sorted({*_groups(spec.speech), *_groups(spec.music)}))
    used = {e.group for e in spec.events} | ({spec.background[0]} if spec.background else set())
    return tuple(sorted(used))


def plan_clip(sources: Sources, seed: int, kind: str, index: int) -> ClipPlan:
    """Draw clip `index` of `kind`: its sources, content and augmentation (no audio yet)."""
    rng = clip_rng(seed, kind, index)
    if kind == "speech":
        spec = _plan_speech(sources, rng)
    elif kind == "music":
        spec = _plan_music(sources, rng)
    elif kind == "events":
        events, background, mix = sounds._plan_clip(sources.train_events, rng)
        spec = EventsPlan(tuple(events), background, mix)
    elif kind == "noise":
        spec = _plan_noise(sources, rng)
    elif kind == "mix":
        spec = MixPlan(_plan_speech(sources, rng), _plan_music(sources, rng), float(rng.uniform(*MIX_SMR_DB)))
    else:
        raise TrainDataError(f"unknown kind {kind!r}; choose from {','.join(KINDS)}")
    recipe = augment.draw_recipe(rng, kind)
    return ClipPlan(kind, index, _groups(spec), spec, recipe)


def clip_counts(hours: float, kinds: tuple[str, ...]) -> dict[str, int]:
    """Clips per kind: the kinds' SHARES of `hours`, renormalised, at least one clip each."""
    total = sum(SHARES[k] for k in kinds)
    return {k: max(1, round(hours * 3600 * SHARES[k] / total / CLIP_SECONDS)) for k in kinds}


# --------------------------------------------------------------------------- held-out guard


def held_out_by_rule(sources: Sources) -> dict[str, str]:
    """{source group: where the suite uses it} for every group the suite's split rules put in
    valid or test, for the kinds of `sources`."""
    held: dict[str, str] = {}
    if {"speech", "mix"} & set(sources.kinds):
        for variant in speech.espeak_variants():
            split = speech.variant_split(variant)
            if split != "train":
                held[f"espeak-ng:{variant}"] = f"keywords, language and speaker-count ({split}, variant_split)"
        for voice in speech.FLITE_VOICES:
            held[f"flite:{voice}"] = "keywords, language and speaker-count (test voices)"
        for voice in speech.FESTIVAL_VOICES:
            held[f"festival:{voice}"] = "keywords, language and speaker-count (test voices)"
    if {"music", "mix"} & set(sources.kinds):
        for group, split in music.GROUP_SPLIT.items():
            if split != "train":
                held[f"soundset:{group}"] = f"pitch, instrument and note-onsets ({split}, GROUP_SPLIT)"
        for split, by_collection in music.scores().items():
            if split != "train":
                for score in (s for scores in by_collection.values() for s in scores):
                    held[f"score:{score.group}"] = f"note-onsets ({split}, score_split)"
    if {"events", "noise"} & set(sources.kinds):
        for split in ("valid", "test"):
            pool = sources.events[split]
            for group in {g for by_group in pool.shots.values() for g in by_group} | {g for g, _ in pool.backgrounds}:
                held[group] = f"sound-events and drum-hits ({split}, sounds_events.json / sounds_drums.json)"
    for split in ("valid", "test"):
        for packages in sounds.MUSIC_SPEECH_SOURCES[split].values():
            for package in packages:
                held[package] = f"music-speech ({split}, MUSIC_SPEECH_SOURCES)"
    return held


def held_out_in_suite(suite_dir: str | Path) -> dict[str, str]:
    """{source group: "task (split)"} of every valid and test file in a built suite's
    task_metadata.json files ("source_groups": {split: {file: [group, ...]}})."""
    paths = sorted(Path(suite_dir).glob("*/task_metadata.json"))
    if not paths:
        raise TrainDataError(
            f"--suite {suite_dir}: no task folder with a task_metadata.json there; pass the folder that "
            "`tympan tasks build --out DIR` wrote"
        )
    held: dict[str, str] = {}
    for path in paths:
        meta = json.loads(path.read_text(encoding="utf-8"))
        for split in ("valid", "test"):
            for groups in meta.get("source_groups", {}).get(split, {}).values():
                for group in groups:
                    held.setdefault(group, f"{meta['task_name']} ({split})")
    return held


def check_held_out(plan: list[ClipPlan], held: dict[str, str]) -> None:
    """HeldOutError naming the first clip, group and task if any clip uses a held-out group."""
    bad = [(clip, g) for clip in plan for g in clip.groups if g in held]
    if bad:
        clip, group = bad[0]
        raise HeldOutError(
            f"clip {clip.id} would use source group {group!r}, which the offline suite holds out for "
            f"{held[group]} ({len(bad)} use(s) of held-out groups in the plan); training data must come "
            "from the suite's train sources only: fix the source lists in tympan/train/data.py"
        )


# --------------------------------------------------------------------------- rendering


def _phonemes(voice: speech.Voice, text: str) -> tuple[str, int]:
    """espeak-ng's IPA for `text` in `voice`, its clause lines joined by spaces, without its
    language-switch marks ("(en)" where it reads a word with another language's rules), and
    the number of switches."""
    done = subprocess.run(["espeak-ng", "-q", "--ipa", "-v", voice.name, text], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"espeak-ng --ipa failed for voice {voice.name!r}: {done.stderr.strip()[-300:]}")
    ipa = " ".join(line.strip() for line in done.stdout.splitlines() if line.strip())
    switches = SWITCH_MARK.findall(ipa)
    return SWITCH_MARK.sub("", ipa), len(switches) // 2  # a switch away and back are two marks


def voiced_segments(x: np.ndarray, offset: int) -> np.ndarray:
    """(start, end) ms of the runs of 10 ms frames of `x` within TRIM_DB of its loudest,
    shifted by `offset` samples: float64 (k, 2)."""
    n = len(x) // TRIM_FRAME
    energy = (x[: n * TRIM_FRAME].reshape(n, TRIM_FRAME) ** 2).mean(axis=1)
    active = np.concatenate([[False], energy > energy.max() * 10 ** (-TRIM_DB / 10), [False]])
    edges = np.flatnonzero(np.diff(active.astype(np.int8)))
    runs = edges.reshape(-1, 2) * TRIM_FRAME + offset
    return runs.astype(np.float64) * 1000 / SAMPLE_RATE


def _render_speech(spec: SpeechPlan) -> tuple[np.ndarray, dict]:
    """Clean speech clip and its truth; words are dropped from the end until the utterance fits."""
    lead = round(spec.lead_s * SAMPLE_RATE)
    room = CLIP_SAMPLES - lead - round(SPEECH_TAIL * SAMPLE_RATE)
    words = spec.text.split()
    while True:
        text = " ".join(words)
        x = speech.synthesize([speech.Utterance(spec.voice, text, spec.rate)])[0]
        if len(x) <= room:
            break
        if len(words) == 1:
            raise RuntimeError(f"one word of {spec.voice.name} does not fit in {CLIP_SECONDS} s: {text!r}")
        words = words[: max(1, min(len(words) - 1, int(len(words) * room / len(x))))]
    audio = set_level(speech.place(x, CLIP_SAMPLES, lead), CLEAN_LEVEL_DB)
    phonemes, switches = _phonemes(spec.voice, text)
    truth = {
        "speech": voiced_segments(x, lead),
        "text": text,
        "phonemes": phonemes,
        "language_switches": switches,
        "voice": spec.voice.name,
        "language": spec.language,
    }
    return audio, truth


def _render_music(sources: Sources, spec: MusicPlan) -> tuple[np.ndarray, dict]:
    sets = sources.music[0]
    clip = spec.clip
    audio = music.render(sets, clip.sound_set, clip.programs, list(clip.notes), CLIP_SECONDS, clip.peak_db)
    families = {c: music.FAMILIES.index(music.PROGRAMS[p][0]) for c, p in clip.programs.items()}
    notes = [
        (n.onset * music.GRID_MS, min(n.offset, music.CLIP_STEPS) * music.GRID_MS, n.pitch, families[n.channel])
        for n in clip.notes
    ]
    return audio, {"notes": np.array(notes, dtype=np.float64).reshape(-1, 4), "description": clip.description}


def _render_events(spec: EventsPlan) -> tuple[np.ndarray, dict]:
    audio, labelled = sounds.render_clip(list(spec.events), spec.background, spec.mix)
    events = [(e.start_ms, e.end_ms, EVENT_CLASSES.index(e.label)) for e in labelled]
    truth = {"events": np.array(events, dtype=np.float64).reshape(-1, 3), "noise": True}
    if spec.background is not None:
        truth["description"] = f"background {spec.background[0]}:{spec.background[1].name}"
    return audio, truth


def render_clean(sources: Sources, clip: ClipPlan) -> tuple[np.ndarray, dict]:
    """The clean clip, float64 (CLIP_SAMPLES,), and its truth (ms; see the module docstring)."""
    spec = clip.spec
    if isinstance(spec, SpeechPlan):
        return _render_speech(spec)
    if isinstance(spec, MusicPlan):
        return _render_music(sources, spec)
    if isinstance(spec, EventsPlan):
        return _render_events(spec)
    voice, truth = _render_speech(spec.speech)
    bed, music_truth = _render_music(sources, spec.music)
    gain = np.sqrt(np.mean(voice**2) / np.mean(bed**2)) * 10 ** (-spec.smr_db / 20)
    return set_level(voice + gain * bed, CLEAN_LEVEL_DB), {**truth, **music_truth}


def _sounding(start_ms: np.ndarray, end_ms: np.ndarray, n: int) -> np.ndarray:
    """bool (k, n): frame j's centre (j * 20 ms) lies in [start, end) of item i."""
    centres = np.arange(n) * HOP_MS
    return (centres[None, :] >= start_ms[:, None]) & (centres[None, :] < end_ms[:, None])


def frame_labels(truth: dict, n: int, speed: float = 1.0, pitch_offset: int = 0, noise: bool = False) -> dict:
    """Per-frame labels on tympan's 20 ms grid for a clip of n frames (module docstring's keys).

    truth: the clean clip's notes/events/speech in ms; speed and pitch_offset map them onto
    an augmented clip (times / speed, keys + pitch_offset, whole semitones); noise marks
    noise as sounding in every frame (the clip has a noise bed or added noise).
    """
    notes = truth.get("notes", np.zeros((0, 4)))
    events = truth.get("events", np.zeros((0, 3)))
    voiced = truth.get("speech", np.zeros((0, 2)))
    out = {
        "activity": np.zeros((n, len(ACTIVITY)), np.uint8),
        "piano_roll": np.zeros((n, N_KEYS), np.uint8),
        "onsets": np.zeros((n, N_KEYS), np.uint8),
        "pitch_midi": np.full(n, np.nan, np.float32),
        "family": np.zeros((n, len(music.FAMILIES)), np.uint8),
        "event_roll": np.zeros((n, len(EVENT_CLASSES)), np.uint8),
        "event_onsets": np.zeros((n, len(EVENT_CLASSES)), np.uint8),
    }
    if len(voiced):
        out["activity"][:, 0] = _sounding(*augment.warp_ms(voiced.T, speed), n).any(axis=0)
    if len(notes):
        keys = notes[:, 2].astype(np.int64) + pitch_offset - music.MIDI_PITCHES[0]
        inside = (keys >= 0) & (keys < N_KEYS)
        on = _sounding(*augment.warp_ms(notes[:, :2].T, speed), n)
        out["activity"][:, 1] = on.any(axis=0)
        for i in np.flatnonzero(inside):
            out["piano_roll"][on[i], keys[i]] = 1
            out["family"][on[i], int(notes[i, 3])] = 1
            frame = augment.frame_of_ms(augment.warp_ms(notes[i, 0], speed))
            if frame < n:
                out["onsets"][frame, keys[i]] = 1
        single = out["piano_roll"].sum(axis=1) == 1
        out["pitch_midi"][single] = np.argmax(out["piano_roll"][single], axis=1) + music.MIDI_PITCHES[0]
    for start, end, label in events:
        on = _sounding(augment.warp_ms(np.array([start]), speed), augment.warp_ms(np.array([end]), speed), n)[0]
        out["event_roll"][on, int(label)] = 1
        frame = augment.frame_of_ms(augment.warp_ms(start, speed))
        if frame < n:
            out["event_onsets"][frame, int(label)] = 1
        if EVENT_CLASSES[int(label)] == "speech":
            out["activity"][on, 0] = 1
    if noise:
        out["activity"][:, 2] = 1
    out["f0_hz"] = (440.0 * 2 ** ((out["pitch_midi"] - 69) / 12)).astype(np.float32)
    return out


def _write_npz(f, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's format with fixed zip dates, so that equal arrays give equal bytes."""
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buffer.getvalue())


def _write_wav(path: Path, x: np.ndarray) -> None:
    import soundfile as sf

    atomic_write(path, lambda f: sf.write(f, x, SAMPLE_RATE, format="WAV", subtype="PCM_16"))


def write_clip(sources: Sources, clip: ClipPlan, out: Path, languages: list[str]) -> None:
    """Render `clip` clean and augmented and write its two wavs, then its labels (.npz)."""
    clean, truth = render_clean(sources, clip)
    augmented, measured = augment.apply(clean, clip.recipe)
    folder = out / clip.kind
    _write_wav(folder / f"{clip.id}.wav", clean)
    _write_wav(folder / f"{clip.id}.aug.wav", augmented)
    if clip.kind == "noise":
        truth.setdefault("description", "coloured noise")
    shift = round(clip.recipe.pitch_offset) if clip.kind in ("music", "mix") else 0
    # Noise sounds in the clean clip where it has a bed (events, noise), in every augmented clip.
    arrays = dict(frame_labels(truth, n_frames(len(clean)), noise=bool(truth.get("noise"))))
    for key, value in frame_labels(truth, n_frames(len(augmented)), clip.recipe.speed, shift, noise=True).items():
        arrays[f"aug_{key}"] = value
    meta = {
        "id": clip.id,
        "kind": clip.kind,
        "groups": list(clip.groups),
        "recipe": clip.recipe.to_dict(),
        **{k: truth[k] for k in META_KEYS if k in truth},
    }
    arrays.update(
        notes=truth.get("notes", np.zeros((0, 4))),
        events=truth.get("events", np.zeros((0, 3))),
        speech=truth.get("speech", np.zeros((0, 2))),
        language=np.int16(languages.index(truth["language"]) if "language" in truth else -1),
        rt60_s=np.float64(measured["rt60_s"]),
        snr_db=np.float64(clip.recipe.snr_db),
        meta=np.array(json.dumps(meta, sort_keys=True, ensure_ascii=False)),
    )
    atomic_write(folder / f"{clip.id}.npz", lambda f: _write_npz(f, arrays))


def read_clip(path: str | Path, view: str = "augmented") -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
    """One clip of a training set, for a training loop: (audio, labels, meta).

    path: the clip's .npz (or either of its .wav files); view: "augmented" (what the student
    sees) or "clean" (what teachers see). audio: float32 (n_samples,) at SAMPLE_RATE;
    labels: the view's per-frame arrays without the "aug_" prefix (module docstring), each
    with n_frames(n_samples) rows, plus the clip's truth (notes, events, speech in clean ms;
    language, rt60_s, snr_db); meta: the parsed JSON.
    """
    import soundfile as sf

    if view not in VIEWS:
        raise ValueError(f"view {view!r}: choose 'augmented' or 'clean'")
    path = Path(path)
    stem = path.name.split(".")[0]
    with np.load(path.with_name(f"{stem}.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    prefix = "aug_" if view == "augmented" else ""
    per_frame = ("activity", "piano_roll", "onsets", "pitch_midi", "f0_hz", "family", "event_roll", "event_onsets")
    labels = {k: arrays[prefix + k] for k in per_frame}
    labels.update({k: arrays[k] for k in ("notes", "events", "speech", "language", "rt60_s", "snr_db")})
    audio, _ = sf.read(str(path.with_name(stem + VIEW_SUFFIX[view])), dtype="float32")
    return audio, labels, json.loads(str(arrays["meta"]))


# --------------------------------------------------------------------------- build


def _clip_files(out: Path, clip: ClipPlan) -> list[Path]:
    folder = out / clip.kind
    return [folder / f"{clip.id}.wav", folder / f"{clip.id}.aug.wav", folder / f"{clip.id}.npz"]


def parse_kinds(text: str) -> tuple[str, ...]:
    """"speech,music" -> ("speech", "music") in KINDS order; TrainDataError for an unknown or empty list."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise TrainDataError(f"--kinds {text!r}: unknown or empty; use a comma-separated subset of {','.join(KINDS)}")
    return tuple(k for k in KINDS if k in kinds)


def _refuse_other(out: Path, before: dict, settings: dict) -> None:
    """TrainDataError naming the settings that differ from those the folder was built with."""
    differ = sorted(k for k in settings if before.get(k) != settings[k])
    if differ:
        raise TrainDataError(
            f"{out} holds training data built with other settings ({', '.join(differ)} differ): "
            "give another --out, or delete the folder to rebuild it"
        )


def build(out: str | Path, hours: float, seed: int = 0, kinds: tuple[str, ...] = KINDS,
          suite_dir: str | Path | None = None, progress: bool = False) -> dict:
    """Generate (or finish) the training set in `out`; returns the build report (build.json).

    A folder built before with the same settings (and package versions) is resumed: finished
    clips are kept, missing ones made; other settings raise TrainDataError, as does a
    non-empty folder that is not a training set. HeldOutError if the plan uses a held-out group.
    """
    if not hours > 0:
        raise TrainDataError(f"--hours {hours}: give a positive number of hours, e.g. 1 or 0.05")
    out = Path(out)
    start = time.perf_counter()
    in_suite = held_out_in_suite(suite_dir) if suite_dir is not None else {}
    counts = clip_counts(hours, kinds)
    settings_path = out / "settings.json"
    asked = {"format_version": FORMAT_VERSION, "hours": hours, "seed": seed, "kinds": list(kinds)}
    before = json.loads(settings_path.read_text(encoding="utf-8")) if settings_path.exists() else None
    if before is not None:
        _refuse_other(out, before, asked)  # at once, before loading sources; versions are compared below
    elif out.exists() and any(out.iterdir()):
        raise TrainDataError(f"{out} is not empty and holds no settings.json: give an empty or new --out folder")
    sources = Sources(kinds)
    plan = [plan_clip(sources, seed, kind, i) for kind in kinds for i in range(counts[kind])]
    held = {**held_out_by_rule(sources), **in_suite}
    check_held_out(plan, held)
    languages = sources.speech[0] if {"speech", "mix"} & set(kinds) else []
    settings = {
        **asked,
        "clips": counts,
        "clip_seconds": CLIP_SECONDS,
        "sample_rate": SAMPLE_RATE,
        "languages": languages,
        "activity": list(ACTIVITY),
        "families": list(music.FAMILIES),
        "event_classes": list(EVENT_CLASSES),
        "midi_keys": [music.MIDI_PITCHES[0], music.MIDI_PITCHES[-1]],
        "versions": dict(sorted({**sources.versions, **sources.python_versions()}.items())),
    }
    if before is not None:
        _refuse_other(out, before, settings)
    atomic_write_json(settings_path, settings, indent=1, sort_keys=True)
    todo = [clip for clip in plan if not all(p.exists() for p in _clip_files(out, clip))]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plan), initial=len(plan) - len(todo), unit="clip", desc="tympan train data")
    for clip in todo:
        write_clip(sources, clip, out, languages)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    files = [p for clip in plan for p in _clip_files(out, clip)]
    digests = file_digests([*files, settings_path], out)
    atomic_write_json(out / "manifest.json", dict(sorted(digests.items())), indent=1)
    report = {
        kind: {"clips": counts[kind], "hours": round(counts[kind] * CLIP_SECONDS / 3600, 4)} for kind in kinds
    }
    report["all"] = {
        "clips": len(plan),
        "hours": round(len(plan) * CLIP_SECONDS / 3600, 4),
        "made": len(todo),
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_json(out / "build.json", report, indent=1, sort_keys=True)
    return report


def main(args: argparse.Namespace) -> int:
    try:
        report = build(args.out, args.hours, args.seed, parse_kinds(args.kinds), args.suite, progress=True)
    except (TrainDataError, SuiteSourceError) as e:
        print(f"tympan train data: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tympan train data: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
    done = report["all"]
    print(f"training data in {args.out}: {done['clips']} clips, {done['hours']:.3f} h "
          f"({done['made']} made now) in {done['build_seconds']:.0f} s")
    return 0

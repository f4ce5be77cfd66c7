"""Synthetic speech tasks: keyword spotting, spoken language ID and speaker counting.

All speech comes from text-to-speech engines in Debian main, so every label is exact by
construction: espeak-ng (formant synthesis, 101 voice variants over many languages), flite
(4 English voices) and festival (diphone, unit-selection and HTS voices in English, Catalan,
Czech, Finnish, Italian, Hindi, Marathi, Telugu, Russian). Training and validation audio
comes from espeak-ng; test audio comes from engines the training data never used wherever
such an engine exists, so a task measures how an embedding generalises across voices and
synthesis methods, not how well it memorises one synthesiser.

The source group of a file is its voice: "espeak-ng:<variant>" (the variant sets the speaker
characteristics; the same variant speaking another language or accent is the same group),
"flite:<voice>" or "festival:<voice>". espeak-ng variants are split once, by a hash of
their name (70 % train, 15 % valid, 15 % test), identically in every task, so no variant
appears in two splits of any task. Each task records the groups of every file in its
task_metadata.json under "source_groups" ({split: {file: [group, ...]}}) and the Debian
versions of the engines under "source_versions".

Every clip goes through the same chain: speaking rate set in the engine, a tape-speed
factor (pitch, formants and tempo together, +-2 semitones), a simulated room
(pyroomacoustics image-source model, one seeded bank of rooms per split), coloured noise
(spectral slope 1/f^beta, beta in [0, 2]) at a random SNR, and a random output level.
Randomness comes from one seeded numpy Generator per task and split, drawn in a fixed
order before any audio is made, so a build is byte-identical for the same package versions.

Audio is mono float at SAMPLE_RATE Hz throughout; durations are in seconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from tympan.audio import SAMPLE_RATE
from tympan.io import RESAMPLE_QUALITY
from tympan.kit.tasks import sort_labels
from tympan.suite.common import SPLITS, check_suite, split_rng, write_suite_task
from tympan.suite.dsp import add_noise, set_level, tape, trim_silence
from tympan.suite.sources import SuiteSourceError, require_commands

# espeak-ng variants go to a split by the first byte of sha256(name): stable when a new
# espeak-ng release adds variants, unlike a shuffled list.
VARIANT_SPLIT_BOUNDS = {"train": 0.70, "valid": 0.85, "test": 1.0}
# The default espeak-ng speaking rate, words per minute.
ESPEAK_WPM = 175
# Speaking rate (1 = the engine's default) and tape factor (pitch and tempo ratio) ranges.
RATE_RANGE = (0.85, 1.2)
TAPE_RANGE = (0.89, 1.12)
# Output level: RMS in dBFS, then the peak is kept at or below dsp.PEAK.
LEVEL_DB_RANGE = (-32.0, -18.0)
# Noise spectral slope: power ~ 1/f^beta (0 white, 1 pink, 2 brown).
NOISE_BETA_RANGE = (0.0, 2.0)
# Rooms: size (m), target RT60 (s). The image-source order is capped so that one room
# takes ~0.2 s instead of ~7 s; the measured RT60 then lies around 0.3-0.7 s.
ROOM_MIN_SIZE = (3.0, 3.0, 2.4)
ROOM_MAX_SIZE = (10.0, 8.0, 4.0)
RT60_RANGE = (0.2, 0.8)
MAX_IMAGE_ORDER = 25
ROOMS_PER_SPLIT = {"tiny": 4, "full": 12}
SOURCES_PER_ROOM = 6

FLITE_VOICES = ("awb", "kal16", "rms", "slt")
# festival voice -> (Debian packages, text encoding its lexicon and letter-to-sound rules
# expect). The encodings were found by synthesising accented words and reading back the
# phones: the Latin-script voices predate UTF-8, the Cyrillic and Indic ones use it.
FESTIVAL_VOICES = {
    "kal_diphone": (("festvox-kallpc16k",), "ascii"),
    "ked_diphone": (("festvox-kdlpc16k",), "ascii"),
    "cmu_us_slt_arctic_hts": (("festvox-us-slt-hts",), "ascii"),
    "upc_ca_ona_hts": (("festival-ca", "festvox-ca-ona-hts"), "latin-1"),
    "czech_dita": (("festival-czech", "festvox-czech-dita"), "iso-8859-2"),
    "czech_krb": (("festival-czech", "festvox-czech-krb"), "iso-8859-2"),
    "czech_machac": (("festival-czech", "festvox-czech-machac"), "iso-8859-2"),
    "czech_ph": (("festival-czech", "festvox-czech-ph"), "iso-8859-2"),
    "hy_fi_mv_diphone": (("festvox-suopuhe-mv",), "latin-1"),
    "suo_fi_lj_diphone": (("festvox-suopuhe-lj",), "latin-1"),
    "lp_diphone": (("festvox-italp16k",), "latin-1"),
    "pc_diphone": (("festvox-itapc16k",), "latin-1"),
    "hindi_NSK_diphone": (("festival-hi", "festvox-hi-nsk"), "utf-8"),
    "marathi_NSK_diphone": (("festival-mr", "festvox-mr-nsk"), "utf-8"),
    "telugu_NSK_diphone": (("festival-te", "festvox-te-nsk"), "utf-8"),
    "msu_ru_nsh_clunits": (("festvox-ru",), "utf-8"),
}
# The letters festival's letter-to-sound rules cover, per language of the test voices: a
# word with another letter (e.g. "võro" in Italian) stops festival. Checking every word of
# the pools in festival found no other failures (but took 11 minutes). Devanagari and
# Telugu words are all covered except for the Marathi voice's one gap.
_LATIN = "abcdefghijklmnopqrstuvwxyz"
FESTIVAL_ALPHABETS = {
    "ca": _LATIN + "àçèéíïòóúü",
    "cs": _LATIN + "áčďéěíňóřšťúůýž",
    "en": _LATIN,
    "fi": _LATIN + "åäö",
    "it": _LATIN + "àèéìíîòóùú",
    "ru": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
}
FESTIVAL_UNSUPPORTED = {"mr": "\u0972"}  # DEVANAGARI LETTER CANDRA A
ENGINE_PACKAGES = ("espeak-ng", "espeak-ng-data", "flite", "festival")

ENGLISH_ACCENTS = (
    "en-029", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-gb-x-rp", "en-us", "en-us-nyc",
)  # fmt: skip


@dataclass(frozen=True)
class Voice:
    """One synthetic voice: engine "espeak-ng" | "flite" | "festival" and its voice name.

    espeak-ng names are "<language voice>+<variant>" (e.g. "en-us+f3"); `group` is the
    source group that must not span two splits.
    """

    engine: str
    name: str

    @property
    def group(self) -> str:
        speaker = self.name.split("+")[1] if self.engine == "espeak-ng" else self.name
        return f"{self.engine}:{speaker}"


@dataclass(frozen=True)
class Utterance:
    """What to synthesise: `text` by `voice` at speaking-rate factor `rate` (1 = default)."""

    voice: Voice
    text: str
    rate: float


# --------------------------------------------------------------------------- engines


@lru_cache(maxsize=None)
def espeak_variants() -> tuple[str, ...]:
    """The installed espeak-ng voice variants (e.g. "f3", "klatt", "Alex"), sorted."""
    require_commands(espeak_ng="espeak-ng")
    listing = subprocess.run(["espeak-ng", "--voices=variant"], check=True, capture_output=True, text=True).stdout
    names = [line.split()[4].removeprefix("!v/") for line in listing.splitlines()[1:] if line.strip()]
    if not names:
        raise SuiteSourceError(
            "espeak-ng lists no voice variants; install them with `sudo apt-get install -y espeak-ng-data`"
        )
    return tuple(sorted(names))


def variant_split(variant: str) -> str:
    """The split ("train" | "valid" | "test") an espeak-ng variant belongs to, in every task."""
    u = hashlib.sha256(variant.encode()).digest()[0] / 256
    return next(split for split in SPLITS if u < VARIANT_SPLIT_BOUNDS[split])


def split_variants(split: str) -> list[str]:
    """The espeak-ng variants of `split`, sorted."""
    return [v for v in espeak_variants() if variant_split(v) == split]


def require_festival(voices: Sequence[str]) -> None:
    """Check festival and the given festival voices are installed, else say what to apt-get."""
    require_commands(festival="festival")
    listing = subprocess.run(
        ["festival", "-b", "(format t \"%l\\n\" (voice.list))"], check=True, capture_output=True, text=True
    ).stdout
    installed = set(re.findall(r"[\w-]+", listing))
    missing = [v for v in voices if v not in installed]
    if missing:
        pkgs = sorted({p for v in missing for p in FESTIVAL_VOICES[v][0]})
        raise SuiteSourceError(
            f"festival voice(s) {missing} are not installed: install them with "
            f"`sudo apt-get install -y {' '.join(pkgs)}` (or run `make tasks`)"
        )


def engine_versions() -> dict[str, str]:
    """Debian versions of the speech engines and voices installed ({package: version})."""
    pkgs = list(ENGINE_PACKAGES) + sorted({p for pkgs, _ in FESTIVAL_VOICES.values() for p in pkgs})
    got = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *pkgs], capture_output=True, text=True
    ).stdout
    return dict(line.split(" ", 1) for line in sorted(got.splitlines()) if " " in line)


def _read_wav(path: Path) -> np.ndarray:
    """A synthesised wav as float64 at SAMPLE_RATE, shape (n_samples,)."""
    import soundfile as sf
    import soxr

    samples, rate = sf.read(str(path), dtype="float64", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality=RESAMPLE_QUALITY)
    return mono


def _run_one(utt: Utterance, path: Path) -> None:
    if utt.voice.engine == "espeak-ng":
        cmd = ["espeak-ng", "-v", utt.voice.name, "-s", str(round(ESPEAK_WPM * utt.rate)), "-w", str(path), utt.text]
    elif utt.voice.engine == "flite":
        stretch = f"duration_stretch={1 / utt.rate:.4f}"
        cmd = ["flite", "-voice", utt.voice.name, "--setf", stretch, "-t", utt.text, "-o", str(path)]
    else:
        raise ValueError(f"engine {utt.voice.engine!r} is synthesised in batches, not one by one")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not path.exists():
        raise RuntimeError(f"{utt.voice.engine} failed for voice {utt.voice.name!r}: {done.stderr.strip()[-300:]}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _run_festival(voice: str, jobs: list[tuple[Utterance, Path]]) -> None:
    """Synthesise all of one festival voice's utterances in one festival process.

    Loading a voice takes up to seconds; one script per voice amortises it. Duration_Stretch
    sets the rate of diphone voices (unit-selection and HTS voices ignore it; the tape factor
    still varies them).
    """
    encoding = FESTIVAL_VOICES[voice][1]
    lines = [f"(voice_{voice})"]
    for utt, path in jobs:
        # unwind-protect: a failing utterance is reported below instead of ending the batch.
        lines.append(
            f"(unwind-protect (begin (Parameter.set 'Duration_Stretch {1 / utt.rate:.4f}) (utt.save.wave"
            f" (utt.synth (Utterance Text {_scheme_string(utt.text)})) {_scheme_string(str(path))} 'riff)) nil)"
        )
    with tempfile.NamedTemporaryFile("wb", suffix=".scm", delete=False) as f:
        f.write("\n".join(lines).encode(encoding) + b"\n")
    try:
        done = subprocess.run(["festival", "-b", f.name], capture_output=True)
    finally:
        os.unlink(f.name)
    failed = [utt.text for utt, path in jobs if not path.exists()]
    if done.returncode != 0 or failed:
        raise RuntimeError(
            f"festival voice {voice} failed on {len(failed)} of {len(jobs)} utterances, e.g. {failed[:1]}: "
            f"{done.stderr.decode(encoding, 'replace').strip()[-300:]}"
        )


def synthesize(utterances: Sequence[Utterance]) -> list[np.ndarray]:
    """Speech for each utterance, silence trimmed: float64 at SAMPLE_RATE, shape (n_samples,).

    espeak-ng and flite run one process per utterance (in parallel threads: the work is in
    the subprocesses), festival one process per voice.
    """
    with tempfile.TemporaryDirectory(prefix="tympan-tts-") as tmp:
        paths = [Path(tmp) / f"{i:06d}.wav" for i in range(len(utterances))]
        singles = [(u, p) for u, p in zip(utterances, paths) if u.voice.engine != "festival"]
        batches: dict[str, list[tuple[Utterance, Path]]] = {}
        for u, p in zip(utterances, paths):
            if u.voice.engine == "festival":
                batches.setdefault(u.voice.name, []).append((u, p))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            runs = [pool.submit(_run_one, u, p) for u, p in singles]
            runs += [pool.submit(_run_festival, v, jobs) for v, jobs in sorted(batches.items())]
            for run in runs:
                run.result()
        speech = [trim_silence(_read_wav(p)) for p in paths]
    silent = [u for u, x in zip(utterances, speech) if len(x) == 0]
    if silent:
        raise RuntimeError(f"{len(silent)} utterance(s) came out silent, e.g. {silent[0]}")
    return speech


def synthesize_some(utterances: Sequence[Utterance | None]) -> list[np.ndarray | None]:
    """`synthesize` for the utterances given, None where None is given."""
    done = iter(synthesize([u for u in utterances if u is not None]))
    return [None if u is None else next(done) for u in utterances]


# --------------------------------------------------------------------------- acoustics


def room_bank(rng: np.random.Generator, n_rooms: int) -> list[list[np.ndarray]]:
    """Simulated rooms: per room, SOURCES_PER_ROOM impulse responses to one microphone.

    Each response is float64, shape (n_taps,), at SAMPLE_RATE, scaled to unit energy so
    that reverb changes the timbre and tail, not the level.
    """
    import pyroomacoustics as pra

    bank = []
    for _ in range(n_rooms):
        size = rng.uniform(ROOM_MIN_SIZE, ROOM_MAX_SIZE)
        absorption, order = pra.inverse_sabine(rng.uniform(*RT60_RANGE), size)
        room = pra.ShoeBox(
            size, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=min(order, MAX_IMAGE_ORDER)
        )
        for _ in range(SOURCES_PER_ROOM):
            room.add_source(rng.uniform(0.5, size - 0.5))
        room.add_microphone(rng.uniform(0.5, size - 0.5))
        room.compute_rir()
        bank.append([np.asarray(h, dtype=np.float64) / np.sqrt(np.sum(np.square(h))) for h in room.rir[0]])
    return bank


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`x` convolved with `rir`, same length as `x` (the tail past the end is cut)."""
    from scipy.signal import fftconvolve

    if len(x) == 0:
        return x
    return fftconvolve(x, rir)[: len(x)]


def place(x: np.ndarray, n: int, offset: int) -> np.ndarray:
    """A length-n zero signal with `x` starting at sample `offset` (cut at n)."""
    out = np.zeros(n)
    seg = x[: max(n - offset, 0)]
    out[offset : offset + len(seg)] = seg
    return out


@dataclass(frozen=True)
class Acoustics:
    """How one clip is rendered: tape factor, room (index, source), noise, level, noise seed."""

    tape: float
    room: int
    source: int
    snr_db: float
    beta: float
    level_db: float
    seed: int


def draw_acoustics(
    rng: np.random.Generator, suite: str, snr_range: tuple[float, float], n_sources: int = 1
) -> list[Acoustics]:
    """Acoustics for one clip's `n_sources` talkers sharing one room, noise and level."""
    room = int(rng.integers(ROOMS_PER_SPLIT[suite]))
    sources = rng.permutation(SOURCES_PER_ROOM)[:n_sources]
    snr, beta, level = rng.uniform(*snr_range), rng.uniform(*NOISE_BETA_RANGE), rng.uniform(*LEVEL_DB_RANGE)
    seed = int(rng.integers(2**32))
    return [
        Acoustics(float(rng.uniform(*TAPE_RANGE)), room, int(s), float(snr), float(beta), float(level), seed)
        for s in sources
    ]


def draw_rate(rng: np.random.Generator) -> float:
    return float(rng.uniform(*RATE_RANGE))


def espeak_voice(rng: np.random.Generator, accents: Sequence[str], variant: str) -> Voice:
    """espeak-ng `variant` speaking one of `accents` (language voices), drawn at random."""
    return Voice("espeak-ng", f"{accents[rng.integers(len(accents))]}+{variant}")


def finish(mix: np.ndarray, a: Acoustics) -> np.ndarray:
    """A clip's reverberant speech `mix` with noise at a.snr_db, at the output level a.level_db."""
    rng = np.random.default_rng(a.seed)
    return set_level(add_noise(rng, mix, a.snr_db, a.beta), a.level_db)


def _write(
    task_name: str,
    suite: str,
    tasks_dir: str | os.PathLike,
    sample_duration: float,
    labels: dict[str, dict[str, str]],
    groups: dict[str, dict[str, list[str]]],
    audio: dict[tuple[str, str], np.ndarray],
) -> Path:
    """Write a scene multiclass task (one label per file) with its source groups and engine versions."""
    return write_suite_task(
        tasks_dir, suite, task_name, "scene", "multiclass", sample_duration, ["top1_acc"],
        [label for split in labels.values() for label in split.values()],
        {split: {f: [label] for f, label in files.items()} for split, files in labels.items()},
        audio, groups, engine_versions(),
    )  # fmt: skip


# --------------------------------------------------------------------------- keywords

KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
# Speech Commands' auxiliary words: the "_unknown_" class says "not a keyword".
UNKNOWN_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four", "happy", "house",
    "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "visual", "wow", "zero",
)  # fmt: skip
UNKNOWN, SILENCE = "_unknown_", "_silence_"
KEYWORD_CLIP = 1.0
KEYWORD_SNR = (5.0, 30.0)
KEYWORD_TEST_VOICES = tuple(Voice("flite", v) for v in FLITE_VOICES) + tuple(
    Voice("festival", v) for v in ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
)
KEYWORDS_PER_LABEL = {
    "tiny": {"train": 4, "valid": 2, "test": 2},
    "full": {"train": 120, "valid": 30, "test": 40},
}


def build_keywords(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Keyword spotting: which of 10 command words, another word, or no speech, in 1 s.

    Measures whether an embedding keeps word identity across speakers, synthesis engines,
    rooms and noise (a synthetic Speech Commands). Labels (12): yes no up down left right on
    off stop go, "_unknown_" (one of 25 other words, e.g. "bed", "marvin", "seven") and
    "_silence_" (coloured noise only).
    Sources: train and valid are espeak-ng, 8 English accents x the variants of that split;
    test is flite (awb, kal16, rms, slt) and festival (kal_diphone, ked_diphone,
    cmu_us_slt_arctic_hts), engines training never heard.
    Split rule: by voice; espeak-ng variants by variant_split (the "test" variants unused).
    Each clip: the word at a random offset, speaking rate x0.85-1.2, tape factor 0.89-1.12,
    a simulated room, coloured noise at 5-30 dB SNR, RMS level -32 to -18 dBFS.
    Size: 12 labels x (120 train, 30 valid, 40 test) = 2,280 clips of 1 s = 38 min (full);
    12 x (4, 2, 2) = 96 clips = 1.6 min (tiny).
    """
    check_suite(suite)
    require_commands(espeak_ng="espeak-ng", flite="flite")
    require_festival([v.name for v in KEYWORD_TEST_VOICES if v.engine == "festival"])
    n_clip = round(KEYWORD_CLIP * SAMPLE_RATE)
    labels: dict[str, dict[str, str]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "keywords", split)
        if split == "test":
            voices = list(KEYWORD_TEST_VOICES)
        else:
            voices = [Voice("espeak-ng", f"{a}+{v}") for a in ENGLISH_ACCENTS for v in split_variants(split)]
        per_label = KEYWORDS_PER_LABEL[suite][split]
        plan = []  # (label, utterance or None, acoustics, offset fraction)
        for label in sort_labels([*KEYWORDS, UNKNOWN, SILENCE]):
            for _ in range(per_label):
                word = str(rng.choice(UNKNOWN_WORDS)) if label == UNKNOWN else label
                utt = None if label == SILENCE else Utterance(voices[rng.integers(len(voices))], word, draw_rate(rng))
                plan.append((label, utt, draw_acoustics(rng, suite, KEYWORD_SNR)[0], float(rng.uniform())))
        order = rng.permutation(len(plan))  # file names do not give the label away
        rooms = room_bank(rng, ROOMS_PER_SPLIT[suite])
        words = synthesize_some([utt for _, utt, _, _ in plan])
        labels[split], groups[split] = {}, {}
        for index, i in enumerate(order):
            label, utt, a, offset = plan[i]
            name = f"{split}-{index:05d}.wav"
            if utt is None:
                mix = np.zeros(n_clip)
            else:
                word = tape(words[i], a.tape)
                if len(word) > n_clip:  # a slow long word: speed it up to fit, keeping it whole
                    word = tape(word, len(word) / n_clip)[:n_clip]
                mix = reverberate(place(word, n_clip, round(offset * (n_clip - len(word)))), rooms[a.room][a.source])
            audio[(split, name)] = finish(mix, a)
            labels[split][name] = label
            groups[split][name] = [utt.voice.group] if utt is not None else []
    return _write("keywords", suite, tasks_dir, KEYWORD_CLIP, labels, groups, audio)


# --------------------------------------------------------------------------- text

# Unicode script of each language's words (first word of the characters' Unicode names):
# it drops the Latin-script loanwords that frequency lists of other scripts contain.
SCRIPTS = {"el": "GREEK", "hi": "DEVANAGARI", "mr": "DEVANAGARI", "ru": "CYRILLIC", "te": "TELUGU"}
# Share of sentence words drawn from the frequency list (the rest are CLDR names and
# spelled-out numbers), where the language has a frequency list.
FREQUENT_SHARE = 0.75
N_FREQUENT = 3000


def _is_word(word: str, script: str) -> bool:
    """Letters (and combining marks) of `script` only."""
    return bool(word) and all(
        unicodedata.category(c)[0] in "LM" and unicodedata.name(c, "").startswith(script) for c in word
    ) and unicodedata.category(word[0])[0] == "L"


@lru_cache(maxsize=None)
def word_pools(language: str, script: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Words to build sentences of `language` from: (frequent words, name and number words).

    Frequent words: wordfreq's top N_FREQUENT (empty where wordfreq has no list: Marathi,
    Telugu). Names: CLDR display names of languages, territories, scripts, currencies,
    months and weekdays (babel), and num2words' spelling of 0-100 and round hundreds and
    thousands, split into words. Both sorted, letters of the language's script only:
    `script` (the first word of its letters' Unicode names, e.g. "ARABIC"), by default
    SCRIPTS' entry for the language, else LATIN.
    """
    import wordfreq
    from babel import Locale
    from num2words import CONVERTER_CLASSES, num2words

    script = script or SCRIPTS.get(language, "LATIN")
    frequent = wordfreq.top_n_list(language, N_FREQUENT) if language in wordfreq.available_languages() else []
    if language == "el":  # wordfreq folds final sigma into medial sigma
        frequent = [re.sub("σ$", "ς", w) for w in frequent]
    locale = Locale.parse(language)
    names = [
        *locale.languages.values(),
        *locale.territories.values(),
        *locale.scripts.values(),
        *locale.currencies.values(),
        *locale.months["format"]["wide"].values(),
        *locale.days["format"]["wide"].values(),
    ]
    if language in CONVERTER_CLASSES:
        numbers = [*range(101), *range(200, 1000, 100), *range(1000, 10000, 1000)]
        names += [num2words(n, lang=language) for n in numbers]
    name_words = {w.lower() for name in names for w in re.split(r"[\s\-‐,.()'’]+", name)}
    return (
        tuple(sorted({w for w in frequent if _is_word(w, script)})),
        tuple(sorted(w for w in name_words if _is_word(w, script))),
    )


def sentence(rng: np.random.Generator, frequent: Sequence[str], names: Sequence[str], n_words: int) -> str:
    """`n_words` random words, with a comma or full stop every 4-9 words for phrasing."""
    words = []
    next_break = int(rng.integers(4, 10))
    for i in range(n_words):
        pool = frequent if frequent and rng.uniform() < FREQUENT_SHARE else names
        words.append(pool[rng.integers(len(pool))])
        if i + 1 == next_break:
            words[-1] += "," if rng.uniform() < 0.5 else "."
            next_break += int(rng.integers(4, 10))
    return " ".join(words) + "."


# --------------------------------------------------------------------------- language ID

# label -> (espeak-ng language voices, test voices from other engines).
LANGUAGES: dict[str, tuple[tuple[str, ...], tuple[Voice, ...]]] = {
    "ca": (("ca",), (Voice("festival", "upc_ca_ona_hts"),)),
    "cs": (("cs",), tuple(Voice("festival", f"czech_{v}") for v in ("dita", "krb", "machac", "ph"))),
    "de": (("de",), ()),
    "el": (("el",), ()),
    "en": (ENGLISH_ACCENTS, KEYWORD_TEST_VOICES),
    "es": (("es", "es-419"), ()),
    "fi": (("fi",), (Voice("festival", "hy_fi_mv_diphone"), Voice("festival", "suo_fi_lj_diphone"))),
    "fr": (("fr-be", "fr-ch", "fr-fr"), ()),
    "hi": (("hi",), (Voice("festival", "hindi_NSK_diphone"),)),
    "hu": (("hu",), ()),
    "it": (("it",), (Voice("festival", "lp_diphone"), Voice("festival", "pc_diphone"))),
    "mr": (("mr",), (Voice("festival", "marathi_NSK_diphone"),)),
    "nl": (("nl",), ()),
    "pl": (("pl",), ()),
    "pt": (("pt", "pt-br"), ()),
    "ro": (("ro",), ()),
    "ru": (("ru", "ru-lv"), (Voice("festival", "msu_ru_nsh_clunits"),)),
    "sv": (("sv",), ()),
    "te": (("te",), (Voice("festival", "telugu_NSK_diphone"),)),
    "tr": (("tr",), ()),
}
LANGUAGE_CLIP = 5.0
LANGUAGE_WORDS = 20  # at least ~6 s of speech at the fastest rate and tape: a 5 s window fits
LANGUAGE_SNR = (10.0, 30.0)
LANGUAGE_PER_LABEL = {
    "tiny": {"train": 1, "valid": 1, "test": 1},
    "full": {"train": 14, "valid": 4, "test": 6},
}


def language_pools(language: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """word_pools(language), less the words festival cannot say where festival voices test it.

    A word stays when all its letters are in FESTIVAL_ALPHABETS[language] (where given) and
    none is in FESTIVAL_UNSUPPORTED[language].
    """
    frequent, names = word_pools(language)
    if not any(v.engine == "festival" for v in LANGUAGES[language][1]):
        return frequent, names
    alphabet, unsupported = FESTIVAL_ALPHABETS.get(language), FESTIVAL_UNSUPPORTED.get(language, "")

    def sayable(word: str) -> bool:
        return all((alphabet is None or c in alphabet) and c not in unsupported for c in word)

    return tuple(filter(sayable, frequent)), tuple(filter(sayable, names))


def build_language(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Spoken language identification: which of 20 languages is spoken, in 5 s.

    Measures whether an embedding captures a language's sounds and rhythm apart from the
    voice and the synthesiser. Labels: ca cs de el en es fi fr hi hu it mr nl pl pt ro ru sv
    te tr (ISO 639-1).
    Text: random word sequences with phrase breaks, from wordfreq's 3,000 most frequent words
    (75 %; none for mr, te) and CLDR names (languages, territories, scripts, currencies,
    months, weekdays; babel) and num2words numbers (none for el, hi, mr) (25 %; all for mr,
    te). Where festival voices test a language, only words festival can say (language_pools),
    in every split.
    Sources: train and valid are espeak-ng (the language's accents, e.g. pt and pt-br, x the
    split's variants). Test uses engines training never heard where Debian main has one:
    festival for ca, cs (4 voices), fi (2), hi, it (2), mr, ru, te, and for en flite (4)
    and festival (3). The other 10 languages (de el es fr hu nl pl pt ro sv) have only
    espeak-ng: their test voices are the held-out espeak-ng variants, an easier shift.
    Split rule: by voice; espeak-ng variants by variant_split.
    Each clip: a random 5 s window of the sentence, rate x0.85-1.2, tape factor 0.89-1.12, a
    simulated room, coloured noise at 10-30 dB SNR, RMS level -32 to -18 dBFS.
    Size: 20 labels x (14 train, 4 valid, 6 test) = 480 clips of 5 s = 40 min (full);
    20 x (1, 1, 1) = 60 clips = 5 min (tiny).
    """
    check_suite(suite)
    festival_voices = sorted({v.name for _, test in LANGUAGES.values() for v in test if v.engine == "festival"})
    require_commands(espeak_ng="espeak-ng", flite="flite")
    require_festival(festival_voices)
    n_clip = round(LANGUAGE_CLIP * SAMPLE_RATE)
    pools = {language: language_pools(language) for language in sorted(LANGUAGES)}
    labels: dict[str, dict[str, str]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "language", split)
        variants = split_variants(split)
        plan = []  # (label, utterance, acoustics, window start fraction)
        for language in sorted(LANGUAGES):
            accents, others = LANGUAGES[language]
            for _ in range(LANGUAGE_PER_LABEL[suite][split]):
                if split == "test" and others:
                    voice = others[rng.integers(len(others))]
                else:
                    voice = espeak_voice(rng, accents, variants[rng.integers(len(variants))])
                utt = Utterance(voice, sentence(rng, *pools[language], LANGUAGE_WORDS), draw_rate(rng))
                plan.append((language, utt, draw_acoustics(rng, suite, LANGUAGE_SNR)[0], float(rng.uniform())))
        order = rng.permutation(len(plan))
        rooms = room_bank(rng, ROOMS_PER_SPLIT[suite])
        speech = synthesize([utt for _, utt, _, _ in plan])
        labels[split], groups[split] = {}, {}
        for index, i in enumerate(order):
            language, utt, a, start = plan[i]
            name = f"{split}-{index:05d}.wav"
            x = tape(speech[i], a.tape)
            x = x[round(start * max(len(x) - n_clip, 0)) :][:n_clip]
            audio[(split, name)] = finish(reverberate(place(x, n_clip, 0), rooms[a.room][a.source]), a)
            labels[split][name] = language
            groups[split][name] = [utt.voice.group]
    return _write("language", suite, tasks_dir, LANGUAGE_CLIP, labels, groups, audio)


# --------------------------------------------------------------------------- speaker count

COUNT_CLIP = 5.0
MAX_TALKERS = 5
COUNT_WORDS = 24
COUNT_ONSET_MAX = 1.5  # s: every talker is active for at least the last 3.5 s
COUNT_GAIN_DB = 6.0  # talker levels within +-6 dB of each other
COUNT_SNR = (15.0, 30.0)
# Test talkers besides the held-out espeak-ng variants: one voice per real speaker (flite's
# kal16 and slt and festival's kal_diphone and slt HTS voice share speakers).
COUNT_TEST_VOICES = tuple(Voice("flite", v) for v in FLITE_VOICES) + (Voice("festival", "ked_diphone"),)
COUNT_PER_LABEL = {
    "tiny": {"train": 2, "valid": 1, "test": 1},
    "full": {"train": 50, "valid": 10, "test": 10},
}


def build_speaker_count(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Speaker counting: how many voices (0-5) talk at once in a 5 s mixture.

    Measures whether an embedding separates overlapping voices rather than summarising
    "speech": a synthetic LibriCount. Labels "0" ... "5" (0 = noise only).
    Each talker reads its own English sentence (wordfreq frequent words and CLDR names),
    starts 0-1.5 s into the clip and talks to its end, at a level within +-6 dB of the
    others, from its own position in one simulated room; light coloured noise (15-30 dB SNR)
    over the mixture. Talkers in a mixture are different speakers: different espeak-ng
    variants (each with a random English accent), flite or festival voices.
    Sources: train and valid are espeak-ng variants of that split; test is the held-out
    espeak-ng variants plus flite (awb, kal16, rms, slt) and festival (ked_diphone).
    Split rule: by voice; espeak-ng variants by variant_split.
    Size: 6 labels x (50 train, 10 valid, 10 test) = 420 clips of 5 s = 35 min (full);
    6 x (2, 1, 1) = 24 clips = 2 min (tiny).
    """
    check_suite(suite)
    require_commands(espeak_ng="espeak-ng", flite="flite")
    require_festival([v.name for v in COUNT_TEST_VOICES if v.engine == "festival"])
    n_clip = round(COUNT_CLIP * SAMPLE_RATE)
    frequent, names = language_pools("en")
    labels: dict[str, dict[str, str]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "speaker-count", split)
        # A speaker is an espeak-ng variant (its accent drawn per mixture) or another voice.
        speakers: list[str | Voice] = [*split_variants(split), *(COUNT_TEST_VOICES if split == "test" else ())]
        plan = []  # (label, talkers: [(utterance, acoustics, onset s, gain dB)], clip acoustics)
        for count in range(MAX_TALKERS + 1):
            for _ in range(COUNT_PER_LABEL[suite][split]):
                chosen = [speakers[i] for i in sorted(rng.choice(len(speakers), count, replace=False))]
                voices = [espeak_voice(rng, ENGLISH_ACCENTS, s) if isinstance(s, str) else s for s in chosen]
                acoustics = draw_acoustics(rng, suite, COUNT_SNR, max(count, 1))
                talkers = [
                    (
                        Utterance(v, sentence(rng, frequent, names, COUNT_WORDS), draw_rate(rng)),
                        a,
                        float(rng.uniform(0, COUNT_ONSET_MAX)),
                        float(rng.uniform(-COUNT_GAIN_DB, COUNT_GAIN_DB)),
                    )
                    for v, a in zip(voices, acoustics)
                ]
                plan.append((str(count), talkers, acoustics[0]))
        order = rng.permutation(len(plan))
        rooms = room_bank(rng, ROOMS_PER_SPLIT[suite])
        speech = iter(synthesize([utt for _, talkers, _ in plan for utt, _, _, _ in talkers]))
        voiced = [[next(speech) for _ in talkers] for _, talkers, _ in plan]
        labels[split], groups[split] = {}, {}
        for index, i in enumerate(order):
            label, talkers, clip = plan[i]
            name = f"{split}-{index:05d}.wav"
            mix = np.zeros(n_clip)
            for x, (utt, a, onset, gain_db) in zip(voiced[i], talkers):
                x = place(tape(x, a.tape), n_clip, round(onset * SAMPLE_RATE))
                x = reverberate(x, rooms[a.room][a.source])
                mix += x * (10 ** (gain_db / 20) / np.sqrt(np.mean(x**2)))
            audio[(split, name)] = finish(mix, clip)
            labels[split][name] = label
            groups[split][name] = sorted(utt.voice.group for utt, _, _, _ in talkers)
    return _write("speaker-count", suite, tasks_dir, COUNT_CLIP, labels, groups, audio)

"""Music tasks rendered from General MIDI sound sets: pitch, instrument family, note onsets.

Every note is synthesised here from real instrument samples, so its MIDI pitch, its GM
program (hence instrument family) and its onset and offset times are exact by construction.
The samples come from six General MIDI sound sets in Debian main, fetched with
`sources.debian_package` and never installed:

    sound set           package                       licence   renderer   group
    FluidR3_GM          fluid-soundfont-gm            MIT       fluidsynth fluid
    FluidR3Mono_GM      fluidr3mono-gm-soundfont      MIT       fluidsynth fluid
    MuseScore_General   musescore-general-soundfont   MIT       fluidsynth fluid
    freepats            freepats                      GPL-2+    timidity   freepats
    TimGM6mb            timgm6mb-soundfont            GPL-2     fluidsynth timgm6mb
    sf_GMbank           csound-soundfont              PD        fluidsynth timgm6mb

Split rule: by sample material, never by file. Sound sets that share recordings form one
group and a group belongs to one split: train = fluid (FluidR3Mono is a mono FluidR3;
MuseScore_General is built on FluidR3Mono), valid = freepats, test = timgm6mb (TimGM6mb
and sf_GMbank have 329 byte-identical samples). The groups were audited by comparing
every sample of each group with every sample of the others (byte-identical, or correlated
above 0.95 at equal duration after resampling to one rate; the Ogg-compressed .sf3 sets
decoded first): the fluid group shares only a sea-shore effect (program 122, not used) with
the others, but five freepats patches reuse TimGM6mb/sf_GMbank samples, so freepats
programs FREEPATS_SHARED are never played. The training split has the most sound sets and
so the most timbres per program; valid and test are each one independent sample library.
freepats is a set of Gravis Ultrasound patches, which fluidsynth cannot load, so
TiMidity++ renders it. OPL-3_FM_128M (opl3-soundfont) was left out: it imitates GM programs
by FM synthesis, so its "families" are not the instruments their names claim.

Rendering: at RENDER_RATE Hz with reverb and chorus off, one fresh synthesiser per clip
(fluidsynth carries state from one note to the next, so a reused synthesiser would make a
clip depend on the clips rendered before it; TiMidity runs with its note cache off, without
which the same MIDI file renders differently from run to run), mixed to mono and resampled
to SAMPLE_RATE with soxr. Note times are multiples of GRID_MS, which is a whole number of fluidsynth's
64-sample blocks (events land on block boundaries) and of TiMidity's MIDI ticks, so both
engines start and stop notes on exactly the labelled sample. Every clip is scaled to a
random peak level (PEAK_DB_RANGE) so that loudness says nothing about the label.

Randomness comes from one seeded numpy Generator per task and split, drawn in a fixed order
from sorted lists, so a build is byte-identical for the same package versions. Audio is
mono float64 at SAMPLE_RATE Hz; durations are in seconds, event times in milliseconds.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from tympan.audio import SAMPLE_RATE
from tympan.io import RESAMPLE_QUALITY
from tympan.kit.tasks import Event
from tympan.suite.common import SPLITS, check_suite, split_rng, write_suite_task
from tympan.suite.sources import SuiteSourceError, debian_package, require_commands

# Synthesised at 48 kHz, then resampled: the engines' sample interpolation aliases far less
# when the output rate is well above the 8 kHz band that is kept.
RENDER_RATE = 48000
# Note times are on a 4 ms grid: 192 samples at 48 kHz (three 64-sample fluidsynth blocks),
# one MIDI tick for TiMidity (MIDI_TICKS_PER_BEAT ticks per beat of MIDI_TEMPO_US), and 64
# samples at 16 kHz.
GRID_MS = 4
GRID_SAMPLES = RENDER_RATE * GRID_MS // 1000
FLUIDSYNTH_BLOCK = 64
MIDI_TICKS_PER_BEAT = 480
MIDI_TEMPO_US = MIDI_TICKS_PER_BEAT * GRID_MS * 1000
# A note cut shorter than this by a re-struck key of the same pitch is dropped (fluidsynth
# holds every note at least 10 ms anyway).
MIN_NOTE_MS = 40
# Each clip's peak level, dBFS, drawn uniformly.
PEAK_DB_RANGE = (-20.0, -3.0)
# A clip whose rendered peak is below this (before scaling) is a silent note: a range table
# below is wrong for the sound set's version.
SILENT_PEAK = 1e-4
# A 10 ms fade where a clip cuts sound short, so the cut is not a click.
CUT_FADE = SAMPLE_RATE // 100

# NSynth-like notes: 4 s, the key held for 3 s, then the release.
NOTE_SECONDS = 4.0
NOTE_HELD_SECONDS = 3.0
VELOCITIES = (25, 50, 75, 100, 127)
MIDI_PITCHES = tuple(range(21, 109))  # the 88 piano keys, A0..C8

# GM programs (0-based) used, with the NSynth family they belong to and the keys played on
# them: the instrument's usual range, narrowed where a sound set falls silent (FluidR3's
# contrabass above 57, violin above 93, muted guitar above 84). NSynth's families group
# acoustic, electronic and synthetic sources, so synth bass is "bass" and synth brass
# "brass". Left out as having no NSynth family or no single pitch: music box (10, plucked
# comb), dulcimer (15), accordions and harmonica (21-23), guitar harmonics (31), timpani
# (47), orchestra hit (55), blown bottle (76), whistle (78: TimGM6mb's plays 9 semitones
# flat and is silent above key 78), lead 7-8 (86-87, fifths and octave layers), pads and
# effects (88-103), ethnic instruments other than fiddle and shanai, percussion and sound
# effects (112-127).
PROGRAMS: dict[int, tuple[str, int, int]] = {
    0: ("keyboard", 21, 108), 1: ("keyboard", 21, 108), 2: ("keyboard", 21, 108),
    3: ("keyboard", 21, 108), 4: ("keyboard", 28, 103), 5: ("keyboard", 28, 103),
    6: ("keyboard", 29, 89), 7: ("keyboard", 36, 96), 8: ("keyboard", 60, 108),
    9: ("mallet", 79, 108), 11: ("mallet", 53, 89), 12: ("mallet", 45, 96),
    13: ("mallet", 65, 108), 14: ("mallet", 60, 77),
    16: ("organ", 36, 96), 17: ("organ", 36, 96), 18: ("organ", 36, 96),
    19: ("organ", 24, 96), 20: ("organ", 36, 96),
    24: ("guitar", 40, 86), 25: ("guitar", 40, 86), 26: ("guitar", 40, 86),
    27: ("guitar", 40, 86), 28: ("guitar", 40, 84), 29: ("guitar", 40, 86),
    30: ("guitar", 40, 86),
    32: ("bass", 28, 67), 33: ("bass", 28, 67), 34: ("bass", 28, 67), 35: ("bass", 28, 67),
    36: ("bass", 28, 67), 37: ("bass", 28, 67), 38: ("bass", 24, 72), 39: ("bass", 24, 72),
    40: ("string", 55, 93), 41: ("string", 48, 88), 42: ("string", 36, 76),
    43: ("string", 28, 57), 44: ("string", 28, 96), 45: ("string", 28, 96),
    46: ("string", 24, 103), 48: ("string", 28, 96), 49: ("string", 28, 96),
    50: ("string", 36, 96), 51: ("string", 36, 96), 110: ("string", 55, 93),
    52: ("vocal", 40, 84), 53: ("vocal", 40, 84), 54: ("vocal", 40, 84),
    56: ("brass", 54, 86), 57: ("brass", 40, 74), 58: ("brass", 28, 58),
    59: ("brass", 54, 82), 60: ("brass", 34, 77), 61: ("brass", 36, 84),
    62: ("brass", 36, 96), 63: ("brass", 36, 96),
    64: ("reed", 56, 87), 65: ("reed", 49, 81), 66: ("reed", 44, 76), 67: ("reed", 36, 69),
    68: ("reed", 58, 91), 69: ("reed", 52, 81), 70: ("reed", 34, 75), 71: ("reed", 50, 91),
    111: ("reed", 60, 91),
    72: ("flute", 74, 108), 73: ("flute", 60, 96), 74: ("flute", 60, 96),
    75: ("flute", 60, 96), 77: ("flute", 55, 91), 79: ("flute", 60, 91),
    80: ("synth_lead", 36, 96), 81: ("synth_lead", 36, 96), 82: ("synth_lead", 36, 96),
    83: ("synth_lead", 36, 96), 84: ("synth_lead", 36, 96), 85: ("synth_lead", 36, 96),
}  # fmt: skip
FAMILIES = tuple(sorted({family for family, _, _ in PROGRAMS.values()}))
KEYBOARD_PROGRAMS = tuple(range(8))
# Programs whose sounding pitch is not the key in some sound set, measured with an f0
# tracker over every key: they stay in the instrument task but are never used where the
# key is the label (pitch, note onsets). Celesta (8): TimGM6mb and sf_GMbank tune it about
# a semitone flat; glockenspiel and tubular bells (9, 14): inharmonic, the octave heard is
# ambiguous; organs (16-19): 16' and 32' stops sound one or two octaves below the key in
# every sound set; shakuhachi (77): TimGM6mb plays it up to 2.5 semitones sharp.
NOT_AT_KEY_PITCH = frozenset({8, 9, 14, 16, 17, 18, 19, 77})
PITCHED_PROGRAMS = tuple(p for p in sorted(PROGRAMS) if p not in NOT_AT_KEY_PITCH)
# freepats patches that reuse TimGM6mb/sf_GMbank samples (soprano sax, oboe, English horn,
# pan flute, ocarina): playing them would put test material in the validation split.
FREEPATS_SHARED = frozenset({64, 68, 69, 75, 79})


@dataclass(frozen=True)
class SoundSet:
    """One General MIDI sound set: a soundfont (fluidsynth) or a patch set (TiMidity++).

    path: the soundfont, or for TiMidity the patch set's config, relative to the unpacked
    package. group: the source group (sets sharing samples share it), which fixes the split.
    shared: programs never played, as their samples are also in another group's set.
    """

    name: str
    package: str
    path: str
    group: str
    engine: str
    shared: frozenset[int] = frozenset()


SOUND_SETS = (
    SoundSet("FluidR3_GM", "fluid-soundfont-gm", "usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid", "fluidsynth"),
    SoundSet(
        "FluidR3Mono_GM",
        "fluidr3mono-gm-soundfont",
        "usr/share/fluidr3mono-gm-soundfont/FluidR3Mono_GM.sf3",
        "fluid",
        "fluidsynth",
    ),
    SoundSet(
        "MuseScore_General",
        "musescore-general-soundfont",
        "usr/share/sounds/sf3/MuseScore_General_Full.sf3",
        "fluid",
        "fluidsynth",
    ),
    SoundSet("freepats", "freepats", "etc/timidity/freepats.cfg", "freepats", "timidity", FREEPATS_SHARED),
    SoundSet("TimGM6mb", "timgm6mb-soundfont", "usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb", "fluidsynth"),
    SoundSet("sf_GMbank", "csound-soundfont", "usr/share/sounds/sf2/sf_GMbank.sf2", "timgm6mb", "fluidsynth"),
)
GROUP_SPLIT = {"fluid": "train", "freepats": "valid", "timgm6mb": "test"}
# freepats.cfg names its patch folder by the installed path; the unpacked copy is elsewhere.
FREEPATS_DIR_LINE = "dir /usr/share/midi/freepats"
FREEPATS_PATCHES = "usr/share/midi/freepats"
# TiMidity plays MIDI channel 10 (index 9) as drums whatever its program.
MELODIC_CHANNELS = tuple(c for c in range(16) if c != 9)

# Clips per split.
SIZES = {
    "pitch": {"tiny": {"train": 12, "valid": 4, "test": 6}, "full": {"train": 352, "valid": 88, "test": 176}},
    "instrument": {"tiny": {"train": 11, "valid": 4, "test": 6}, "full": {"train": 330, "valid": 110, "test": 165}},
    "note-onsets": {"tiny": {"train": 4, "valid": 2, "test": 2}, "full": {"train": 120, "valid": 30, "test": 30}},
}


def _import(module: str, pip_name: str, apt_hint: str = ""):
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise SuiteSourceError(
            f"the music tasks need the Python package {pip_name} ({e}): install it with "
            f"`pip install {pip_name}`{apt_hint} (or run `make tasks`)"
        ) from e


# --------------------------------------------------------------------------- sound sets


class _SoundSets:
    """The sound sets of one build, unpacked, with their package versions.

    All six are fetched up front, so a missing package stops a build before any rendering.
    """

    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        for sound_set in SOUND_SETS:
            self.path(sound_set)

    def root(self, sound_set: SoundSet) -> Path:
        """The folder the set's Debian package is unpacked in."""
        root, version = debian_package(sound_set.package)
        self.versions[sound_set.package] = version
        return root

    def path(self, sound_set: SoundSet) -> Path:
        """The set's soundfont or TiMidity config file."""
        path = self.root(sound_set) / sound_set.path
        if not path.is_file():
            raise SuiteSourceError(
                f"{sound_set.package} {self.versions[sound_set.package]} has no {sound_set.path}; the "
                "package changed: update SOUND_SETS in tympan/suite/music.py"
            )
        return path

    def programs(self, sound_set: SoundSet, pitched: bool) -> tuple[int, ...]:
        """The GM programs of PROGRAMS (only PITCHED_PROGRAMS if `pitched`) this set can play."""
        wanted = [p for p in (PITCHED_PROGRAMS if pitched else sorted(PROGRAMS)) if p not in sound_set.shared]
        if sound_set.engine == "fluidsynth":
            # All five soundfonts have every GM program in bank 0; a missing one fails loudly
            # in _render_fluidsynth.
            return tuple(wanted)
        present = _patch_programs(self.path(sound_set).read_text(encoding="utf-8"))
        return tuple(p for p in wanted if p in present)

    def of_split(self, split: str) -> list[SoundSet]:
        return [s for s in SOUND_SETS if GROUP_SPLIT[s.group] == split]


def _patch_programs(config: str) -> set[int]:
    """The melodic programs a TiMidity config maps to a patch (its `bank 0` section)."""
    programs: set[int] = set()
    in_bank0 = False
    for line in config.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] in ("bank", "drumset"):
            in_bank0 = words == ["bank", "0"]
        elif in_bank0 and words[0].isdigit() and len(words) > 1:
            programs.add(int(words[0]))
    return programs


def engine_versions() -> dict[str, str]:
    """Debian versions of the installed synthesis engines ({package: version})."""
    got = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "libfluidsynth3", "timidity"],
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split(" ", 1) for line in sorted(got.splitlines()) if " " in line)


# --------------------------------------------------------------------------- rendering


@dataclass(frozen=True)
class Note:
    """One MIDI note; onset and offset in GRID_MS steps from the start of the clip."""

    onset: int
    offset: int
    pitch: int
    velocity: int
    channel: int


def clean_notes(notes: list[Note], n_steps: int) -> list[Note]:
    """The notes as they can sound: no two notes of one pitch overlap, sorted by onset.

    A key struck again (on any channel) while its pitch still sounds ends the earlier note
    there, as on a piano; of notes of one pitch struck together only the longest is kept;
    notes starting at or after n_steps, or cut shorter than MIN_NOTE_MS, are dropped.
    Labels are made from this list and the audio is rendered from it, so they agree.
    """
    kept: list[Note] = []
    last: dict[int, int] = {}
    for note in sorted(notes, key=lambda n: (n.onset, -n.offset, n.channel, n.pitch)):
        if note.onset >= n_steps or note.offset <= note.onset:
            continue
        j = last.get(note.pitch)
        if j is not None and kept[j].offset > note.onset:
            if kept[j].onset == note.onset:
                continue
            kept[j] = replace(kept[j], offset=note.onset)
        last[note.pitch] = len(kept)
        kept.append(note)
    return [n for n in kept if (n.offset - n.onset) * GRID_MS >= MIN_NOTE_MS]


def _events(notes: list[Note]) -> list[tuple[int, int, Note]]:
    """(step, 0 = off / 1 = on, note), note-offs before note-ons at the same step."""
    events = [(n.offset, 0, n) for n in notes] + [(n.onset, 1, n) for n in notes]
    return sorted(events, key=lambda e: (e[0], e[1], e[2].channel, e[2].pitch))


@lru_cache(maxsize=1)
def _fluidsynth():
    fs = _import("fluidsynth", "pyfluidsynth", " and the library with `sudo apt-get install -y libfluidsynth3`")
    # pyfluidsynth only wraps the 16-bit output, which fluidsynth dithers; the float output
    # is undithered.
    write_float = fs.cfunc(
        "fluid_synth_write_float",
        ctypes.c_int,
        ("synth", ctypes.c_void_p, 1),
        ("len", ctypes.c_int, 1),
        ("lout", ctypes.c_void_p, 1),
        ("loff", ctypes.c_int, 1),
        ("lincr", ctypes.c_int, 1),
        ("rout", ctypes.c_void_p, 1),
        ("roff", ctypes.c_int, 1),
        ("rincr", ctypes.c_int, 1),
    )
    return fs, write_float


def _render_fluidsynth(font: Path, programs: dict[int, int], notes: list[Note], n: int) -> np.ndarray:
    """Render `notes` with a soundfont: mono float64 at RENDER_RATE, shape (n,)."""
    fs, write_float = _fluidsynth()
    settings = {
        "synth.reverb.active": 0,
        "synth.chorus.active": 0,
        # Samples are read when a program is selected, not all at load time: loading
        # MuseScore_General whole decodes 86 MB of Ogg Vorbis (~40 s).
        "synth.dynamic-sample-loading": 1,
        "synth.cpu-cores": 1,
    }
    synth = fs.Synth(samplerate=float(RENDER_RATE), **settings)
    out = np.zeros((n, 2), dtype=np.float32)  # interleaved left, right

    def write(start: int, stop: int) -> None:
        if stop > start:
            pointer = out[start:].ctypes.data
            if write_float(synth.synth, stop - start, pointer, 0, 2, pointer, 1, 2) != 0:
                raise SuiteSourceError(f"fluidsynth failed to render {font.name}")

    try:
        font_id = synth.sfload(str(font))
        if font_id < 0:
            raise SuiteSourceError(f"fluidsynth cannot load the soundfont {font}")
        for channel, program in sorted(programs.items()):
            if synth.program_select(channel, font_id, 0, program) != 0:
                raise SuiteSourceError(f"{font.name} has no GM program {program} in bank 0")
        position = 0
        for step, on, note in _events(notes):
            sample = step * GRID_SAMPLES
            if sample >= n:
                break
            write(position, sample)
            position = sample
            if on:
                synth.noteon(note.channel, note.pitch, note.velocity)
            else:
                synth.noteoff(note.channel, note.pitch)
        write(position, n)
    finally:
        synth.delete()
    return out.mean(axis=1, dtype=np.float64)


def _render_timidity(
    config: Path, patches: Path, programs: dict[int, int], notes: list[Note], n: int
) -> np.ndarray:
    """Render `notes` with a GUS patch set through TiMidity++: mono float64 at RENDER_RATE, shape (n,).

    config: the set's TiMidity config, naming its patches relative to `patches`.
    """
    mido = _import("mido", "mido")
    import soundfile as sf

    midi = mido.MidiFile(ticks_per_beat=MIDI_TICKS_PER_BEAT)
    track = midi.add_track()
    track.append(mido.MetaMessage("set_tempo", tempo=MIDI_TEMPO_US, time=0))
    for channel, program in sorted(programs.items()):
        track.append(mido.Message("program_change", channel=channel, program=program, time=0))
    tick = 0
    for step, on, note in _events(notes):
        kind, velocity = ("note_on", note.velocity) if on else ("note_off", 0)
        track.append(mido.Message(kind, channel=note.channel, note=note.pitch, velocity=velocity, time=step - tick))
        tick = step
    text = config.read_text(encoding="utf-8")
    if FREEPATS_DIR_LINE not in text:
        raise SuiteSourceError(f"{config} no longer has the line {FREEPATS_DIR_LINE!r}; update tympan/suite/music.py")
    with tempfile.TemporaryDirectory(prefix="tympan-timidity-") as tmp:
        (Path(tmp) / "patches.cfg").write_text(text.replace(FREEPATS_DIR_LINE, f"dir {patches}"), encoding="utf-8")
        midi.save(str(Path(tmp) / "clip.mid"))
        # Without -S 0 (no pre-resampled note cache) the same MIDI file renders differently
        # from run to run; without -k 0 and --no-polyphony-reduction TiMidity may drop voices
        # when it renders slower than real time.
        command = [
            "timidity", "-c", "patches.cfg", "-Ow2sM", "-s", str(RENDER_RATE), "--preserve-silence",
            "-S", "0", "-k", "0", "--no-polyphony-reduction", "-A", "50",
            "-EFreverb=d", "-EFchorus=d", "-EFdelay=d", "-EFns=0", "-o", "clip.wav", "clip.mid",
        ]  # fmt: skip
        # Run in the temporary folder: TiMidity looks for patches relative to the working
        # folder first.
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        wav = Path(tmp) / "clip.wav"
        if done.returncode != 0 or not wav.is_file():
            raise SuiteSourceError(f"timidity failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        x, rate = sf.read(str(wav), dtype="float64")
    if rate != RENDER_RATE:
        raise SuiteSourceError(f"timidity wrote {rate} Hz instead of {RENDER_RATE} Hz")
    if np.max(np.abs(x), initial=0.0) >= 0.999:
        raise SuiteSourceError("timidity's output clipped; lower its -A amplification in tympan/suite/music.py")
    return np.concatenate([x[:n], np.zeros(max(0, n - len(x)))])


def render(
    sound_sets: _SoundSets,
    sound_set: SoundSet,
    programs: dict[int, int],
    notes: list[Note],
    seconds: float,
    peak_db: float,
) -> np.ndarray:
    """Render cleaned `notes` on `programs` ({channel: GM program}) as a clip at SAMPLE_RATE.

    Shape (round(seconds * SAMPLE_RATE),), peak at `peak_db` dBFS; sound still ringing at
    the end is faded out over CUT_FADE. Raises SuiteSourceError for a silent clip.
    """
    n_out = round(seconds * SAMPLE_RATE)
    # A few blocks past the end, so the resampler's filter has signal, not zeros, at the cut.
    n = (n_out * RENDER_RATE // SAMPLE_RATE) + 4 * FLUIDSYNTH_BLOCK
    path = sound_sets.path(sound_set)
    if sound_set.engine == "fluidsynth":
        x = _render_fluidsynth(path, programs, notes, n)
    else:
        x = _render_timidity(path, sound_sets.root(sound_set) / FREEPATS_PATCHES, programs, notes, n)
    soxr = _import("soxr", "soxr")
    y = soxr.resample(x, RENDER_RATE, SAMPLE_RATE, quality=RESAMPLE_QUALITY)[:n_out]
    peak = float(np.max(np.abs(y), initial=0.0))
    if peak < SILENT_PEAK:
        raise SuiteSourceError(
            f"{sound_set.name} programs {sorted(programs.values())} rendered silence for keys "
            f"{sorted({n.pitch for n in notes})}; narrow PROGRAMS' key ranges in tympan/suite/music.py"
        )
    y = y * (10 ** (peak_db / 20) / peak)
    y[n_out - CUT_FADE :] *= np.linspace(1.0, 0.0, CUT_FADE)
    return y


# --------------------------------------------------------------------------- single notes


@dataclass(frozen=True)
class SingleNote:
    """One NSynth-like note: a GM program of a sound set at one key and velocity."""

    sound_set: SoundSet
    program: int
    pitch: int
    velocity: int
    peak_db: float

    def describe(self) -> str:
        return f"{self.sound_set.name} program {self.program} key {self.pitch} velocity {self.velocity}"


def _balanced(values: tuple, n: int, rng: np.random.Generator) -> list:
    """n of `values`, each as often as n allows (n // len or one more), in random order."""
    tiled = np.tile(np.arange(len(values)), -(-n // len(values)))
    return [values[i] for i in rng.permutation(tiled)[:n]]


def note_clip(sound_sets: _SoundSets, note: SingleNote) -> np.ndarray:
    """The note as a NOTE_SECONDS clip at SAMPLE_RATE: key held NOTE_HELD_SECONDS, then released."""
    held = round(NOTE_HELD_SECONDS * 1000 / GRID_MS)
    notes = [Note(0, held, note.pitch, note.velocity, 0)]
    return render(sound_sets, note.sound_set, {0: note.program}, notes, NOTE_SECONDS, note.peak_db)


def _build_notes(
    task_name: str,
    suite: str,
    tasks_dir: str | os.PathLike,
    plan: dict[str, list[SingleNote]],
    label_of,
    vocabulary: list[str],
    evaluation: list[str],
    sound_sets: _SoundSets,
) -> Path:
    labels: dict[str, dict[str, list[str]]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    details: dict[str, dict[str, str]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        labels[split], groups[split], details[split] = {}, {}, {}
        for index, note in enumerate(plan[split]):
            name = f"{split}-{index:05d}.wav"
            audio[(split, name)] = note_clip(sound_sets, note)
            labels[split][name] = [label_of(note)]
            groups[split][name] = [f"soundset:{note.sound_set.group}"]
            details[split][name] = note.describe()
    versions = {**sound_sets.versions, **engine_versions()}
    return write_suite_task(
        tasks_dir, suite, task_name, "scene", "multiclass", NOTE_SECONDS, evaluation, vocabulary,
        labels, audio, groups, versions, details=details,
    )  # fmt: skip


def _require_engines() -> None:
    _fluidsynth()
    require_commands(timidity="timidity")


def build_pitch(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Pitch: the MIDI key (21-108) of one instrument note, NSynth-style, from 4 s.

    Measures whether an embedding encodes pitch across instruments, registers and sample
    libraries; `chroma_acc` forgives octave errors. Labels (88): "21" ... "108", the keys of a
    piano; the vocabulary is all 88 in numeric order, so a label's index modulo 12 is its
    pitch class.
    Sources: single notes (key held 3 s, then 1 s of release; velocity 25/50/75/100/127) on
    the 70 GM programs of PITCHED_PROGRAMS (NSynth's 11 families, without the programs that
    do not sound at the key's pitch in every sound set), each only within its key range.
    Each clip draws its key first (balanced over the 88 keys), then a sound set of the
    split and a program of that set that can play the key, so the lowest and highest keys
    come mostly from pianos.
    Split rule: by sound-set group (see the module docstring): train FluidR3_GM,
    FluidR3Mono_GM, MuseScore_General; valid freepats; test TimGM6mb, sf_GMbank.
    Size: full 616 clips = 41 min (train 352 = 4 per key, valid 88 = 1 per key, test 176 =
    2 per key); tiny 22 clips = 1.5 min (train 12, valid 4, test 6, random keys).
    """
    check_suite(suite)
    _require_engines()
    sound_sets = _SoundSets()
    plan: dict[str, list[SingleNote]] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "pitch", split)
        options = [(s, p) for s in sound_sets.of_split(split) for p in sound_sets.programs(s, pitched=True)]
        plan[split] = []
        for pitch in _balanced(MIDI_PITCHES, SIZES["pitch"][suite][split], rng):
            playable = [(s, p) for s, p in options if PROGRAMS[p][1] <= pitch <= PROGRAMS[p][2]]
            sound_set, program = playable[rng.integers(len(playable))]
            velocity = int(rng.choice(VELOCITIES))
            plan[split].append(SingleNote(sound_set, program, pitch, velocity, float(rng.uniform(*PEAK_DB_RANGE))))
    return _build_notes(
        "pitch", suite, tasks_dir, plan, lambda note: str(note.pitch), [str(p) for p in MIDI_PITCHES],
        ["pitch_acc", "chroma_acc"], sound_sets,
    )  # fmt: skip


def build_instrument(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Instrument family: which of NSynth's 11 families plays one note, from 4 s.

    Measures whether an embedding separates instrument timbre independently of pitch,
    loudness and the sample library. Labels (11): bass brass flute guitar keyboard mallet
    organ reed string synth_lead vocal, mapped from GM programs by PROGRAMS (e.g. 0-8
    keyboard, 32-39 bass, 40-51 and 110 string, 52-54 vocal, 80-85 synth_lead).
    Sources: single notes as in `build_pitch` (key held 3 s, then released; velocity
    25/50/75/100/127), on all 78 programs of PROGRAMS. Each clip draws its family first
    (balanced), then a sound set of the split, one of its programs in that family, and a
    key uniformly in the program's range.
    Split rule: by sound-set group (see the module docstring): train FluidR3_GM,
    FluidR3Mono_GM, MuseScore_General; valid freepats (its only vocal program is voice
    oohs); test TimGM6mb, sf_GMbank.
    Size: full 605 clips = 40 min (train 330 = 30 per family, valid 110 = 10 per family,
    test 165 = 15 per family); tiny 21 clips = 1.4 min (train 11 = 1 per family, valid 4,
    test 6).
    """
    check_suite(suite)
    _require_engines()
    sound_sets = _SoundSets()
    plan: dict[str, list[SingleNote]] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "instrument", split)
        options = [(s, p) for s in sound_sets.of_split(split) for p in sound_sets.programs(s, pitched=False)]
        plan[split] = []
        for family in _balanced(FAMILIES, SIZES["instrument"][suite][split], rng):
            of_family = [(s, p) for s, p in options if PROGRAMS[p][0] == family]
            sound_set, program = of_family[rng.integers(len(of_family))]
            _, low, high = PROGRAMS[program]
            pitch = int(rng.integers(low, high + 1))
            velocity = int(rng.choice(VELOCITIES))
            plan[split].append(SingleNote(sound_set, program, pitch, velocity, float(rng.uniform(*PEAK_DB_RANGE))))
    return _build_notes(
        "instrument", suite, tasks_dir, plan, lambda note: PROGRAMS[note.program][0], list(FAMILIES),
        ["top1_acc"], sound_sets,
    )  # fmt: skip


# --------------------------------------------------------------------------- note onsets

CLIP_SECONDS = 10.0
CLIP_STEPS = round(CLIP_SECONDS * 1000 / GRID_MS)
# Score collections of music21's corpus: folder, file pattern, tempo range in quarter notes
# per minute (chorales move in quarters, Palestrina's masses in halves), and how a file
# name gives its group: the work it belongs to, so that variants of a chorale (bwv18.5-lz,
# bwv18.5-w) or the movements of one mass (Kyrie_44, Credo_44_a, ...) share a split.
SCORE_COLLECTIONS = {
    "bach": ("bach", "*.mxl", (60.0, 100.0)),
    "palestrina": ("palestrina", "*.krn", (100.0, 160.0)),
}
# Score groups go to a split by sha256(group name): stable when music21 adds scores.
SCORE_SPLIT_BOUNDS = {"train": 0.70, "valid": 0.85, "test": 1.0}
TRANSPOSE_RANGE = (-7, 7)  # semitones
# Notes are played for this fraction of their written length (articulation).
LEGATO_RANGE = (0.75, 1.0)
BASE_VELOCITY_RANGE = (50, 110)
VELOCITY_SPREAD = 8.0
# Random polyphony: note rate per second, note lengths (log-uniform), velocities, and how
# many instruments share a clip.
RANDOM_RATE_RANGE = (2.0, 8.0)
RANDOM_LENGTH_RANGE = (0.08, 1.5)
RANDOM_VELOCITY_RANGE = (30, 127)
ENSEMBLE_SIZES = (2, 3)


@dataclass(frozen=True)
class Score:
    """A score file of music21's corpus; `group` is the work it belongs to."""

    collection: str
    path: Path
    group: str


def _score_group(collection: str, stem: str) -> str:
    if collection == "bach":
        return f"bach/{stem.split('-', 1)[0]}"
    number = re.search(r"\d+", stem)
    return f"palestrina/mass-{int(number.group()) if number else 'unnumbered'}"


def score_split(group: str) -> str:
    """The split a score group belongs to, from the first 8 bytes of sha256(group)."""
    position = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "big") / 2**64
    return next(split for split in SPLITS if position < SCORE_SPLIT_BOUNDS[split])


def scores() -> dict[str, dict[str, list[Score]]]:
    """{split: {collection: [Score, ...]}} of SCORE_COLLECTIONS in music21's corpus, sorted by path."""
    music21 = _import("music21", "music21")
    corpus = Path(music21.__file__).parent / "corpus"
    by_split: dict[str, dict[str, list[Score]]] = {split: {c: [] for c in SCORE_COLLECTIONS} for split in SPLITS}
    for collection, (folder, pattern, _) in SCORE_COLLECTIONS.items():
        paths = sorted((corpus / folder).glob(pattern))
        if not paths:
            raise SuiteSourceError(f"music21 {music21.__version__} has no {folder}/{pattern} scores in {corpus}")
        for path in paths:
            group = _score_group(collection, path.stem)
            by_split[score_split(group)][collection].append(Score(collection, path, group))
    return by_split


@lru_cache(maxsize=64)
def score_notes(path: Path) -> tuple[tuple[tuple[float, float, int], ...], ...]:
    """The notes of a score, per part: ((onset, length, MIDI pitch), ...) in quarter notes, by onset.

    Tied notes are merged into one; grace notes (no length) are dropped.
    """
    music21 = _import("music21", "music21")
    # forceSource/storePickle: parse the file itself and leave no pickle behind in music21's
    # scratch folder.
    score = music21.converter.parse(path, forceSource=True, storePickle=False).stripTies()
    parts = []
    for part in score.parts:
        notes = []
        for element in part.flatten().getElementsByClass(["Note", "Chord"]):
            length = float(element.quarterLength)
            if length <= 0:
                continue
            notes += [(float(element.offset), length, int(p.midi)) for p in element.pitches]
        if notes:
            parts.append(tuple(sorted(notes)))
    return tuple(parts)


@dataclass(frozen=True)
class PolyClip:
    """One note-onset clip: notes on channels, each channel playing one GM program."""

    sound_set: SoundSet
    programs: dict[int, int]
    notes: tuple[Note, ...]
    groups: tuple[str, ...]
    description: str
    peak_db: float


def _steps(seconds: float) -> int:
    return round(seconds * 1000 / GRID_MS)


def _fits(program: int, pitches: list[int]) -> bool:
    _, low, high = PROGRAMS[program]
    return low <= min(pitches) and max(pitches) <= high


def score_clip(
    score: Score, sound_set: SoundSet, available: tuple[int, ...], rng: np.random.Generator
) -> PolyClip | None:
    """A CLIP_SECONDS excerpt of `score`, on one keyboard program or one program per part.

    Draws a tempo, a transposition and a start (a note onset leaving CLIP_SECONDS of music
    where the score is long enough); notes sounding across the start are left out. Half of
    the clips play every part on one keyboard program that covers all their keys, the
    others give each part its own program of `available` that covers the part's keys (a
    keyboard program if none does). Returns None when the excerpt holds no notes.
    """
    _, _, tempo_range = SCORE_COLLECTIONS[score.collection]
    parts = score_notes(score.path)
    qpm = float(rng.uniform(*tempo_range))
    seconds_per_quarter = 60.0 / qpm
    window = CLIP_SECONDS / seconds_per_quarter  # quarters
    transpose = int(rng.integers(TRANSPOSE_RANGE[0], TRANSPOSE_RANGE[1] + 1))
    end = max(onset + length for part in parts for onset, length, _ in part)
    onsets = sorted({onset for part in parts for onset, _, _ in part})
    starts = [o for o in onsets if o <= end - window] or onsets[:1]
    start = starts[rng.integers(len(starts))]
    excerpts = [
        [(onset - start, length, pitch + transpose) for onset, length, pitch in part if start <= onset < start + window]
        for part in parts
    ]
    excerpts = [e for e in excerpts if e]
    if not excerpts:
        return None
    keyboards = [p for p in KEYBOARD_PROGRAMS if p in available]
    if rng.random() < 0.5:
        everything = [pitch for excerpt in excerpts for _, _, pitch in excerpt]
        fitting = [p for p in keyboards if _fits(p, everything)]
        program = fitting[rng.integers(len(fitting))]
        channels = [MELODIC_CHANNELS[0]] * len(excerpts)
        programs = {MELODIC_CHANNELS[0]: program}
    else:
        channels = list(MELODIC_CHANNELS[: len(excerpts)])
        programs = {}
        for channel, excerpt in zip(channels, excerpts):
            pitches = [pitch for _, _, pitch in excerpt]
            fitting = [p for p in available if _fits(p, pitches)] or [p for p in keyboards if _fits(p, pitches)]
            programs[channel] = fitting[rng.integers(len(fitting))]
    base_velocity = rng.uniform(*BASE_VELOCITY_RANGE)
    notes: list[Note] = []
    for channel, excerpt in zip(channels, excerpts):
        for onset, length, pitch in excerpt:
            played = length * rng.uniform(*LEGATO_RANGE)
            velocity = int(np.clip(round(base_velocity + rng.normal(0.0, VELOCITY_SPREAD)), 1, 127))
            on = _steps(onset * seconds_per_quarter)
            off = max(on + 1, _steps((onset + played) * seconds_per_quarter))
            notes.append(Note(on, off, pitch, velocity, channel))
    notes = clean_notes(notes, CLIP_STEPS)
    description = (
        f"{sound_set.name} programs {[programs[c] for c in sorted(programs)]} score "
        f"{score.collection}/{score.path.name} from quarter {start:g}, transposed {transpose:+d}, {qpm:.0f} qpm"
    )
    return PolyClip(
        sound_set, programs, tuple(notes), (f"soundset:{sound_set.group}", f"score:{score.group}"),
        description, float(rng.uniform(*PEAK_DB_RANGE)),
    )  # fmt: skip


def random_clip(sound_set: SoundSet, available: tuple[int, ...], rng: np.random.Generator) -> PolyClip:
    """CLIP_SECONDS of random polyphony: Poisson onsets, log-uniform lengths, uniform keys.

    Half of the clips play one keyboard program over its whole range, the others spread
    the notes over ENSEMBLE_SIZES programs of `available`, each within its own range.
    """
    keyboards = [p for p in KEYBOARD_PROGRAMS if p in available]
    if rng.random() < 0.5:
        chosen = [keyboards[rng.integers(len(keyboards))]]
    else:
        size = int(rng.choice(ENSEMBLE_SIZES))
        chosen = [int(p) for p in rng.choice(np.array(available), size=size, replace=False)]
    programs = dict(zip(MELODIC_CHANNELS, chosen))
    rate = rng.uniform(*RANDOM_RATE_RANGE)
    notes = []
    for _ in range(rng.poisson(rate * CLIP_SECONDS)):
        channel = MELODIC_CHANNELS[rng.integers(len(chosen))]
        _, low, high = PROGRAMS[programs[channel]]
        onset = int(rng.integers(CLIP_STEPS))
        length = np.exp(rng.uniform(*np.log(RANDOM_LENGTH_RANGE)))
        pitch = int(rng.integers(low, high + 1))
        velocity = int(rng.integers(RANDOM_VELOCITY_RANGE[0], RANDOM_VELOCITY_RANGE[1] + 1))
        notes.append(Note(onset, onset + max(1, _steps(length)), pitch, velocity, channel))
    notes = clean_notes(notes, CLIP_STEPS)
    description = f"{sound_set.name} programs {chosen} random polyphony {rate:.1f} notes/s"
    return PolyClip(
        sound_set, programs, tuple(notes), (f"soundset:{sound_set.group}",), description,
        float(rng.uniform(*PEAK_DB_RANGE)),
    )  # fmt: skip


def clip_events(clip: PolyClip) -> list[Event]:
    """The clip's notes as events: label = MIDI key, start = onset, end = offset (ms, cut at the clip's end)."""
    return [
        Event(str(n.pitch), float(n.onset * GRID_MS), float(min(n.offset, CLIP_STEPS) * GRID_MS))
        for n in sorted(clip.notes, key=lambda n: (n.onset, n.pitch, n.channel))
    ]


def build_note_onsets(tasks_dir: str | os.PathLike, suite: str) -> Path:
    """Note onsets: which of the 88 piano keys start, and when, in 10 s of music (MAESTRO-style).

    Measures whether an embedding's frames resolve note onsets in time (50 ms) and pitch in
    polyphony, across instruments and sample libraries. Labels (88): "21" ... "108" (MIDI
    keys); events {label, start, end} in ms from note-on to note-off (a note still held at
    10 s ends at 10000). Scored like HEAR's MAESTRO task: onset F-measure with a 50 ms
    collar first, then onset+offset; predictions decoded with a 150 ms median filter and a
    50 ms minimum length.
    Sources: half of the clips are excerpts of real scores from music21's corpus, J. S.
    Bach's chorales (408 scores, all but one chorales) and Palestrina's masses (1,318
    movements), at a random tempo, transposed by -7..+7 semitones, with notes played for
    75-100 % of their written length and velocities around a random level; the other half
    are random polyphony (2-8 notes/s, 80 ms - 1.5 s long, keys uniform over each program's
    range). Half of each kind is played on one keyboard program (GM 0-7), half on a mix of
    PITCHED_PROGRAMS instruments (one per part, or 2-3 for random notes). A key struck again
    while its pitch sounds cuts the earlier note, so no two events of one key overlap.
    Split rule: by sound-set group (train FluidR3_GM, FluidR3Mono_GM, MuseScore_General;
    valid freepats; test TimGM6mb, sf_GMbank) AND by work: a chorale (with its variants) or
    a mass (all its movements) is in one split only, chosen by a hash of its name (70/15/15).
    Size: full 180 clips = 30 min (train 120, valid 30, test 30); tiny 8 clips = 1.3 min
    (train 4, valid 2, test 2).
    """
    check_suite(suite)
    _require_engines()
    music21 = _import("music21", "music21")
    sound_sets = _SoundSets()
    by_split = scores()
    labels: dict[str, dict[str, list[Event]]] = {}
    groups: dict[str, dict[str, list[str]]] = {}
    details: dict[str, dict[str, str]] = {}
    audio: dict[tuple[str, str], np.ndarray] = {}
    for split in SPLITS:
        rng = split_rng(__name__, "note-onsets", split)
        sets = sound_sets.of_split(split)
        unused = {c: list(rng.permutation(len(by_split[split][c]))) for c in SCORE_COLLECTIONS}
        used_groups: set[str] = set()
        labels[split], groups[split], details[split] = {}, {}, {}
        n = SIZES["note-onsets"][suite][split]
        for index, kind in enumerate(_balanced(("score", "random"), n, rng)):
            sound_set = sets[rng.integers(len(sets))]
            available = sound_sets.programs(sound_set, pitched=True)
            clip = None
            if kind == "score":
                collection = tuple(SCORE_COLLECTIONS)[rng.integers(len(SCORE_COLLECTIONS))]
                while clip is None:
                    if not unused[collection]:
                        raise SuiteSourceError(f"too few {collection} scores in the {split} split for {n} clips")
                    score = by_split[split][collection][unused[collection].pop()]
                    if score.group in used_groups:
                        continue
                    used_groups.add(score.group)
                    clip = score_clip(score, sound_set, available, rng)
            else:
                clip = random_clip(sound_set, available, rng)
            name = f"{split}-{index:05d}.wav"
            audio[(split, name)] = render(
                sound_sets, clip.sound_set, clip.programs, list(clip.notes), CLIP_SECONDS, clip.peak_db
            )
            labels[split][name] = clip_events(clip)
            groups[split][name] = list(clip.groups)
            details[split][name] = clip.description
    versions = {**sound_sets.versions, **engine_versions(), "music21 (PyPI)": music21.__version__}
    return write_suite_task(
        tasks_dir, suite, "note-onsets", "event", "multilabel", CLIP_SECONDS,
        ["event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms"], [str(p) for p in MIDI_PITCHES],
        labels, audio, groups, versions, details=details,
        evaluation_params={"event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]}},
    )  # fmt: skip

"""File I/O on the ground floor: listing and reading audio files, atomic writes of files,
.npz and JSON. Imports nothing of tympan (every other layer may import it).

Why a module of its own: a HEAR module takes mono float audio at one fixed rate, while
files on disk come in any format, channel count and rate. `read_audio` turns any of them
into what the model takes, with one decoder (libsndfile, through soundfile) and one
resampler (soxr), so the embedder, the validator and the evaluator all see the same samples.
Inputs are checked before they are opened: a FIFO, a socket or a device is never opened
(reading a FIFO would wait for a writer forever), and a broken or looping symbolic link is
named as such (`not_a_file`).

Resampling uses soxr's "HQ" recipe (20-bit precision, about 120 dB of stopband
attenuation, linear phase): far below anything an embedding resolves, and faster than
"VHQ", whose extra precision only matters when the result is stored as 24-bit audio.

soundfile, soxr and tqdm are the optional `cli` extra (`pip install "tympan[cli]"`), so
they are imported only inside the functions that need them; the model itself needs none.
MP3 needs libsndfile >= 1.1, which the soundfile >= 0.12 wheels bundle.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import BinaryIO

import numpy as np

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
RESAMPLE_QUALITY = "HQ"


class AudioReadError(Exception):
    """An audio file could not be read: unreadable, corrupt, empty or not audio.

    `path` is the file and `reason` what went wrong, both also in the message.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read audio file {self.path}: {reason}")


def require_extra(name: str) -> ModuleType:
    """Import `name`, one of the `cli` extra's packages, or say how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"{name} is needed to read audio files and show progress; install it with "
            f'pip install "tympan[cli]"'
        ) from e


def read_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decode an audio file to mono at `sample_rate`.

    Reads anything libsndfile reads (wav, flac, ogg, mp3, ...), averages the channels, and
    resamples with soxr when the file's rate differs from `sample_rate` (Hz).
    Returns float32, shape (n_samples,), n_samples = round(duration * sample_rate);
    values are the file's, not normalised (in [-1, 1] for integer formats).
    Raises AudioReadError for a missing, unreadable, empty or corrupt file, one with
    non-finite samples, or a path that is not a regular file (not_a_file; never opened).
    """
    sf = require_extra("soundfile")
    soxr = require_extra("soxr")
    problem = not_a_file(path)
    if problem is not None:
        raise AudioReadError(path, problem)
    try:
        # Opening the file ourselves gives the OS's reason (no such file, permission
        # denied) where libsndfile would only say "System error".
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                raise AudioReadError(path, "the file is empty (0 bytes)")
            data, file_rate = sf.read(f, dtype="float32", always_2d=True)
    except OSError as e:
        raise AudioReadError(path, e.strerror or str(e)) from e
    except sf.SoundFileError as e:
        raise AudioReadError(path, getattr(e, "error_string", None) or str(e)) from e

    mono = data.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise AudioReadError(path, "it contains NaN or infinite samples")
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality=RESAMPLE_QUALITY)
    if mono.size == 0:
        raise AudioReadError(
            path, f"it has no samples at {sample_rate} Hz ({data.shape[0]} samples at {file_rate} Hz)"
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def not_a_file(path: str | os.PathLike) -> str | None:
    """Why `path` cannot be read as a file, found without opening it; None for a regular file
    (or a link to one).

    Names a missing path, a broken symbolic link (and its target), a link loop, and a FIFO,
    socket, device or folder: these must not be opened (a FIFO blocks until a writer comes).
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "a symbolic link loop (the link points back to itself through other links)"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return f"a broken symbolic link (its target {os.readlink(path)} does not exist)"
        return e.strerror or str(e)
    if stat.S_ISREG(mode):
        return None
    kinds = [(stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]  # fmt: skip
    kind = next((name for test, name in kinds if test(mode)), "a special file")
    return f"{kind}, not a regular file (not opened)"


def probe_audio(path: str | os.PathLike) -> tuple[int, int] | None:
    """(sample rate in Hz, number of frames) from the file's header, without decoding it.

    Meant for planning work (grouping files of equal length), so it never raises: None when
    the header cannot be read, or when `path` is not a regular file (not opened, see
    not_a_file); `read_audio` then gives the reason. For some formats (VBR mp3) the header's
    length is an estimate.
    """
    sf = require_extra("soundfile")
    if not_a_file(path) is not None:
        return None
    try:
        info = sf.info(str(path))
    except (OSError, sf.SoundFileError, RuntimeError):
        return None
    return (int(info.samplerate), int(info.frames)) if info.samplerate > 0 else None


def find_audio(paths: list[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """The audio files named by `paths`, as (root, relative_path) pairs.

    A folder is searched recursively for the AUDIO_EXTENSIONS (any case); its entries come
    as (folder, path inside it), sorted by that path. A file is taken as given, whatever
    its extension (the user named it), as (its folder, its name). Pairs keep the order of
    `paths`, so the listing is the same on every run and every machine.
    Entries that are not regular files (a FIFO, a broken or looping symbolic link) are
    listed too, so that the caller reports them (not_a_file says why) rather than dropping
    them unseen; folders are not listed, and links to folders are not followed.
    Raises FileNotFoundError naming the first path that does not exist.
    """
    found: list[tuple[Path, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            # is_dir() is False for a FIFO, a broken link and a link loop: they are listed
            files = (f.relative_to(p) for f in p.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS and not f.is_dir())
            found.extend((p, rel) for rel in sorted(files, key=lambda r: r.parts))
        elif os.path.lexists(p):
            found.append((p.parent, Path(p.name)))
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return found


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], object],
    before_rename: Callable[[Path], object] | None = None,
) -> None:
    """Write `path` through `write(binary file)` so that it is either complete or absent.

    The bytes go to a temporary file in the same folder (`<name>.tmp-<random>`, so it is
    never mistaken for a result), which is flushed to disk and then renamed over `path`:
    the rename is atomic, so a reader, or a run killed at any moment, never sees a partial
    file. On an exception the temporary file is removed; only a hard kill (SIGKILL, power
    loss) can leave one behind, which is safe to delete. Creates the folder if needed; an
    existing `path` is replaced. `before_rename(temporary path)`, when given, runs once the
    bytes are on disk and before the rename (e.g. to record what is about to appear).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        # "x" (exclusive create) honours the umask, unlike tempfile's private 0600 files
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_save_npz(
    path: str | os.PathLike, before_rename: Callable[[Path], object] | None = None, **arrays: np.ndarray
) -> None:
    """Write `arrays` to the .npz file `path` so that it is either complete or absent (atomic_write,
    which also says what `before_rename` is for)."""
    atomic_write(path, lambda f: np.savez(f, **arrays), before_rename)


def atomic_write_json(path: str | os.PathLike, data, indent: int | None = None, sort_keys: bool = False) -> None:
    """Write `data` as JSON (plus a newline) to `path`, complete or absent (atomic_write)."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))

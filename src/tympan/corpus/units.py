"""The embedding pipeline both output formats and both engines share: list inputs, group them
into units, decode, embed (with one retry rule), and guard the output folder.

    list_sources -> probe -> make_units -> decode_unit -> embed_unit -> rows
    rows -> corpus/npz.py (one .npz per file) or corpus/driver.py (Parquet shards)

A *unit* is the piece of work an engine schedules: up to --batch-size files of exactly equal
length at the module's rate (known from their headers), or one file alone
when it is longer than kit.hear.MAX_BATCHED_SECONDS or its header cannot be read. Units are
made on the driver, identically for both engines, so that both call the module with the same
batches: the outputs then agree value for value even for a module whose results depend on the
batch. A long file is never decoded into a batch with other files: memory stays bounded by
--batch-size short files or one long file (whose embedding the module itself chunks).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from tympan.checksum import weights_identity
from tympan.io import AUDIO_EXTENSIONS, AudioReadError, find_audio, probe_audio, read_audio
from tympan.kit.hear import (
    HEAR_ATTRIBUTES,
    MAX_BATCHED_SECONDS,
    UsageError,
    embed_batch,
    import_hear_module,
    load_hear_model,
)

LOCK = ".lock"


@dataclass(frozen=True)
class Header:
    """What embedded an output folder; a run may only add to a folder with the same header."""

    module: str
    weights_sha256: str | None
    sample_rate: int
    timestamp_embedding_size: int
    scene_embedding_size: int

    def describe(self) -> str:
        sha = (self.weights_sha256 or "unknown")[:12]
        return (
            f"module {self.module!r} (weights {sha}, {self.sample_rate} Hz, "
            f"{self.timestamp_embedding_size}/{self.scene_embedding_size}-d)"
        )

    def fields(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Layout:
    """How a Parquet output stores its rows. The defaults are `tympan embed`'s (float32, a
    scene column, nothing more); other users of the pipeline (`tympan train targets`) change
    them. A folder records a non-default layout in its manifest and keeps it for every run."""

    precision: str = "float32"  # of the timestamp embeddings: "float32" or "float16" (half the bytes)
    scene: bool = True  # False: get_scene_embeddings is never called and rows have no scene column
    sha256: bool = False  # True: rows have a `sha256` column, each source's Source.sha256

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")

    def fields(self) -> dict:
        return asdict(self)


PRECISIONS = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class Source:
    """One input file: its key (relative path, size, mtime) and its header's rate and length."""

    path: str  # relative to its input root, posix: the row's key
    file: str  # where to open it, absolute: the output's recorded source
    given: str  # as the command line reached it (input root / path), for messages
    size: int
    mtime_ns: int
    sample_rate: int | None = None  # Hz, from the header; None when unreadable
    frames: int | None = None  # at sample_rate
    sha256: str | None = None  # the content's SHA-256 when the caller knows it (Layout.sha256 stores it)

    @property
    def duration_s(self) -> float | None:
        return self.frames / self.sample_rate if self.sample_rate else None


@dataclass(frozen=True)
class ModelSpec:
    """What every engine needs to load the model and embed units (picklable, for Ray)."""

    module: str
    model_path: str
    batch_size: int
    header: Header
    layout: Layout = Layout()


def list_sources(paths: list[str]) -> list[Source]:
    """The input files named by `paths` (tympan.io.find_audio's rules), with size and mtime, in input order.

    Raises kit.hear.UsageError for a missing path, no audio, or two different files that
    would share one relative path. An entry that is not a regular file (a FIFO, a broken
    link) is listed, with its link's own size and mtime when it has no target: it is never
    opened, and decode_unit reports it as a failed file (tympan.io.not_a_file).
    """
    try:
        found = find_audio(paths)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if not found:
        raise UsageError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {' '.join(paths)}")
    sources: dict[str, Source] = {}
    for root, rel in found:
        file = root / rel
        first = sources.get(rel.as_posix())
        if first is not None:
            # The same file named twice is embedded once; two files for one key is an error.
            if Path(first.file).resolve() != file.resolve():
                raise UsageError(
                    f"{first.file} and {file} would both be stored as {rel.as_posix()} (their path in their input "
                    "folder); embed them into separate --out folders"
                )
            continue
        try:
            st = os.stat(file)
        except OSError:  # a broken link or a loop: the link itself
            st = os.lstat(file)
        # Absolute: Ray's workers, on this node or others, do not share the driver's cwd.
        sources[rel.as_posix()] = Source(rel.as_posix(), str(file.absolute()), str(file), st.st_size, st.st_mtime_ns)
    return list(sources.values())


def probe(source: Source) -> Source:
    """`source` with the rate and frame count of its header (None when it cannot be read or is
    not a regular file: tympan.io.probe_audio)."""
    header = probe_audio(source.file)
    if header is None:
        return source
    sample_rate, frames = header
    return replace(source, sample_rate=sample_rate, frames=frames)


def make_units(sources: list[Source], batch_size: int, sample_rate: int) -> list[list[Source]]:
    """Group probed sources into units (module docstring), shortest first, deterministically.

    Files batch together when their length at the module's `sample_rate` (from the header,
    round(frames * sample_rate / rate), as tympan.io.read_audio gives) is the same.
    """
    long_s = MAX_BATCHED_SECONDS

    def length(s: Source) -> int | None:
        if s.duration_s is None or s.duration_s > long_s:
            return None  # alone
        return round(s.frames * sample_rate / s.sample_rate)

    units: list[list[Source]] = []
    last_length = None
    for s in sorted(sources, key=lambda s: (s.duration_s is None, s.duration_s or 0.0, length(s) or 0, s.path)):
        n = length(s)
        if n is not None and n == last_length and len(units[-1]) < batch_size:
            units[-1].append(s)
        else:
            units.append([s])
        last_length = n
    return units


def unit_to_json(unit: list[Source]) -> list[dict]:
    return [asdict(s) for s in unit]


def unit_from_json(items: list[dict]) -> list[Source]:
    return [Source(**item) for item in items]


def decode_unit(unit: list[Source], sample_rate: int) -> list[tuple[Source, np.ndarray | None, str | None]]:
    """Read each file of `unit` as mono float32 at `sample_rate` (tympan.io.read_audio).

    Returns (source, audio (n_samples,) or None, error or None) per file, in order.
    """
    decoded = []
    for s in unit:
        try:
            decoded.append((s, read_audio(s.file, sample_rate), None))
        except AudioReadError as e:
            decoded.append((s, None, e.reason))
    return decoded


def load(spec: ModelSpec, device: str) -> tuple[ModuleType, object]:
    """Import the spec's module and load its model on `device`, in eval mode.

    Raises kit.hear.UsageError in one line when the module cannot be imported or its
    load_model fails (a missing, truncated or corrupt --model file, missing weights).
    """
    module = import_hear_module(spec.module)
    return module, load_hear_model(module, spec.model_path, device)


def header_of(module_name: str, model, model_path: str) -> Header:
    """The output header of a loaded model. Raises kit.hear.UsageError when the model lacks
    the HEAR attributes (sample_rate, timestamp_embedding_size, scene_embedding_size)."""
    missing = [a for a in HEAR_ATTRIBUTES if not hasattr(model, a)]
    if missing:
        raise UsageError(
            f"the model of {module_name!r} has no {', '.join(missing)}: the HEAR API requires them, "
            "and both output formats record them up front"
        )
    return Header(
        module_name,
        weights_identity(model, model_path),
        int(model.sample_rate),
        int(model.timestamp_embedding_size),
        int(model.scene_embedding_size),
    )


def embed_unit(
    decoded: list[tuple[Source, np.ndarray | None, str | None]],
    module: ModuleType,
    model,
    device: torch.device,
    sha: str | None,
    layout: Layout = Layout(),
) -> list[dict]:
    """Embed a decoded unit: rows for tympan.corpus.shards.rows_table, in the unit's order.

    Files of equal length go through the module in one call of each HEAR function (only
    get_timestamp_embeddings without layout.scene); a call that fails is retried one file at
    a time, and a file that fails alone gets an error row. The timestamp embeddings are cast
    to layout.precision here, and a file whose outputs hold NaN or infinite values after that
    cast (float16 overflows above 65504) gets an error row: no format ever stores a
    non-finite embedding.
    """
    results: dict[int, dict | str] = {}
    by_length: dict[int, list[int]] = {}
    for i, (_, audio, error) in enumerate(decoded):
        if error is not None:
            results[i] = error
        else:
            by_length.setdefault(len(audio), []).append(i)

    def run(indices: list[int]) -> None:
        try:
            with torch.no_grad():
                arrays = embed_batch(module, model, device, [decoded[i][1] for i in indices], scene=layout.scene)
        except Exception as e:  # any error of the module's own code fails these files only
            if len(indices) > 1:
                for i in indices:
                    run([i])
            else:
                results[indices[0]] = f"embedding failed: {type(e).__name__}: {e}"
            return
        for i, a in zip(indices, arrays):
            with np.errstate(over="ignore"):  # an overflow becomes inf, which _non_finite reports
                a["embeddings"] = a["embeddings"].astype(PRECISIONS[layout.precision], copy=False)
            results[i] = _non_finite(a) or a

    for indices in by_length.values():
        run(indices)

    rows = []
    for i, (s, _, _) in enumerate(decoded):
        r = results[i]
        row = {
            "path": s.path,
            "source": s.file,
            "size": s.size,
            "mtime_ns": s.mtime_ns,
            "sample_rate": s.sample_rate,
            "duration_s": s.duration_s,
            "weights_sha256": sha,
            "sha256": s.sha256,
            "error": r if isinstance(r, str) else None,
        }
        if not isinstance(r, str):
            row.update(r)
        rows.append(row)
    return rows


def _non_finite(arrays: dict[str, np.ndarray]) -> str | None:
    """The error of a clip whose outputs are not all finite, else None."""
    bad = {k: int(np.size(a) - np.count_nonzero(np.isfinite(a))) for k, a in arrays.items()}
    if not any(bad.values()):
        return None
    counts = ", ".join(f"{n} of {np.size(arrays[k])} in {k}" for k, n in bad.items() if n)
    return f"embedding failed: the module returned NaN or infinite values ({counts}); nothing is stored for this file"


def embed_units(
    units: list[list[Source]],
    header: Header,
    module: ModuleType,
    model,
    device: str | torch.device,
    layout: Layout = Layout(),
) -> Iterator[list[dict]]:
    """Decode and embed `units` one after the other in this process, with the loaded `module`
    and `model` (on `device`): the rows of each unit (embed_unit), unit by unit."""
    dev = torch.device(device)
    for unit in units:
        yield embed_unit(decode_unit(unit, header.sample_rate), module, model, dev, header.weights_sha256, layout)


def check_out(out: str | os.PathLike) -> Path:
    """`--out` as a Path; UsageError when it exists and is not a folder."""
    path = Path(out)
    if os.path.lexists(path) and not path.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder: give a new folder, or one tympan embed wrote")
    return path


class FolderLock:
    """An exclusive flock on OUT/.lock for the run that writes OUT (released by the kernel when
    the process dies, so a killed run never blocks the next). A context manager; raises
    UsageError when another run holds it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"another tympan embed is writing to {self.out} (it holds {self.out / LOCK}); "
                "wait for it to finish or stop it, then run again"
            ) from None
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def same_file(a: str, b: str) -> bool:
    """Whether the paths `a` and `b` name one file (equal, or both exist and are the same inode)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False

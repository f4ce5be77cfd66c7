"""The work of a corpus run, shared by both engines: list inputs, group them, decode, embed.

A *unit* is the piece of work an engine schedules: up to --batch-size files of exactly equal
length at the module's rate (known from their headers), or one file alone
when it is longer than kit.hear.MAX_BATCHED_SECONDS or its header cannot be read. Units are
made on the driver, identically for both engines, so that both call the module with the same
batches: the outputs then agree value for value even for a module whose results depend on the
batch. A long file is never decoded into a batch with other files: memory stays bounded by
--batch-size short files or one long file (whose embedding the module itself chunks).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from tympan.checksum import weights_identity
from tympan.corpus.shards import Header
from tympan.io import AUDIO_EXTENSIONS, AudioReadError, find_audio, read_audio, require_extra
from tympan.kit.hear import MAX_BATCHED_SECONDS, UsageError, embed_batch, import_hear_module, load_hear_model


@dataclass(frozen=True)
class Source:
    """One input file: its key (relative path, size, mtime) and its header's rate and length."""

    path: str  # relative to its input root, posix: the row's key
    file: str  # where to open it, absolute
    size: int
    mtime_ns: int
    sample_rate: int | None = None  # Hz, from the header; None when unreadable
    frames: int | None = None  # at sample_rate

    @property
    def duration_s(self) -> float | None:
        return self.frames / self.sample_rate if self.sample_rate else None


@dataclass(frozen=True)
class Job:
    """What every engine needs to load the model and embed units (picklable, for Ray)."""

    module: str
    model_path: str
    batch_size: int
    header: Header


def list_sources(paths: list[str]) -> list[Source]:
    """The input files named by `paths` (tympan.io.find_audio's rules), with size and mtime, in input order.

    Raises kit.hear.UsageError for a missing path, no audio, or two different files that
    would share one relative path.
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
                    f"{first.file} and {file} would both be stored as {rel.as_posix()}; embed them in separate runs"
                )
            continue
        st = os.stat(file)
        # Absolute: Ray's workers, on this node or others, do not share the driver's cwd.
        sources[rel.as_posix()] = Source(rel.as_posix(), str(file.absolute()), st.st_size, st.st_mtime_ns)
    return list(sources.values())


def probe(source: Source) -> Source:
    """`source` with the rate and frame count of its header (None when it cannot be read)."""
    sf = require_extra("soundfile")
    try:
        info = sf.info(source.file)
    except (OSError, sf.SoundFileError, RuntimeError):
        return source
    if info.samplerate <= 0:
        return source
    return Source(source.path, source.file, source.size, source.mtime_ns, int(info.samplerate), int(info.frames))


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


def load(job: Job, device: str) -> tuple[ModuleType, object]:
    """Import the job's module and load its model on `device`, in eval mode."""
    module = import_hear_module(job.module)
    return module, load_hear_model(module, job.model_path, device)


def header_of(job_module: str, model, model_path: str) -> Header:
    """The output header of a loaded model. Raises kit.hear.UsageError when the model lacks
    the HEAR attributes (sample_rate, timestamp_embedding_size, scene_embedding_size)."""
    missing = [a for a in ("sample_rate", "timestamp_embedding_size", "scene_embedding_size") if not hasattr(model, a)]
    if missing:
        raise UsageError(
            f"the model of {job_module!r} has no {', '.join(missing)}: the HEAR API requires them, "
            "and a Parquet output needs the embedding sizes up front"
        )
    return Header(
        job_module,
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
) -> list[dict]:
    """Embed a decoded unit: rows for tympan.corpus.shards.rows_table, in the unit's order.

    Files of equal length go through the module in one call of each HEAR function; a call
    that fails is retried one file at a time, and a file that fails alone gets an error row.
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
                arrays = embed_batch(module, model, device, [decoded[i][1] for i in indices])
        except Exception as e:  # any error of the module's own code fails these files only
            if len(indices) > 1:
                for i in indices:
                    run([i])
            else:
                results[indices[0]] = f"embedding failed: {type(e).__name__}: {e}"
            return
        for i, a in zip(indices, arrays):
            results[i] = a

    for indices in by_length.values():
        run(indices)

    rows = []
    for i, (s, _, _) in enumerate(decoded):
        r = results[i]
        row = {
            "path": s.path,
            "size": s.size,
            "mtime_ns": s.mtime_ns,
            "sample_rate": s.sample_rate,
            "duration_s": s.duration_s,
            "weights_sha256": sha,
            "error": r if isinstance(r, str) else None,
        }
        if not isinstance(r, str):
            row.update(r)
        rows.append(row)
    return rows

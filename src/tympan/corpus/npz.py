"""`tympan embed` (`--format npz`, the default): one .npz per input file.

    tympan embed PATHS... --out DIR [--module NAME] [--model PATH] [--device DEV] [--batch-size N]

The second writer of the embedding pipeline: inputs are listed, probed, grouped, decoded,
embedded and retried by corpus.units, in this process, exactly as for a Parquet output with
`--engine local`; only the writing differs.

Inputs: folders are searched recursively for .wav .flac .ogg .mp3 files (any case);
a file named on the command line is taken whatever its extension. An entry that is not a
regular file (a FIFO, a broken or looping symbolic link) is reported as a failed file and
never opened.

Output layout. Each input file gets `DIR/<its path relative to its input root>.npz`: a
file inside a folder given on the command line keeps its place under that folder
(`data/` + `dogs/bark.wav` -> `DIR/dogs/bark.wav.npz`), a file given by itself goes to
`DIR/<its name>.npz` (`x/bark.wav` -> `DIR/bark.wav.npz`). The audio extension stays in
the name so that `bark.wav` and `bark.flac` do not collide. Each .npz holds:

    embeddings  float32 (n_timestamps, timestamp_embedding_size)  from get_timestamp_embeddings
    timestamps  float32 (n_timestamps,)  frame centres in milliseconds from the file's start
    scene       float32 (scene_embedding_size,)                   from get_scene_embeddings

Load one with `np.load(path)["embeddings"]`. The audio is the whole file, mono (mean of
the channels), resampled with soxr to the module's sample_rate; nothing is padded or cut.
Beside the .npz files: `DIR/tympan-embed.jsonl`, the record of what tympan wrote, and
`DIR/.lock`, held by the run writing DIR.

The record (JSON lines). The first line says what embedded the folder: {"format":
"tympan-npz/1", "module", "weights_sha256", "sample_rate", "timestamp_embedding_size",
"scene_embedding_size"} (the Parquet manifest's fields and rule: one folder, one model).
Then one line per .npz written, {"path": relative path of the input, "source": absolute
path of the input file, "size" and "mtime_ns": the input's size and modification time when it
was listed, "bytes": size of the .npz}, appended once the .npz's bytes are on
disk and before it is renamed into place; a later line for a path replaces an earlier one.

Why it works this way:
- Resumable: a file whose .npz is recorded, from the same source file, unchanged since (same
  size and modification time, the Parquet rule), with the recorded .npz size and a readable
  archive directory, is skipped, so rerunning after an interruption, or after adding files,
  only does the missing work; to redo a file, delete its .npz. A changed input, and a .npz
  that is missing, emptied or truncated, are embedded again. Every .npz is written to a
  temporary file and renamed into place, so a killed run never leaves a partial one (a hard
  kill may leave a `*.npz.tmp-*` file, safe to delete).
- Never overwrites what it did not write: a .npz that exists without a record line (another
  program's, or one written by a tympan older than the record) and a .npz recorded from
  another source file (two input roots with one relative path, in two runs) are refused
  before anything is embedded, naming the files and the fix (exit code 2).
- Batches hold files of exactly equal length only (corpus.units.make_units): the HEAR API
  takes equal lengths per call, and padding a clip would change its scene embedding; files
  over MAX_BATCHED_SECONDS go alone to bound memory. A batch that fails (e.g. out of memory)
  is retried one file at a time.
- One bad file does not stop a long run: a file that cannot be read or embedded, or whose
  embedding is not finite (NaN or infinite values are never written), is reported on stderr
  with the reason and skipped; the exit code is 1 when any failed (0 otherwise, 2 for a
  command-line or output-folder error, 130 after Ctrl-C), and the summary lists them again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tympan.corpus.units import (
    FolderLock,
    Header,
    ModelSpec,
    Source,
    check_out,
    embed_units,
    header_of,
    list_sources,
    load,
    make_units,
    probe,
    same_file,
)
from tympan.io import atomic_save_npz, atomic_write, require_extra
from tympan.kit.hear import UsageError, check_device, format_duration

RECORD = "tympan-embed.jsonl"
FORMAT = "tympan-npz/1"
NPZ_MEMBERS = ["embeddings.npy", "scene.npy", "timestamps.npy"]  # sorted
PARQUET_ONLY = ("engine", "ray_address", "shard_rows", "shard_mb", "concurrency")


def main(args: argparse.Namespace) -> int:
    """Run `tympan embed --format npz` with the arguments declared in tympan.cli.

    Returns the exit code: 0 when every file is embedded (now or before), 1 when some
    failed, 2 for a command-line or output-folder error (nothing embedded), 130 after Ctrl-C.
    """
    start = time.perf_counter()
    try:
        _check(args)
        out = check_out(args.out)
        if (out / "manifest.json").exists():
            raise UsageError(
                f"{out} is a Parquet output (it has manifest.json): add --format parquet, or use another --out"
            )
        sources = list_sources(args.paths)
        module, model = load(ModelSpec(args.module, args.model, args.batch_size, None), args.device)
        header = header_of(args.module, model, args.model)
        with FolderLock(out), _Record(out, header) as record:
            run = _plan_npz(out, record, sources)
            if run.todo:
                units = make_units([probe(s) for s in run.todo], args.batch_size, header.sample_rate)
                if run.write_all(embed_units(units, header, module, model, args.device), out, record) == "interrupted":
                    print(run.summary(time.perf_counter() - start), file=sys.stderr)
                    print("tympan embed: interrupted; run the same command again to finish", file=sys.stderr)
                    return 130
    except UsageError as e:
        print(f"tympan embed: error: {e}", file=sys.stderr)
        return 2
    print(run.summary(time.perf_counter() - start), file=sys.stderr)
    return 1 if run.failed else 0


def _check(args: argparse.Namespace) -> None:
    for name in PARQUET_ONLY:
        if getattr(args, name, None) not in (None, "local"):
            raise UsageError(f"--{name.replace('_', '-')} needs --format parquet")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_device(args.device)


def npz_path(out: Path, key: str) -> Path:
    """Where the input with relative path `key` is written."""
    return out / f"{key}.npz"


class _Record:
    """DIR/tympan-embed.jsonl (module docstring): read at entry, appended to while writing."""

    def __init__(self, out: Path, header: Header) -> None:
        self.path = out / RECORD
        self.header = header
        self.entries: dict[str, dict] = {}
        self.fd: int | None = None

    def __enter__(self) -> _Record:
        theirs = None
        if os.path.lexists(self.path):
            theirs, self.entries = self._read()
        if theirs is not None and self.entries and theirs != self.header:
            raise UsageError(
                f"{self.path.parent} holds embeddings from {theirs.describe()}; this run uses "
                f"{self.header.describe()}: use another --out, or delete {self.path.parent} to start over"
            )
        if theirs != self.header:  # new, or recorded nothing yet
            line = json.dumps({"format": FORMAT, **self.header.fields()}) + "\n"
            atomic_write(self.path, lambda f: f.write(line.encode()))
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _read(self) -> tuple[Header, dict[str, dict]]:
        lines = self.path.read_bytes().split(b"\n")
        try:
            head = json.loads(lines[0])
            if head.get("format") != FORMAT:
                raise ValueError(f"format {head.get('format')!r}, expected {FORMAT!r}")
            header = Header(*(head[k] for k in Header.__dataclass_fields__))
            entries = {}
            for i, line in enumerate(lines[1:], start=2):
                if not line:
                    continue
                try:
                    e = json.loads(line)
                except ValueError:
                    if i == len(lines):  # the last line, cut by a kill mid-append: its .npz was never renamed
                        continue
                    raise ValueError(f"line {i} is not JSON") from None
                entries[e["path"]] = {
                    "source": e["source"],
                    "size": int(e["size"]),
                    "mtime_ns": int(e["mtime_ns"]),
                    "bytes": int(e["bytes"]),
                }
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise UsageError(
                f"{self.path} is damaged ({e}): which .npz files tympan wrote is unknown; "
                f"restore it, or use another --out"
            ) from None
        return header, entries

    def add(self, key: str, source: Source, tmp: Path) -> None:
        """Record that `tmp`, about to be renamed to key's .npz, holds the embedding of `source`."""
        entry = {
            "path": key,
            "source": source.file,
            "size": source.size,
            "mtime_ns": source.mtime_ns,
            "bytes": tmp.stat().st_size,
        }
        # One write of one short line to an O_APPEND file: a kill cannot interleave it.
        os.write(self.fd, (json.dumps(entry) + "\n").encode())
        self.entries[key] = entry


def _plan_npz(out: Path, record: _Record, sources: list[Source]) -> _NpzRun:
    """The run with the inputs still to embed; UsageError when an output that exists is not
    tympan's to replace (unrecorded, or recorded from another source file)."""
    todo, unrecorded, clashes = [], [], []
    for s in sources:
        npz = npz_path(out, s.path)
        entry = record.entries.get(s.path)
        exists = os.path.lexists(npz)
        if entry is None:
            if exists:
                unrecorded.append(npz)
            else:
                todo.append(s)
        elif exists and not same_file(entry["source"], s.file):
            clashes.append((npz, entry["source"], s))
        elif (entry["size"], entry["mtime_ns"]) != (s.size, s.mtime_ns) or not (exists and _intact(npz, entry["bytes"])):
            todo.append(s)  # a changed input, or a .npz damaged since
    if clashes:
        npz, theirs, s = clashes[0]
        more = f" (and {len(clashes) - 1} more like it)" if len(clashes) > 1 else ""
        raise UsageError(
            f"{npz} holds the embedding of {theirs}; this run's {s.file} would be written there too{more}: "
            f"embed it into another --out (one output folder per input root), or delete {npz} to replace it"
        )
    if unrecorded:
        more = f" (and {len(unrecorded) - 1} more)" if len(unrecorded) > 1 else ""
        raise UsageError(
            f"{unrecorded[0]}{more} exists but {record.path} does not record it (tympan embed did not write it, or "
            "an older tympan did): tympan never overwrites it; delete or move it, or use another --out"
        )
    return _NpzRun(todo, n_done=len(sources) - len(todo))


def _intact(npz: Path, recorded_bytes: int) -> bool:
    """Whether a recorded .npz still has its recorded size and a readable archive directory
    (cheap: a stat and the end of the file; a truncated or emptied file fails)."""
    try:
        if npz.stat().st_size != recorded_bytes:
            return False
        with zipfile.ZipFile(npz) as z:
            return sorted(z.namelist()) == NPZ_MEMBERS
    except (OSError, zipfile.BadZipFile):
        return False


@dataclass
class _NpzRun:
    """What one run did, for the progress bar and the summary."""

    todo: list[Source]
    n_done: int
    n_embedded: int = 0
    seconds: float = 0.0  # audio embedded
    failed: list[tuple[str, str]] = field(default_factory=list)

    def write_all(self, rows_per_unit, out: Path, record: _Record) -> str:
        """Write the .npz of every embedded row, reporting failures as they happen.
        Returns "interrupted" after Ctrl-C (what was written stays, recorded), else "done"."""
        tqdm = require_extra("tqdm").tqdm
        given = {s.path: s for s in self.todo}
        try:
            with torch.no_grad(), tqdm(total=len(self.todo), unit="file", file=sys.stderr, disable=None) as bar:
                for rows in rows_per_unit:
                    for row in rows:
                        source = given[row["path"]]
                        error = row["error"] or self._write(row, source, out, record)
                        if error:
                            self.failed.append((source.given, error))
                            bar.write(f"tympan embed: failed: {source.given}: {error}", file=sys.stderr)
                        bar.update()
        except KeyboardInterrupt:
            return "interrupted"
        finally:
            rows_per_unit.close()
        return "done"

    def _write(self, row: dict, source: Source, out: Path, record: _Record) -> str | None:
        """Write one embedded row's .npz; the error when it cannot be written, else None."""
        npz = npz_path(out, row["path"])
        try:
            atomic_save_npz(
                npz,
                before_rename=lambda tmp: record.add(row["path"], source, tmp),
                embeddings=row["embeddings"],
                timestamps=row["timestamps"],
                scene=row["scene"],
            )
        except OSError as e:
            return f"cannot write {npz}: {e}"
        self.n_embedded += 1
        self.seconds += row["duration_s"] or 0.0
        return None

    def summary(self, wall_seconds: float) -> str:
        """One line of counts and speed, then the failed files, one per line."""
        line = (
            f"tympan embed: {self.n_embedded} embedded, {self.n_done} skipped (already done), "
            f"{len(self.failed)} failed; {format_duration(self.seconds)} of audio in {format_duration(wall_seconds)}"
        )
        if self.seconds > 0:
            line += f" ({self.seconds / wall_seconds:.1f}x real time)"
        return "\n".join([line] + [f"  failed: {source}: {reason}" for source, reason in self.failed])

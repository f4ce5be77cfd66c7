"""`tympan embed --format parquet [--engine local|ray]`: the driver of a corpus run.

    list inputs (size, mtime) -> open OUT (lock, collect garbage) -> refuse keys of other
    sources, retire rows of changed inputs -> probe the rest -> units -> engine (chosen by
    tympan.cli: local.LocalEngine or ray_engine.RayEngine) -> commit shards as results
    arrive -> summary

The driver is the only writer. It accepts exactly one row per planned path, buffers rows,
and commits a shard when --shard-rows rows or --shard-mb MiB are buffered, or when
COMMIT_SECONDS have passed since the last commit, and at the end. A killed run loses at most
the buffered rows; Ctrl-C commits them before stopping. Rerunning the same command skips
every path whose committed row has the input's size and mtime, recomputes the others, and
leaves every input in exactly one committed row.

A file that failed keeps its error row while it is unchanged (decoding the same bytes fails
the same way); replacing or touching the file makes the next run retry it. The exit code
is 1 while any input of the run has an error row, 0 when all are embedded, 2 for a bad
command line, an OUT that is not a folder, not empty without a manifest, damaged, made by
another model or holding an input's key from another file, 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa
import torch

from tympan.corpus import shards
from tympan.corpus.units import ModelSpec, Source, check_out, header_of, list_sources, load, make_units, probe
from tympan.io import require_extra
from tympan.kit.hear import UsageError, format_duration

DEFAULT_SHARD_ROWS = 1000
DEFAULT_SHARD_MB = 256.0
COMMIT_SECONDS = 300.0  # a kill loses at most this much work, whatever the shard size
PROGRESS_SECONDS = 30.0  # progress line period when stderr is not a terminal


class Engine(Protocol):
    """What embeds the units of a Parquet run: local.LocalEngine or ray_engine.RayEngine."""

    model_device: str  # where the driver loads its own copy of the model (for the header)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Engine:
        """The engine for the command line; kit.hear.UsageError for a bad engine option."""

    def tables(self, units: list[list[Source]], spec: ModelSpec, module, model) -> Iterator[pa.Table]:
        """Shard-schema tables, one or more per unit, in any order; closing it stops the work."""


def main(args: argparse.Namespace, engine_type: type[Engine]) -> int:
    """Run a corpus embedding with the arguments of tympan.cli's embed parser and the engine
    tympan.cli chose; returns the exit code."""
    start = time.perf_counter()
    try:
        shard_rows, shard_bytes = _check(args)
        engine = engine_type.from_args(args)
        out = check_out(args.out)
        sources = list_sources(args.paths)
        module, model = load(ModelSpec(args.module, args.model, args.batch_size, None), engine.model_device)
        header = header_of(args.module, model, args.model)
    except UsageError as e:
        print(f"tympan embed: error: {e}", file=sys.stderr)
        return 2
    spec = ModelSpec(args.module, args.model, args.batch_size, header)
    return embed_sources(out, sources, spec, module, model, engine, shard_rows, shard_bytes, start)


def embed_sources(
    out,
    sources: list[Source],
    spec: ModelSpec,
    module,
    model,
    engine: Engine,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    shard_bytes: int = int(DEFAULT_SHARD_MB * 2**20),
    start: float | None = None,
    prog: str = "tympan embed",
) -> int:
    """Embed `sources` into the Parquet folder `out` (spec.layout's rows) with `engine` and the
    already loaded `module` and `model`; resumes what is there. Returns the exit code (module
    docstring); messages start with `prog`. Used by main and by `tympan train targets`."""
    start = time.perf_counter() if start is None else start
    try:
        with shards.Store(out, spec.header, spec.layout) as store:
            run = _plan_parquet(store, sources, prog)
            if run.todo:
                run.todo = [probe(s) for s in run.todo]  # header rate and length: units, progress
                units = make_units(run.todo, spec.batch_size, spec.header.sample_rate)
                tables = engine.tables(units, spec, module, model)
                del module, model  # the Ray engine's actors load their own
                if _execute(run, tables, _Writer(store, shard_rows, shard_bytes), start) == "interrupted":
                    return 130
    except (shards.StoreError, UsageError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2

    print(run.summary(time.perf_counter() - start, store), file=sys.stderr)
    if run.missing:
        print(
            f"{prog}: error: {run.missing} files got no result from the engine; "
            "run the same command again to embed them",
            file=sys.stderr,
        )
    return 1 if run.failed or run.earlier_failed or run.missing else 0


def _plan_parquet(store: shards.Store, sources: list[Source], prog: str = "tympan embed") -> _ParquetRun:
    """Refuse keys that other files hold, retire the rows of changed inputs; return the run
    with the inputs still to embed."""
    committed = store.committed()
    store.check_sources(sources, committed)
    changed = set()
    for s in sources:
        row = committed.get(s.path)
        if row is not None and (row.size, row.mtime_ns) != (s.size, s.mtime_ns):
            changed.add(s.path)
    store.retire(changed, committed)
    todo = [s for s in sources if s.path not in committed or s.path in changed]
    earlier_failed = sum(1 for s in sources if s.path not in changed and s.path in committed and committed[s.path].failed)
    return _ParquetRun(todo, n_skipped=len(sources) - len(todo), earlier_failed=earlier_failed, prog=prog)


def _execute(run: _ParquetRun, tables, writer: _Writer, start: float) -> str:
    """Consume the engine's tables into shards; "interrupted" after Ctrl-C, else "done"."""
    try:
        with torch.no_grad(), _Progress(run.todo, run.prog) as progress:
            run.consume(tables, writer, progress)
    except BaseException as e:
        # Rows already received are complete: commit them, so that a rerun starts after them.
        writer.flush()
        print(run.summary(time.perf_counter() - start, writer.store), file=sys.stderr)
        if isinstance(e, KeyboardInterrupt):
            print(f"{run.prog}: interrupted; run the same command again to finish", file=sys.stderr)
            return "interrupted"
        raise
    finally:
        tables.close()
    writer.flush()
    return "done"


def _check(args: argparse.Namespace) -> tuple[int, int]:
    """Check the corpus options; returns the shard bounds (rows, bytes)."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    rows = DEFAULT_SHARD_ROWS if args.shard_rows is None else args.shard_rows
    mb = DEFAULT_SHARD_MB if args.shard_mb is None else args.shard_mb
    if rows < 1:
        raise UsageError(f"--shard-rows must be at least 1, got {rows}")
    if mb <= 0:
        raise UsageError(f"--shard-mb must be positive, got {mb}")
    return rows, int(mb * 2**20)


class _Writer:
    """Buffers accepted rows and commits them as shards of bounded rows and bytes."""

    def __init__(self, store: shards.Store, max_rows: int, max_bytes: int) -> None:
        self.store, self.max_rows, self.max_bytes = store, max_rows, max_bytes
        self.pending: list[pa.Table] = []
        self.rows = 0
        self.bytes = 0
        self.last_commit = time.monotonic()

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        self.bytes += table.nbytes
        while self.rows >= self.max_rows:
            buffered = pa.concat_tables(self.pending)
            self._commit(buffered.slice(0, self.max_rows))
            rest = buffered.slice(self.max_rows)
            self.pending, self.rows, self.bytes = [rest], rest.num_rows, rest.nbytes
        if self.bytes >= self.max_bytes or time.monotonic() - self.last_commit >= COMMIT_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self._commit(pa.concat_tables(self.pending))
        self.pending, self.rows, self.bytes = [], 0, 0

    def _commit(self, table: pa.Table) -> None:
        # Slices of a concatenation keep their parents' buffers; compact before writing.
        self.store.commit(table.combine_chunks())
        self.last_commit = time.monotonic()


class _Progress:
    """Files and hours of audio done, real-time factor, ETA and failures: a tqdm bar on a
    terminal, a plain line every PROGRESS_SECONDS otherwise (logs of long cluster runs)."""

    def __init__(self, todo: list[Source], prog: str = "tympan embed") -> None:
        self.prog = prog
        self.n_files = len(todo)
        self.total_s = sum(s.duration_s or 0.0 for s in todo)
        self.files = 0
        self.audio_s = 0.0
        self.failed = 0
        self.start = time.perf_counter()
        self.last_line = self.start
        self.bar = None

    def __enter__(self) -> _Progress:
        if sys.stderr.isatty():
            tqdm = require_extra("tqdm").tqdm
            self.bar = tqdm(
                total=self.total_s / 3600,
                unit="h",
                file=sys.stderr,
                bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h of audio [{elapsed}<{remaining}{postfix}]",
            )
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def write(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    def update(self, files: int, audio_s: float, failed: int) -> None:
        self.files += files
        self.audio_s += audio_s
        self.failed += failed
        wall = time.perf_counter() - self.start
        rtf = self.audio_s / wall if wall > 0 else 0.0
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.files}/{self.n_files} files, {rtf:.0f}x real time, {self.failed} failed")
            self.bar.update(audio_s / 3600)
        elif time.perf_counter() - self.last_line >= PROGRESS_SECONDS:
            self.last_line = time.perf_counter()
            left = self.total_s - self.audio_s
            eta = format_duration(left / rtf) if rtf > 0 else "?"
            print(
                f"{self.prog}: {self.files}/{self.n_files} files, {self.audio_s / 3600:.3f}/"
                f"{self.total_s / 3600:.3f} h of audio, {rtf:.1f}x real time, ETA {eta}, {self.failed} failed",
                file=sys.stderr,
            )


class _ParquetRun:
    """The inputs one run embeds, its counts, and the rule that each path is accepted once."""

    def __init__(self, todo: list[Source], n_skipped: int, earlier_failed: int, prog: str = "tympan embed") -> None:
        self.todo, self.n_skipped, self.earlier_failed, self.prog = todo, n_skipped, earlier_failed, prog
        self.n_embedded = 0
        self.seconds = 0.0
        self.failed: list[tuple[str, str]] = []
        self.missing = 0

    def consume(self, tables, writer: _Writer, progress: _Progress) -> None:
        waiting = {s.path: s for s in self.todo}
        for table in tables:
            keep = []
            for path in table.column("path").to_pylist():
                # A path is accepted once: a unit Ray retried after a crash cannot duplicate it.
                keep.append(waiting.pop(path, None) is not None)
            if not all(keep):
                table = table.filter(pa.array(keep))
            if not table.num_rows:
                continue
            n_failed = 0
            audio_s = 0.0
            for path, duration, error in zip(
                table.column("path").to_pylist(),
                table.column("duration_s").to_pylist(),
                table.column("error").to_pylist(),
            ):
                audio_s += duration or 0.0
                if error is None:
                    self.n_embedded += 1
                    self.seconds += duration or 0.0
                else:
                    n_failed += 1
                    self.failed.append((path, error))
                    progress.write(f"{self.prog}: failed: {path}: {error}")
            writer.add(table)
            progress.update(table.num_rows, audio_s, n_failed)
        self.missing = len(waiting)

    def summary(self, wall_seconds: float, store: shards.Store) -> str:
        """One line of counts and speed, then this run's failed files, one per line."""
        d = format_duration
        n_shards = len(store.manifest["shards"])
        line = (
            f"{self.prog}: {self.n_embedded} embedded, {self.n_skipped} skipped (already done), "
            f"{len(self.failed) + self.earlier_failed} failed"
        )
        if self.earlier_failed:
            line += f" ({self.earlier_failed} recorded by earlier runs)"
        line += f"; {d(self.seconds)} of audio in {d(wall_seconds)}"
        if self.seconds > 0:
            line += f" ({self.seconds / wall_seconds:.1f}x real time)"
        line += f"; {n_shards} shards in {store.out}"
        lines = [line] + [f"  failed: {path}: {reason}" for path, reason in self.failed]
        if self.earlier_failed:
            lines.append(
                f"  {self.earlier_failed} unchanged files failed in earlier runs; their errors are in the "
                "error column (tympan.corpus.read_embeddings); replace or touch a file to retry it"
            )
        return "\n".join(lines)

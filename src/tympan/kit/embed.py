"""`tympan embed`: embed audio files with any HEAR module, one .npz per file.

    tympan embed PATHS... --out DIR [--module NAME] [--model PATH] [--device DEV] [--batch-size N]

Inputs: folders are searched recursively for .wav .flac .ogg .mp3 files (any case);
a file named on the command line is taken whatever its extension.

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

Why it works this way:
- Resumable: a file whose .npz exists is skipped, so rerunning after an interruption, or
  after adding files, only does the missing work; to redo a file, delete its .npz.
  Every .npz is written to a temporary file and renamed into place, so a killed run never
  leaves a partial one (a hard kill may leave a `*.npz.tmp-*` file, safe to delete).
- Batches hold files of exactly equal length only: the HEAR API takes equal lengths per
  call, and padding a clip would change its scene embedding. Files are ordered by length
  so that equal ones meet; files over MAX_BATCHED_SECONDS go alone to bound memory.
  A batch that fails (e.g. out of memory) is retried one file at a time.
- One bad file does not stop a long run: a file that cannot be read or embedded is
  reported on stderr with the reason and skipped; the exit code is 1 when any failed
  (0 otherwise, 2 for a command-line error), and the summary lists them again.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from tympan.io import (
    AUDIO_EXTENSIONS,
    AudioReadError,
    atomic_save_npz,
    find_audio,
    probe_duration,
    read_audio,
    require_extra,
)
from tympan.kit.hear import (
    MAX_BATCHED_SECONDS,
    UsageError,
    check_device,
    embed_batch,
    format_duration,
    import_hear_module,
    load_hear_model,
)

@dataclass(frozen=True)
class Job:
    """One input file and the .npz it is embedded into."""

    source: Path
    out: Path


def main(args: argparse.Namespace) -> int:
    """Run `tympan embed` with the arguments declared in tympan.cli.

    Returns the exit code: 0 when every file is embedded (now or before), 1 when some
    failed, 2 for a command-line error (nothing embedded).
    """
    fmt = getattr(args, "format", None) or ("parquet" if getattr(args, "engine", "local") == "ray" else "npz")
    if fmt == "parquet":
        from tympan.corpus import driver

        return driver.main(args)
    corpus_only = ("engine", "ray_address", "shard_rows", "shard_mb", "concurrency")
    for name in corpus_only:
        if getattr(args, name, None) not in (None, "local"):
            print(f"tympan embed: error: --{name.replace('_', '-')} needs --format parquet", file=sys.stderr)
            return 2
    start = time.perf_counter()
    try:
        jobs, n_done = _plan(args)
        module = import_hear_module(args.module)
    except UsageError as e:
        print(f"tympan embed: error: {e}", file=sys.stderr)
        return 2

    run = _Run(n_done=n_done)
    # When every file is done there is nothing to load: a rerun is instant.
    if jobs:
        tqdm = require_extra("tqdm").tqdm
        # Shortest first, so that files of equal length are neighbours and batch together.
        jobs.sort(key=lambda job: probe_duration(job.source) or 0.0)
        device = torch.device(args.device)
        model = load_hear_model(module, args.model, device)
        with torch.no_grad(), tqdm(total=len(jobs), unit="file", file=sys.stderr, disable=None) as bar:
            run.embed_all(jobs, module, model, device, args.batch_size, bar)
    print(run.summary(time.perf_counter() - start), file=sys.stderr)
    return 1 if run.failed else 0


def _plan(args: argparse.Namespace) -> tuple[list[Job], int]:
    """Check the command line; return the jobs still to do and the count already done."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_device(args.device)
    try:
        found = find_audio(args.paths)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if not found:
        raise UsageError(f"no audio files ({' '.join(AUDIO_EXTENSIONS)}) in {' '.join(args.paths)}")

    out_dir = Path(args.out)
    sources: dict[Path, Path] = {}  # output -> input, in input order
    for root, rel in found:
        source, out = root / rel, out_dir / rel.parent / f"{rel.name}.npz"
        first = sources.setdefault(out, source)
        # The same file named twice is embedded once; two files for one output is an error.
        if first.resolve() != source.resolve():
            raise UsageError(f"{first} and {source} would both be written to {out}; embed them in separate runs")
    jobs = [Job(source, out) for out, source in sources.items() if not out.exists()]
    return jobs, len(sources) - len(jobs)


@dataclass
class _Run:
    """What one run did, for the progress bar and the summary."""

    n_done: int
    n_embedded: int = 0
    seconds: float = 0.0  # audio embedded
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def embed_all(
        self, jobs: list[Job], module: ModuleType, model, device: torch.device, batch_size: int, bar
    ) -> None:
        """Read, embed and write every job, reporting failures as they happen."""
        sample_rate = int(model.sample_rate)

        def fail(job: Job, reason: str) -> None:
            self.failed.append((job.source, reason))
            bar.write(f"tympan embed: failed: {job.source}: {reason}", file=sys.stderr)
            bar.update()

        def embed(batch: list[tuple[Job, np.ndarray]]) -> None:
            try:
                results = embed_batch(module, model, device, [audio for _, audio in batch])
            except Exception as e:  # any error of the module's own code fails these files only
                if len(batch) > 1:
                    for item in batch:
                        embed([item])
                else:
                    fail(batch[0][0], f"embedding failed: {type(e).__name__}: {e}")
                return
            for (job, audio), arrays in zip(batch, results):
                try:
                    atomic_save_npz(job.out, **arrays)
                except OSError as e:
                    fail(job, f"cannot write {job.out}: {e}")
                    continue
                self.n_embedded += 1
                self.seconds += len(audio) / sample_rate
                bar.update()

        max_batched = MAX_BATCHED_SECONDS * sample_rate
        batch: list[tuple[Job, np.ndarray]] = []
        for job in jobs:
            try:
                audio = read_audio(job.source, sample_rate)
            except AudioReadError as e:
                fail(job, e.reason)
                continue
            if batch and (len(audio) != len(batch[0][1]) or len(batch) == batch_size):
                embed(batch)
                batch = []
            batch.append((job, audio))
            if len(audio) > max_batched:
                embed(batch)
                batch = []
        if batch:
            embed(batch)

    def summary(self, wall_seconds: float) -> str:
        """One line of counts and speed, then the failed files, one per line."""
        line = (
            f"tympan embed: {self.n_embedded} embedded, {self.n_done} skipped (already done), "
            f"{len(self.failed)} failed; {format_duration(self.seconds)} of audio in {format_duration(wall_seconds)}"
        )
        if self.seconds > 0:
            line += f" ({self.seconds / wall_seconds:.1f}x real time)"
        return "\n".join([line] + [f"  failed: {source}: {reason}" for source, reason in self.failed])

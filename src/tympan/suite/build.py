"""`tympan tasks build`: write the offline suite's task folders and their checksum manifest.

    tympan tasks build --suite tiny|full --out DIR [--task NAME ...]

Writes one HEAR task folder per task under DIR (builders in tympan.suite.TASKS), then
DIR/manifest-<suite>.json: every file's SHA-256 and size, sorted by path, so that two builds
from the same inputs can be compared byte for byte, and DIR/build-<suite>.json with what
varies between runs (build seconds) and the sizes (clips, hours per task).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from tympan.checksum import file_digests
from tympan.io import atomic_write_json
from tympan.kit.tasks import TaskFormatError, add_sample_rate, list_tasks
from tympan.suite import TASKS
from tympan.suite.common import SUITES
from tympan.suite.sources import SuiteSourceError


def builder(name: str):
    """The build function registered for task `name`."""
    module, func = TASKS[name].split(":")
    return getattr(importlib.import_module(module), func)


def manifest(task_dirs: list[Path], root: Path) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} for every file of the given task folders, sorted."""
    return file_digests((p for d in task_dirs for p in d.rglob("*") if p.is_file()), root)


def task_size(task_dir: Path) -> dict:
    """Clips and hours of audio at 16 kHz in a task folder (from the wav headers)."""
    import soundfile as sf

    wavs = sorted((task_dir / "16000").rglob("*.wav"))
    seconds = sum(sf.info(str(w)).duration for w in wavs)
    return {"clips": len(wavs), "hours": round(seconds / 3600, 4)}


def build(out: Path, suite: str, names: list[str] | None = None, rates: list[int] | None = None) -> dict:
    """Build the suite's tasks into `out`; returns the build report (also written to disk).

    rates: sample rates besides 16 kHz to add to every task (kit.tasks.add_sample_rate);
    they enter the manifest like the rest."""
    extra = sorted({r for r in rates or [] if r != 16000})
    bad = [r for r in extra if r < 8000 or r > 192000]
    if bad:
        raise ValueError(f"sample rates {bad} Hz: use rates between 8000 and 192000, e.g. 44100 or 48000")
    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; choose one of {SUITES}")
    names = names or list(TASKS)
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    task_dirs = []
    for name in names:
        start = time.perf_counter()
        print(f"building {name} ({suite}) ...", file=sys.stderr, flush=True)
        task_dir = Path(builder(name)(out, suite))
        for rate in extra:
            add_sample_rate(task_dir, rate)
        seconds = time.perf_counter() - start
        report[name] = {"folder": task_dir.name, "build_seconds": round(seconds, 1), **task_size(task_dir)}
        print(f"  {task_dir.name}: {report[name]['clips']} clips, {report[name]['hours']:.3f} h, {seconds:.1f} s",
              file=sys.stderr, flush=True)
        task_dirs.append(task_dir)
    atomic_write_json(out / f"manifest-{suite}.json", manifest(task_dirs, out), indent=1, sort_keys=True)
    atomic_write_json(out / f"build-{suite}.json", report, indent=1, sort_keys=True)
    return report


def add_rates(out: Path, rates: list[int]) -> list[Path]:
    """Add `rates` to every task folder under `out` that lacks them; rewrite the manifests there."""
    written = []
    for task_dir in list_tasks(out):
        for rate in sorted(set(rates)):
            if not (task_dir / str(rate)).exists():
                written.append(add_sample_rate(task_dir, rate))
                print(f"  {task_dir.name}: {rate} Hz", file=sys.stderr, flush=True)
    for path in sorted(out.glob("manifest-*.json")):
        folders = sorted({key.split("/")[0] for key in json.loads(path.read_text())})
        atomic_write_json(path, manifest([out / f for f in folders], out), indent=1, sort_keys=True)
    return written


def main(args: argparse.Namespace) -> int:
    if args.tasks_command == "add-rate":
        try:
            written = add_rates(Path(args.tasks), args.rate)
        except (ValueError, TaskFormatError, FileExistsError) as e:
            print(f"tympan tasks add-rate: error: {e}", file=sys.stderr)
            return 2
        print(f"added {len(written)} sample-rate folder(s) under {args.tasks}")
        return 0
    try:
        report = build(Path(args.out), args.suite, args.task, args.rate)
    except (SuiteSourceError, ValueError) as e:
        print(f"tympan tasks build: error: {e}", file=sys.stderr)
        return 2
    total_h = sum(r["hours"] for r in report.values())
    total_s = sum(r["build_seconds"] for r in report.values())
    print(f"built {len(report)} task(s) in {args.out}: {total_h:.2f} h of audio in {total_s:.0f} s")
    return 0

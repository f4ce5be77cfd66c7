"""Corpus throughput: `tympan embed --format parquet` with the local engine and with Ray.

    python benchmarks/corpus_throughput.py [--short 100] [--short-seconds 15] [--long 2]
        [--long-minutes 3] [--module tympan] [--concurrency 1 2] [--repeat 2] [--json OUT.json]

Generates a corpus once (seeded noise plus tones: short clips at 16 kHz wav and 44.1 kHz
stereo flac, and a few long files), then embeds it, each run in a fresh process into a
fresh output folder, with `--engine local` (torch's default threads, and one thread) and
with `--engine ray` (a local Ray on this machine, one run per --concurrency), in --repeat
rounds. Reports hours of audio per hour of wall time, with the wall time of the whole
command (start-up, Ray's start, listing, probing, writing included), and the Ray/local
ratio. Then, in this process on one torch thread, where one file's time goes: decode (+
downmix), resample (soxr), model (timestamp and scene embeddings) and write (Arrow +
Parquet); the driver's per-file costs (listing, probing, reading committed keys on resume);
and how long Ray alone takes to start and stop.
Not a test: numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_corpus(root: Path, n_short: int, short_s: float, n_long: int, long_min: float) -> float:
    """Write the corpus; returns its total duration in seconds."""
    rng = np.random.default_rng(0)
    total = 0.0

    def clip(seconds: float, rate: int, channels: int) -> np.ndarray:
        t = np.arange(round(seconds * rate)) / rate
        tone = 0.2 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t)
        return (tone[:, None] + rng.normal(0, 0.05, (len(t), channels))).astype(np.float32)

    for i in range(n_short):
        rate, channels, ext = (44100, 2, "flac") if i % 4 == 0 else (16000, 1, "wav")
        path = root / f"d{i % 20:02d}" / f"clip{i:04d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clip(short_s, rate, channels), rate)
        total += short_s
    for i in range(n_long):
        path = root / "long" / f"long{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, clip(long_min * 60, 16000, 1), 16000)
        total += long_min * 60
    return total


def run_cli(corpus: Path, out: Path, module: str, extra: list[str], env: dict[str, str]) -> dict:
    argv = [sys.executable, "-m", "tympan.cli", "embed", str(corpus), "--out", str(out), "--module", module,
            "--format", "parquet", *extra]  # fmt: skip
    env = {**os.environ, **env}
    t0 = time.perf_counter()
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    summary = next((line for line in done.stderr.splitlines() if re.match(r"tympan embed: \d+ embedded", line)), "")
    if done.returncode != 0 or not summary:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return {"wall_s": wall, "summary": summary}


def stage_times(corpus: Path, module_name: str, threads: int) -> dict[str, float]:
    """Seconds per stage over the whole corpus, in this process, one file at a time."""
    import importlib

    import pyarrow.parquet as pq
    import soxr
    import torch

    from tympan.corpus.shards import rows_table
    from tympan.corpus.units import Header
    from tympan.io import RESAMPLE_QUALITY, find_audio
    from tympan.kit.hear import embed_batch

    torch.set_num_threads(threads)
    module = importlib.import_module(module_name)
    model = module.load_model()
    header = Header(module_name, None, int(model.sample_rate), int(model.timestamp_embedding_size),
                    int(model.scene_embedding_size))  # fmt: skip
    times = dict.fromkeys(["decode", "resample", "model", "write"], 0.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        for root, rel in find_audio([corpus]):
            t0 = time.perf_counter()
            data, rate = sf.read(root / rel, dtype="float32", always_2d=True)
            mono = data.mean(axis=1, dtype=np.float32)
            t1 = time.perf_counter()
            if rate != header.sample_rate:
                mono = soxr.resample(mono, rate, header.sample_rate, quality=RESAMPLE_QUALITY)
            mono = np.ascontiguousarray(mono, dtype=np.float32)
            t2 = time.perf_counter()
            arrays = embed_batch(module, model, torch.device("cpu"), [mono])[0]
            t3 = time.perf_counter()
            rows.append({"path": rel.as_posix(), "source": str(root / rel), "size": 0, "mtime_ns": 0, "sample_rate": rate,
                         "duration_s": len(data) / rate, "weights_sha256": None, "error": None, **arrays})  # fmt: skip
            t4 = time.perf_counter()
            if len(rows) == 64:
                pq.write_table(rows_table(rows, header), Path(tmp) / "s.parquet")
                rows = []
            times["decode"] += t1 - t0
            times["resample"] += t2 - t1
            times["model"] += t3 - t2
            times["write"] += time.perf_counter() - t4
        if rows:
            t4 = time.perf_counter()
            pq.write_table(rows_table(rows, header), Path(tmp) / "s.parquet")
            times["write"] += time.perf_counter() - t4
    return times


def driver_costs(corpus: Path, out: Path) -> dict[str, float]:
    """Per-file costs on the driver, which grow with the number of files: listing (find +
    stat) and probing headers; per-file cost of reading the committed keys back on resume;
    and the output's bytes per hour of audio."""
    from tympan.corpus import shards
    from tympan.corpus.units import Header, list_sources, probe

    t0 = time.perf_counter()
    sources = list_sources([str(corpus)])
    t1 = time.perf_counter()
    probed = [probe(s) for s in sources]
    t2 = time.perf_counter()
    m = shards.load_manifest(out)
    header = Header(**{k: m[k] for k in Header.__dataclass_fields__})
    with shards.Store(out, header) as store:
        t3 = time.perf_counter()
        store.committed()
        t4 = time.perf_counter()
    n = len(sources)
    hours = sum(s.duration_s or 0 for s in probed) / 3600
    return {
        "list_ms_per_file": (t1 - t0) * 1000 / n,
        "probe_ms_per_file": (t2 - t1) * 1000 / n,
        "resume_read_ms_per_file": (t4 - t3) * 1000 / n,
        "output_mb_per_audio_hour": sum(s["bytes"] for s in m["shards"]) / 2**20 / hours,
    }


def ray_start_stop() -> float:
    """Wall seconds of a fresh process that imports Ray, starts a local Ray and stops it."""
    code = "import ray; ray.init(include_dashboard=False); ray.shutdown()"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--short", type=int, default=100, help="short clips")
    p.add_argument("--short-seconds", type=float, default=15.0)
    p.add_argument("--long", type=int, default=2, help="long files")
    p.add_argument("--long-minutes", type=float, default=3.0)
    p.add_argument("--module", default="tympan")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2], help="Ray model actors, one run each")
    p.add_argument("--repeat", type=int, default=2, help="rounds over all configurations (best one reported)")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus"
        audio_s = make_corpus(corpus, args.short, args.short_seconds, args.long, args.long_minutes)
        n_files = args.short + args.long
        print(f"corpus: {n_files} files, {audio_s / 3600:.3f} h of audio; {os.cpu_count()} CPUs; "
              f"load average {os.getloadavg()[0]:.1f} at start", flush=True)  # fmt: skip
        # The local engine with torch's default threads (one per core) and with one thread,
        # which is what each CPU actor of the Ray engine gets.
        runs = [("local", [], {}), ("local, 1 torch thread", [], {"OMP_NUM_THREADS": "1"})]
        runs += [
            (f"ray, {c} actor{'s' if c > 1 else ''}", ["--engine", "ray", "--concurrency", str(c)], {})
            for c in args.concurrency
        ]
        # Rounds over all configurations, so that a burst of load elsewhere hits each alike.
        results = [{"engine": name, "walls_s": []} for name, _, _ in runs]
        for k in range(args.repeat):
            for i, (name, extra, env) in enumerate(runs):
                r = run_cli(corpus, Path(tmp) / f"out{k}-{i}", args.module, extra, env)
                results[i]["walls_s"].append(r["wall_s"])
                results[i]["summary"] = r["summary"]
                print(f"{name}: {r['wall_s']:.1f} s; {r['summary']}", flush=True)
        for r in results:
            r["wall_s"] = min(r["walls_s"])
            r["hours_per_hour"] = audio_s / r["wall_s"]
        stages = stage_times(corpus, args.module, threads=1)
        ray_start = ray_start_stop()
        driver = driver_costs(corpus, Path(tmp) / "out0-0")

    local = results[0]["wall_s"]
    print()
    print(f"load average {os.getloadavg()[0]:.1f} at the end; Ray's start and stop alone: {ray_start:.1f} s")
    print("| engine | wall s (best of rounds) | all rounds s | audio h / wall h | wall / local |")
    print("|---|---|---|---|---|")
    for r in results:
        rounds = ", ".join(f"{w:.1f}" for w in r["walls_s"])
        print(f"| {r['engine']} | {r['wall_s']:.1f} | {rounds} | {r['hours_per_hour']:.0f} | {r['wall_s'] / local:.2f} |")
    total = sum(stages.values())
    print()
    print("| stage (one process, one torch thread, file by file) | s | share |")
    print("|---|---|---|")
    for k, v in stages.items():
        print(f"| {k} | {v:.2f} | {v / total:.0%} |")
    print()
    print("| one core, one torch thread | audio h / wall h |")
    print("|---|---|")
    print(f"| decode + resample | {audio_s / (stages['decode'] + stages['resample']):.0f} |")
    print(f"| model | {audio_s / stages['model']:.0f} |")
    print()
    print("| driver, per file | |")
    print("|---|---|")
    for k, v in driver.items():
        print(f"| {k} | {v:.3g} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"audio_s": audio_s, "files": n_files, "cpus": os.cpu_count(), "machine": platform.platform(),
             "runs": results, "stages_s": stages, "driver": driver, "ray_start_stop_s": ray_start}, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()

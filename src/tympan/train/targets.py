"""`tympan train targets`: the teachers' frames for every clip of a training set, computed once.

    tympan train targets --data DATA --out TARGETS [--teachers crepe,fcpe,aisfx-local-pc32] [--engine local|ray]
                         [--view clean|augmented]
    targets = Targets("TARGETS", "DATA"); targets.read("speech/speech-000000")  # {teacher: (n_frames, dim)}

The teachers (tympan.train.teachers: blocks of tympan.fusion) run on the CLEAN clip of each
`tympan train data` clip (`<kind>/<id>.wav`), or with `--view augmented` on the augmented
`<kind>/<id>.aug.wav` the student sees: for teachers whose output should move with the
augmentation (the pitch teachers: a clip played a semitone up has another pitch, which the
clean clip's frames, only time-warped, would deny; docs/encoder.md, "Training"), through tympan's corpus pipeline: the driver, the engines (local or Ray) and the
Parquet shards of `tympan embed --format parquet` (tympan.corpus.driver.embed_sources), so a
run killed at any point and started again finishes with every clip exactly once, and a clip
that changed since (size or mtime) is recomputed. Rows use a corpus Layout: float16 frames
(a frame vector's relative error is at most 4.2e-4 on the default teachers, docs/training-data.md),
no scene, and the SHA-256 of the clean wav from the data folder's manifest.

Folder layout:

    TARGETS/targets.json   what the targets are: format, teachers and their widths, the view
                           (clean or augmented), the data folder and the SHA-256 of its settings.json
    TARGETS/corpus/        the corpus output (manifest.json, shards/part-*.parquet; one row per
                           clip, `path` = "<kind>/<id>.wav" (.aug.wav), `embeddings` (n_frames, sum of
                           widths) float16, teachers side by side in targets.json's order)

A rerun into TARGETS with other teachers, another view or another data folder (another settings.json) is
refused: targets are never mixed. Targets.read checks that a clip's row was computed from the
clip the data manifest names now (its SHA-256), so a rebuilt data folder never silently gets
stale targets.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from tympan.audio import SAMPLE_RATE, n_frames
from tympan.checksum import sha256_file
from tympan.io import atomic_write_json
from tympan.train.data import VIEW_SUFFIX, VIEWS

FORMAT = "tympan-targets/1"
SETTINGS = "targets.json"
CORPUS = "corpus"
DEFAULT_SHARD_ROWS = 100  # 10 s clips of the default teachers: 100 x 501 x 800 x 2 B = 80 MB per shard
PRECISION = "float16"


class TargetsError(Exception):
    """A targets folder that cannot be used as asked: other teachers or data, missing or stale rows."""


def _data_manifest(data: Path) -> dict:
    path = data / "manifest.json"
    if not path.is_file():
        raise TargetsError(f"{data} has no manifest.json: give a folder made by `tympan train data`")
    return json.loads(path.read_text(encoding="utf-8"))


def clip_key(clip: str | os.PathLike, data: str | os.PathLike | None = None, view: str = "clean") -> str:
    """The row key of a clip in targets of `view`: "<kind>/<id>.wav" (clean) or "<kind>/<id>.aug.wav"
    (augmented) from "<kind>/<id>", any of its files' names ("<kind>/<id>.npz", ".aug.wav",
    ".wav"), or their paths under `data`."""
    path = Path(clip)
    if data is not None and path.is_absolute():
        path = path.relative_to(Path(data).absolute())
    stem = path.name.split(".")[0]
    return (path.parent / f"{stem}{VIEW_SUFFIX[view]}").as_posix()


def view_sources(data: Path, manifest: dict, view: str = "clean") -> list:
    """corpus Sources of the wavs of `view` (clean: <kind>/<id>.wav, augmented: .aug.wav) the
    data manifest lists, each with its SHA-256, after checking the file's bytes against it
    (TargetsError naming the clip when they differ)."""
    from tympan.corpus.units import Source

    if view not in VIEWS:
        raise TargetsError(f"view {view!r}: choose one of {', '.join(VIEWS)}")
    sources = []
    for key, entry in manifest.items():
        if not key.endswith(".wav") or key.endswith(".aug.wav") != (view == "augmented"):
            continue
        file = data / key
        if not file.is_file():
            raise TargetsError(f"{file}, listed in {data / 'manifest.json'}, is missing: rerun tympan train data")
        digest = sha256_file(file)
        if digest != entry["sha256"]:
            raise TargetsError(
                f"{file} does not match {data / 'manifest.json'} (SHA-256 {digest[:12]}, listed "
                f"{entry['sha256'][:12]}): the data folder changed after its build; rerun tympan train data on it"
            )
        st = file.stat()
        sources.append(Source(key, str(file.absolute()), str(file), st.st_size, st.st_mtime_ns, sha256=digest))
    if not sources:
        raise TargetsError(f"{data / 'manifest.json'} lists no {view} clips (<kind>/<id>{VIEW_SUFFIX[view]})")
    return sources


def _settings(data: Path, names: list[str], widths: dict[str, int], view: str = "clean") -> dict:
    return {
        "format": FORMAT,
        "teachers": names,
        "widths": widths,
        "view": view,
        "precision": PRECISION,
        "data": str(data.absolute()),
        "data_settings_sha256": sha256_file(data / "settings.json"),
    }


def _with_view(settings: dict) -> dict:
    """targets.json of targets made before --view existed (all of the clean clips) name no view."""
    return {"view": "clean", **settings}


def _check_folder(out: Path, settings: dict) -> None:
    """Refuse an OUT that holds other targets (teachers, data) or files that are not targets."""
    path = out / SETTINGS
    if path.is_file():
        before = _with_view(json.loads(path.read_text(encoding="utf-8")))
        keys = ("format", "teachers", "widths", "view", "precision", "data_settings_sha256")
        differ = [k for k in keys if before.get(k) != settings[k]]
        if differ:
            theirs, ours = ",".join(before.get("teachers", [])), ",".join(settings["teachers"])
            what = {
                "teachers": f"teachers {theirs} (this run: {ours})",
                "view": f"the {before['view']} clips (this run: {settings['view']})",
                "data_settings_sha256": f"the data folder {before.get('data')} as it was built then",
            }
            named = "; ".join(what.get(k, k) for k in differ)
            raise TargetsError(
                f"{out} holds targets of {named}: targets are never mixed; give another --out, or delete {out}"
            )
    elif out.exists() and any(out.iterdir()):
        raise TargetsError(f"{out} is not empty and holds no {SETTINGS}: give a new or empty --out folder")


def main(args: argparse.Namespace, engine_type) -> int:
    """Run `tympan train targets` with tympan.cli's arguments and engine class (corpus.local.LocalEngine
    or corpus.ray_engine.RayEngine); returns the exit code (0 all done, 1 some clips failed, 2 usage, 130 Ctrl-C)."""
    from tympan.corpus import driver
    from tympan.corpus.units import Layout, ModelSpec, check_out, header_of, load
    from tympan.kit.hear import UsageError
    from tympan.train import teachers

    start = time.perf_counter()
    prog = "tympan train targets"
    try:
        if args.batch_size < 1 or args.shard_rows < 1:
            raise UsageError(
                f"--batch-size and --shard-rows must be at least 1, got {args.batch_size} and {args.shard_rows}"
            )
        try:
            names = teachers.check_names([n.strip() for n in args.teachers.split(",")])
        except ValueError as e:
            raise UsageError(str(e)) from None
        data, out = Path(args.data), check_out(args.out)
        manifest = _data_manifest(data)
        engine = engine_type.from_args(args)
        spec = ModelSpec("tympan.train.teachers", ",".join(names), args.batch_size, None)
        module, model = load(spec, engine.model_device)
        settings = _settings(data, names, dict(model.widths), args.view)
        _check_folder(out, settings)
        sources = view_sources(data, manifest, args.view)
        header = header_of(spec.module, model, spec.model_path)
    except (UsageError, TargetsError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / SETTINGS, settings, indent=1)
    layout = Layout(precision=PRECISION, scene=False, sha256=True)
    spec = ModelSpec(spec.module, spec.model_path, args.batch_size, header, layout)
    return driver.embed_sources(
        out / CORPUS, sources, spec, module, model, engine, args.shard_rows, start=start, prog=prog
    )


class Targets:
    """Reader for a training loop: the teachers' targets of a clip, checked against the data folder.

    targets = Targets(TARGETS, DATA)   # TargetsError if TARGETS was built from another data build
    targets.view                       # "clean" or "augmented": the clips the teachers heard
    targets.keys()                     # clip keys "<kind>/<id>.wav" (.aug.wav), in storage order (fastest)
    targets.read(clip)                 # {teacher: (n_frames, width) float16}, frame k centred on
                                       # sample k * 320 of the view; n_frames = n_samples // 320 + 1
    targets.read_all(clips)            # {clip: read(clip)}, read shard by shard

Map clean targets onto the augmented clip's frames with tympan.train.augment.warp_frames;
augmented targets are on the augmented clip's frames already. The last
shard read stays in memory (about 80 MB), so reading in keys() order (read_all) reads each shard once;
in another order a shard may be read again for each clip.
"""

    def __init__(self, targets: str | os.PathLike, data: str | os.PathLike) -> None:
        import pyarrow.parquet as pq

        from tympan.corpus.shards import load_manifest

        self.dir, self.data = Path(targets), Path(data)
        path = self.dir / SETTINGS
        if not path.is_file():
            raise TargetsError(f"{self.dir} has no {SETTINGS}: give a folder made by tympan train targets")
        self.settings = _with_view(json.loads(path.read_text(encoding="utf-8")))
        if self.settings.get("format") != FORMAT:
            raise TargetsError(f"{path} has format {self.settings.get('format')!r}; this tympan reads {FORMAT}")
        if sha256_file(self.data / "settings.json") != self.settings["data_settings_sha256"]:
            raise TargetsError(
                f"{self.dir} was computed from another build of the training data than {self.data} "
                f"(its settings.json differs): run tympan train targets --data {self.data} into a new --out"
            )
        self.teachers: list[str] = self.settings["teachers"]
        self.view: str = self.settings["view"]
        self.widths: dict[str, int] = self.settings["widths"]
        self._manifest = _data_manifest(self.data)
        self._rows: dict[str, tuple[str, int, str | None, str | None]] = {}
        for entry in load_manifest(self.dir / CORPUS)["shards"]:
            t = pq.read_table(self.dir / CORPUS / entry["file"], columns=["path", "sha256", "error"]).to_pydict()
            for i, (key, sha, error) in enumerate(zip(t["path"], t["sha256"], t["error"])):
                self._rows[key] = (entry["file"], i, sha, error)
        self._cached: tuple[str, object] | None = None

    def keys(self) -> list[str]:
        return list(self._rows)

    def read(self, clip: str | os.PathLike) -> dict[str, np.ndarray]:
        """{teacher: (n_frames, width) float16} for `clip` (clip_key's forms). TargetsError when
        the clip has no row, failed, or its row was computed from other bytes than the data
        manifest lists now (a rebuilt clip: run tympan train targets again to recompute it)."""
        import pyarrow.parquet as pq

        key = clip_key(clip, self.data, self.view)
        if key not in self._rows:
            raise TargetsError(f"{self.dir} has no targets for {key}: run tympan train targets again to finish")
        shard, row, sha, error = self._rows[key]
        if error is not None:
            raise TargetsError(f"the teachers failed on {key}: {error}")
        listed = self._manifest.get(key, {}).get("sha256")
        if sha != listed:
            raise TargetsError(
                f"the targets of {key} were computed from a clip with SHA-256 {str(sha)[:12]}, but {self.data} "
                f"now holds {str(listed)[:12]}: stale targets; run tympan train targets again to recompute it"
            )
        if self._cached is None or self._cached[0] != shard:
            self._cached = (shard, pq.read_table(self.dir / CORPUS / shard, columns=["embeddings", "duration_s"]))
        table = self._cached[1]
        frames = table.column("embeddings")[row].values
        x = frames.flatten().to_numpy(zero_copy_only=False).reshape(len(frames), frames.type.list_size)
        expected = n_frames(round(table.column("duration_s")[row].as_py() * SAMPLE_RATE))
        if x.shape[0] != expected:
            raise TargetsError(f"the targets of {key} have {x.shape[0]} frames, its clip {expected}: damaged folder")
        out, c = {}, 0
        for name in self.teachers:
            # a copy: a view would keep the whole shard's table (about 80 MB) alive for each clip
            out[name] = x[:, c : c + self.widths[name]].copy()
            c += self.widths[name]
        return out

    def read_all(self, clips: list) -> dict[str, dict[str, np.ndarray]]:
        """{clip: read(clip)} for every clip in `clips`, read in storage order (each shard once)."""
        order = {key: i for i, key in enumerate(self._rows)}
        ranked = sorted(clips, key=lambda clip: order.get(clip_key(clip, self.data, self.view), -1))
        return {clip: self.read(clip) for clip in ranked}

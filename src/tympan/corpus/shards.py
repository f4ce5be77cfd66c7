"""The corpus output format: Parquet shards plus a manifest, written so that a kill never corrupts it.

Folder layout (OUT is `tympan embed --out`):

    OUT/manifest.json           the committed shards and what embedded them (JSON, below)
    OUT/shards/part-000000.parquet, part-000001.parquet, ...   one row per audio file
    OUT/.lock                   held by the run writing to OUT (empty file)

A row of a shard (Arrow types; D = timestamp_embedding_size, E = scene_embedding_size, T the
file's number of timestamps):

    path            string                        the file's path relative to its input root (posix)
    source          string                        the absolute path the file was read from
    size            int64                         bytes, from os.stat when the run listed it
    mtime_ns        int64                         modification time, ns since the epoch, idem
    sample_rate     int32, null if unreadable     the source file's rate (Hz), from its header
    duration_s      float64, null if unreadable   the source's duration in seconds, from its header
    module          string                        the HEAR module, e.g. "tympan"
    weights_sha256  string, null if unknown       SHA-256 of the model's weights (tympan.checksum.weights_identity)
    timestamps      list<float32>, null on error  (T,) frame centres in milliseconds
    embeddings      list<fixed_size_list<float32, D>>, null on error   (T, D) timestamp embeddings
    scene           fixed_size_list<float32, E>, null on error         (E,) scene embedding
    error           string, null when embedded    why the file failed (decode or embedding)

A non-default units.Layout (used by `tympan train targets`, never by `tympan embed`) changes
three things: `embeddings` holds float16 (precision "float16"), the `scene` column is absent
(scene False), and a `sha256` column (string, null when unknown) follows `error` (sha256
True). Such a folder's manifest records {"layout": {...}}; a run with another layout is refused.

manifest.json:

    {"format": "tympan-corpus/2", "module": ..., "weights_sha256": ..., "sample_rate": ...,
     "timestamp_embedding_size": D, "scene_embedding_size": E, "next_shard": N, "pending": [...],
     "shards": [{"file": "shards/part-000003.parquet", "rows": R, "failed": F, "bytes": B}, ...]}

The manifest is the commit record: a shard counts only once the manifest lists it.
Invariant, kept across kills: every path appears in at most one row of the shards the manifest
lists ("exactly once" is a property of that set, not of a later de-duplication).
- tympan deletes or replaces only files it wrote and recorded: a run starts only in a new or
  empty folder or one with a manifest (StoreError otherwise), and a shard file is named in the
  manifest's `pending` list before it is written and until it is listed or deleted.
- A shard is written to `shards/.part-N.parquet.tmp`, fsynced, renamed to `part-N.parquet`;
  then the manifest is rewritten the same way (temporary file, fsync, rename, fsync of the
  folder). A kill before the manifest's rename leaves a pending shard that no manifest lists;
  the next run deletes it (garbage collection at open) and redoes its files. An unlisted file
  that is not pending is left alone, and its name is never reused.
- A key (path) belongs to one source file: a run whose input has the path of a committed row
  read from another file is refused (StoreError naming both), whichever input root it came from.
- A changed input (size or mtime differs from its row) is retired before it is embedded again:
  each shard holding such rows is rewritten without them under a new name, the manifest swaps
  the old entry for the new one in one rename, and the old file is deleted. No row is ever
  superseded by a later one; a retired file is simply absent until its new row is committed.
- One writer per OUT: the run holds an exclusive flock on OUT/.lock (units.FolderLock).
Reading the manifest's shards is exact at any moment; reading the whole shards/ folder is exact
whenever no run is in progress and the last one was not killed (an unlisted shard may remain
until the next run collects it).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tympan.corpus.units import LOCK, PRECISIONS, FolderLock, Header, Layout, same_file

FORMAT = "tympan-corpus/2"
READABLE_FORMATS = ("tympan-corpus/1", FORMAT)  # /1: the same rows without `source`
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
TEMP_NAME = re.compile(r"\.part-\d{6,}\.parquet\.tmp(-[0-9a-f]+)?|\.manifest\.json\.tmp-[0-9a-f]+")
# Columns that identify an input and its state; cheap to read back (no embeddings).
KEY_COLUMNS = ["path", "source", "size", "mtime_ns", "error"]

__all__ = ["Header", "Store", "StoreError", "embedding_arrays", "read_embeddings", "rows_table", "schema"]


class StoreError(Exception):
    """OUT cannot be used for this run: not a tympan output, damaged, locked by another run,
    made by another model, or holding a key of another source file."""


def schema(timestamp_size: int, scene_size: int, layout: Layout = Layout()) -> pa.Schema:
    """The Arrow schema of a shard (column meanings in the module docstring)."""
    element = pa.float16() if layout.precision == "float16" else pa.float32()
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("sample_rate", pa.int32()),
        pa.field("duration_s", pa.float64()),
        pa.field("module", pa.string(), nullable=False),
        pa.field("weights_sha256", pa.string()),
        pa.field("timestamps", pa.list_(pa.float32())),
        pa.field("embeddings", pa.list_(pa.list_(element, timestamp_size))),
        pa.field("scene", pa.list_(pa.float32(), scene_size)),
        pa.field("error", pa.string()),
    ]
    if not layout.scene:
        fields = [f for f in fields if f.name != "scene"]
    if layout.sha256:
        fields.append(pa.field("sha256", pa.string()))
    return pa.schema(fields)


def rows_table(rows: list[dict], header: Header, layout: Layout = Layout()) -> pa.Table:
    """Build a shard table from per-file rows.

    Each row has path, source, size, mtime_ns, sample_rate, duration_s, weights_sha256 and error
    (and sha256 with layout.sha256), plus, when error is None, `timestamps` (T,), `embeddings`
    (T, D) and, with layout.scene, `scene` (E,) numpy arrays (cast to float32, the embeddings to
    layout.precision). Raises ValueError when an embedding's width is not the header's.
    """
    d, e = header.timestamp_embedding_size, header.scene_embedding_size
    ok = [r["error"] is None for r in rows]
    lengths = [len(r["timestamps"]) if good else 0 for r, good in zip(rows, ok)]
    for r, good in zip(rows, ok):
        scene_shape = r["scene"].shape if layout.scene and good else (e,)
        if good and (r["embeddings"].shape != (len(r["timestamps"]), d) or scene_shape != (e,)):
            raise ValueError(
                f"{r['path']}: embeddings {r['embeddings'].shape} and scene {scene_shape} do not "
                f"match this output's {d}-d timestamp and {e}-d scene embeddings"
            )
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    mask = pa.array([not good for good in ok])

    def flat(key: str, dtype=np.float32) -> np.ndarray:
        parts = [np.asarray(r[key], dtype=dtype).reshape(-1) for r, good in zip(rows, ok) if good]
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    timestamps = pa.ListArray.from_arrays(offsets, pa.array(flat("timestamps")), mask=mask)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat("embeddings", PRECISIONS[layout.precision])), d)
    embeddings = pa.ListArray.from_arrays(offsets, frames, mask=mask)
    # A failed row's scene is null; its slot still needs E placeholder values.
    scenes = np.zeros((len(rows), e), np.float32)
    for i, (r, good) in enumerate(zip(rows, ok)):
        if good and layout.scene:
            scenes[i] = r["scene"]
    scene = pa.FixedSizeListArray.from_arrays(pa.array(scenes.reshape(-1)), e, mask=mask)

    def column(key: str, typ: pa.DataType) -> pa.Array:
        return pa.array([r[key] for r in rows], type=typ)

    arrays = [
        column("path", pa.string()),
        column("source", pa.string()),
        column("size", pa.int64()),
        column("mtime_ns", pa.int64()),
        column("sample_rate", pa.int32()),
        column("duration_s", pa.float64()),
        pa.array([header.module] * len(rows), pa.string()),
        column("weights_sha256", pa.string()),
        timestamps,
        embeddings,
        scene,
        column("error", pa.string()),
    ]
    if not layout.scene:
        arrays = [a for a in arrays if a is not scene]
    if layout.sha256:
        arrays.append(column("sha256", pa.string()))
    return pa.Table.from_arrays(arrays, schema=schema(d, e, layout))


@dataclass(frozen=True)
class Committed:
    """A file with a row in a committed shard."""

    source: str
    size: int
    mtime_ns: int
    failed: bool
    shard: str  # the manifest's "file" entry


class Store:
    """The writer of one output folder: lock, manifest, shard commits, retiring stale rows.

    Use as a context manager: entering takes the lock, refuses a folder that holds files but
    no manifest, checks the header against an existing manifest (StoreError when another model
    made it, or it is damaged; UsageError when another run holds the lock) and deletes the
    pending shards and temporary files that the manifest does not list.
    """

    def __init__(self, out: str | os.PathLike, header: Header, layout: Layout = Layout()) -> None:
        self.out = Path(out)
        self.header = header
        self.layout = layout
        # A non-default layout is recorded; `tympan embed`'s manifests stay as they were.
        self.recorded_layout = {} if layout == Layout() else {"layout": layout.fields()}
        self._lock: FolderLock | None = None
        self.manifest: dict = {}

    def __enter__(self) -> Store:
        if self.out.is_dir() and not os.path.lexists(self.out / MANIFEST):
            self._refuse_foreign_files()  # before the lock file is created in someone else's folder
        self._lock = FolderLock(self.out).__enter__()
        try:
            self._open()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            try:
                if self.manifest:
                    self._collect_garbage()  # e.g. a shard whose commit Ctrl-C interrupted
            finally:
                self._lock.__exit__()
                self._lock = None

    def _open(self) -> None:
        path = self.out / MANIFEST
        if os.path.lexists(path):
            try:
                manifest = load_manifest(self.out)
                _check_fields(manifest)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise StoreError(
                    f"{path} is damaged ({_one_line(e)}): which shards are committed is unknown; "
                    f"restore it from a backup, or use another --out"
                ) from None
            if manifest["format"] != FORMAT:
                raise StoreError(
                    f"{self.out} was written by an older tympan ({manifest['format']}, whose rows do not record "
                    "their source files): read it with tympan.corpus.read_embeddings; to add to it, use another --out"
                )
            theirs = Header(*(manifest[k] for k in Header.__dataclass_fields__))
            if manifest["shards"] and theirs != self.header:
                raise StoreError(
                    f"{self.out} holds embeddings from {theirs.describe()}; this run uses "
                    f"{self.header.describe()}: use another --out, or delete {self.out} to start over"
                )
            if manifest.get("layout", Layout().fields()) != self.layout.fields():
                raise StoreError(
                    f"{self.out} stores rows as {manifest.get('layout', Layout().fields())}; this run as "
                    f"{self.layout.fields()}: use another --out, or delete {self.out} to start over"
                )
            self.manifest = {**manifest, **self.header.fields(), "pending": manifest.get("pending", [])}
        else:
            self._refuse_foreign_files()
            (self.out / SHARD_DIR).mkdir(exist_ok=True)
            self._write_manifest(
                {
                    "format": FORMAT,
                    **self.header.fields(),
                    **self.recorded_layout,
                    "next_shard": 0,
                    "pending": [],
                    "shards": [],
                }
            )
        (self.out / SHARD_DIR).mkdir(exist_ok=True)
        self._collect_garbage()

    def _refuse_foreign_files(self) -> None:
        """StoreError when OUT, which has no manifest, holds files a run of tympan did not leave."""
        others = sorted(f.name for f in self.out.iterdir() if not _ours_in_a_new_folder(f))
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise StoreError(
                f"{self.out} is not empty ({shown}) and has no {MANIFEST}: tympan embed --format parquet "
                "writes only into a new or empty folder or one it made; use another --out"
            )

    def _collect_garbage(self) -> None:
        """Delete what a killed run left: the pending shards that the manifest does not list, and
        temporary files (names only tympan uses). Files tympan did not record stay."""
        listed = {s["file"] for s in self.manifest["shards"]}
        for name in self.manifest["pending"]:
            if name not in listed:
                (self.out / name).unlink(missing_ok=True)
        for folder in (self.out / SHARD_DIR, self.out):
            for f in folder.iterdir():
                if TEMP_NAME.fullmatch(f.name):
                    f.unlink()
        if self.manifest["pending"]:
            self._write_manifest({**self.manifest, "pending": []})

    def committed(self) -> dict[str, Committed]:
        """Every path in the committed shards, with the input state its row was made from.
        Raises StoreError naming a listed shard that is missing or unreadable."""
        found: dict[str, Committed] = {}
        for entry in self.manifest["shards"]:
            try:
                t = pq.read_table(self.out / entry["file"], columns=KEY_COLUMNS).to_pydict()
            except (OSError, pa.ArrowException) as e:
                raise StoreError(
                    f"{self.out / entry['file']}, a committed shard listed in {self.out / MANIFEST}, is missing or "
                    f"unreadable ({_one_line(e)}): restore it from a backup, or use another --out"
                ) from None
            for path, source, size, mtime, error in zip(t["path"], t["source"], t["size"], t["mtime_ns"], t["error"]):
                found[path] = Committed(source, size, mtime, error is not None, entry["file"])
        return found

    def check_sources(self, sources, committed: dict[str, Committed]) -> None:
        """StoreError when an input's key holds a committed row read from another file.

        `sources` are corpus.units.Source. Names both files and the fix; lists up to 3 clashes.
        """
        clashes = [
            (s, committed[s.path].source)
            for s in sources
            if s.path in committed and not same_file(committed[s.path].source, s.file)
        ]
        if clashes:
            s, theirs = clashes[0]
            more = f" (and {len(clashes) - 1} more like it)" if len(clashes) > 1 else ""
            raise StoreError(
                f"{self.out} holds {s.path} embedded from {theirs}; this run's {s.file} has the same relative path"
                f"{more}: embed it into another --out (one output folder per input root), or delete {self.out}"
            )

    def commit(self, table: pa.Table) -> dict:
        """Write `table` as the next shard and list it in the manifest; returns its entry."""
        entry = self._write_shard(table)
        pending = [p for p in self.manifest["pending"] if p != entry["file"]]
        self._write_manifest({**self.manifest, "pending": pending, "shards": [*self.manifest["shards"], entry]})
        return entry

    def retire(self, paths: set[str], committed: dict[str, Committed]) -> None:
        """Remove the rows of `paths` from the committed shards (each shard rewritten once)."""
        by_shard: dict[str, set[str]] = {}
        for p in paths:
            by_shard.setdefault(committed[p].shard, set()).add(p)
        for name, drop in sorted(by_shard.items()):
            table = pq.read_table(self.out / name)
            keep = table.filter(pa.array([p not in drop for p in table.column("path").to_pylist()]))
            new = [self._write_shard(keep)] if keep.num_rows else []
            listed = [e for s in self.manifest["shards"] for e in (new if s["file"] == name else [s])]
            # The old file stays pending (recorded) until it is deleted, here or by the next run.
            pending = [p for p in self.manifest["pending"] if p not in {e["file"] for e in new}] + [name]
            self._write_manifest({**self.manifest, "pending": pending, "shards": listed})
            (self.out / name).unlink()

    def _write_shard(self, table: pa.Table) -> dict:
        """Write `table` as a new shard file, recorded as pending first; returns its manifest entry."""
        folder = self.out / SHARD_DIR
        n = self.manifest["next_shard"]
        # A name held by a file tympan did not record is skipped, never overwritten.
        while any(os.path.lexists(folder / f) for f in (f"part-{n:06d}.parquet", f".part-{n:06d}.parquet.tmp")):
            n += 1
        name = f"part-{n:06d}.parquet"
        file = f"{SHARD_DIR}/{name}"
        self._write_manifest({**self.manifest, "next_shard": n + 1, "pending": [*self.manifest["pending"], file]})
        tmp = folder / f".{name}.tmp"
        try:
            # Dictionary encoding pays for the repeated strings only. No compression: float32
            # embeddings do not compress with snappy (0.5% on tympan's), and the driver, the one
            # writer, writes 1.7x faster without it (benchmarks/corpus_throughput.py, docs/scaling.md).
            pq.write_table(table, tmp, compression="none", use_dictionary=["module", "weights_sha256", "error"])
            _fsync(tmp)
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync(folder)
        n_failed = table.num_rows - table.column("error").null_count
        return {"file": file, "rows": table.num_rows, "failed": n_failed, "bytes": (folder / name).stat().st_size}

    def _write_manifest(self, manifest: dict) -> None:
        """Replace manifest.json by `manifest` atomically; self.manifest follows only on success,
        so an interrupted commit leaves memory and disk agreeing (its shard is garbage)."""
        # One line per shard: readable, and compact enough to rewrite at every commit.
        shards = ",\n".join(json.dumps(e, separators=(",", ":")) for e in manifest["shards"])
        head = json.dumps({k: v for k, v in manifest.items() if k != "shards"}, indent=1)[:-2]
        data = f'{head},\n "shards": [\n{shards}\n]}}\n'.encode()
        tmp = self.out / f".{MANIFEST}.tmp-{secrets.token_hex(4)}"
        try:
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.out / MANIFEST)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync(self.out)
        self.manifest = manifest


def _check_fields(manifest: dict) -> None:
    """KeyError or TypeError when a manifest lacks a field a run needs or has one of the wrong type."""
    for key in ("next_shard", "shards", *Header.__dataclass_fields__):
        manifest[key]
    lists = manifest["shards"], manifest.get("pending", [])
    if not isinstance(manifest["next_shard"], int) or not all(isinstance(x, list) for x in lists):
        raise TypeError("next_shard must be an integer, shards and pending lists")
    if not all(isinstance(e, dict) and isinstance(e.get("file"), str) for e in manifest["shards"]):
        raise TypeError('every shard entry needs a "file"')


def _ours_in_a_new_folder(f: Path) -> bool:
    """Whether `f`, in a folder without a manifest, is what a run killed before writing its first
    manifest may have left: the lock file, an empty shards/ folder, a temporary file."""
    if f.name == LOCK or TEMP_NAME.fullmatch(f.name):
        return True
    return f.name == SHARD_DIR and f.is_dir() and not f.is_symlink() and not any(f.iterdir())


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_manifest(out: str | os.PathLike) -> dict:
    """The manifest of a corpus output folder. Raises FileNotFoundError or ValueError."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: {out} is not the output of tympan embed --format parquet")
    manifest = json.loads(path.read_text())
    if not isinstance(manifest, dict) or manifest.get("format") not in READABLE_FORMATS:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path} has format {found!r}; this tympan reads {' or '.join(READABLE_FORMATS)}")
    return manifest


def read_embeddings(out: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """All rows of a corpus output folder: the shards its manifest lists, in order, as one table.

    `columns` selects columns (e.g. ["path", "scene"] reads no timestamp embeddings).
    Every input file appears exactly once; failed files have `error` set and null embeddings.
    Reads tympan-corpus/1 folders too (the same columns without `source`).
    Raises FileNotFoundError when `out` has no manifest.json, ValueError for another format.
    """
    out = Path(out)
    manifest = load_manifest(out)
    header = manifest["timestamp_embedding_size"], manifest["scene_embedding_size"]
    full = schema(*header, Layout(**manifest.get("layout", {})))
    if manifest["format"] != FORMAT:
        full = full.remove(full.get_field_index("source"))
    want = full if columns is None else pa.schema([full.field(c) for c in columns])
    tables = [pq.read_table(out / s["file"], columns=columns) for s in manifest["shards"]]
    return pa.concat_tables(tables) if tables else want.empty_table()


def embedding_arrays(table: pa.Table, row: int) -> dict[str, np.ndarray]:
    """One row's arrays, as in a per-file .npz: embeddings (T, D) (float32, or float16 in a
    float16 layout), timestamps (T,) and scene (E,) float32 (no scene in a layout without one).
    Raises ValueError for a failed row (its error names the reason)."""
    error = table.column("error")[row].as_py() if "error" in table.column_names else None
    if error is not None:
        raise ValueError(f"{table.column('path')[row].as_py()} failed: {error}")
    emb = table.column("embeddings")[row].values  # FixedSizeListArray, T entries of D
    arrays = {
        "embeddings": emb.flatten().to_numpy().reshape(len(emb), emb.type.list_size),
        "timestamps": table.column("timestamps")[row].values.to_numpy(),
    }
    if "scene" in table.column_names:
        arrays["scene"] = table.column("scene")[row].values.to_numpy()
    return arrays

"""The corpus output format: Parquet shards plus a manifest, written so that a kill never corrupts it.

Folder layout (OUT is `tympan embed --out`):

    OUT/manifest.json           the committed shards and what embedded them (JSON, below)
    OUT/shards/part-000000.parquet, part-000001.parquet, ...   one row per audio file
    OUT/.lock                   held by the run writing to OUT (empty file)

A row of a shard (Arrow types; D = timestamp_embedding_size, E = scene_embedding_size, T the
file's number of timestamps):

    path            string                        the file's path relative to its input root (posix)
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

manifest.json:

    {"format": "tympan-corpus/1", "module": ..., "weights_sha256": ..., "sample_rate": ...,
     "timestamp_embedding_size": D, "scene_embedding_size": E, "next_shard": N,
     "shards": [{"file": "shards/part-000003.parquet", "rows": R, "failed": F, "bytes": B}, ...]}

The manifest is the commit record: a shard counts only once the manifest lists it.
Invariant, kept across kills: every path appears in at most one row of the shards the manifest
lists ("exactly once" is a property of that set, not of a later de-duplication).
- A shard is written to `shards/.part-N.parquet.tmp`, fsynced, renamed to `part-N.parquet`;
  then the manifest is rewritten the same way (temporary file, fsync, rename, fsync of the
  folder). A kill before the manifest's rename leaves a shard that no manifest lists; the next
  run deletes it (garbage collection at open) and redoes its files.
- A changed input (size or mtime differs from its row) is retired before it is embedded again:
  each shard holding such rows is rewritten without them under a new name, the manifest swaps
  the old entry for the new one in one rename, and the old file is deleted. No row is ever
  superseded by a later one; a retired file is simply absent until its new row is committed.
- One writer per OUT: the run holds an exclusive flock on OUT/.lock (released by the kernel
  when the process dies, so a killed run never blocks the next).
Reading the manifest's shards is exact at any moment; reading the whole shards/ folder is exact
whenever no run is in progress and the last one was not killed (an unlisted shard may remain
until the next run collects it).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = "tympan-corpus/1"
MANIFEST = "manifest.json"
SHARD_DIR = "shards"
LOCK = ".lock"
SHARD_NAME = re.compile(r"part-(\d{6,})\.parquet")
TEMP_NAME = re.compile(r"\.part-\d{6,}\.parquet\.tmp(-[0-9a-f]+)?|\.manifest\.json\.tmp-[0-9a-f]+")
# Columns that identify an input and its state; cheap to read back (no embeddings).
KEY_COLUMNS = ["path", "size", "mtime_ns", "error"]


class StoreError(Exception):
    """OUT cannot be used for this run: locked by another run, or made by another model."""


def schema(timestamp_size: int, scene_size: int) -> pa.Schema:
    """The Arrow schema of a shard (column meanings in the module docstring)."""
    return pa.schema(
        [
            pa.field("path", pa.string(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("mtime_ns", pa.int64(), nullable=False),
            pa.field("sample_rate", pa.int32()),
            pa.field("duration_s", pa.float64()),
            pa.field("module", pa.string(), nullable=False),
            pa.field("weights_sha256", pa.string()),
            pa.field("timestamps", pa.list_(pa.float32())),
            pa.field("embeddings", pa.list_(pa.list_(pa.float32(), timestamp_size))),
            pa.field("scene", pa.list_(pa.float32(), scene_size)),
            pa.field("error", pa.string()),
        ]
    )


@dataclass(frozen=True)
class Header:
    """What embedded an output folder; a run may only add to a folder with the same header."""

    module: str
    weights_sha256: str | None
    sample_rate: int
    timestamp_embedding_size: int
    scene_embedding_size: int

    def describe(self) -> str:
        sha = (self.weights_sha256 or "unknown")[:12]
        return (
            f"module {self.module!r} (weights {sha}, {self.sample_rate} Hz, "
            f"{self.timestamp_embedding_size}/{self.scene_embedding_size}-d)"
        )


def rows_table(rows: list[dict], header: Header) -> pa.Table:
    """Build a shard table from per-file rows.

    Each row has path, size, mtime_ns, sample_rate, duration_s, weights_sha256 and error, plus,
    when error is None, `timestamps` (T,), `embeddings` (T, D) and `scene` (E,) numpy arrays
    (cast to float32). Raises ValueError when an embedding's width is not the header's.
    """
    d, e = header.timestamp_embedding_size, header.scene_embedding_size
    ok = [r["error"] is None for r in rows]
    lengths = [len(r["timestamps"]) if good else 0 for r, good in zip(rows, ok)]
    for r, good in zip(rows, ok):
        if good and (r["embeddings"].shape != (len(r["timestamps"]), d) or r["scene"].shape != (e,)):
            raise ValueError(
                f"{r['path']}: embeddings {r['embeddings'].shape} and scene {r['scene'].shape} do not "
                f"match this output's {d}-d timestamp and {e}-d scene embeddings"
            )
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    mask = pa.array([not good for good in ok])

    def flat(key: str, width: int) -> np.ndarray:
        parts = [np.asarray(r[key], dtype=np.float32).reshape(-1) for r, good in zip(rows, ok) if good]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    timestamps = pa.ListArray.from_arrays(offsets, pa.array(flat("timestamps", 1)), mask=mask)
    frames = pa.FixedSizeListArray.from_arrays(pa.array(flat("embeddings", d)), d)
    embeddings = pa.ListArray.from_arrays(offsets, frames, mask=mask)
    # A failed row's scene is null; its slot still needs E placeholder values.
    scenes = np.zeros((len(rows), e), np.float32)
    for i, (r, good) in enumerate(zip(rows, ok)):
        if good:
            scenes[i] = r["scene"]
    scene = pa.FixedSizeListArray.from_arrays(pa.array(scenes.reshape(-1)), e, mask=mask)

    def column(key: str, typ: pa.DataType) -> pa.Array:
        return pa.array([r[key] for r in rows], type=typ)

    return pa.Table.from_arrays(
        [
            column("path", pa.string()),
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
        ],
        schema=schema(d, e),
    )


@dataclass(frozen=True)
class Committed:
    """A file with a row in a committed shard."""

    size: int
    mtime_ns: int
    failed: bool
    shard: str  # the manifest's "file" entry


class Store:
    """The writer of one output folder: lock, manifest, shard commits, retiring stale rows.

    Use as a context manager: entering takes the lock, checks the header against an existing
    manifest (StoreError when another model made it, or another run holds the lock) and
    deletes shards and temporary files that the manifest does not list.
    """

    def __init__(self, out: str | os.PathLike, header: Header) -> None:
        self.out = Path(out)
        self.header = header
        self._lock_fd: int | None = None
        self.manifest: dict = {}

    def __enter__(self) -> Store:
        (self.out / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"another tympan embed is writing to {self.out} (it holds {self.out / LOCK}); "
                "wait for it to finish or stop it, then run again"
            ) from None
        self._lock_fd = fd
        try:
            self._open()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock_fd is not None:
            try:
                if self.manifest:
                    self._collect_garbage()  # e.g. a shard whose commit Ctrl-C interrupted
            finally:
                os.close(self._lock_fd)  # closing releases the flock
                self._lock_fd = None

    def _open(self) -> None:
        path = self.out / MANIFEST
        if path.exists():
            manifest = load_manifest(self.out)
            theirs = Header(
                manifest["module"],
                manifest["weights_sha256"],
                manifest["sample_rate"],
                manifest["timestamp_embedding_size"],
                manifest["scene_embedding_size"],
            )
            if manifest["shards"] and theirs != self.header:
                raise StoreError(
                    f"{self.out} holds embeddings from {theirs.describe()}; this run uses "
                    f"{self.header.describe()}: use another --out, or delete {self.out} to start over"
                )
            self.manifest = {**manifest, **self._header_fields()}
        else:
            self._write_manifest({"format": FORMAT, **self._header_fields(), "next_shard": 0, "shards": []})
        self._collect_garbage()

    def _header_fields(self) -> dict:
        h = self.header
        return {
            "module": h.module,
            "weights_sha256": h.weights_sha256,
            "sample_rate": h.sample_rate,
            "timestamp_embedding_size": h.timestamp_embedding_size,
            "scene_embedding_size": h.scene_embedding_size,
        }

    def _collect_garbage(self) -> None:
        """Delete what a killed run left: unlisted shards and temporary files (only our names)."""
        listed = {Path(s["file"]).name for s in self.manifest["shards"]}
        for f in (self.out / SHARD_DIR).iterdir():
            if (SHARD_NAME.fullmatch(f.name) and f.name not in listed) or TEMP_NAME.fullmatch(f.name):
                f.unlink()
        for f in self.out.iterdir():
            if TEMP_NAME.fullmatch(f.name):
                f.unlink()

    def committed(self) -> dict[str, Committed]:
        """Every path in the committed shards, with the input state its row was made from."""
        found: dict[str, Committed] = {}
        for entry in self.manifest["shards"]:
            t = pq.read_table(self.out / entry["file"], columns=KEY_COLUMNS).to_pydict()
            for path, size, mtime, error in zip(t["path"], t["size"], t["mtime_ns"], t["error"]):
                found[path] = Committed(size, mtime, error is not None, entry["file"])
        return found

    def commit(self, table: pa.Table) -> dict:
        """Write `table` as the next shard and list it in the manifest; returns its entry."""
        entry = self._write_shard(table)
        self._write_manifest({**self.manifest, "shards": [*self.manifest["shards"], entry]})
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
            self._write_manifest({**self.manifest, "shards": listed})
            (self.out / name).unlink()

    def _write_shard(self, table: pa.Table) -> dict:
        n = self.manifest["next_shard"]
        self.manifest["next_shard"] = n + 1
        name = f"part-{n:06d}.parquet"
        folder = self.out / SHARD_DIR
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
        return {
            "file": f"{SHARD_DIR}/{name}",
            "rows": table.num_rows,
            "failed": n_failed,
            "bytes": (folder / name).stat().st_size,
        }

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
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}; this tympan reads {FORMAT!r}")
    return manifest


def read_embeddings(out: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """All rows of a corpus output folder: the shards its manifest lists, in order, as one table.

    `columns` selects columns (e.g. ["path", "scene"] reads no timestamp embeddings).
    Every input file appears exactly once; failed files have `error` set and null embeddings.
    """
    out = Path(out)
    manifest = load_manifest(out)
    header = manifest["timestamp_embedding_size"], manifest["scene_embedding_size"]
    full = schema(*header)
    want = full if columns is None else pa.schema([full.field(c) for c in columns])
    tables = [pq.read_table(out / s["file"], columns=columns) for s in manifest["shards"]]
    return pa.concat_tables(tables) if tables else want.empty_table()


def embedding_arrays(table: pa.Table, row: int) -> dict[str, np.ndarray]:
    """One row's arrays, as in a per-file .npz: embeddings (T, D), timestamps (T,), scene (E,),
    all float32. Raises ValueError for a failed row (its error names the reason)."""
    error = table.column("error")[row].as_py() if "error" in table.column_names else None
    if error is not None:
        raise ValueError(f"{table.column('path')[row].as_py()} failed: {error}")
    emb = table.column("embeddings")[row].values  # FixedSizeListArray, T entries of D
    return {
        "embeddings": emb.flatten().to_numpy().reshape(len(emb), emb.type.list_size),
        "timestamps": table.column("timestamps")[row].values.to_numpy(),
        "scene": table.column("scene")[row].values.to_numpy(),
    }

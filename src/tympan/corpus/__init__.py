"""The embedding pipeline of `tympan embed`: .npz files or Parquet shards, in-process or on Ray.

    tympan embed DATA/ --out OUT                                  # one .npz per file
    tympan embed DATA/ --out OUT --format parquet                 # shards, this process
    tympan embed DATA/ --out OUT --engine ray [--ray-address A]   # shards, a Ray Data pipeline

Modules, one concern each (tympan.cli chooses the writer and the engine):
    units.py       the pipeline both formats and engines share: list, probe, group into units,
                   decode, embed (one retry rule, no non-finite output), guard the output folder
    npz.py         the .npz writer (in this process), with its record of what it wrote
    shards.py      the Parquet format: schema, atomic shard commit, manifest, reader
    driver.py      the Parquet run: plan, resume, progress, commit, summary
    local.py       the in-process Parquet engine
    ray_engine.py  the Ray Data engine (imports ray; nothing else here does)

Read a Parquet output with tympan.corpus.read_embeddings(OUT) and
tympan.corpus.embedding_arrays(table, row), or without tympan: docs/corpus.md. Neither this
package nor `import tympan` imports ray or pyarrow; the two readers import pyarrow when used.
"""

__all__ = ["embedding_arrays", "read_embeddings"]


def __getattr__(name: str):
    # The public readers live in shards.py; importing it here at once would make every user
    # of this package (the .npz writer too) import pyarrow.
    if name in __all__:
        from tympan.corpus import shards

        return getattr(shards, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

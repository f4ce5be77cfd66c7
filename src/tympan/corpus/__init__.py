"""Corpus-scale embedding: Parquet shards plus a manifest, resumable, in-process or on Ray.

    tympan embed DATA/ --out OUT --format parquet                 # this process
    tympan embed DATA/ --out OUT --engine ray [--ray-address A]   # a Ray Data pipeline

Modules, one concern each:
    shards.py      the output format: schema, atomic shard commit, manifest, reader
    units.py       the work both engines share: list, probe, group into units, decode, embed
    local.py       the in-process engine
    ray_engine.py  the Ray Data engine (imports ray; nothing else here does)
    driver.py      the run: plan, resume, progress, commit, summary

Read an output with tympan.io.read_embeddings(OUT), or without tympan: docs/corpus.md.
Neither this package nor `import tympan` imports ray; pyarrow is needed here only.
"""

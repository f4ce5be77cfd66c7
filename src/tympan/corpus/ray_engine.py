"""The Ray engine (`--engine ray`): a Ray Data pipeline over a local Ray or a cluster.

    units (from the driver's listing) -> from_items
      -> map_batches(_decode)   CPU tasks: read, downmix, resample (tympan.io.read_audio)
      -> map_batches(_Embedder) actor pool: the model loaded once per actor; one GPU per actor
                                when the cluster has GPUs, one CPU per actor otherwise
      -> iter_batches           back on the driver, which commits the shards (shards.Store)

The driver alone writes shards, so the atomic commit and the manifest stay in one process;
workers only return rows. The two map stages are not fused into one (see _pipeline), so
decoding runs in CPU tasks beside the model rather than inside its actors.

Fault tolerance: a killed actor is restarted and its unit retried (Ray Data's defaults for
actor pools: max_restarts=-1, max_task_retries=-1); a killed task is retried by Ray (3 times). Whatever Ray delivers, the
driver accepts one row per planned path and drops any repeat, so a retry cannot duplicate.
A killed driver ends its Ray job; the next run resumes from the committed shards.

Inputs must be readable at the same path on every node (a shared file system); only the
driver writes to --out. `ray` is imported here only, never by `import tympan`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import torch

from tympan.corpus.shards import rows_table
from tympan.corpus.units import ModelSpec, Source, decode_unit, embed_unit, load, unit_from_json, unit_to_json
from tympan.kit.hear import UsageError

MAX_BLOCKS = 10_000  # input blocks: one unit each up to this, so small jobs still spread out


class RayEngine:
    """Embeds on Ray: joins the cluster at `address`, or starts a local Ray when None (an already
    initialised Ray in this process is used as it is). The actors load their own models (on CPU
    or one GPU each); the driver's copy, loaded on `model_device`, only gives the header."""

    model_device = "cpu"

    def __init__(self, address: str | None, concurrency: int | None) -> None:
        self.address, self.concurrency = address, concurrency

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RayEngine:
        if args.concurrency is not None and args.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError('--engine ray needs Ray: pip install "tympan[ray]"') from None
        return cls(args.ray_address, args.concurrency)

    def tables(self, units: list[list[Source]], spec: ModelSpec, module=None, model=None) -> Iterator[pa.Table]:
        """Connects now (kit.hear.UsageError when it cannot); returns an iterator of shard-schema
        tables that shuts down a Ray it started. `module` and `model` are not used."""
        import ray

        started = False
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING)
            except ConnectionError as e:
                raise UsageError(
                    f"cannot join the Ray cluster at {self.address!r}: {e}; start it with `ray start --head` "
                    "(docs/corpus.md), or drop --ray-address to start a local Ray"
                ) from None
            started = True
        return _pipeline(units, spec, self.concurrency, started)


def _pipeline(units: list[list[Source]], spec: ModelSpec, concurrency: int | None, started: bool) -> Iterator[pa.Table]:
    import ray

    try:
        yield from dataset(units, spec, concurrency).iter_batches(batch_size=None, batch_format="pyarrow")
    finally:
        if started:
            ray.shutdown()


def dataset(units: list[list[Source]], spec: ModelSpec, concurrency: int | None):
    """The Ray Data pipeline of `units` (module docstring), not yet executed; needs ray.init."""
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows one bar of files and hours (driver.py)
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    # ...and do not warn that Ray's own bars are off: that is on purpose.
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if concurrency is None:
        # One actor per GPU. Without GPUs, one per CPU but one CPU in eight (at least one),
        # left to decoding: decoding and resampling took 11% of tympan's CPU time, the model
        # 80% (benchmarks/corpus_throughput.py, docs/scaling.md).
        concurrency = gpus or max(1, cpus - max(1, cpus // 8))
    items = [{"unit": json.dumps(unit_to_json(u))} for u in units]
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), MAX_BLOCKS)))
    ds = ds.map_batches(
        _decode,
        batch_size=1,
        batch_format="pyarrow",
        fn_kwargs={"sample_rate": spec.header.sample_rate},
        # Up to one decoding task per CPU (as many as the actors leave free run at once). A
        # task pool whose size differs from the actor pool's is never fused into the actors:
        # decoding stays in its own tasks. (Sizes are equal only when the actors take every
        # CPU, and then decoding inside them is the only way to run it anyway.)
        compute=ray.data.TaskPoolStrategy(size=cpus),
        num_cpus=1,
    )
    # Ray Data's actor pools restart a dead actor and retry its unit (max_restarts=-1,
    # max_task_retries=-1 are its defaults).
    ds = ds.map_batches(
        _Embedder,
        batch_size=1,
        batch_format="pyarrow",
        fn_constructor_kwargs={"spec": spec, "use_gpu": bool(gpus)},
        compute=ray.data.ActorPoolStrategy(size=concurrency),
        num_gpus=1 if gpus else 0,
        num_cpus=1,
    )
    return ds


def _decode(batch: pa.Table, sample_rate: int) -> pa.Table:
    """CPU task: decode each unit of `batch` (column `unit`, JSON) to mono audio at `sample_rate`.

    Returns per unit: `unit` (unchanged), `errors` (a reason or null per file) and `audio`
    (float32 bytes per file, empty on error).
    """
    units, errors, audio = [], [], []
    for text in batch.column("unit").to_pylist():
        decoded = decode_unit(unit_from_json(json.loads(text)), sample_rate)
        units.append(text)
        errors.append([e for _, _, e in decoded])
        audio.append([a.tobytes() if a is not None else b"" for _, a, _ in decoded])
    return pa.table(
        {
            "unit": pa.array(units, pa.string()),
            "errors": pa.array(errors, pa.list_(pa.string())),
            # large_binary: a long file's samples may pass 2 GiB
            "audio": pa.array(audio, pa.list_(pa.large_binary())),
        }
    )


class _Embedder:
    """Actor: loads the model once, then embeds decoded units into shard-schema rows."""

    def __init__(self, spec: ModelSpec, use_gpu: bool) -> None:
        import ray

        self.spec = spec
        self.device = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            # Ray gives each CPU actor one CPU; more threads would fight the decoding tasks.
            torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
        self.module, self.model = load(spec, str(self.device))
        self.sha = spec.header.weights_sha256
        from tympan.checksum import weights_identity

        here = weights_identity(self.model, spec.model_path)
        if here != self.sha:
            raise RuntimeError(
                f"the weights of {spec.module!r} on this node hash to {here}, the driver's to {self.sha}: "
                "install the same module and weights on every node"
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        for text, errors, audio in zip(
            batch.column("unit").to_pylist(), batch.column("errors").to_pylist(), batch.column("audio").to_pylist()
        ):
            unit = unit_from_json(json.loads(text))
            decoded = [
                (s, None if e is not None else np.frombuffer(a, dtype=np.float32), e)
                for s, e, a in zip(unit, errors, audio)
            ]
            rows.extend(embed_unit(decoded, self.module, self.model, self.device, self.sha, self.spec.layout))
        return rows_table(rows, self.spec.header, self.spec.layout)

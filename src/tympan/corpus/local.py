"""The in-process engine (`--engine local`, the default): no Ray, one process, the given device.

Units are decoded and embedded one after the other in this process (corpus.units.embed_units,
the same loop that writes .npz files); torch uses its own threads for the model. Yields one
shard-schema table per unit, which the driver commits.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pyarrow as pa

from tympan.corpus.shards import rows_table
from tympan.corpus.units import ModelSpec, Source, embed_units
from tympan.kit.hear import UsageError, check_device


class LocalEngine:
    """Embeds in this process with the model the driver loaded, on `device`."""

    def __init__(self, device: str) -> None:
        self.model_device = device

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> LocalEngine:
        for flag, value in (("--ray-address", args.ray_address), ("--concurrency", args.concurrency)):
            if value is not None:
                raise UsageError(f"{flag} applies to --engine ray only")
        check_device(args.device)
        return cls(args.device)

    def tables(self, units: list[list[Source]], spec: ModelSpec, module, model) -> Iterator[pa.Table]:
        """Embed `units` with the already loaded `module` and `model`: one table per unit."""
        for rows in embed_units(units, spec.header, module, model, self.model_device, spec.layout):
            yield rows_table(rows, spec.header, spec.layout)

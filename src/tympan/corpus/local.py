"""The in-process engine (`--engine local`, the default): no Ray, one process, the given device.

Units are decoded and embedded one after the other in this process; torch uses its own
threads for the model. Yields one shard-schema table per unit, which the driver commits.
"""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import torch

from tympan.corpus.shards import rows_table
from tympan.corpus.units import Job, Source, decode_unit, embed_unit


def embed_units(units: list[list[Source]], job: Job, module, model, device: str) -> Iterator[pa.Table]:
    """Embed `units` with the already loaded `module` and `model` (on `device`)."""
    dev = torch.device(device)
    for unit in units:
        decoded = decode_unit(unit, job.header.sample_rate)
        yield rows_table(embed_unit(decoded, module, model, dev, job.header.weights_sha256), job.header)

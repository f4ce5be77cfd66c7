"""SHA-256 of files and of weights, and the one rule for "which weights made this".

Every place that records or checks an identity uses this module: the weights files
(model.py, fusion.py), the experts' cache, the task suite's manifest, `tympan evaluate`'s
results.json and the corpus manifest. One rule means a model gets the same identity in
results.json and in a Parquet manifest.
"""

from __future__ import annotations

import hashlib
import os

import torch

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (any size, bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def file_digests(files, root: str | os.PathLike) -> dict[str, dict]:
    """{path relative to `root`: {"sha256": hex SHA-256, "bytes": size}} for `files` (Paths under
    `root`), in sorted path order: the manifests of the task suite and of the training data."""
    return {str(p.relative_to(root)): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(files)}


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Hex SHA-256 of a state_dict's canonical bytes: names, dtypes, shapes and values, sorted
    by name. Independent of the device and of how the file holding it was pickled."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        # reshape(-1): a 0-d tensor (BatchNorm's num_batches_tracked) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_identity(model, model_path: str | os.PathLike = "") -> str | None:
    """The SHA-256 that identifies a loaded HEAR model's weights, or None when unknowable.

    - a torch.nn.Module: its `weights_sha256` attribute when set (tympan's, checked at load
      to equal the hash of its state_dict, for v1 together with its architecture config),
      else state_dict_sha256 of its state_dict: what was loaded, whether `model_path` named
      a file, a name the module resolves (crepe's "full") or nothing (a foreign module's built-in weights);
    - any other model: the SHA-256 of the `model_path` file's bytes, when it is a file;
    - else None.
    """
    if isinstance(model, torch.nn.Module):
        return getattr(model, "weights_sha256", "") or state_dict_sha256(model.state_dict())
    if model_path and os.path.isfile(model_path):
        return sha256_file(model_path)
    return None

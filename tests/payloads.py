"""Deep equality of loaded weights payloads, shared by the weights-file fuzz tests."""

from __future__ import annotations

import torch


def same_payload(a, b) -> bool:
    """Same types, keys and values; tensors bitwise equal with the same dtype and shape."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_payload(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(same_payload(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b

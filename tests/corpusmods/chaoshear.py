"""A deterministic HEAR module whose speed and crashes the corpus tests control through files.

Embeddings are fakehear's (tests/embedmods). The folder named by $TYMPAN_TEST_CONTROL may hold:
    slow       seconds to sleep in each call of get_timestamp_embeddings (a float, as text)
    arm_kill   when present and `killed` is not: create `killed`, then SIGKILL this process
Files rather than variables, because Ray's workers are started before a test decides, and
each test sets up its own behaviour by writing these files.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "embedmods"))
import fakehear

load_model = fakehear.load_model


def _control() -> Path | None:
    folder = os.environ.get("TYMPAN_TEST_CONTROL")
    return Path(folder) if folder else None


def get_timestamp_embeddings(audio: torch.Tensor, model) -> tuple[torch.Tensor, torch.Tensor]:
    control = _control()
    if control is not None:
        if (control / "arm_kill").exists() and not (control / "killed").exists():
            (control / "killed").write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        if (control / "slow").exists():
            time.sleep(float((control / "slow").read_text()))
    return fakehear.get_timestamp_embeddings(audio, model)


def get_scene_embeddings(audio: torch.Tensor, model) -> torch.Tensor:
    return fakehear.get_timestamp_embeddings(audio, model)[0].mean(dim=1)

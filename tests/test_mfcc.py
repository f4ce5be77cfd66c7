"""The MFCC reference module is a valid HEAR module and means what it says."""

import numpy as np
import torch

from tympan import mfcc
from tympan.kit.validate import validate


def test_mfcc_reference_passes_the_strict_validator():
    report = validate("tympan.mfcc", long_minutes=0.2)
    assert report.passed, report.text()


def test_mfcc_is_the_dct_of_the_log_mel():
    model = mfcc.load_model()
    audio = torch.sin(torch.arange(16000) * 2 * torch.pi * 300 / 16000).unsqueeze(0) * 0.5
    emb, ts = mfcc.get_timestamp_embeddings(audio, model)
    logmel = model.frontend(audio[0])[:, :64].double().numpy()
    from scipy.fft import dct

    expected = dct(logmel, type=2, norm="ortho", axis=1)[:, :20]
    np.testing.assert_allclose(emb[0].numpy(), expected, rtol=1e-4, atol=1e-4)
    scene = mfcc.get_scene_embeddings(audio, model)
    np.testing.assert_allclose(scene[0, :20].numpy(), expected.mean(axis=0), rtol=1e-4, atol=1e-4)
    assert ts.shape == (1, 51) and scene.shape == (1, 40)

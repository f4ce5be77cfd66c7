"""Where the offline suite's audio comes from: Debian packages and system commands.

Audio that ships in Debian packages (game music, drum kits, soundfonts, recorded speech)
is fetched with `apt-get download` and unpacked with `dpkg -x` into a cache folder, never
installed: no root needed, and the package's exact version is recorded for the manifest.
Programs that generate audio (espeak-ng, flite, fluidsynth's library) must be installed;
`make tasks` installs them, and a missing one stops the build with the command to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class SuiteSourceError(RuntimeError):
    """A system package or Debian data package the suite needs is not available."""


def cache_dir() -> Path:
    """The cache for unpacked packages: $TYMPAN_CACHE, else ~/.cache/tympan."""
    return Path(os.environ.get("TYMPAN_CACHE") or Path.home() / ".cache" / "tympan")


def require_commands(**commands: str) -> None:
    """Check programs are on PATH: require_commands(espeak_ng="espeak-ng") maps command -> Debian package.

    Raises SuiteSourceError naming every missing program and the apt-get line that installs it.
    """
    missing = {cmd.replace("_", "-"): pkg for cmd, pkg in commands.items() if shutil.which(cmd.replace("_", "-")) is None}
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        raise SuiteSourceError(
            f"missing system program(s) {sorted(missing)}: install them with "
            f"`sudo apt-get install -y {pkgs}` (or run `make tasks`, which installs everything the suite needs)"
        )


def debian_package(name: str) -> tuple[Path, str]:
    """Unpack Debian package `name` into the cache (once) and return (root folder, version).

    The files are under root/usr/share/... as in the package. Raises SuiteSourceError when
    apt cannot download it (no package lists: run `apt-get update` as root).
    """
    root = cache_dir() / "debian" / name
    done = root / ".version"
    if done.exists():
        return root, done.read_text().strip()
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise SuiteSourceError(f"Debian package {name!r} is needed, but apt-get/dpkg are not available on this machine")
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        got = subprocess.run(["apt-get", "download", name], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or not debs:
            raise SuiteSourceError(
                f"could not download Debian package {name!r}: {got.stderr.strip()[-300:]}; "
                "run `sudo apt-get update` once, then try again (or `make tasks`)"
            )
        version = subprocess.run(
            ["dpkg-deb", "-f", str(debs[0]), "Version"], check=True, capture_output=True, text=True
        ).stdout.strip()
        unpacked = Path(tmp) / "root"
        subprocess.run(["dpkg", "-x", str(debs[0]), str(unpacked)], check=True)
        (unpacked / ".version").write_text(version + "\n")
        shutil.rmtree(root, ignore_errors=True)
        unpacked.rename(root)  # atomic: a half-unpacked package is never seen as done
    return root, version

"""What produced a result besides its config and seed: package versions and the harness's git commit.

Written into every metrics.json (``versions``, ``git``). Never fails a job: a package that is not installed,
a missing git, or a harness that is not a git checkout (an installed wheel) reads as null.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

# metrics.json key -> distribution name.
PACKAGES = {"torch": "torch", "transformers": "transformers", "peft": "peft", "hydra": "hydra-core",
            "harness": "rmharness"}
# `git` answers in milliseconds; a hung one (a network filesystem) must not hold up the job.
GIT_TIMEOUT_S = 10


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in PACKAGES.items():
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = None
    return versions


def _git(repo: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):  # no git executable, or it hung
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(repo: Path | None = None) -> dict[str, str | bool | None]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout the harness code runs from; dirty =
    tracked files modified or untracked files not ignored."""
    repo = repo or Path(__file__).resolve().parent
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git(repo, "status", "--porcelain")
    return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}


def provenance() -> dict:
    return {"versions": package_versions(), "git": git_state()}

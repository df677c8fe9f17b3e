"""Unpack archives safely and find the model inside, in the converter's error type."""

from __future__ import annotations

from pathlib import Path

from convert.errors import UnpackError
from runtime import artifacts
from runtime.artifacts import DEFAULT_LIMITS, ExtractLimits


def archive_kind(path: Path) -> str | None:
    return artifacts.archive_kind(path)


def unpack(archive: Path, dest: Path, limits: ExtractLimits = DEFAULT_LIMITS) -> Path:
    """Extract ``archive`` into ``dest`` and return the model root inside it."""
    try:
        artifacts.extract(archive, dest, limits)
        return artifacts.find_model_root(dest)
    except artifacts.ArtifactError as exc:
        raise UnpackError(str(exc)) from None
    except OSError as exc:  # disk full, permissions on dest
        raise UnpackError(f"{archive}: cannot extract into {dest}: {exc}") from None


def find_model_root(directory: Path) -> Path:
    try:
        return artifacts.find_model_root(directory)
    except artifacts.ArtifactError as exc:
        raise UnpackError(str(exc)) from None
    except OSError as exc:
        raise UnpackError(f"{directory}: cannot read: {exc}") from None

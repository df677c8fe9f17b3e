"""Unpack archives safely and find the model inside, in the converter's error type."""

from __future__ import annotations

from pathlib import Path

from bundle import archive as archives
from bundle.archive import DEFAULT_LIMITS, ExtractLimits
from convert.errors import UnpackError


def archive_kind(path: Path) -> str | None:
    return archives.archive_kind(path)


def unpack(archive: Path, dest: Path, limits: ExtractLimits = DEFAULT_LIMITS) -> Path:
    """Extract ``archive`` into ``dest`` and return the model root inside it."""
    try:
        archives.extract(archive, dest, limits)
        return archives.find_model_root(dest)
    except archives.ArchiveError as exc:
        raise UnpackError(str(exc)) from None
    except OSError as exc:  # disk full, permissions on dest
        raise UnpackError(f"{archive}: cannot extract into {dest}: {exc}") from None


def find_model_root(directory: Path) -> Path:
    try:
        return archives.find_model_root(directory)
    except archives.ArchiveError as exc:
        raise UnpackError(str(exc)) from None
    except OSError as exc:
        raise UnpackError(f"{directory}: cannot read: {exc}") from None

"""Errors of fetching and unpacking: the message names the file or URL and what is wrong."""

from __future__ import annotations


class ArtifactError(Exception):
    """Base class: the message names the file or URL and what is wrong."""


class DownloadError(ArtifactError):
    """HTTP error status, timeout, connection failure, size limit or truncated body."""


class ArchiveError(ArtifactError):
    """Corrupt archive, unsafe member (traversal, escaping link, device), or limits exceeded."""


class RepositoryConfigError(ArtifactError):
    """The model-repository environment (XQUERY_ADDR, MODEL_ID, ...) is missing or invalid."""

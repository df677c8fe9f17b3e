"""The converter's one error type. Every failure a user can cause ends as a ConversionError:
the CLI prints its message (which names the file and what is wrong) and exits non-zero."""

from __future__ import annotations


class ConversionError(Exception):
    """A failure the user can act on. ``exit_code`` lets the CLI tell kinds apart in scripts."""

    exit_code = 2


class FetchError(ConversionError):
    """The model could not be downloaded (HTTP status, timeout, size limit, truncated body)."""

    exit_code = 3


class UnpackError(ConversionError):
    """An archive is corrupt, too large, or tries to write outside its directory."""

    exit_code = 4


class DetectionError(ConversionError):
    """No supported model format was recognised."""

    exit_code = 5


class VerificationError(ConversionError):
    """The converted model's outputs differ from the source framework's beyond tolerance."""

    exit_code = 6


class UsageError(ConversionError):
    """The command line asks for something that cannot apply (a flag of another format)."""

    exit_code = 64

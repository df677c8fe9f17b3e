"""Get the model onto local disk: a path, an http(s) URL, or the old platform's model repository.

The download itself lives in ``bundle.fetch`` (standard library only) so that the serving
image can fetch a bundle without convert/; this module adds the converter's error type and a
progress bar when stderr is a terminal.
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from bundle import fetch as artifacts
from bundle.fetch import DEFAULT_POLICY, DownloadPolicy
from convert.errors import FetchError


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def fetch(
    source: str | Path | None,
    workdir: Path,
    *,
    policy: DownloadPolicy = DEFAULT_POLICY,
    env: Mapping[str, str] | None = None,
) -> tuple[Path, str]:
    """Return ``(local path, location for the manifest)``.

    ``source`` None means the model repository named by XQUERY_ADDR/MODEL_ID/MODEL_VERSION/GUID.
    Local paths are used in place (never modified); downloads land in ``workdir``.
    """
    if source is None:
        try:
            url = artifacts.model_repository_url(env)
        except artifacts.ArtifactError as exc:
            raise FetchError(str(exc)) from None
        return download(url, workdir, policy), redact(url)
    text = str(source)
    if is_url(text):
        return download(text, workdir, policy), redact(text)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text):
        raise FetchError(f"{text}: unsupported URL scheme; use http(s), or a local path")
    path = Path(text).expanduser()
    if not path.exists():
        raise FetchError(f"{path}: no such file or directory")
    if not (path.is_file() or path.is_dir()):
        raise FetchError(f"{path}: not a regular file or directory")
    if not os.access(path, os.R_OK):
        raise FetchError(f"{path}: not readable")
    return path.resolve(), str(path.resolve())


def redact(url: str) -> str:
    """The URL as recorded in the manifest: no user:password, no GUID value."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    guid_param = os.environ.get(artifacts.ENV_PARAM_NAMES[artifacts.ENV_GUID][0]) or "guid"
    query = [(k, "REDACTED" if k == guid_param else v) for k, v in urllib.parse.parse_qsl(parts.query, True)]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, urllib.parse.urlencode(query), ""))


def download(url: str, workdir: Path, policy: DownloadPolicy = DEFAULT_POLICY) -> Path:
    bar = ProgressBar(url) if sys.stderr.isatty() else None
    try:
        return artifacts.download(url, Path(workdir) / "download", policy=policy, progress=bar)
    except artifacts.ArtifactError as exc:
        raise FetchError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()


class ProgressBar:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, url: str, width: int = 30) -> None:
        self.label = url.rsplit("/", 1)[-1].split("?", 1)[0][:30] or "download"
        self.width = width
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done != total:
            return
        self.last = now
        if total:
            filled = int(self.width * done / total)
            text = f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] {_mib(done)}/{_mib(total)} MiB"
        else:
            text = f"\r{self.label} {_mib(done)} MiB"
        sys.stderr.write(text)
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f}"

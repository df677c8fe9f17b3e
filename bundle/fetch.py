"""Download model artifacts with the standard library only, and the old model repository's URL.

Both stages use this: the converter to fetch what it converts, and the serving image to fetch a
bundle at start without carrying convert/ (nor requests). Everything downloaded is untrusted, so
sizes are capped and the body is placed atomically; failures raise ``DownloadError`` naming the URL.

Model repository of the platform being replaced (defaults, each overridable by environment)::

    GET {XQUERY_ADDR}{MODELPORT_XQUERY_PATH}?modelId={MODEL_ID}&modelVersion={MODEL_VERSION}&guid={GUID}

``MODELPORT_XQUERY_PATH`` defaults to "" (``XQUERY_ADDR`` is the full endpoint); the parameter
names come from ``MODELPORT_XQUERY_PARAM_MODEL_ID`` / ``..._MODEL_VERSION`` / ``..._GUID``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import posixpath
import re
import shutil
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bundle.archive import DEFAULT_LIMITS, ExtractLimits, archive_kind, extract, find_model_root
from bundle.errors import ArtifactError, DownloadError, RepositoryConfigError

GiB = 1 << 30


CHUNK = 1 << 20


# ---- model repository URL ----------------------------------------------------------------------

ENV_ADDR = "XQUERY_ADDR"
ENV_MODEL_ID = "MODEL_ID"
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_GUID = "GUID"
ENV_PATH = "MODELPORT_XQUERY_PATH"
ENV_PARAM_NAMES = {
    ENV_MODEL_ID: ("MODELPORT_XQUERY_PARAM_MODEL_ID", "modelId"),
    ENV_MODEL_VERSION: ("MODELPORT_XQUERY_PARAM_MODEL_VERSION", "modelVersion"),
    ENV_GUID: ("MODELPORT_XQUERY_PARAM_GUID", "guid"),
}


def repository_configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return bool(env.get(ENV_ADDR, "").strip())


def model_repository_url(env: Mapping[str, str] | None = None) -> str:
    """The download URL of the old platform's model repository, from the environment.

    ``MODEL_ID`` is required; ``MODEL_VERSION`` and ``GUID`` are sent when set. Parameters
    already in ``XQUERY_ADDR``'s query string are kept.
    """
    env = os.environ if env is None else env
    addr = env.get(ENV_ADDR, "").strip()
    if not addr:
        raise RepositoryConfigError(f"{ENV_ADDR} is not set: it is the model repository's address")
    if "://" not in addr:
        addr = "http://" + addr
    model_id = env.get(ENV_MODEL_ID, "").strip()
    if not model_id:
        raise RepositoryConfigError(f"{ENV_MODEL_ID} is not set: the model repository needs the model's id")
    parts = urllib.parse.urlsplit(addr)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RepositoryConfigError(f"{ENV_ADDR}={addr!r} is not an http(s) address")
    suffix = env.get(ENV_PATH, "")
    path = (parts.path.rstrip("/") + suffix if suffix else parts.path) or "/"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    for var, (name_var, default_name) in ENV_PARAM_NAMES.items():
        value = env.get(var, "").strip()
        if value:
            query.append((env.get(name_var, "") or default_name, value))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, urllib.parse.urlencode(query), ""))


# ---- download ----------------------------------------------------------------------------------

Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)


@dataclass(frozen=True)
class DownloadPolicy:
    """Timeouts, retries and limits. ``timeout`` applies to connecting and to each read."""

    timeout: float = 30.0
    retries: int = 4  # extra attempts after the first, on connection errors, timeouts, 5xx, short bodies
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    max_backoff: float = 8.0
    max_bytes: int = 8 * GiB


DEFAULT_POLICY = DownloadPolicy()


class _Retryable(Exception):
    pass


def download(
    url: str,
    dest_dir: Path,
    *,
    policy: DownloadPolicy = DownloadPolicy(),
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Stream ``url`` into ``dest_dir`` (temp file, then atomic rename) and return the file's path.

    The file name comes from Content-Disposition, else the URL path, else ``model``.
    """
    dest_dir = Path(dest_dir)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise DownloadError(f"{url}: only http and https URLs can be downloaded")
    delay = policy.backoff
    for attempt in range(policy.retries + 1):
        try:
            dest_dir.mkdir(parents=True, exist_ok=True)
            return _download_once(url, dest_dir, policy, progress)
        except OSError as exc:  # network errors are _Retryable by now: this is the local disk
            raise DownloadError(f"{url}: cannot save the download in {dest_dir}: {exc}") from None
        except _Retryable as exc:
            if attempt == policy.retries:
                raise DownloadError(f"{url}: {exc} (gave up after {attempt + 1} attempts)") from None
            sleep(delay)
            delay = min(delay * 2, policy.max_backoff)
    raise AssertionError("unreachable")


def _download_once(url: str, dest_dir: Path, policy: DownloadPolicy, progress: Progress | None) -> Path:
    request = urllib.request.Request(url, headers={"User-Agent": "modelport", "Accept-Encoding": "identity"})
    try:
        response = urllib.request.urlopen(request, timeout=policy.timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        if isinstance(getattr(exc, "reason", exc), ssl.SSLCertVerificationError):
            raise DownloadError(f"{url}: TLS certificate not trusted: {_reason(exc)}") from None
        raise _Retryable(f"request failed: {_reason(exc)}") from None
    with response:
        total = _content_length(response)
        if total is not None and total > policy.max_bytes:
            raise DownloadError(f"{url}: {total} bytes is over the size limit of {policy.max_bytes} bytes")
        name = _file_name(response, url)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                received = _copy_body(response, out, url, policy, progress, total)
            if total is not None and received != total:
                raise _Retryable(f"truncated download: received {received} of {total} bytes")
            target = dest_dir / name
            os.replace(tmp, target)
            return target
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _copy_body(
    response: BinaryIO, out: BinaryIO, url: str, policy: DownloadPolicy, progress: Progress | None, total: int | None
) -> int:
    received = 0
    while True:
        try:
            chunk = response.read(CHUNK)
        except http.client.IncompleteRead as exc:
            raise _Retryable(
                f"truncated download: connection closed after {received + len(exc.partial)} bytes"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Retryable(f"download interrupted after {received} bytes: {_reason(exc)}") from None
        if not chunk:
            return received
        received += len(chunk)
        if received > policy.max_bytes:
            raise DownloadError(f"{url}: more than the size limit of {policy.max_bytes} bytes")
        out.write(chunk)
        if progress is not None:
            progress(received, total)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _file_name(response: http.client.HTTPResponse, url: str) -> str:
    """A safe base name: never a path, never hidden, never empty."""
    candidate = response.headers.get_filename() or ""
    if not candidate:
        candidate = posixpath.basename(urllib.parse.urlsplit(url).path)
    candidate = SAFE_NAME.sub("_", posixpath.basename(candidate.replace("\\", "/"))).lstrip(".")
    return candidate[:200] or "model"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc.reason, str):
        exc = exc.reason  # type: ignore[assignment]
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# ---- archives ----------------------------------------------------------------------------------


def fetch_model(
    source: str,
    dest: Path,
    *,
    policy: DownloadPolicy = DEFAULT_POLICY,
    limits: ExtractLimits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> Path:
    """Download ``source`` (a URL, or "" for the model repository from the environment) into the
    new directory ``dest``, extract it when it is a zip/tar, and return the model root.

    For the serving image: fetch a bundle or model at start without the converter. ``dest`` must not
    exist; it is created complete or not at all.
    """
    dest = Path(dest)
    if dest.exists():
        raise ArtifactError(f"{dest}: already exists")
    url = source or model_repository_url()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        downloaded = download(url, staging / "download", policy=policy, progress=progress)
        if archive_kind(downloaded) is not None:
            extract(downloaded, staging / "content", limits)
        else:
            (staging / "content").mkdir()
            os.replace(downloaded, staging / "content" / downloaded.name)
        shutil.rmtree(staging / "download", ignore_errors=True)
        relative = find_model_root(staging / "content").relative_to(staging / "content")
        os.rename(staging / "content", dest)
        return dest / relative
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def temporary_directory(parent: Path | None = None, prefix: str = "modelport-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)

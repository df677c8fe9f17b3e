"""Fetch and unpack model artifacts with the standard library only.

Both stages use this: the converter to fetch what it converts, and the serving image to fetch a
bundle at start without carrying convert/ (nor requests). Everything downloaded or extracted is
untrusted, so this module is defensive about sizes, paths and links, and fails with an
``ArtifactError`` that names the file or URL and what is wrong.

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
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

GiB = 1 << 30
CHUNK = 1 << 20

# ---- errors ------------------------------------------------------------------------------------


class ArtifactError(Exception):
    """Base class: the message names the file or URL and what is wrong."""


class DownloadError(ArtifactError):
    """HTTP error status, timeout, connection failure, size limit or truncated body."""


class ArchiveError(ArtifactError):
    """Corrupt archive, unsafe member (traversal, escaping link, device), or limits exceeded."""


class RepositoryConfigError(ArtifactError):
    """The model-repository environment (XQUERY_ADDR, MODEL_ID, ...) is missing or invalid."""


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


@dataclass(frozen=True)
class ExtractLimits:
    """Caps against archive bombs, counted on the bytes actually written."""

    max_total_bytes: int = 16 * GiB
    max_files: int = 100_000
    max_link_depth: int = 8


DEFAULT_LIMITS = ExtractLimits()


def archive_kind(path: Path) -> str | None:
    """ "zip" or "tar" by content (magic bytes), None for anything else, including unreadable files."""
    path = Path(path)
    try:
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00" or head[257:262] == b"ustar":
        return "tar"
    return None


@dataclass
class _Member:
    name: str  # normalised relative POSIX path
    kind: str  # file | dir | link
    link_target: str = ""  # for links: normalised relative path inside the archive
    open: Callable[[], BinaryIO] | None = None


def extract(archive: Path, dest: Path, limits: ExtractLimits = ExtractLimits()) -> Path:
    """Extract a zip or tar(.gz/.bz2/.xz) archive into ``dest`` (created; must not exist or be empty).

    Rejected: absolute paths, ``..``, links that leave the archive, device files and FIFOs,
    encrypted members, more than ``limits`` files or bytes. No symlink is ever created: a link
    that stays inside the archive is extracted as a copy of what it points to.
    """
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    if kind is None:
        raise ArchiveError(f"{archive}: not a zip or tar archive")
    try:
        dest.mkdir(parents=True, exist_ok=True)
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _extract_members(archive, _zip_members(archive, zf), dest, limits)
        else:
            with tarfile.open(archive, "r:*") as tf:
                _extract_members(archive, _tar_members(archive, tf), dest, limits)
    except ArtifactError:
        raise
    except OSError as exc:
        if exc.errno is None:  # gzip's BadGzipFile and friends: the archive, not the disk
            raise ArchiveError(f"{archive}: corrupt {kind} archive: {type(exc).__name__}: {exc}") from None
        raise ArchiveError(f"{archive}: cannot extract into {dest}: {exc}") from None
    except Exception as exc:  # every reader error of a corrupt archive: zlib, EOF, CRC, struct, lzma...
        raise ArchiveError(f"{archive}: corrupt {kind} archive: {type(exc).__name__}: {exc}") from None
    return dest


def _safe_name(archive: Path, raw: str) -> str:
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"{archive}: member {raw!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"{archive}: member {raw!r} points outside the archive ('..')")
    if "\x00" in name:
        raise ArchiveError(f"{archive}: member {raw!r} has a NUL byte in its name")
    return "/".join(parts)


def _link_target(archive: Path, member: str, target: str, relative_to_member: bool) -> str:
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise ArchiveError(f"{archive}: link {member!r} points to the absolute path {target!r}")
    base = posixpath.dirname(member) if relative_to_member else ""
    joined = posixpath.normpath(posixpath.join(base, target))
    if joined == ".." or joined.startswith("../"):
        raise ArchiveError(f"{archive}: link {member!r} -> {target!r} points outside the archive")
    return "" if joined == "." else joined


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> Iterator[_Member]:
    for info in zf.infolist():
        name = _safe_name(archive, info.filename)
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{archive}: member {info.filename!r} is encrypted")
        mode = info.external_attr >> 16
        fmt = stat.S_IFMT(mode)
        if fmt == stat.S_IFLNK:
            with zf.open(info) as f:
                target = f.read(4096).decode("utf-8", "replace")
            yield _Member(name, "link", _link_target(archive, name, target, relative_to_member=True))
        elif info.is_dir() or fmt == stat.S_IFDIR:
            yield _Member(name, "dir")
        elif fmt in (0, stat.S_IFREG):
            yield _Member(name, "file", open=lambda info=info: zf.open(info))
        else:
            raise ArchiveError(f"{archive}: member {info.filename!r} is a special file (mode {oct(mode)})")


def _tar_members(archive: Path, tf: tarfile.TarFile) -> Iterator[_Member]:
    for info in tf:
        name = _safe_name(archive, info.name)
        if info.issym():
            yield _Member(name, "link", _link_target(archive, name, info.linkname, relative_to_member=True))
        elif info.islnk():
            yield _Member(name, "link", _link_target(archive, name, info.linkname, relative_to_member=False))
        elif info.isdir():
            yield _Member(name, "dir")
        elif info.isreg():
            yield _Member(name, "file", open=lambda info=info: tf.extractfile(info))  # type: ignore[return-value]
        else:
            raise ArchiveError(f"{archive}: member {info.name!r} is a device, FIFO or other special file")


class _Budget:
    def __init__(self, archive: Path, limits: ExtractLimits) -> None:
        self.archive, self.limits = archive, limits
        self.files = 0
        self.bytes = 0

    def add_file(self) -> None:
        self.files += 1
        if self.files > self.limits.max_files:
            raise ArchiveError(f"{self.archive}: more than {self.limits.max_files} files (archive bomb?)")

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.max_total_bytes:
            raise ArchiveError(
                f"{self.archive}: expands to more than {self.limits.max_total_bytes} bytes (archive bomb?)"
            )


def _extract_members(archive: Path, members: Iterator[_Member], dest: Path, limits: ExtractLimits) -> None:
    budget = _Budget(archive, limits)
    links: dict[str, str] = {}
    kinds: dict[str, str] = {"": "dir"}
    for member in members:
        if not member.name:
            continue
        budget.add_file()
        if kinds.get(member.name) not in (None, member.kind) or member.name in links:
            raise ArchiveError(f"{archive}: member {member.name!r} appears twice with different types")
        _register_parents(archive, member.name, kinds, links)
        target = dest / member.name
        if member.kind == "dir":
            kinds[member.name] = "dir"
            target.mkdir(parents=True, exist_ok=True)
        elif member.kind == "link":
            links[member.name] = member.link_target
            kinds[member.name] = "link"
        else:
            kinds[member.name] = "file"
            target.parent.mkdir(parents=True, exist_ok=True)
            assert member.open is not None
            with member.open() as src, open(target, "wb") as out:
                while chunk := src.read(CHUNK):
                    budget.add_bytes(len(chunk))
                    out.write(chunk)
    for name, link_target in links.items():
        resolved = _resolve_link(archive, name, link_target, links, limits.max_link_depth)
        source, target = dest / resolved, dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if kinds.get(resolved) == "file":
            budget.add_file()
            budget.add_bytes(source.stat().st_size)
            shutil.copyfile(source, target)
        elif kinds.get(resolved) == "dir":
            raise ArchiveError(
                f"{archive}: link {name!r} points to a directory; links to directories are not supported"
            )
        else:
            raise ArchiveError(f"{archive}: link {name!r} points to {link_target!r}, which is not in the archive")


def _register_parents(archive: Path, name: str, kinds: dict[str, str], links: dict[str, str]) -> None:
    """Parents of a member must be directories: never a file, never a link (no write-through)."""
    parent = posixpath.dirname(name)
    while parent:
        kind = kinds.get(parent)
        if kind in ("file", "link"):
            raise ArchiveError(f"{archive}: member {name!r} is inside {parent!r}, which is not a directory")
        kinds.setdefault(parent, "dir")
        parent = posixpath.dirname(parent)


def _resolve_link(archive: Path, name: str, target: str, links: dict[str, str], depth: int) -> str:
    seen = {name}
    while target in links:
        if target in seen or len(seen) > depth:
            raise ArchiveError(f"{archive}: link {name!r} is part of a loop or a chain that is too long")
        seen.add(target)
        target = links[target]
    return target


# ---- model root --------------------------------------------------------------------------------

IGNORED_ENTRIES = {"__MACOSX", ".DS_Store", "Thumbs.db"}


def find_model_root(directory: Path) -> Path:
    """Descend through single-directory wrappers (the old platform's ``model/model/``)."""
    directory = Path(directory)
    for _ in range(64):
        entries = [p for p in directory.iterdir() if p.name not in IGNORED_ENTRIES and not p.name.startswith("._")]
        if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
            directory = entries[0]
            continue
        if not entries:
            raise ArchiveError(f"{directory}: no files (the archive is empty)")
        return directory
    return directory


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

"""The source stage: what the user gave -> the model root on local disk, and back to their words.

``open_source`` reads straight through: fetch (a path used in place, an http(s) URL or the old
platform's model repository downloaded into the workdir), unpack archives (nested ones too, up to
``MAX_NESTED_ARCHIVES``; an archive that is itself a model file, ``.keras`` or a TorchScript zip, is
left alone), skip single-directory wrappers, and return a ``Source``.

Everything after this stage works on paths inside the converter's workdir, which is gone by the
time the user reads a message. ``Source.describe`` turns such a path back into what the user gave,
plus the member inside the archive (``model.tar.gz (member run/frozen.pb)``), and ``Source.scrub``
rewrites every workdir path in an error message that way: the pipeline applies it to every error
it raises, so no message points into the workdir, whichever converter (or library) wrote it.

The download and archive safety themselves live in ``bundle`` (standard library only) so that the
serving image can fetch without convert/; this module adds the converter's error types and a
progress bar when stderr is a terminal.
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bundle import archive as archives
from bundle import fetch as artifacts
from bundle.archive import DEFAULT_LIMITS, ExtractLimits
from bundle.fetch import DEFAULT_POLICY, DownloadPolicy
from convert.errors import ConversionError, FetchError, UnpackError

MAX_NESTED_ARCHIVES = 2


@dataclass
class Source:
    """The model root, the location recorded in the manifest, and how to name local paths."""

    root: Path
    location: str  # a path, or a URL without credentials or GUID
    workdir: Path
    # local path -> what the user would call it; unpacked directories map to (archive, member prefix)
    _names: dict[Path, str] = field(default_factory=dict)
    _unpacked: dict[Path, Path] = field(default_factory=dict)  # extraction dir -> the archive it holds

    def describe(self, path: Path | str) -> str:
        """``path`` as the user knows it: their own path, the URL, or archive plus member."""
        path = Path(path)
        for directory, archive in sorted(self._unpacked.items(), key=lambda item: -len(str(item[0]))):
            if path == directory or directory in path.parents:
                member = path.relative_to(directory).as_posix()
                outer = self.describe(archive)
                if member == ".":
                    return outer
                if outer.endswith(")"):  # nested: "a.zip (member x.tar.gz > run/model.pb)"
                    return f"{outer[:-1]} > {member})"
                return f"{outer} (member {member})"
        if path in self._names:
            return self._names[path]
        if path == self.workdir or self.workdir in path.parents:
            return self.location
        return str(path)

    def scrub(self, text: str) -> str:
        """``text`` with every path inside the workdir replaced by ``describe``'s name for it."""
        pattern = re.compile(re.escape(str(self.workdir)) + r"[^\s:'\",;()\]]*")
        return pattern.sub(lambda match: self.describe(match.group(0).rstrip(".")) + _dots(match.group(0)), text)


def _dots(text: str) -> str:
    return text[len(text.rstrip(".")) :]


def open_source(
    source: str | Path | None,
    workdir: Path,
    *,
    policy: DownloadPolicy = DEFAULT_POLICY,
    limits: ExtractLimits = DEFAULT_LIMITS,
    env: Mapping[str, str] | None = None,
    is_model_file: Callable[[Path], bool] = lambda path: False,
) -> Source:
    """Fetch and unpack ``source`` into ``workdir``; ``is_model_file`` tells archives that are
    model files (a ``.keras`` zip) from archives to unpack."""
    local, location = fetch(source, workdir, policy=policy, env=env)
    found = Source(root=local, location=location, workdir=Path(workdir))
    if Path(workdir) in local.parents:
        found._names[local] = location  # a download: the URL names it
    try:
        current = _unpack_nested(found, local, limits, is_model_file)
    except ConversionError as exc:  # a nested archive's message names its workdir copy
        exc.args = (found.scrub(str(exc)), *exc.args[1:])
        raise
    found.root = current
    return found


def _unpack_nested(found: Source, local: Path, limits: ExtractLimits, is_model_file: Callable[[Path], bool]) -> Path:
    current = local
    for depth in range(MAX_NESTED_ARCHIVES + 1):
        if current.is_dir():
            current = find_model_root(current)
            single = _single_file(current)
            if single is None:
                break
            current = single
        if archive_kind(current) is None or is_model_file(current):
            break
        if depth == MAX_NESTED_ARCHIVES:
            raise UnpackError(f"{found.describe(current)}: archives nested more than {MAX_NESTED_ARCHIVES} deep")
        destination = found.workdir / f"unpacked-{depth}"
        found._unpacked[destination] = current
        current = unpack(current, destination, limits)
    return current


def _single_file(directory: Path) -> Path | None:
    entries = [p for p in directory.iterdir() if not p.name.startswith(".")]
    return entries[0] if len(entries) == 1 and entries[0].is_file() else None


# ---- fetch ------------------------------------------------------------------------------------------
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


# ---- unpack -----------------------------------------------------------------------------------------
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
        raise UnpackError(f"{archive}: cannot extract: {exc}") from None


def find_model_root(directory: Path) -> Path:
    try:
        return archives.find_model_root(directory)
    except archives.ArchiveError as exc:
        raise UnpackError(str(exc)) from None
    except OSError as exc:
        raise UnpackError(f"{directory}: cannot read: {exc}") from None

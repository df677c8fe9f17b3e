"""Unpack zip and tar archives safely with the standard library only.

Everything extracted is untrusted: no path traversal, no link that escapes, no devices, and caps on
bytes and files counted on what is actually written. Failures raise ``ArchiveError`` naming the
archive and the member.
"""

from __future__ import annotations

import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bundle.errors import ArchiveError

GiB = 1 << 30


CHUNK = 1 << 20


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
    except ArchiveError:
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

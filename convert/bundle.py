"""Write a verified model into the repository, all or nothing.

The version directory is built under a hidden temporary name inside ``REPO/NAME`` (same file
system, so the final ``rename`` is atomic) and only then renamed to ``REPO/NAME/VERSION``; a
failure at any step removes what this call created. ``config.pbtxt`` (Triton's model config, ONNX
only) is written with its own temp-then-rename once the version is in place.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from bundle.datatypes import Datatype
from bundle.manifest import MODEL_FILES, Manifest, TensorSpec, sha256_file
from convert.errors import ConversionError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,17}$")


class BundleError(ConversionError):
    """The repository cannot take the bundle (bad name, existing version, file system error)."""

    exit_code = 7


def check_target(repository: Path, name: str, version: str, force: bool) -> Path:
    """Fail before any work when the bundle could not be written; return the version directory."""
    if not NAME_PATTERN.match(name):
        raise BundleError(f"--name {name!r}: use letters, digits, '_', '.', '-' (starting with a letter or digit)")
    if not VERSION_PATTERN.match(version):
        raise BundleError(f"--version {version!r}: a version is a positive integer (Triton's layout)")
    repository = Path(repository)
    if repository.exists() and not repository.is_dir():
        raise BundleError(f"{repository}: the repository path exists and is not a directory")
    target = repository / name / version
    if target.exists() and not force:
        raise BundleError(f"{target}: version {version} of {name!r} already exists; use --force to replace it")
    return target


def write_bundle(
    repository: Path, manifest: Manifest, model_path: Path, force: bool = False, extra: Path | None = None
) -> Path:
    """Copy ``model_path`` and write the manifest (sha256 filled in) as REPO/NAME/VERSION.

    config.pbtxt is prepared before the version is placed and renamed right after, and only when
    this version is the newest: Triton serves the newest version, so the config must describe it.
    """
    target = check_target(repository, manifest.name, manifest.version, force)
    model_dir = target.parent
    created: list[Path] = [p for p in (Path(repository), model_dir) if not p.exists()]
    staging: Path | None = None
    config_tmp: Path | None = None
    placed = False
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{manifest.version}.partial-", dir=model_dir))
        model_file = staging / MODEL_FILES[manifest.format]
        shutil.copyfile(model_path, model_file)
        _fsync(model_file)
        manifest.model_file = model_file.name
        manifest.sha256 = sha256_file(model_file)
        if extra is not None:  # the offline-optimised model (manifest.optimized names it)
            shutil.copyfile(extra, staging / extra.name)
            _fsync(staging / extra.name)
        manifest.write(staging)
        os.chmod(staging, 0o755)
        if manifest.format == "onnx" and _is_newest(model_dir, manifest.version):
            fd, name = tempfile.mkstemp(prefix=".config.pbtxt.", dir=model_dir)
            config_tmp = Path(name)
            with os.fdopen(fd, "w") as f:
                f.write(triton_config(manifest))
            os.chmod(config_tmp, 0o644)
        _place(staging, target, force)
        placed = True
        if config_tmp is not None:
            os.replace(config_tmp, model_dir / "config.pbtxt")
            config_tmp = None
        return target
    except ConversionError:
        raise
    except OSError as exc:
        raise BundleError(f"{target}: cannot write the bundle: {exc}") from None
    finally:
        if config_tmp is not None:
            config_tmp.unlink(missing_ok=True)
        if not placed:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            for path in reversed(created):
                with contextlib.suppress(OSError):
                    path.rmdir()  # only if still empty: never removes someone else's files


def _is_newest(model_dir: Path, version: str) -> bool:
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and VERSION_PATTERN.match(p.name)]
    return int(version) >= max(versions, default=0)


def _place(staging: Path, target: Path, force: bool) -> None:
    if not target.exists():
        try:
            os.rename(staging, target)
            return
        except OSError:
            if not target.exists():
                raise
    if not force:
        raise BundleError(f"{target}: version already exists (written concurrently?); use --force to replace it")
    trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rename(target, trash / "v")
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(trash / "v", target)  # put the old version back
        raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def triton_config(manifest: Manifest) -> str:
    """Triton's config.pbtxt: dims exclude the batch axis when max_batch_size > 0."""
    lines = [
        f"name: {_quote(manifest.name)}",
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {manifest.max_batch_size}",
    ]
    for section, specs in (("input", manifest.inputs), ("output", manifest.outputs)):
        entries = [_tensor_config(spec, manifest.max_batch_size > 0) for spec in specs]
        lines.append(f"{section} [\n" + ",\n".join(entries) + "\n]")
    lines.append(
        f"version_policy: {{ latest: {{ num_versions: 1 }} }}\n# written by modelport for version {manifest.version}"
    )
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tensor_config(spec: TensorSpec, batched: bool) -> str:
    dims = spec.shape[1:] if batched else spec.shape
    body = [f"    name: {_quote(spec.name)}", f"    data_type: {Datatype(spec.datatype).info.triton}"]
    if dims:
        body.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
    else:  # Triton needs at least one dim: a per-row scalar is [1] reshaped to []
        body.append("    dims: [ 1 ]\n    reshape: { shape: [ ] }")
    return "  {\n" + "\n".join(body) + "\n  }"

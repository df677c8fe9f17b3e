"""The model repository: find REPO/NAME/VERSION directories, load their engines, look models up.

Versions are numeric directory names; by default only the highest version of each model is loaded
(Triton's "latest 1" policy), and ``/versions/{v}`` addresses it; ``load_all_versions`` loads every
version. A model whose file is missing or corrupt either stops the start (the default) or, with
``--allow-partial``, stays listed as not ready and answers 503 with its load error.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from bundle.manifest import MODEL_FILES, Manifest, read_manifest
from runtime import storage
from runtime.engines import Engine, EngineOptions, load_engine
from runtime.errors import ModelLoadError, NotFound, Unavailable

log = logging.getLogger("runtime.repository")


@dataclass
class ModelVersion:
    """One loadable version directory and, once loaded, its engine (or why it failed)."""

    name: str
    version: str
    path: Path
    format: str
    engine: Engine | None = None
    error: str | None = None
    load_seconds: float = 0.0
    batcher: object | None = None  # runtime.batching.Batcher, attached by the app
    manifest_hint: Manifest | None = field(default=None, repr=False)

    @property
    def ready(self) -> bool:
        return self.engine is not None

    @property
    def manifest(self) -> Manifest | None:
        return self.engine.manifest if self.engine is not None else self.manifest_hint

    def require_engine(self) -> Engine:
        if self.engine is None:
            raise Unavailable(f"model {self.name!r} version {self.version} is not ready: {self.error or 'loading'}")
        return self.engine


def _detect_format(version_dir: Path, manifest: Manifest | None) -> str:
    if manifest is not None:
        return manifest.format
    for fmt, filename in MODEL_FILES.items():
        if (version_dir / filename).is_file():
            return fmt
    expected = " or ".join(MODEL_FILES.values())
    raise ModelLoadError(f"{version_dir}: no model file ({expected}) and no manifest")


def _guess_format(version_dir: Path) -> str:
    """The format before loading (for listings while loading): by model file, ONNX when unsure."""
    return next((fmt for fmt, filename in MODEL_FILES.items() if (version_dir / filename).is_file()), "onnx")


def scan(repository: Path, only: tuple[str, ...] = (), model_name: str | None = None) -> dict[str, list[Path]]:
    """Model name -> its numeric version directories, highest first.

    With ``model_name``, ``repository`` holds one model in any stored shape (runtime/storage.py)."""
    if model_name is not None:
        repository, only = storage.repository_view(repository, model_name), (model_name,)
    if not repository.is_dir():
        raise ModelLoadError(f"{repository}: model repository is not a directory")
    found: dict[str, list[Path]] = {}
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [v for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit()]
        if versions:
            found[model_dir.name] = sorted(versions, key=lambda v: int(v.name), reverse=True)
    missing = [m for m in only if m not in found]
    if missing:
        have = ", ".join(found) or "none"
        raise ModelLoadError(f"{repository}: no model {missing[0]!r} (models with a version directory: {have})")
    if only:
        found = {m: found[m] for m in only}
    if not found:
        raise ModelLoadError(f"{repository}: no models (expected NAME/VERSION/model.onnx or model.pmml)")
    return found


class Repository:
    """The registry the handlers read: name -> versions, with the default (highest) version."""

    def __init__(
        self,
        root: Path,
        options: EngineOptions,
        only: tuple[str, ...] = (),
        all_versions: bool = False,
        model_name: str | None = None,
    ):
        self.root = root
        self.model_name = model_name
        self.options = options
        self.only = only
        self.all_versions = all_versions
        self.models: dict[str, dict[str, ModelVersion]] = {}
        self.default_version: dict[str, str] = {}

    def discover(self) -> None:
        """Register every selected version as loading; raise ``ModelLoadError`` if there is nothing to serve."""
        for name, version_dirs in scan(self.root, self.only, self.model_name).items():
            chosen = version_dirs if self.all_versions else version_dirs[:1]
            self.default_version[name] = version_dirs[0].name
            self.models[name] = {
                v.name: ModelVersion(name=name, version=v.name, path=v, format=_guess_format(v)) for v in chosen
            }

    def load(self, allow_partial: bool) -> None:
        """Load every discovered version in turn (blocking; tests and tools call this directly)."""
        for entry in self.entries():
            self.install(entry, *self.build(entry))
            if entry.error is not None and not allow_partial:
                raise ModelLoadError(entry.error)

    def build(self, entry: ModelVersion) -> tuple[Engine | None, str | None]:
        """Load one version's engine (blocking: run it in a worker thread). Returns (engine, error)."""
        started = time.perf_counter()
        engine: Engine | None = None
        error: str | None = None
        try:
            manifest = read_manifest(entry.path)
            entry.format = _detect_format(entry.path, manifest)
            if manifest is not None:
                manifest.name, manifest.version = entry.name, entry.version
            entry.manifest_hint = manifest
            engine = load_engine(entry.format, entry.path, manifest, self.options)
            engine.manifest.name, engine.manifest.version = entry.name, entry.version
        except ModelLoadError as exc:
            error = str(exc)
        except ValueError as exc:  # invalid manifest (read_manifest names the file)
            error = str(exc)
        except Exception as exc:  # an engine bug or an unexpected library error: still name the model
            log.debug("loading %s failed", entry.path, exc_info=True)
            error = f"{entry.path}: {type(exc).__name__}: {exc}"
        entry.load_seconds = time.perf_counter() - started
        if error is None:  # failures are logged by the caller, once: "cannot start" or "not loaded"
            log.info(
                "model %s version %s (%s) ready in %.2fs", entry.name, entry.version, entry.format, entry.load_seconds
            )
        return engine, error

    @staticmethod
    def install(entry: ModelVersion, engine: Engine | None, error: str | None) -> None:
        entry.engine, entry.error = engine, error

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        versions = self.models.get(name)
        if versions is None:
            known = ", ".join(self.models) or "none"
            raise NotFound(f"unknown model {name!r}; served models: {known}")
        key = version or self.default_version[name]
        entry = versions.get(key)
        if entry is None:
            raise NotFound(f"model {name!r} has no version {key!r}; served versions: {', '.join(versions)}")
        return entry

    def entries(self) -> list[ModelVersion]:
        return [entry for versions in self.models.values() for entry in versions.values()]

    def close(self) -> None:
        for entry in self.entries():
            if entry.engine is not None:
                try:
                    entry.engine.close()
                except Exception:  # closing must not stop the other engines from closing
                    log.exception("closing model %s version %s failed", entry.name, entry.version)
                entry.engine = None

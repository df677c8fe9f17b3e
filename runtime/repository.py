"""The model repository: find REPO/NAME/VERSION directories, load their engines, look models up.

Versions are numeric directory names. Which of them are served follows the model's ``config.pbtxt``
``version_policy`` as in Triton (latest N, all, specific; default: the highest version alone), or every
version with ``--all-versions``; ``/versions/{v}`` addresses each served version, and a request without
a version gets the highest one served. A model whose file is missing or corrupt either stops the start
(the default) or, with ``--allow-partial``, stays listed as not ready and answers 503 with its load error.

``Repository`` is the registry the handlers read. It never changes under a request's feet in a way the
request can see: a reload (``runtime/control.py``) builds the new versions beside the old ones and
replaces a model's whole version map in one assignment; the old entries are marked ``retired`` and
keep serving the requests that already hold them until those finish (``inflight`` reaches 0).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bundle.manifest import MODEL_FILES, ImagePreprocessing, Manifest, read_manifest
from runtime import storage
from runtime.engines import Engine, EngineOptions, load_engine
from runtime.errors import ModelLoadError, NotFound, Unavailable
from runtime.model_config import ALL, ConfigError, VersionPolicy, read_version_policy

if TYPE_CHECKING:
    from runtime.batching import Batcher
    from runtime.metrics import ModelMetrics

log = logging.getLogger("runtime.repository")


PLATFORMS = {"onnx": "onnxruntime_onnx", "pmml": "pmml"}  # V2 metadata "platform" per model format


@dataclass(frozen=True)
class LoadedModel:
    """Everything a request needs from one ready model version, resolved once at load.

    Immutable, and held by its ``ModelVersion`` in one attribute: a request takes this object once and
    uses it to the end, so it never mixes an old engine with a new manifest."""

    name: str
    version: str
    format: str
    manifest: Manifest
    engine: Engine
    batcher: Batcher
    metrics: ModelMetrics
    image: ImagePreprocessing | None  # how an encoded image becomes the image input (None: no image input)
    entry: ModelVersion = field(repr=False, compare=False)  # the repository entry holding it (reloads retire it)

    @property
    def platform(self) -> str:
        return PLATFORMS.get(self.format, self.format)


@dataclass
class ModelVersion:
    """One loadable version directory and, once loaded, its ``LoadedModel`` (or why it failed)."""

    name: str
    version: str
    path: Path
    format: str
    loaded: LoadedModel | None = None
    error: str | None = None
    load_seconds: float = 0.0
    manifest_hint: Manifest | None = field(default=None, repr=False)
    retired: bool = False  # replaced by a reload or unloaded: new requests go to the current entry
    closed: bool = False  # retired, drained, batcher stopped and engine closed
    inflight: int = 0  # requests between resolving this entry and getting their answer

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    @property
    def manifest(self) -> Manifest | None:
        return self.loaded.manifest if self.loaded is not None else self.manifest_hint

    def require_loaded(self) -> LoadedModel:
        """The ready model, or ``Unavailable`` naming why not (still loading, or its load error)."""
        loaded = self.loaded
        if loaded is None:
            raise Unavailable(f"model {self.name!r} version {self.version} is not ready: {self.error or 'loading'}")
        return loaded


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


def version_dirs(model_dir: Path) -> list[Path]:
    """The numeric version directories of one model, highest first (none when it is not a directory)."""
    try:
        versions = [v for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit()]
    except OSError:
        return []
    return sorted(versions, key=lambda v: int(v.name), reverse=True)


def find_models(repository: Path) -> dict[str, list[Path]]:
    """Model name -> its numeric version directories, highest first; models without one are left out."""
    if not repository.is_dir():
        raise ModelLoadError(f"{repository}: model repository is not a directory")
    found: dict[str, list[Path]] = {}
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = version_dirs(model_dir)
        if versions:
            found[model_dir.name] = versions
    return found


def scan(repository: Path, only: tuple[str, ...] = ()) -> dict[str, list[Path]]:
    """``find_models`` restricted to ``only``; raises when one of ``only`` or every model is missing."""
    found = find_models(repository)
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
    """The registry the handlers read: name -> served versions, with the default (highest served) version."""

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
        # why a model is not (fully) served: name -> {version or "": reason}; set by failed loads and unloads
        self.reasons: dict[str, dict[str, str]] = {}

    def policy(self, name: str) -> VersionPolicy:
        """The model's version policy (``--all-versions`` overrides config.pbtxt); raises ``ModelLoadError``."""
        if self.all_versions:
            return ALL
        try:
            return read_version_policy(self.root / name)
        except ConfigError as exc:
            raise ModelLoadError(str(exc)) from None

    def plan(self, name: str) -> dict[str, ModelVersion]:
        """Fresh (unloaded) entries for the versions ``name``'s policy selects; raises ``ModelLoadError``."""
        if self.only and name not in self.only:
            raise ModelLoadError(f"model {name!r} is not served by this server (--model {' '.join(self.only)})")
        model_dir = self.root / name
        if name.startswith(".") or "/" in name or not model_dir.is_dir():
            raise ModelLoadError(f"{self.root}: no model {name!r}")
        dirs = version_dirs(model_dir)
        if not dirs:
            raise ModelLoadError(f"{model_dir}: no numeric version directory")
        policy = self.policy(name)
        chosen = policy.select([int(d.name) for d in dirs])
        if not chosen:
            have = ", ".join(d.name for d in dirs)
            raise ModelLoadError(f"{model_dir}: version policy {policy.describe()} selects none of ({have})")
        by_number = {int(d.name): d for d in dirs}
        return {
            str(v): ModelVersion(name=name, version=str(v), path=by_number[v], format=_guess_format(by_number[v]))
            for v in chosen
        }

    def discover(self, names: tuple[str, ...] | None = None, allow_partial: bool = False) -> None:
        """Register the selected versions of every model (or of ``names``) as loading.

        Raises ``ModelLoadError`` when there is nothing to serve, a named model is missing, or (without
        ``allow_partial``) a model's config.pbtxt is invalid."""
        if self.model_name is not None:  # one model in any stored shape (runtime/storage.py), seen as a repository
            self.root = storage.repository_view(self.root, self.model_name)
            self.only = (self.model_name,)
        found = scan(self.root, self.only) if names is None else {n: [] for n in names}
        for name in found:
            try:
                self.models[name] = self.plan(name)
            except ModelLoadError as exc:
                if not allow_partial:
                    raise
                log.error("model %s not loaded (serving the others): %s", name, exc)
                self.reasons[name] = {"": str(exc)}
                continue
            self.default_version[name] = max(self.models[name], key=int)

    def swap(self, name: str, versions: dict[str, ModelVersion]) -> list[ModelVersion]:
        """Serve ``versions`` for ``name`` from now on (one assignment each, on the event loop); return the
        replaced entries, marked retired, for the caller to drain and close."""
        old = list(self.models.get(name, {}).values())
        self.models[name] = versions
        self.default_version[name] = max(versions, key=int)
        self.reasons.pop(name, None)
        for entry in old:
            entry.retired = True
        return old

    def remove(self, name: str, reason: str) -> list[ModelVersion]:
        """Stop serving ``name``; return its entries, marked retired, for the caller to drain and close."""
        old = list(self.models.pop(name, {}).values())
        self.default_version.pop(name, None)
        self.reasons[name] = {"": reason}
        for entry in old:
            entry.retired = True
        return old

    def current(self, entry: ModelVersion, version: str | None) -> ModelVersion:
        """The entry a request should use now: ``entry`` itself unless a reload or unload retired it.

        A retired entry's request moves to the model's current entry (the same version, or the default
        when the request named none); when there is none (unloaded, or that version left) it may still
        finish on the retired entry while that is draining."""
        if not entry.retired:
            return entry
        try:
            return self.get(entry.name, version)
        except NotFound:
            if entry.closed:
                raise Unavailable(f"model {entry.name!r} version {entry.version} was unloaded") from None
            return entry

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
        if error is not None:
            error = storage.stored_paths(error)  # a --model-name view's links -> the stored files
        if error is None:  # failures are logged by the caller, once: "cannot start" or "not loaded"
            log.info(
                "model %s version %s (%s) ready in %.2fs", entry.name, entry.version, entry.format, entry.load_seconds
            )
        return engine, error

    @staticmethod
    def install(entry: ModelVersion, loaded: LoadedModel | None, error: str | None) -> None:
        entry.loaded, entry.error = loaded, error

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        versions = self.models.get(name)
        if versions is None:
            known = ", ".join(self.models) or "none"
            why = self.reasons.get(name, {}).get("")
            if why is not None:
                raise NotFound(f"model {name!r} is not loaded ({why}); served models: {known}")
            raise NotFound(f"unknown model {name!r}; served models: {known}")
        key = version or self.default_version[name]
        entry = versions.get(key)
        if entry is None:
            raise NotFound(f"model {name!r} has no version {key!r}; served versions: {', '.join(versions)}")
        return entry

    def entries(self) -> list[ModelVersion]:
        return [entry for versions in self.models.values() for entry in versions.values()]

    def versions(self, name: str) -> list[str]:
        """The served versions of ``name``, lowest first (``NotFound`` when unknown)."""
        self.get(name)
        return sorted(self.models[name], key=int)

    def close(self) -> None:
        for entry in self.entries():
            if entry.loaded is not None and not entry.closed:
                try:
                    entry.loaded.engine.close()
                except Exception:  # closing must not stop the other engines from closing
                    log.exception("closing model %s version %s failed", entry.name, entry.version)
                entry.closed = True

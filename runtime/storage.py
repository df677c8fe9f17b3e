"""What a storage initializer leaves at a path, served under a name it is given (``--model-name``).

KServe downloads an InferenceService's ``storageUri`` into ``/mnt/models`` exactly as it was stored
and passes the model's name only in the container's arguments. People store models in every shape,
so this module maps a storage root plus that name onto the one layout the Repository understands
(``REPO/NAME/VERSION/model.onnx|model.pmml``). The shapes, checked in this order:

* a Triton repository holding one model: ``ROOT/ANYNAME/VERSION/...`` (``ANYNAME`` is ignored);
* one model directory: ``ROOT/VERSION/...``;
* one version directory: ``ROOT/model.onnx`` or ``ROOT/model.pmml`` (with or without ``modelport.json``);
* a bare model file: ``ROOT`` is itself the file (a PVC ``subPath`` mount; the suffix, else the first
  bytes, tell ONNX from PMML), or a directory whose only model file is ``*.onnx`` or ``*.pmml``.

When more than one shape fits (two models, two model files, a model file beside version
directories), the start fails with one line saying what was found and what was expected: guessing
would serve the wrong model under the right name.

The view is a directory of symbolic links created under the temporary directory (``TMPDIR``, else
``/tmp``): nothing is written beside the model, so a read-only ``/mnt/models`` and a read-only root
filesystem work as long as ``/tmp`` is writable (the ClusterServingRuntime mounts an ``emptyDir`` there).
"""

from __future__ import annotations

import atexit
import logging
import re
import shutil
import tempfile
from pathlib import Path

from bundle.manifest import MANIFEST_FILE, MODEL_FILES
from runtime.errors import ModelLoadError

log = logging.getLogger("runtime.storage")
# Every link a view holds -> what it points at, so messages name the stored files (stored_paths).
_links: dict[str, str] = {}

# suffix -> format: the same formats and file names the bundle writes (bundle/manifest.py).
SUFFIXES = {Path(filename).suffix: fmt for fmt, filename in MODEL_FILES.items()}
SHAPES = {
    "repository": "a repository holding one model",
    "model": "a model directory",
    "version": "a version directory",
    "file": "a bare model file",
}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
EXPECTED = (
    "expected one of: NAME/VERSION/model.onnx|model.pmml (a repository holding one model), VERSION/..., "
    "model.onnx|model.pmml (with or without modelport.json), or a single *.onnx|*.pmml file"
)


def _visible(directory: Path) -> list[Path]:
    """Entries that are not hidden: storage tools leave ``.``-files (markers, ``..data`` links)."""
    return sorted(p for p in directory.iterdir() if not p.name.startswith("."))


def _versions(directory: Path) -> list[Path]:
    return [p for p in _visible(directory) if p.is_dir() and p.name.isdigit()]


def _sniff(path: Path) -> str:
    """The format of a model file whose name does not say: PMML is XML text, anything else ONNX."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n")
    return "pmml" if head.startswith(b"<") else "onnx"


def _listing(root: Path) -> str:
    names = [p.name + ("/" if p.is_dir() else "") for p in _visible(root)]
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    return shown or "nothing"


def locate(root: Path) -> tuple[str, Path]:
    """Which shape ``root`` holds: ``("repository" | "model" | "version" | "file", path)``.

    ``path`` is the one model directory, the version directory, or the model file. Raises
    ``ModelLoadError`` with one line naming what was found when no shape or more than one fits.
    """
    try:
        return _locate(root)
    except OSError as exc:  # e.g. a directory the server's user may not list
        raise ModelLoadError(f"{exc.filename or root}: cannot read it: {exc.strerror}; {EXPECTED}") from None


def _locate(root: Path) -> tuple[str, Path]:
    if root.is_file():
        return "file", root
    if not root.is_dir():
        raise ModelLoadError(f"{root}: no such file or directory; {EXPECTED}")
    entries = _visible(root)
    named = [p for p in entries if p.is_file() and p.name in MODEL_FILES.values()]
    versions = _versions(root)
    models = [p for p in entries if p.is_dir() and not p.name.isdigit() and _versions(p)]
    files = [p for p in entries if p.is_file() and p.suffix.lower() in SUFFIXES]
    shapes = []
    if named:
        shapes.append(("version", root, ", ".join(p.name for p in named)))
    if versions:
        shapes.append(("model", root, "version directories " + ", ".join(p.name + "/" for p in versions)))
    if models:
        shapes.append(("repository", models[0], "model directories " + ", ".join(p.name + "/" for p in models)))
    if not shapes and files:
        shapes.append(("file", files[0], "model files " + ", ".join(p.name for p in files)))
    if not shapes:
        raise ModelLoadError(f"{root}: no model found (found: {_listing(root)}); {EXPECTED}")
    if len(shapes) > 1:
        found = "; ".join(what for _, _, what in shapes)
        raise ModelLoadError(f"{root}: ambiguous, found {found}; expected exactly one of them")
    shape, path, what = shapes[0]
    too_many = (shape == "version" and len(named) > 1) or (shape == "repository" and len(models) > 1)
    if too_many or (shape == "file" and len(files) > 1):
        raise ModelLoadError(f"{root}: ambiguous, found {what}; expected exactly one model")
    return shape, path


def repository_view(root: Path, name: str) -> Path:
    """A directory ``VIEW/NAME/VERSION/...`` of links onto whatever ``root`` holds; removed at exit."""
    if not NAME_PATTERN.fullmatch(name):
        raise ModelLoadError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (a KServe name fits)")
    shape, path = locate(root)
    try:
        view = Path(tempfile.mkdtemp(prefix="modelport-view-"))
    except OSError as exc:  # also tempfile's own "no usable temporary directory" (FileNotFoundError)
        raise ModelLoadError(
            f"cannot create the model view in a temporary directory ({exc.strerror or exc}): "
            "mount a writable directory (an emptyDir) at /tmp or set TMPDIR"
        ) from None
    atexit.register(shutil.rmtree, view, True)
    model_dir = view / name
    if shape in ("repository", "model"):
        _link(model_dir, path)
    elif shape == "version":
        model_dir.mkdir()
        _link(model_dir / "1", path)
    else:
        try:
            fmt = SUFFIXES.get(path.suffix.lower()) or _sniff(path)
        except OSError as exc:
            raise ModelLoadError(f"{path}: cannot read it: {exc.strerror}") from None
        version_dir = model_dir / "1"
        version_dir.mkdir(parents=True)
        _link(version_dir / MODEL_FILES[fmt], path)
        manifest = path.parent / MANIFEST_FILE
        if path != root and manifest.is_file():
            _link(version_dir / MANIFEST_FILE, manifest)
    log.info("serving %s (%s) as model %r through %s", path, SHAPES[shape], name, model_dir)
    return view


def _link(link: Path, target: Path) -> None:
    link.symlink_to(target.resolve(), target_is_directory=target.is_dir())
    _links[str(link)] = str(target)


def stored_paths(message: str) -> str:
    """``message`` with every path inside a view replaced by the stored path it links to: errors name
    the user's files (``/mnt/models/churn.onnx``), never the temporary view."""
    for link in sorted(_links, key=len, reverse=True):  # the longest first: a file link inside a linked dir
        message = message.replace(link, _links[link])
    return message

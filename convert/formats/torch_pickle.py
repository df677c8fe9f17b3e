"""Pickled PyTorch modules (``torch.save(model)``) to ONNX.

Unpickling a whole module runs arbitrary code from the file and imports the module that defines its
class, so it happens only here, in the convert stage's disposable subprocess, never in the runtime.
The file is first opened with ``weights_only=True``, which runs no code: a file that loads that way
holds only tensors (a ``state_dict`` or training checkpoint) and is refused with an explanation, as
no architecture can be recovered from weights alone.

The class's module usually ships beside the ``.pt`` in the archive, so that directory (and its
parents up to the unpacked root) goes on ``sys.path`` first. A class pickled from a training
script's ``__main__`` is looked up in the ``.py`` files found there.
"""

from __future__ import annotations

import importlib
import pickle
import re
import sys
import types
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from convert.errors import ConversionError
from convert.formats import Converted, ConvertOptions
from convert.formats.torch_common import example_inputs, export_module, first_line, model_file

STATE_DICT_HELP = (
    "a state_dict holds only the weights, not the architecture that uses them, so there is nothing to "
    "convert. Hand over the whole model instead: either TorchScript "
    "(torch.jit.save(torch.jit.script(model), 'model.pt') or torch.jit.trace(model, example) then "
    "torch.jit.save), or torch.save(model, 'model.pt') with the .py module that defines the model's class "
    "beside it in the archive"
)


def convert(source: Path, options: ConvertOptions, workdir: Path) -> Converted:
    path = model_file(source, "pickled PyTorch")
    examples = example_inputs(options, path, "pickled PyTorch")
    import_dirs = module_search_dirs(path, options.source_root)
    module, detail = load_module(path, import_dirs)
    exporters = ("torchscript",) if _is_script_module(module) else ("dynamo", "torchscript")
    return export_module(
        module, examples, options, path, workdir, source_format="torch_pickle", exporters=exporters, detail=detail
    )


# ---- classification without running code -------------------------------------------------------
def refuse_weights_only(path: Path) -> None:
    """Open the file with ``weights_only=True`` (no code runs); if that works it holds no module."""
    import torch

    try:
        content = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower():
            return  # it names classes beyond tensors: a pickled module, or something else
        raise ConversionError(f"{path}: not a file written by torch.save: {first_line(exc)}") from exc
    except Exception as exc:
        if is_torchscript_archive(path):
            return
        raise ConversionError(f"{path}: not a file written by torch.save: {first_line(exc)}") from exc
    raise ConversionError(f"{path}: {describe_weights(content)}; {STATE_DICT_HELP}")


def describe_weights(content: Any) -> str:
    import torch

    if isinstance(content, Mapping):
        if content and all(isinstance(v, torch.Tensor) for v in content.values()):
            names = [str(n) for n in content]
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            return f"holds a bare state_dict ({len(names)} tensors: {shown})"
        keys = ", ".join(map(str, list(content)[:6]))
        return f"holds a dict of weights or training state (keys: {keys}) but no model object"
    if isinstance(content, torch.Tensor):
        return f"holds a single tensor of shape {list(content.shape)}, not a model"
    return f"holds a {type(content).__name__}, not a torch.nn.Module"


def is_torchscript_archive(path: Path) -> bool:
    """torch.jit.save writes a zip with TorchScript ``code/``; torch.save's zip has none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


# ---- loading, which runs the file's code --------------------------------------------------------
def module_search_dirs(path: Path, root: Path | None) -> list[Path]:
    """The .pt's directory, then its parents up to ``root`` (the unpacked archive). Without a root,
    the old platform's layout gives one (the directory holding ``model/model/``); failing that, climb
    only out of Python packages, so nothing outside the model's own files becomes importable."""
    directory = path.resolve().parent
    if root is None:
        root = next(
            (
                d.parent.parent
                for d in (directory, *directory.parents)
                if d.name == "model" and d.parent.name == "model"
            ),
            None,
        )
    dirs = [directory]
    if root is not None and directory.is_relative_to(Path(root).resolve()):
        root = Path(root).resolve()
        while directory != root:
            directory = directory.parent
            dirs.append(directory)
        return dirs
    while (directory / "__init__.py").exists() and directory.parent != directory:
        directory = directory.parent
        dirs.append(directory)
    return dirs


def load_module(path: Path, import_dirs: list[Path]) -> tuple[Any, dict[str, Any]]:
    """Unpickle the module with ``import_dirs`` importable; errors name the missing module or class."""
    import torch

    if is_torchscript_archive(path):
        from convert.formats.torchscript import load_torchscript

        return load_torchscript(path), {"loaded_as": "torchscript"}
    refuse_weights_only(path)
    for directory in reversed(import_dirs):
        if str(directory) not in sys.path:
            sys.path.insert(0, str(directory))
    resolved: dict[str, str] = {}
    try:
        loaded = torch.load(
            str(path),
            map_location="cpu",
            weights_only=False,
            pickle_module=_main_resolving_pickle(import_dirs, resolved),
        )
    except ModuleNotFoundError as exc:
        raise ConversionError(
            f"{path}: the pickled model needs the Python module {exc.name!r}, which is not importable; "
            f"put {str(exc.name).replace('.', '/')}.py (or its package) beside the .pt in the archive "
            f"(searched: {', '.join(map(str, import_dirs))}), or export the model as TorchScript"
        ) from exc
    except AttributeError as exc:
        match = re.search(r"Can't get attribute '([^']+)' on <module '([^']+)'", str(exc))
        if match and match.group(2) == "__main__":
            message = (
                f"the model's class {match.group(1)!r} was defined in the training script itself (__main__) and "
                f"no .py file beside the .pt defines it; move the class into a module file, ship it beside the "
                f".pt, and torch.save the model again, or export it as TorchScript"
            )
        elif match:
            message = (
                f"module {match.group(2)!r} has no class {match.group(1)!r}: "
                f"ship the module version the model was saved with"
            )
        else:
            message = first_line(exc)
        raise ConversionError(f"{path}: cannot unpickle the model: {message}") from exc
    except (pickle.UnpicklingError, EOFError) as exc:
        raise ConversionError(f"{path}: not a file written by torch.save, or truncated: {first_line(exc)}") from exc
    except Exception as exc:
        raise ConversionError(f"{path}: cannot unpickle the model: {first_line(exc)}") from exc
    module, how = unwrap_module(loaded, path)
    detail: dict[str, Any] = {"loaded_as": how, "class": f"{type(module).__module__}.{type(module).__qualname__}"}
    if resolved:
        detail["main_classes_from"] = resolved
    return module, detail


def unwrap_module(loaded: Any, path: Path) -> tuple[Any, str]:
    """The nn.Module inside what torch.save stored: itself, a DataParallel's ``.module``, or the
    single module value of a checkpoint dict."""
    import torch

    if isinstance(loaded, torch.nn.Module):
        inner = getattr(loaded, "module", None)
        if isinstance(loaded, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)) and inner is not None:
            return inner, "module (unwrapped from DataParallel)"
        return loaded, "module"
    if isinstance(loaded, Mapping):
        modules = [(k, v) for k, v in loaded.items() if isinstance(v, torch.nn.Module)]
        if len(modules) == 1:
            return modules[0][1], f"module (dict key {modules[0][0]!r})"
        if len(modules) > 1:
            raise ConversionError(
                f"{path}: the saved dict holds several modules ({', '.join(str(k) for k, _ in modules)}); "
                f"save the one to serve on its own with torch.save(model)"
            )
    raise ConversionError(f"{path}: {describe_weights(loaded)}; {STATE_DICT_HELP}")


def _main_resolving_pickle(import_dirs: list[Path], resolved: dict[str, str]) -> types.ModuleType:
    """A ``pickle`` look-alike whose Unpickler finds ``__main__.Cls`` in a .py file beside the .pt:
    models saved from a training script reference their class that way."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module_name: str, name: str) -> Any:
            try:
                return super().find_class(module_name, name)
            except AttributeError:
                if module_name != "__main__":
                    raise
                found = _class_from_files(name, import_dirs)
                if found is None:
                    raise
                resolved[name] = found.__module__
                return found

    shim = types.ModuleType("modelport_pickle")
    shim.__dict__.update({k: v for k, v in vars(pickle).items() if not k.startswith("__")})
    shim.Unpickler = Unpickler
    shim.load = lambda file, **kwargs: Unpickler(file, **kwargs).load()
    return shim


def _class_from_files(name: str, import_dirs: list[Path]) -> Any:
    pattern = re.compile(rf"^class\s+{re.escape(name)}\b", re.MULTILINE)
    for directory in import_dirs:
        for candidate in sorted(directory.glob("*.py")):
            try:
                if not pattern.search(candidate.read_text(errors="replace")):
                    continue
            except OSError:
                continue
            module = importlib.import_module(candidate.stem)
            found = getattr(module, name, None)
            if isinstance(found, type):
                return found
    return None


def _is_script_module(module: Any) -> bool:
    import torch

    return isinstance(module, torch.jit.ScriptModule)

"""Recognise a model's format from its structure, never by running it.

Everything here reads bytes: magic numbers, zip entry names, protobuf wire structure, pickle
opcodes (``pickletools.genops`` walks them without executing anything), the first XML element.
Only h5py is imported (lazily, for HDF5 attributes); TensorFlow and torch never are. Whatever the
input, the only exception that leaves ``detect`` is ``DetectionError``.
"""

from __future__ import annotations

import bz2
import dataclasses
import functools
import glob
import io
import lzma
import pickletools
import re
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from convert.errors import DetectionError
from convert.formats import Detection, formats, get_format

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SCAN_BYTES = 64 << 20  # pickle opcodes and protobuf fields read at most this far
MAX_DIR_FILES = 2000

__all__ = ["Detection", "classify", "detect", "locate", "sniff_file", "supported"]


def supported() -> str:
    """Every registered format, for messages: "Keras .h5 (keras_h5), ..."."""
    return ", ".join(f"{fmt.description} ({fmt.name})" for fmt in formats())


def detect(root: Path) -> Detection:
    """Detect the format of a file or of a model root directory: the driver over the registered
    formats (``convert.formats.formats()``), each asked in turn."""
    root = Path(root)
    try:
        if root.is_dir():
            return _detect_dir(root)
        found = sniff_file(root)
        if isinstance(found, Detection):
            return found
        raise DetectionError(f"{root}: {found}; supported: {supported()}")
    except DetectionError:
        raise
    except Exception as exc:  # an unreadable file or a parser surprise is still "not recognised"
        raise DetectionError(f"{root}: cannot read it to detect the format ({type(exc).__name__}: {exc})") from None


def locate(root: Path, fmt: str) -> Detection:
    """With ``--format`` given: the path the converter for ``fmt`` should receive."""
    try:
        source_format = get_format(fmt)
    except KeyError as exc:
        raise DetectionError(str(exc.args[0])) from None
    return Detection(fmt, source_format.locate(Path(root)), {"forced": True})


def locate_in_family(root: Path, family: str) -> Path:
    """A file format's ``locate``: inside a directory, the one file of the same family, if exactly
    one (a ``.keras`` forced as ``keras_h5``); else the root as given."""
    if root.is_dir():
        with_family = []
        for path in _files(root):
            try:
                found = _sniff_quietly(path)
            except DetectionError:
                continue
            if found is not None and get_format(found.format).family == family:
                with_family.append(found.path)
        if len(with_family) == 1:
            return with_family[0]
    return root


def sniff_file(path: Path) -> Detection | str:
    """A Detection from the first registered format that claims ``path``, or a short description
    of what the file is instead (for error messages)."""
    found = _sniff_quietly(path)
    if found is not None:
        return found
    described = classify(path)
    return described if isinstance(described, str) else "not a recognised model file"


def _sniff_quietly(path: Path) -> Detection | None:
    for fmt in formats():
        try:
            found = fmt.sniff(path)
        except DetectionError:
            raise
        except Exception:  # a plug-in's sniffer tripping over a foreign file is a "no"
            continue
        if found is not None:
            return found
    return None


# ---- directories -------------------------------------------------------------------------------


def _files(root: Path) -> list[Path]:
    files = []
    for path in sorted(root.rglob("*")):
        if len(files) >= MAX_DIR_FILES:
            break
        if (
            path.is_file()
            and not path.is_symlink()
            and not any(p.startswith(".") for p in path.relative_to(root).parts)
        ):
            files.append(path)
    return files


def _detect_dir(root: Path) -> Detection:
    """A directory format claiming the root itself (a SavedModel, a checkpoint), else the one
    model file found inside it."""
    found = _sniff_quietly(root)
    if found is not None:
        return found
    files = _files(root)
    recognised: list[Detection] = []
    seen: list[str] = []
    for path in files:
        found = sniff_file(path)
        if isinstance(found, Detection):
            if not any(d.format == found.format and d.path == found.path for d in recognised):
                recognised.append(found)
        else:
            seen.append(f"{path.relative_to(root)} ({found})")
    if len(recognised) == 1:
        return recognised[0]
    if len(recognised) > 1:
        listing = ", ".join(f"{_relative(d.path, root)} ({d.format})" for d in recognised)
        raise DetectionError(f"{root}: more than one model found: {listing}; keep one, or point SOURCE at one file")
    listing = "; ".join(seen[:10]) + (f"; and {len(seen) - 10} more" if len(seen) > 10 else "")
    raise DetectionError(
        f"{root}: no model found among {len(files)} files ({listing or 'none'}); supported: {supported()}"
    )


def _relative(path: Path, root: Path) -> str:
    return "." if path == root else str(path.relative_to(root))


# ---- the built-in formats' sniffers (registered in convert.formats.builtin) -------------------


def saved_model_dir(path: Path) -> Detection | None:
    """A SavedModel directory, or its ``saved_model.pb`` beside ``variables/``."""
    directory = path if path.is_dir() else path.parent
    if not path.is_dir() and path.name not in ("saved_model.pb", "saved_model.pbtxt"):
        return None
    names = {p.name for p in directory.iterdir()}
    if "saved_model.pb" not in names and "saved_model.pbtxt" not in names:
        return None
    if (directory / "variables").is_dir():
        return Detection("savedmodel", directory)
    if path.is_dir():
        raise DetectionError(
            f"{directory}: has saved_model.pb but no variables/ directory; a SavedModel directory needs both"
        )
    return None


def checkpoint_dir(path: Path) -> Detection | None:
    """A directory of TF1 checkpoint files (``.index`` and ``.data-*``), or one ``.index`` file."""
    if path.is_dir():
        names = {p.name for p in path.iterdir()}
        indexes = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(".index"))
        if indexes and any(re.search(r"\.data-\d+-of-\d+$", n) for n in names):
            return Detection("checkpoint", path, {"index_files": [p.name for p in indexes]})
        return None
    if path.name.endswith(".index") and any(path.parent.glob(f"{glob.escape(path.name[:-6])}.data-*")):
        return Detection("checkpoint", path.parent, {"requested": path.name[:-6]})
    return None


def claimed_by(name: str) -> Callable[[Path], Detection | None]:
    """The sniffer of a built-in file format: the byte-level classification says ``name``."""

    def sniff(path: Path) -> Detection | None:
        if path.is_dir():
            return None
        found = classify(path)
        if isinstance(found, Detection) and found.format == name:
            return dataclasses.replace(found, detail=dict(found.detail))
        return None

    return sniff


def classify(path: Path) -> Detection | str:
    """What the bytes of a file say, once per file version (every built-in format asks)."""
    path = Path(path)
    stat = path.stat()
    return _classify(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _classify(name: str, mtime_ns: int, size: int) -> Detection | str:
    return _classify_bytes(Path(name))


# ---- single files ------------------------------------------------------------------------------


def _classify_bytes(path: Path) -> Detection | str:
    """A Detection, or a short description of what the file is instead (for error messages)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if not head:
        return "empty file"
    if _is_hdf5(path, head):
        return _detect_hdf5(path)
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return _detect_zip(path)
    if head[:1] == b"\x80" and 2 <= head[1:2][0] <= 5:
        return _detect_pickle(path, _read_head(path))
    decompressed = _decompress_head(path, head)
    if decompressed is not None and decompressed[:1] == b"\x80":
        found = _detect_pickle(path, decompressed)
        if isinstance(found, Detection):
            found.detail["compressed"] = True
        return found
    if decompressed is not None:
        return "a compressed file that is not a pickle (a .tar.gz archive is unpacked only as SOURCE itself)"
    if head[4:8] == b"TFL3":
        return "a TensorFlow Lite flatbuffer (.tflite), which is not supported: convert the SavedModel or Keras model"
    if len(head) > 10 and head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < (100 << 20):
        return "a safetensors file (weights only): export the model itself (TorchScript or torch.save(model))"
    if _looks_like_pmml(head):
        return Detection("pmml", path)
    if head.lstrip()[:1] == b"<":
        return "an XML/HTML document whose root element is not PMML"
    return _detect_protobuf(path)


def _read_head(path: Path, limit: int = SCAN_BYTES) -> bytes:
    with open(path, "rb") as f:
        return f.read(limit)


def _is_hdf5(path: Path, head: bytes) -> bool:
    if head.startswith(HDF5_SIGNATURE):
        return True
    with open(path, "rb") as f:  # HDF5 allows a user block of 512, 1024, 2048... bytes before the signature
        for offset in (512, 1024, 2048):
            f.seek(offset)
            if f.read(8) == HDF5_SIGNATURE:
                return True
    return False


def _detect_hdf5(path: Path) -> Detection | str:
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            attrs = h5.attrs
            if "model_config" not in attrs:
                if "layer_names" in attrs or "model_weights" in h5:
                    return "an HDF5 file with weights but no model_config (model.save_weights): save the whole model"
                return "an HDF5 file without a Keras model_config"
            version = attrs.get("keras_version")
            backend = attrs.get("backend")
    except Exception as exc:
        return f"an HDF5 file that h5py cannot open ({type(exc).__name__})"
    detail = {"keras_version": _text(version), "backend": _text(backend)}
    return Detection("keras_h5", path, detail)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _detect_zip(path: Path) -> Detection | str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except Exception as exc:
        return f"a corrupt zip file ({type(exc).__name__})"
    top = set(names)
    if "config.json" in top and "metadata.json" in top:
        return Detection("keras", path)
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return Detection("torchscript", path)
    if "data.pkl" in tails:
        return Detection("torch_pickle", path)
    return "a zip archive holding no model (an archive is unpacked only as SOURCE itself)"


def _decompress_head(path: Path, head: bytes, limit: int = 8 << 20) -> bytes | None:
    """joblib's compressed pickles: zlib, gzip, bz2, xz, lzma. The first ``limit`` bytes, or None."""
    if head[:2] == b"\x1f\x8b":
        decompressor: Any = zlib.decompressobj(wbits=31)
    elif head[:1] == b"\x78" and head[1:2] in (b"\x01", b"\x5e", b"\x9c", b"\xda"):
        decompressor = zlib.decompressobj()
    elif head[:3] == b"BZh":
        decompressor = bz2.BZ2Decompressor()
    elif head[:6] == b"\xfd7zXZ\x00" or head[:3] == b"]\x00\x00":
        decompressor = lzma.LZMADecompressor()
    else:
        return None
    try:
        with open(path, "rb") as f:
            compressed = f.read(4 << 20)
        return decompressor.decompress(compressed, max_length=limit) or None
    except Exception:
        return None


STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}


def _pickle_modules(data: bytes) -> set[str]:
    """Module names a pickle's opcodes import (GLOBAL, or the strings before STACK_GLOBAL).

    Walks opcodes only, until STOP or the first byte that is not an opcode (joblib writes raw
    array bytes in the stream); the modules that matter come first.
    """
    modules: set[str] = set()
    recent: list[str | None] = []  # values pushed, strings only (None for anything else)
    memo: dict[int, str | None] = {}
    last: str | None = None
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = opcode.name
            if name in ("GLOBAL", "INST") and isinstance(arg, str):
                modules.add(arg.split(" ", 1)[0])
                last = None
            elif name in STRING_OPS and isinstance(arg, str):
                last = arg
                if arg.split(".", 1)[0] in ("sklearn", "torch"):
                    modules.add(arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = last
                continue
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = last
                continue
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                last = memo.get(int(arg))
            elif name == "STACK_GLOBAL":
                if len(recent) >= 2 and isinstance(recent[-2], str):
                    modules.add(recent[-2])
                last = None
            else:
                last = None
            recent.append(last)
            del recent[:-4]
    except Exception:
        pass
    return modules


TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.save(..., _use_new_zipfile_serialization=False)


def _is_torch_legacy(data: bytes) -> bool:
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data[:64])):
            if opcode.name in ("LONG1", "LONG4", "LONG", "INT"):
                return arg == TORCH_LEGACY_MAGIC
            if opcode.name != "PROTO":
                return False
    except Exception:
        return False
    return False


def _detect_pickle(path: Path, data: bytes) -> Detection | str:
    if _is_torch_legacy(data):
        return Detection("torch_pickle", path, {"legacy_serialization": True})
    modules = _pickle_modules(data)
    roots = {m.split(".", 1)[0] for m in modules}
    if "sklearn" in roots:
        return Detection("sklearn", path, {"modules": sorted(m for m in modules if m.startswith("sklearn"))[:20]})
    if "torch" in roots:
        return Detection("torch_pickle", path)
    if roots:
        return f"a Python pickle of {', '.join(sorted(roots)[:8])} objects (not scikit-learn or torch)"
    return "a Python pickle that references no known model library"


PMML_ROOT = re.compile(rb"^<(?:[A-Za-z_][\w.-]*:)?PMML[\s>/]")


def _looks_like_pmml(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    # skip the XML declaration, processing instructions, comments and a DOCTYPE before the root
    for _ in range(32):
        if text.startswith(b"<?"):
            end = text.find(b"?>")
        elif text.startswith(b"<!--"):
            end = text.find(b"-->")
        elif text.startswith(b"<!"):
            end = text.find(b">")
        else:
            break
        if end < 0:
            return False
        text = text[end + 2 :].lstrip(b"> \t\r\n")
    return bool(PMML_ROOT.match(text))


# ---- protobuf: ONNX ModelProto vs TensorFlow GraphDef, by wire structure ----------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes, limit: int | None = None) -> list[tuple[int, int, bytes | int]]:
    """Top-level (field number, wire type, value) of a protobuf message; ValueError if malformed."""
    out = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, wire, value))
        elif wire == 1:
            pos += 8
            out.append((number, wire, 0))
        elif wire == 5:
            pos += 4
            out.append((number, wire, 0))
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            out.append((number, wire, data[pos : pos + length]))
            pos += length
        else:
            raise ValueError(f"wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        if limit is not None and len(out) >= limit:
            break
    return out


PROTOBUF_FIRST_BYTES = {0x08, 0x0A, 0x12, 0x22}  # ModelProto.ir_version; GraphDef node, library, versions


def _detect_protobuf(path: Path) -> Detection | str:
    with open(path, "rb") as f:
        first = f.read(1)
    if not first or first[0] not in PROTOBUF_FIRST_BYTES:  # serialisers write fields in number order
        return "not a recognised model file (not HDF5, zip, pickle, protobuf or PMML)"
    size = path.stat().st_size
    if size > SCAN_BYTES * 32:  # a 2 GiB protobuf is not a model file we can parse
        return f"a {size}-byte file of unknown format"
    data = path.read_bytes()
    try:
        fields = _fields(data)
    except ValueError:
        return "not a recognised model file (not HDF5, zip, pickle, protobuf or PMML)"
    numbers = {(n, w) for n, w, _ in fields}
    if (7, 2) in numbers and ((1, 0) in numbers or (8, 2) in numbers) and _is_onnx_graph(fields):
        return Detection("onnx", path)
    if (1, 2) in numbers and {n for n, _ in numbers} <= {1, 2, 3, 4} and _is_graphdef(fields):
        return Detection("graphdef", path)
    if (1, 0) in numbers and (2, 2) in numbers and {n for n, _ in numbers} <= {1, 2}:
        if path.name == "saved_model.pb":
            return "saved_model.pb without its variables/ directory (pass the SavedModel directory)"
        return "a SavedModel protobuf (pass the SavedModel directory holding it and variables/)"
    return "a protobuf-like file that is neither an ONNX model nor a TensorFlow GraphDef"


def _is_onnx_graph(fields: list[tuple[int, int, bytes | int]]) -> bool:
    graph = next(v for n, w, v in fields if n == 7 and w == 2)
    assert isinstance(graph, bytes)
    try:
        graph_fields = _fields(graph)
    except ValueError:
        return False
    # GraphProto: node=1, name=2, initializer=5, doc=10, input=11, output=12, value_info=13, ...
    return any(n in (1, 11, 12) for n, _, _ in graph_fields)


def _is_graphdef(fields: list[tuple[int, int, bytes | int]]) -> bool:
    nodes = [v for n, w, v in fields if n == 1 and w == 2]
    for node in nodes[:3]:
        assert isinstance(node, bytes)
        try:
            node_fields = _fields(node)
        except ValueError:
            return False
        # NodeDef: name=1 (string), op=2 (string)
        ops = [v for n, w, v in node_fields if n == 2 and w == 2]
        names = [v for n, w, v in node_fields if n == 1 and w == 2]
        if not ops or not names or not all(isinstance(o, bytes) and _is_identifier(o) for o in ops):
            return False
    return bool(nodes)


def _is_identifier(value: bytes) -> bool:
    return bool(re.fullmatch(rb"[A-Za-z_][A-Za-z0-9_>]*", value))

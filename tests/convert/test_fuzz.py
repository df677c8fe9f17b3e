"""Property: whatever bytes arrive, the detector and the unpacker fail only with their own error.

Inputs are random bytes and mutations (byte flips, truncation, insertions) of valid zips, tar.gz
files, ONNX models, pickles and GraphDefs, so the parsers get deep before they meet the damage.
"""

from __future__ import annotations

import io
import pickle
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle.archive import ExtractLimits
from convert.detect import Detection, detect
from convert.errors import DetectionError, UnpackError
from convert.source import unpack
from tests.convert.conftest import make_onnx
from tests.convert.test_detect import graphdef_bytes

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
LIMITS = ExtractLimits(max_total_bytes=4 << 20, max_files=200)


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model/model/saved_model.pb", b"\x08\x01" * 50)
        zf.writestr("model/model/variables/variables.index", bytes(range(256)))
        zf.writestr("model/model/notes.txt", "hello " * 100)
    return buffer.getvalue()


def _tar_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in (("model/model/a.onnx", bytes(range(256)) * 4), ("model/model/b.txt", b"b" * 300)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("model/model/c.onnx")
        link.type, link.linkname = tarfile.SYMTYPE, "a.onnx"
        tf.addfile(link)
    return buffer.getvalue()


def _onnx_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return make_onnx(Path(tmp) / "m.onnx").read_bytes()


def _pickle_bytes() -> bytes:
    import collections

    return pickle.dumps({"model": collections.OrderedDict(a=1), "weights": list(range(50))}, protocol=4)


SEEDS = {
    "zip": _zip_bytes(),
    "tar": _tar_bytes(),
    "onnx": _onnx_bytes(),
    "pickle": _pickle_bytes(),
    "graphdef": graphdef_bytes(),
    "pmml": b'<?xml version="1.0"?>\n<PMML version="4.4"><Header/><DataDictionary/></PMML>',
}


@st.composite
def mutated(draw: st.DrawFn, seed_names: tuple[str, ...]) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(seed_names))])
    for _ in range(draw(st.integers(0, 6))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "copy"]))
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            length = draw(st.integers(1, 64))
            data[at:at] = data[at : at + length]
    return bytes(data)


ANY_BYTES = st.one_of(st.binary(max_size=2048), mutated(tuple(SEEDS)))
ARCHIVE_BYTES = st.one_of(st.binary(max_size=1024), mutated(("zip", "tar")))


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


@FUZZ
@given(data=ANY_BYTES, name=st.sampled_from(["model.h5", "model.pb", "model.onnx", "m.pkl", "x.zip", "m.pmml"]))
def test_detector_raises_only_detection_error(scratch: Path, data: bytes, name: str) -> None:
    path = scratch / name
    path.write_bytes(data)
    try:
        found = detect(path)
    except DetectionError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(found, Detection)


@FUZZ
@given(data=ARCHIVE_BYTES)
def test_unpacker_raises_only_unpack_error(scratch: Path, data: bytes) -> None:
    archive = scratch / "archive.bin"
    archive.write_bytes(data)
    out = Path(tempfile.mkdtemp(dir=scratch))
    try:
        root = unpack(archive, out, LIMITS)
    except UnpackError as exc:
        assert str(archive) in str(exc)
    else:
        assert root == out or out in root.parents
        for path in out.rglob("*"):
            assert not path.is_symlink()
            assert out in path.resolve().parents
    finally:
        shutil.rmtree(out)


@FUZZ
@given(data=mutated(("zip", "tar")))
def test_detect_after_unpack_raises_only_own_errors(scratch: Path, data: bytes) -> None:
    """The pipeline's order: unpack, then detect in the extracted tree."""
    archive = scratch / "archive.bin"
    archive.write_bytes(data)
    out = Path(tempfile.mkdtemp(dir=scratch))
    try:
        detect(unpack(archive, out, LIMITS))
    except (UnpackError, DetectionError):
        pass
    finally:
        shutil.rmtree(out)


SEGMENTS = st.sampled_from(["a", "b", "model", "..", ".", "", "/", "\\", "C:", "x.onnx"])
PATHS = st.lists(SEGMENTS, min_size=1, max_size=5).map("/".join)
MEMBERS = st.lists(
    st.tuples(PATHS, st.sampled_from(["file", "dir", "symlink", "hardlink"]), PATHS), min_size=1, max_size=8
)


@FUZZ
@given(members=MEMBERS)
def test_hostile_tar_layouts_never_escape(scratch: Path, members: list[tuple[str, str, str]]) -> None:
    """Archives built from hostile names and links: rejected, or extracted wholly inside ``out``."""
    archive = scratch / "hostile.tar"
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
    with tarfile.open(archive, "w") as tf:
        for name, kind, target in members:
            info = tarfile.TarInfo(name or ".")
            info.type = kinds[kind]
            info.linkname = target if kind in ("symlink", "hardlink") else ""
            payload = b"data" if kind == "file" else b""
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    sandbox = Path(tempfile.mkdtemp(dir=scratch))
    out = sandbox / "out"
    try:
        unpack(archive, out, LIMITS)
    except UnpackError:
        pass
    else:
        for path in out.rglob("*"):
            assert not path.is_symlink()
            assert out in path.resolve().parents
    finally:
        assert sorted(p.name for p in sandbox.iterdir()) in ([], ["out"])  # nothing written beside it
        assert {p.name for p in scratch.iterdir()} <= {"hostile.tar", sandbox.name, "archive.bin", "model.h5"}
        shutil.rmtree(sandbox)

"""The whole pipeline on ONNX models and on converters that misbehave on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bundle.manifest import TensorSpec, read_manifest, sha256_file
from convert.bundle import BundleError, triton_config
from convert.errors import ConversionError, FetchError, UnpackError, VerificationError
from convert.formats import ConvertOptions, ImageOptions
from convert.pipeline import convert_model
from convert.verify import random_inputs
from tests.convert.conftest import FAST, listing, make_image_onnx
from tests.convert.fake_converters import FAKES
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env


def onnxruntime_predict(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_onnx_from_model_repository_zip(tmp_path: Path, onnx_file: Path) -> None:
    zip_path = pack_old_platform_zip(onnx_file, tmp_path / "export.zip")
    repository = tmp_path / "models"
    with ModelRepositoryServer() as repo:
        repo.add("17", zip_path)
        with repository_env(repo, model_id="17", model_version="2", guid="secret-guid"):
            manifest = convert_model(None, repository, "tiny", "3", policy=FAST)
    version_dir = repository / "tiny" / "3"
    assert listing(repository) == [
        "tiny",
        "tiny/3",
        "tiny/3/model.onnx",
        "tiny/3/model.optimized.onnx",  # onnxruntime's offline-optimised graph (convert/optimize.py)
        "tiny/3/modelport.json",
        "tiny/config.pbtxt",
    ]
    written = read_manifest(version_dir)
    assert written == manifest
    assert written.sha256 == sha256_file(version_dir / "model.onnx")
    assert [(t.name, t.datatype, t.shape) for t in written.inputs] == [("x", "FP32", [-1, 4])]
    assert [(t.name, t.shape) for t in written.outputs] == [("y", [-1, 3])]
    assert written.max_batch_size == 64
    assert written.source.format == "onnx"
    assert "modelId=17" in written.source.location and "secret-guid" not in written.source.location
    assert written.parity.verified is False  # no source framework: said so, not pretended
    assert any("loaded and ran on 4 samples" in note for note in written.parity.notes)
    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_array_equal(onnxruntime_predict(version_dir / "model.onnx", x), onnxruntime_predict(onnx_file, x))


def test_triton_config(tmp_path: Path, onnx_file: Path) -> None:
    manifest = convert_model(onnx_file, tmp_path, "tiny", subprocess=False)
    config = (tmp_path / "tiny" / "config.pbtxt").read_text()
    assert config == triton_config(manifest)
    assert 'platform: "onnxruntime_onnx"' in config
    assert "max_batch_size: 64" in config
    assert 'name: "x"\n    data_type: TYPE_FP32\n    dims: [ 4 ]' in config  # batch axis left out
    assert 'name: "y"\n    data_type: TYPE_FP32\n    dims: [ 3 ]' in config


def test_exact_reference_gives_zero_error(tmp_path: Path, onnx_file: Path) -> None:
    options = ConvertOptions(format="fake_exact")
    manifest = convert_model(onnx_file, tmp_path, "m", options=options, converters=FAKES)  # in the child
    parity = manifest.parity
    assert parity.verified is True
    assert (parity.samples, parity.atol, parity.rtol) == (4, 1e-4, 1e-3)
    assert parity.max_abs_error == 0.0
    assert parity.per_output == {"y": {"max_abs_error": 0.0, "max_rel_error": 0.0}}


def test_verification_failure_names_output_and_tolerances(tmp_path: Path, onnx_file: Path) -> None:
    repository = tmp_path / "models"
    with pytest.raises(VerificationError) as info:
        convert_model(onnx_file, repository, "m", options=ConvertOptions(format="fake_off"), converters=FAKES)
    message = str(info.value)
    assert "output 'y'" in message
    assert "max abs error 0.01" in message
    assert "atol 0.0001 + rtol 0.001" in message
    assert listing(repository) == []


def test_verification_failure_passes_with_wider_tolerance(tmp_path: Path, onnx_file: Path) -> None:
    options = ConvertOptions(format="fake_off", atol=0.02)
    manifest = convert_model(onnx_file, tmp_path, "m", options=options, converters=FAKES)
    assert manifest.parity.max_abs_error == pytest.approx(0.01, rel=1e-3)


def test_no_verify_is_recorded(tmp_path: Path, onnx_file: Path) -> None:
    options = ConvertOptions(format="fake_off", verify=False)
    manifest = convert_model(onnx_file, tmp_path, "m", options=options, converters=FAKES)
    assert manifest.parity.verified is False
    assert "verification skipped (--no-verify)" in manifest.parity.notes


@pytest.mark.parametrize(
    ("fmt", "error", "message"),
    [
        ("fake_refuses", ConversionError, "refused on purpose"),
        ("fake_buggy", ConversionError, "the fake_buggy converter failed: KeyError: 'missing'"),
        (
            "fake_crashes",
            ConversionError,
            r"converter crashed \(exit code 17\); last output: fatal: the native library gave up",
        ),
    ],
)
def test_converter_failures_leave_nothing(tmp_path: Path, onnx_file: Path, fmt: str, error: type, message: str) -> None:
    repository = tmp_path / "models"
    repository.mkdir()
    (repository / "other").mkdir()  # someone else's model stays untouched
    with pytest.raises(error, match=message) as info:
        convert_model(onnx_file, repository, "m", options=ConvertOptions(format=fmt), converters=FAKES)
    assert str(onnx_file) in str(info.value)
    assert listing(repository) == ["other"]


def test_hanging_converter_is_stopped(tmp_path: Path, onnx_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("MODELPORT_CONVERT_TIMEOUT", "3")
    started = time.monotonic()
    with pytest.raises(ConversionError, match="did not finish within 3 s"):
        convert_model(
            onnx_file, tmp_path / "models", "m", options=ConvertOptions(format="fake_hangs"), converters=FAKES
        )
    assert time.monotonic() - started < 30
    assert listing(tmp_path / "models") == []


def test_child_output_stays_out_of_the_terminal(tmp_path: Path, onnx_file: Path, capfd: pytest.CaptureFixture) -> None:
    with pytest.raises(ConversionError, match="refused on purpose"):
        convert_model(onnx_file, tmp_path, "m", options=ConvertOptions(format="fake_refuses"), converters=FAKES)
    captured = capfd.readouterr()
    assert "nobody asked for" not in captured.out + captured.err


def test_existing_version_needs_force(tmp_path: Path, onnx_file: Path) -> None:
    convert_model(onnx_file, tmp_path, "m", subprocess=False)
    before = (tmp_path / "m" / "1" / "modelport.json").read_text()
    with pytest.raises(BundleError, match="version 1 of 'm' already exists; use --force"):
        convert_model(onnx_file, tmp_path, "m", subprocess=False)
    assert (tmp_path / "m" / "1" / "modelport.json").read_text() == before
    other = make_image_onnx(tmp_path / "other.onnx", ["N", 3, 8, 8])
    manifest = convert_model(other, tmp_path, "m", force=True, subprocess=False)
    assert read_manifest(tmp_path / "m" / "1") == manifest
    assert [t.name for t in manifest.inputs] == ["image"]
    assert listing(tmp_path / "m") == [
        "1",
        "1/model.onnx",
        "1/model.optimized.onnx",
        "1/modelport.json",
        "config.pbtxt",
    ]


@pytest.mark.parametrize(
    ("name", "version", "message"),
    [("../evil", "1", "--name"), (".hidden", "1", "--name"), ("ok", "0", "--version"), ("ok", "v1", "--version")],
)
def test_bad_names_rejected_before_work(tmp_path: Path, name: str, version: str, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        convert_model(tmp_path / "does-not-matter.onnx", tmp_path / "models", name, version)
    assert not (tmp_path / "models").exists()


def test_fetch_and_unpack_failures_leave_nothing(tmp_path: Path) -> None:
    repository = tmp_path / "models"
    evil = tmp_path / "evil.zip"
    import zipfile

    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("model/model/../../../escape.onnx", b"x")
    with pytest.raises(UnpackError, match="points outside the archive"):
        convert_model(evil, repository, "m")
    with ModelRepositoryServer() as repo, repository_env(repo, model_id="missing"):
        with pytest.raises(FetchError, match="HTTP 404"):
            convert_model(None, repository, "m", policy=FAST)
        repo.fail_next(500, times=10)
        with pytest.raises(FetchError, match="HTTP 500"):
            convert_model(None, repository, "m", policy=FAST)
    assert listing(repository) == []
    assert not (tmp_path / "escape.onnx").exists()


def test_labels_pick_the_output_and_are_checked(tmp_path: Path, onnx_file: Path) -> None:
    manifest = convert_model(onnx_file, tmp_path, "m", options=ConvertOptions(labels=["a", "b", "c"]), subprocess=False)
    assert (manifest.labels, manifest.label_output) == (["a", "b", "c"], "y")
    with pytest.raises(ConversionError, match="2 labels, but no single output has a last axis of that size"):
        convert_model(onnx_file, tmp_path, "n", options=ConvertOptions(labels=["a", "b"]), subprocess=False)
    assert not (tmp_path / "n").exists()


@pytest.mark.parametrize(
    ("shape", "layout", "mode", "size"),
    [
        (["N", 3, 32, 24], "NCHW", "RGB", (32, 24)),
        (["N", 32, 24, 3], "NHWC", "RGB", (32, 24)),
        (["N", 28, 28, 1], "NHWC", "L", (28, 28)),
        (["N", 3, "h", "w"], "NCHW", "RGB", (224, 224)),
    ],
)
def test_image_inputs_are_guessed(tmp_path: Path, shape: list, layout: str, mode: str, size: tuple) -> None:
    model = make_image_onnx(tmp_path / "img.onnx", shape)
    manifest = convert_model(model, tmp_path / "models", "img", subprocess=False)
    image = manifest.image
    assert (image.input, image.layout, image.color_mode, (image.height, image.width)) == ("image", layout, mode, size)
    assert image.scale == pytest.approx(1 / 255)


def test_image_options_override_the_guess(tmp_path: Path) -> None:
    model = make_image_onnx(tmp_path / "img.onnx", ["N", 16, 16, 3])
    image_options = ImageOptions(color_mode="BGR", scale=1.0, mean=[103.9, 116.8, 123.7], std=[57.4, 57.1, 58.4])
    manifest = convert_model(model, tmp_path, "a", options=ConvertOptions(image=image_options), subprocess=False)
    assert (manifest.image.color_mode, manifest.image.scale, manifest.image.mean) == ("BGR", 1.0, [103.9, 116.8, 123.7])
    manifest = convert_model(model, tmp_path, "b", options=ConvertOptions(image=ImageOptions(disable=True)))
    assert manifest.image is None
    with pytest.raises(ConversionError, match="--mean has 2 values"):
        convert_model(model, tmp_path, "c", options=ConvertOptions(image=ImageOptions(mean=[1, 2])), subprocess=False)
    assert not (tmp_path / "c").exists()


def test_non_image_rank4_is_not_an_image(tmp_path: Path) -> None:
    model = make_image_onnx(tmp_path / "seq.onnx", ["N", 10, 20, 5])
    assert convert_model(model, tmp_path, "seq", subprocess=False).image is None


def test_random_inputs_cover_datatypes() -> None:
    specs = [
        TensorSpec("f", "FP32", [-1, 3]),
        TensorSpec("i", "INT64", [-1, -1]),
        TensorSpec("b", "BOOL", [-1]),
        TensorSpec("s", "BYTES", [-1, 2]),
        TensorSpec("fixed", "FP16", [2, 5]),
    ]
    first, again = random_inputs(specs, 4, 0), random_inputs(specs, 4, 0)
    assert {k: (v.dtype.name, v.shape) for k, v in first.items()} == {
        "f": ("float32", (4, 3)),
        "i": ("int64", (4, 8)),
        "b": ("bool", (4,)),
        "s": ("object", (4, 2)),
        "fixed": ("float16", (2, 5)),
    }
    assert all(np.array_equal(first[k], again[k]) for k in first)  # seeded
    assert first["i"].min() >= 0 and first["i"].max() < 10


def test_manifest_is_valid_json_without_infinities(tmp_path: Path, onnx_file: Path) -> None:
    convert_model(onnx_file, tmp_path, "m", options=ConvertOptions(format="fake_exact"), converters=FAKES)
    text = (tmp_path / "m" / "1" / "modelport.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_config_describes_the_newest_version(tmp_path: Path, onnx_file: Path) -> None:
    image_model = make_image_onnx(tmp_path / "img.onnx", ["N", 3, 8, 8])
    convert_model(image_model, tmp_path / "models", "m", "2", subprocess=False)
    convert_model(onnx_file, tmp_path / "models", "m", "1", subprocess=False)  # an older version, written later
    config = (tmp_path / "models" / "m" / "config.pbtxt").read_text()
    assert 'name: "image"' in config and 'name: "x"' not in config
    assert listing(tmp_path / "models" / "m") == [
        "1",
        "1/model.onnx",
        "1/model.optimized.onnx",
        "1/modelport.json",
        "2",
        "2/model.onnx",
        "2/model.optimized.onnx",
        "2/modelport.json",
        "config.pbtxt",
    ]


def test_write_failure_midway_leaves_nothing(tmp_path: Path, onnx_file: Path) -> None:
    """The model file vanishes between conversion and bundling: no version, no config, no new dirs."""
    from bundle.manifest import Manifest
    from convert.bundle import write_bundle

    manifest = Manifest(name="m", format="onnx", inputs=[TensorSpec("x", "FP32", [-1, 4])], outputs=[])
    with pytest.raises(BundleError, match="cannot write the bundle"):
        write_bundle(tmp_path / "models", manifest, tmp_path / "vanished.onnx")
    assert not (tmp_path / "models").exists()
    (tmp_path / "models" / "m").mkdir(parents=True)
    with pytest.raises(BundleError, match="cannot write the bundle"):
        write_bundle(tmp_path / "models", manifest, tmp_path / "vanished.onnx")
    assert listing(tmp_path / "models") == ["m"]  # existed before: kept, and nothing inside


def test_model_zips_are_not_unpacked_but_archives_are(tmp_path: Path, onnx_file: Path) -> None:
    import tarfile
    import zipfile

    from convert.pipeline import is_model_file
    from convert.source import open_source

    def prepare(path: Path, workdir: Path) -> Path:
        workdir.mkdir()
        return open_source(path, workdir, is_model_file=is_model_file).root

    keras_zip = tmp_path / "model.keras"
    with zipfile.ZipFile(keras_zip, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("metadata.json", "{}")
    assert prepare(keras_zip, tmp_path / "w1") == keras_zip
    # an archive inside the old platform's zip: model/model/export.tar.gz holding the model
    inner = tmp_path / "export.tar.gz"
    with tarfile.open(inner, "w:gz") as tf:
        tf.add(onnx_file, "export/tiny.onnx")
    outer = pack_old_platform_zip(inner, tmp_path / "outer.zip")
    root = prepare(outer, tmp_path / "w2")
    assert root.name == "tiny.onnx" and root.read_bytes() == onnx_file.read_bytes()
    manifest = convert_model(outer, tmp_path / "models", "nested", subprocess=False)
    assert manifest.sha256 == sha256_file(tmp_path / "models" / "nested" / "1" / "model.onnx")


# ---- errors name what the user gave ----------------------------------------------------------------


def test_errors_name_the_archive_member_not_the_workdir(tmp_path: Path, onnx_file: Path) -> None:
    """A converter's message about an unpacked file names the archive the user gave and the member
    (nested archives too), in the child process and in-process alike."""
    import tarfile

    archive = tmp_path / "run.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(onnx_file, "exports/model.onnx")
        tar.add(onnx_file, "exports/notes.txt")
    for in_child in (True, False):
        with pytest.raises(ConversionError) as info:
            convert_model(
                archive,
                tmp_path / "models",
                "m",
                options=ConvertOptions(format="fake_refuses"),
                converters=FAKES,
                subprocess=in_child,
            )
        assert type(info.value) is ConversionError
        assert str(info.value) == f"{archive} (member exports): refused on purpose"

    outer = pack_old_platform_zip(archive, tmp_path / "outer.zip")
    with pytest.raises(ConversionError) as info:
        convert_model(outer, tmp_path / "models", "m", options=ConvertOptions(format="fake_refuses"), converters=FAKES)
    assert str(info.value) == f"{outer} (member model/model/run.tar.gz > exports): refused on purpose"


def test_errors_name_the_url_not_the_download(tmp_path: Path, onnx_file: Path) -> None:
    zip_path = pack_old_platform_zip(onnx_file, tmp_path / "model.zip")
    with ModelRepositoryServer() as repo:
        repo.add("42", zip_path)
        with repository_env(repo, model_id="42", guid="secret-guid"), pytest.raises(UnpackError) as info:
            convert_model(
                None, tmp_path / "models", "m", options=ConvertOptions(format="fake_unpack_error"), converters=FAKES
            )
    message = str(info.value)
    assert message.startswith(f"{repo.url}/") and "(member model/model/tiny.onnx): bad member" in message
    assert "secret-guid" not in message and "modelport-convert-" not in message


def test_a_format_option_for_another_format_is_refused(tmp_path: Path, onnx_file: Path) -> None:
    """--signature (SavedModels) or --inputs (TF1 graphs) given for an ONNX file is a usage error,
    not silently ignored; the format's own options pass."""
    from convert.errors import UsageError
    from convert.formats import GraphOptions, SignatureOptions

    options = ConvertOptions(format_options=[SignatureOptions(signature="serve"), GraphOptions(inputs=["x"])])
    with pytest.raises(UsageError, match=r"tiny.onnx: --signature, --inputs do not apply to onnx models") as info:
        convert_model(onnx_file, tmp_path / "models", "m", options=options, subprocess=False)
    assert info.value.exit_code == 64
    assert not (tmp_path / "models" / "m").exists()
    manifest = convert_model(
        onnx_file, tmp_path / "models", "m", options=ConvertOptions(format_options=[GraphOptions()])
    )
    assert manifest.source.format == "onnx"


def test_bundle_files_are_readable_by_other_users(tmp_path: Path) -> None:
    """A server running as another user (a container's uid, a shared volume) must read every file."""
    from bundle.manifest import write_text_atomic

    written = write_text_atomic(tmp_path / "modelport.json", "{}")
    assert written.stat().st_mode & 0o777 == 0o644

"""``python -m convert`` as a user runs it: exit codes, one-line messages, nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from bundle.manifest import read_manifest
from tests.convert.conftest import listing
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("XQUERY_ADDR", "MODEL_ID", "MODEL_VERSION", "GUID")}
    return subprocess.run(
        [sys.executable, "-m", "convert", *map(str, args)],
        cwd=ROOT,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0]
    assert result.stdout == ""


def test_success_prints_one_summary_line(tmp_path: Path, onnx_file: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    result = run_cli(onnx_file, "--repository", tmp_path / "models", "--name", "tiny", "--labels", labels)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("tiny v1: onnx -> onnx (3 labels on y), not verified")
    manifest = read_manifest(tmp_path / "models" / "tiny" / "1")
    assert manifest.labels == ["cat", "dog", "bird"]


def test_from_repository_flag(tmp_path: Path, onnx_file: Path) -> None:
    zip_path = pack_old_platform_zip(onnx_file, tmp_path / "m.zip")
    with ModelRepositoryServer() as repo:
        repo.add("5", zip_path)
        with repository_env(repo, model_id="5") as env:
            result = run_cli("--from-repository", "--repository", tmp_path / "models", "--name", "m", env=env)
    assert result.returncode == 0, result.stderr
    assert repo.requests == 1
    assert (tmp_path / "models" / "m" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        ((), 64, "no SOURCE given and XQUERY_ADDR is not set"),
        (("x.onnx", "--from-repository"), 64, "give SOURCE or --from-repository, not both"),
        (("x.onnx", "--input-shape", "x"), 64, "--input-shape 'x': expected NAME=d0,d1,..."),
        (("x.onnx", "--format", "tflite"), 3, "x.onnx: no such file"),
        (("x.onnx", "--version", "latest"), 7, "--version 'latest': a version is a positive integer"),
    ],
)
def test_usage_errors(tmp_path: Path, args: tuple, code: int, fragment: str) -> None:
    result = run_cli(*args, "--repository", tmp_path / "models", "--name", "m")
    assert_one_line_error(result, code, fragment)
    assert listing(tmp_path / "models") == []


def test_unknown_format_flag(tmp_path: Path, onnx_file: Path) -> None:
    result = run_cli(onnx_file, "--format", "tflite", "--repository", tmp_path / "models", "--name", "m")
    assert_one_line_error(result, 5, "unknown format 'tflite'; supported: checkpoint, graphdef")


def test_verification_failure_exit_code(tmp_path: Path, onnx_file: Path) -> None:
    """A plug-in converter whose source disagrees by 0.01 (see fake_converters)."""
    plugin = {"MODELPORT_CONVERTERS": "fake_off=tests.convert.fake_converters:off_by_a_bit"}
    args = (onnx_file, "--format", "fake_off", "--repository", tmp_path / "models", "--name", "m")
    result = run_cli(*args, env=plugin)
    assert_one_line_error(result, 6, "output 'y': max abs error 0.01", "atol 0.0001 + rtol 0.001")
    assert listing(tmp_path / "models") == []
    result = run_cli(*args, "--atol", "0.05", env=plugin)
    assert result.returncode == 0, result.stderr
    assert "parity max abs 0.01" in result.stdout


def test_bad_plugin_variable(tmp_path: Path, onnx_file: Path) -> None:
    result = run_cli(onnx_file, "--repository", tmp_path, "--name", "m", env={"MODELPORT_CONVERTERS": "oops"})
    assert_one_line_error(result, 2, "MODELPORT_CONVERTERS: 'oops' is not FORMAT=package.module:function")


def test_missing_source(tmp_path: Path) -> None:
    result = run_cli(tmp_path / "nope.h5", "--repository", tmp_path / "models", "--name", "m")
    assert_one_line_error(result, 3, f"{tmp_path / 'nope.h5'}: no such file or directory")


def test_unknown_format(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"\x00\x01garbage" * 10)
    result = run_cli(source, "--repository", tmp_path / "models", "--name", "m")
    assert_one_line_error(result, 5, str(source), "supported: Keras .h5")
    assert listing(tmp_path / "models") == []


def test_traversal_archive(tmp_path: Path) -> None:
    source = tmp_path / "evil.zip"
    with zipfile.ZipFile(source, "w") as zf:
        zf.writestr("../../evil.onnx", b"x")
    result = run_cli(source, "--repository", tmp_path / "models", "--name", "m")
    assert_one_line_error(result, 4, str(source), "points outside the archive")
    assert listing(tmp_path / "models") == []


def test_repository_404_and_500(tmp_path: Path) -> None:
    with ModelRepositoryServer() as repo:
        with repository_env(repo, model_id="404") as env:
            result = run_cli("--repository", tmp_path / "models", "--name", "m", "--retries", "0", env=env)
        assert_one_line_error(result, 3, "HTTP 404", "modelId=404")
        repo.fail_next(500, times=3)
        with repository_env(repo, model_id="x") as env:
            result = run_cli("--repository", tmp_path / "models", "--name", "m", "--retries", "2", env=env)
        assert_one_line_error(result, 3, "HTTP 500", "gave up after 3 attempts")
        assert repo.requests == 4
    assert listing(tmp_path / "models") == []


def test_existing_version(tmp_path: Path, onnx_file: Path) -> None:
    args = (onnx_file, "--repository", tmp_path / "models", "--name", "m")
    assert run_cli(*args).returncode == 0
    assert_one_line_error(run_cli(*args), 7, "already exists; use --force")
    assert run_cli(*args, "--force").returncode == 0


def test_bad_labels_file(tmp_path: Path, onnx_file: Path) -> None:
    empty = tmp_path / "labels.txt"
    empty.write_text("\n\n")
    result = run_cli(onnx_file, "--repository", tmp_path / "models", "--name", "m", "--labels", empty)
    assert_one_line_error(result, 64, "the file has no labels")


def test_make_convert(tmp_path: Path, onnx_file: Path) -> None:
    result = subprocess.run(
        ["make", "-s", "convert", f"MODEL={onnx_file}", "NAME=viamake", f"REPOSITORY={tmp_path / 'models'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "viamake v1: onnx -> onnx" in result.stdout
    assert (tmp_path / "models" / "viamake" / "1" / "model.onnx").is_file()

"""Downloads from a local stand-in of the model repository, and hostile archives."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from bundle.archive import ExtractLimits, find_model_root
from bundle.fetch import DownloadPolicy, model_repository_url
from convert.errors import FetchError, UnpackError
from convert.source import fetch, unpack
from tests.convert.conftest import FAST, listing
from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env

# ---- model repository URL -------------------------------------------------------------------


def test_repository_url_default_layout() -> None:
    env = {"XQUERY_ADDR": "xquery.local:8080/models", "MODEL_ID": "42", "MODEL_VERSION": "3", "GUID": "g-1"}
    assert model_repository_url(env) == "http://xquery.local:8080/models?modelId=42&modelVersion=3&guid=g-1"


def test_repository_url_path_and_names_overridable() -> None:
    env = {
        "XQUERY_ADDR": "https://x.example/api?token=t",
        "MODEL_ID": "42",
        "GUID": "g",
        "MODELPORT_XQUERY_PATH": "/download",
        "MODELPORT_XQUERY_PARAM_MODEL_ID": "id",
        "MODELPORT_XQUERY_PARAM_GUID": "requestGuid",
    }
    assert model_repository_url(env) == "https://x.example/api/download?token=t&id=42&requestGuid=g"


def test_repository_url_needs_model_id() -> None:
    with pytest.raises(FetchError, match="MODEL_ID is not set"):
        fetch(None, Path("/nonexistent"), env={"XQUERY_ADDR": "http://127.0.0.1:1"})


# ---- downloads ----------------------------------------------------------------------------------


@pytest.fixture
def served_zip(tmp_path: Path, onnx_file: Path):
    zip_path = pack_old_platform_zip(onnx_file, tmp_path / "model.zip")
    with ModelRepositoryServer() as repo:
        repo.add("42", zip_path)
        yield repo, zip_path


def test_download_sends_parameters_and_keeps_bytes(tmp_path: Path, served_zip) -> None:
    repo, zip_path = served_zip
    with repository_env(repo, model_id="42", model_version="7", guid="abc"):
        local, location = fetch(None, tmp_path / "work", policy=FAST)
    assert local.read_bytes() == zip_path.read_bytes()
    assert local.name == "model.zip"  # from Content-Disposition
    assert repo.seen == [{"modelId": "42", "modelVersion": "7", "guid": "abc"}]
    assert "guid=REDACTED" in location and "abc" not in location
    assert listing(tmp_path / "work") == ["download", "download/model.zip"]  # no .part file left


def test_500_then_200_succeeds_after_retries(tmp_path: Path, served_zip) -> None:
    repo, zip_path = served_zip
    repo.fail_next(500, times=2)
    with repository_env(repo, model_id="42"):
        local, _ = fetch(None, tmp_path, policy=FAST)
    assert local.read_bytes() == zip_path.read_bytes()
    assert repo.requests == 3


def test_persistent_503_gives_up_after_retries(tmp_path: Path, served_zip) -> None:
    repo, _ = served_zip
    repo.fail_next(503, times=10)
    with repository_env(repo, model_id="42"), pytest.raises(FetchError, match=r"HTTP 503.*gave up after 3 attempts"):
        fetch(None, tmp_path / "work", policy=FAST)
    assert repo.requests == 3
    assert listing(tmp_path / "work" / "download") == []


def test_backoff_doubles_up_to_the_cap(tmp_path: Path, served_zip) -> None:
    from bundle.fetch import download

    repo, _ = served_zip
    repo.fail_next(502, times=5)
    delays: list[float] = []
    policy = DownloadPolicy(retries=5, backoff=0.5, max_backoff=3.0)
    url = f"{repo.url}/?modelId=42"
    assert download(url, tmp_path, policy=policy, sleep=delays.append).read_bytes()[:2] == b"PK"
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_progress_bar_draws_on_stderr(capsys: pytest.CaptureFixture) -> None:
    from convert.source import ProgressBar

    bar = ProgressBar("http://127.0.0.1/x/model.zip?modelId=1", width=10)
    bar(1 << 20, 2 << 20)
    bar(2 << 20, 2 << 20)
    bar.close()
    err = capsys.readouterr().err
    assert "model.zip [##########] 2.0/2.0 MiB" in err
    assert err.endswith("\n")


def test_404_fails_at_once(tmp_path: Path, served_zip) -> None:
    repo, _ = served_zip
    with repository_env(repo, model_id="nope"), pytest.raises(FetchError, match="HTTP 404") as info:
        fetch(None, tmp_path, policy=FAST)
    assert repo.requests == 1
    assert "modelId=nope" in str(info.value)  # the message names the URL


def test_timeout_is_retried_then_reported(tmp_path: Path, served_zip) -> None:
    repo, _ = served_zip
    repo.hang_next(1.5, times=5)
    policy = DownloadPolicy(timeout=0.3, retries=1, backoff=0.01)
    started = time.monotonic()
    with repository_env(repo, model_id="42"), pytest.raises(FetchError, match=r"timed out.*2 attempts"):
        fetch(None, tmp_path, policy=policy)
    assert time.monotonic() - started < 5
    assert repo.requests == 2


def test_timeout_then_success(tmp_path: Path, served_zip) -> None:
    repo, zip_path = served_zip
    repo.hang_next(1.5)
    policy = DownloadPolicy(timeout=0.3, retries=2, backoff=0.01)
    with repository_env(repo, model_id="42"):
        local, _ = fetch(None, tmp_path, policy=policy)
    assert local.read_bytes() == zip_path.read_bytes()


def test_truncated_body_is_an_error_not_a_short_file(tmp_path: Path, served_zip) -> None:
    repo, _ = served_zip
    repo.truncate_next(times=10)
    with repository_env(repo, model_id="42"), pytest.raises(FetchError, match=r"truncated download: received \d+ of"):
        fetch(None, tmp_path / "work", policy=FAST)
    assert listing(tmp_path / "work" / "download") == []


def test_truncated_once_then_complete(tmp_path: Path, served_zip) -> None:
    repo, zip_path = served_zip
    repo.truncate_next()
    with repository_env(repo, model_id="42"):
        local, _ = fetch(None, tmp_path, policy=FAST)
    assert local.read_bytes() == zip_path.read_bytes()
    assert repo.requests == 2


def test_size_limit(tmp_path: Path, served_zip) -> None:
    repo, zip_path = served_zip
    policy = DownloadPolicy(max_bytes=zip_path.stat().st_size - 1, retries=3, backoff=0.01)
    with repository_env(repo, model_id="42"), pytest.raises(FetchError, match="over the size limit"):
        fetch(None, tmp_path / "work", policy=policy)
    assert repo.requests == 1  # a size limit is not retried
    assert listing(tmp_path / "work" / "download") == []


def test_connection_refused(tmp_path: Path) -> None:
    from tests.support.server import free_port

    url = f"http://127.0.0.1:{free_port()}/model.zip"
    with pytest.raises(FetchError, match=r"request failed.*gave up after 3 attempts"):
        fetch(url, tmp_path, policy=FAST)


def test_missing_local_path(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no such file or directory"):
        fetch(str(tmp_path / "missing.h5"), tmp_path)


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="unsupported URL scheme"):
        fetch("ftp://127.0.0.1/x.zip", tmp_path)


# ---- archives -----------------------------------------------------------------------------------


def make_zip(path: Path, entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16) | 0x20
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as tf:
        for member in members:
            payload = data.get(member.name)
            if payload is not None:
                member.size = len(payload)
                tf.addfile(member, io.BytesIO(payload))
            else:
                tf.addfile(member)
    return path


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def test_old_platform_zip_finds_model_root(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "a.zip", {"model/model/saved_model.pb": b"x", "model/model/variables/v.index": b"y"})
    root = unpack(archive, tmp_path / "out")
    assert root == tmp_path / "out" / "model" / "model"
    assert (root / "variables" / "v.index").read_bytes() == b"y"


def test_find_model_root_ignores_macos_junk(tmp_path: Path) -> None:
    (tmp_path / "model" / "model").mkdir(parents=True)
    (tmp_path / "model" / "model" / "m.onnx").write_bytes(b"x")
    (tmp_path / "__MACOSX").mkdir()
    assert find_model_root(tmp_path) == tmp_path / "model" / "model"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"../evil.txt": b"x"}, r"points outside the archive \('\.\.'\)"),
        ({"model/../../evil.txt": b"x"}, r"points outside the archive"),
        ({"/etc/evil.txt": b"x"}, "absolute path"),
        ({"C:/evil.txt": b"x"}, "absolute path"),
        ({"a\\..\\..\\evil.txt": b"x"}, "points outside"),
    ],
)
def test_zip_traversal_rejected(tmp_path: Path, entries: dict[str, bytes], message: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", entries)
    with pytest.raises(UnpackError, match=message) as info:
        unpack(archive, tmp_path / "out")
    assert str(archive) in str(info.value)
    assert not (tmp_path / "evil.txt").exists()


def test_zip_symlink_escape_rejected(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bad.zip", {"model/a.txt": b"x"}, symlinks={"model/link": "../../../etc/passwd"})
    with pytest.raises(UnpackError, match=r"link 'model/link'.*outside the archive"):
        unpack(archive, tmp_path / "out")


def test_zip_symlink_absolute_rejected(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bad.zip", {}, symlinks={"link": "/etc/passwd"})
    with pytest.raises(UnpackError, match="absolute path '/etc/passwd'"):
        unpack(archive, tmp_path / "out")


def test_internal_symlink_becomes_a_copy(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "ok.zip", {"m/real.bin": b"weights"}, symlinks={"m/alias.bin": "real.bin"})
    root = unpack(archive, tmp_path / "out")
    alias = root / "alias.bin"
    assert not alias.is_symlink()
    assert alias.read_bytes() == b"weights"


def test_write_through_a_link_rejected(tmp_path: Path) -> None:
    members = [tar_member("d", tarfile.SYMTYPE, "."), tar_member("d/x.txt")]
    archive = make_tar(tmp_path / "bad.tar.gz", members, {"d/x.txt": b"x"})
    with pytest.raises(UnpackError, match="inside 'd', which is not a directory"):
        unpack(archive, tmp_path / "out")


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (tar_member("../evil"), "outside the archive"),
        (tar_member("/abs/evil"), "absolute path"),
        (tar_member("link", tarfile.SYMTYPE, "../../etc/passwd"), "outside the archive"),
        (tar_member("link", tarfile.SYMTYPE, "/etc/passwd"), "absolute path"),
        (tar_member("hard", tarfile.LNKTYPE, "../outside"), "outside the archive"),
        (tar_member("dev", tarfile.CHRTYPE), "device, FIFO or other special file"),
        (tar_member("fifo", tarfile.FIFOTYPE), "device, FIFO or other special file"),
    ],
)
def test_tar_hostile_members_rejected(tmp_path: Path, member: tarfile.TarInfo, message: str) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [member], {member.name: b"x"} if member.isreg() else None)
    with pytest.raises(UnpackError, match=message):
        unpack(archive, tmp_path / "out")


def test_zip_bomb_capped_by_bytes_written(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model/model/zeros.bin", b"\0" * (8 << 20))
    assert archive.stat().st_size < 64 << 10  # 8 MiB of zeros compress ~1000:1
    with pytest.raises(UnpackError, match="expands to more than 1048576 bytes"):
        unpack(archive, tmp_path / "out", ExtractLimits(max_total_bytes=1 << 20))


def test_zip_lying_header_still_capped(tmp_path: Path) -> None:
    """The cap counts bytes written, so a header that understates the size does not help."""
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("big.bin", b"a" * 4096)
    data = bytearray(archive.read_bytes())
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (16).to_bytes(4, "little")  # uncompressed size in the central dir
    archive.write_bytes(bytes(data))
    with pytest.raises(UnpackError):
        unpack(archive, tmp_path / "out", ExtractLimits(max_total_bytes=1024))


def test_too_many_files(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "many.zip", {f"f{i}.txt": b"" for i in range(50)})
    with pytest.raises(UnpackError, match="more than 20 files"):
        unpack(archive, tmp_path / "out", ExtractLimits(max_files=20))


def test_truncated_zip(tmp_path: Path, onnx_file: Path) -> None:
    good = pack_old_platform_zip(onnx_file, tmp_path / "good.zip")
    bad = tmp_path / "bad.zip"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UnpackError, match=f"{bad}: corrupt zip archive"):
        unpack(bad, tmp_path / "out")


def test_corrupt_zip_payload_fails_crc(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "crc.zip", {"model.bin": b"0123456789" * 100})
    data = bytearray(archive.read_bytes())
    data[40] ^= 0xFF  # inside the compressed payload
    archive.write_bytes(bytes(data))
    with pytest.raises(UnpackError, match="corrupt zip archive"):
        unpack(archive, tmp_path / "out")


def test_truncated_tar_gz(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "t.tar.gz", [tar_member("model/m.onnx")], {"model/m.onnx": bytes(range(256)) * 64})
    truncated = tmp_path / "short.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(UnpackError, match="corrupt tar archive"):
        unpack(truncated, tmp_path / "out")


def test_empty_archive(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "empty.zip", {})
    with pytest.raises(UnpackError, match="no files"):
        unpack(archive, tmp_path / "out")


# ---- bundle.fetch.fetch_model: what the serving image uses at start -----------------------


def test_fetch_model_extracts_into_a_new_directory(tmp_path: Path, served_zip) -> None:
    from bundle.fetch import fetch_model

    repo, _ = served_zip
    with repository_env(repo, model_id="42"):
        root = fetch_model("", tmp_path / "bundle", policy=FAST)
    assert root == tmp_path / "bundle" / "model" / "model"
    assert [p.name for p in root.iterdir()] == ["tiny.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "model.zip", "tiny.onnx"]  # no partial dir left


def test_fetch_model_failure_leaves_nothing(tmp_path: Path, served_zip) -> None:
    from bundle.fetch import ArtifactError, fetch_model

    repo, _ = served_zip
    repo.truncate_next(times=10)
    with repository_env(repo, model_id="42"), pytest.raises(ArtifactError, match="truncated"):
        fetch_model("", tmp_path / "out" / "bundle", policy=FAST)
    assert listing(tmp_path / "out") == []


def test_disk_errors_are_reported_as_such(tmp_path: Path, served_zip) -> None:
    from bundle.archive import extract
    from bundle.errors import ArchiveError, DownloadError
    from bundle.fetch import download

    repo, zip_path = served_zip
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    with pytest.raises(DownloadError, match="cannot save the download in"):
        download(f"{repo.url}/?modelId=42", blocker / "sub", policy=FAST)
    with pytest.raises(ArchiveError, match="cannot extract into"):
        extract(zip_path, blocker / "sub")

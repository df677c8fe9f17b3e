"""The tokens file, the bearer header and the scope check, without a server."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from runtime.auth import (
    MAX_TOKEN_LENGTH,
    Forbidden,
    Scope,
    TokenFileError,
    Unauthorized,
    authorize,
    bearer_token,
    read_tokens,
)

INFER = "infer-token-aaaaaaaaaaaaaaaa"
ADMIN = "admin-token-bbbbbbbbbbbbbbbb"


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens"
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def test_reads_tokens_scopes_and_comments(tmp_path):
    table = read_tokens(_file(tmp_path, f"# team tokens\n\n{INFER} infer\n{ADMIN}   ADMIN  # ops\n"))
    assert table.enabled and table.has_admin
    assert table.scope_of(INFER) is Scope.INFER and table.scope_of(ADMIN) is Scope.ADMIN
    assert table.scope_of(INFER[:-1]) is None and table.scope_of("") is None
    assert INFER.encode() not in repr(table).encode()  # only digests are kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{INFER}\n", "line 1: expected 'TOKEN SCOPE'"),
        (f"# x\n{INFER} root\n", "line 2: scope must be 'infer' or 'admin'"),
        ("short infer\n", "line 1: the token is shorter than 16"),
        (f"{INFER} infer\n{INFER} admin\n", "line 2: this token is listed twice"),
        ("# nothing\n", "no tokens"),
    ],
)
def test_bad_files_name_the_line_never_the_token(tmp_path, text, message):
    with pytest.raises(TokenFileError, match=message) as exc:
        read_tokens(_file(tmp_path, text))
    assert INFER not in str(exc.value)


def test_missing_file_and_loose_permissions(tmp_path, caplog):
    with pytest.raises(TokenFileError, match="cannot read the tokens file"):
        read_tokens(tmp_path / "absent")
    path = _file(tmp_path, f"{INFER} infer\n")
    os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="runtime.auth"):
        read_tokens(path)
    assert "readable by other users" in caplog.text and INFER not in caplog.text


def test_bearer_header_parsing():
    assert bearer_token(f"Bearer {INFER}") == INFER
    assert bearer_token(f"bearer {INFER}") == INFER  # the scheme is case-insensitive (RFC 7235)
    assert bearer_token(f"BEARER   {INFER}  ") == INFER
    assert bearer_token(f"Basic {INFER}") is None and bearer_token("Bearer") is None and bearer_token(None) is None


def test_authorize_statuses(tmp_path):
    table = read_tokens(_file(tmp_path, f"{INFER} infer\n{ADMIN} admin\n"))
    assert authorize(table, None, Scope.OPEN, "GET /v2/health/ready") is None
    assert authorize(table, f"Bearer {INFER}", Scope.INFER, "x") is Scope.INFER
    assert authorize(table, f"Bearer {ADMIN}", Scope.INFER, "x") is Scope.ADMIN  # admin includes infer
    with pytest.raises(Unauthorized) as exc:
        authorize(table, None, Scope.INFER, "POST /v2/models/m/infer")
    assert exc.value.status == 401 and exc.value.headers["WWW-Authenticate"].startswith("Bearer")
    with pytest.raises(Unauthorized) as exc:
        authorize(table, "Bearer wrong-token-cccccccccccc", Scope.INFER, "x")
    assert 'error="invalid_token"' in exc.value.headers["WWW-Authenticate"]
    with pytest.raises(Unauthorized):
        authorize(table, "Bearer " + "a" * (MAX_TOKEN_LENGTH + 1), Scope.INFER, "x")
    with pytest.raises(Forbidden) as exc:
        authorize(table, f"Bearer {INFER}", Scope.ADMIN, "POST /v2/repository/index")
    assert exc.value.status == 403 and "'admin' scope" in str(exc.value) and INFER not in str(exc.value)


def test_no_table_means_open():
    from runtime.auth import TokenTable

    assert authorize(TokenTable(), None, Scope.ADMIN, "x") is None

"""A stand-in for the old platform's model repository, for tests.

Pack a model the way the old platform did, serve it from 127.0.0.1, point the environment at it::

    from tests.support.model_repository import ModelRepositoryServer, pack_old_platform_zip, repository_env

    def test_convert_from_repository(tmp_path):
        zip_path = pack_old_platform_zip(tmp_path / "saved_model_dir", tmp_path / "model.zip")
        with ModelRepositoryServer() as repo:
            repo.add("42", zip_path)                       # MODEL_ID 42 (any MODEL_VERSION / GUID)
            with repository_env(repo, model_id="42"):      # sets XQUERY_ADDR, MODEL_ID, MODEL_VERSION, GUID
                manifest = convert_model(None, tmp_path / "models", "m")
            assert repo.requests == 1

Behaviour switches on the server (all settable at any time, counted per request):

- ``repo.fail_next(500, times=2)``: the next two requests answer 500 (then the zip); any status works.
- ``repo.hang_next(seconds, times=1)``: the next request sleeps before answering (client timeouts).
- ``repo.truncate_next(times=1)``: the next answer announces the full Content-Length, sends half, closes.
- unknown MODEL_ID: 404. ``repo.requests`` counts every request, ``repo.seen`` holds their query dicts.

The URL layout is the converter's default (``GET {XQUERY_ADDR}?modelId=&modelVersion=&guid=``); the
server also accepts any path, so ``MODELPORT_XQUERY_PATH`` tests work unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MODEL_PREFIX = "model/model"


def pack_old_platform_zip(source: Path, zip_path: Path, prefix: str = MODEL_PREFIX) -> Path:
    """Zip ``source`` under ``model/model/``: a file as ``model/model/<name>``, a directory whole
    (``model/model/<its contents>``), as the old platform stored SavedModels and checkpoints."""
    source, zip_path = Path(source), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if source.is_file():
            zf.write(source, f"{prefix}/{source.name}")
        else:
            for path in sorted(source.rglob("*")):
                arcname = f"{prefix}/{path.relative_to(source).as_posix()}"
                if path.is_dir():
                    zf.writestr(arcname + "/", b"")
                else:
                    zf.write(path, arcname)
    return zip_path


class ModelRepositoryServer:
    """A threaded HTTP server on 127.0.0.1 serving zips by ``modelId`` (see the module docstring)."""

    def __init__(self, model_id_param: str = "modelId") -> None:
        self.model_id_param = model_id_param
        self.models: dict[str, Path] = {}
        self.requests = 0
        self.seen: list[dict[str, str]] = []
        self._failures: list[int] = []
        self._hangs: list[float] = []
        self._truncations = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- configuration -----------------------------------------------------------------------
    def add(self, model_id: str, zip_path: Path) -> None:
        self.models[str(model_id)] = Path(zip_path)

    def fail_next(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._failures.extend([status] * times)

    def hang_next(self, seconds: float, times: int = 1) -> None:
        with self._lock:
            self._hangs.extend([seconds] * times)

    def truncate_next(self, times: int = 1) -> None:
        with self._lock:
            self._truncations += times

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ModelRepositoryServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="model-repository", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # ---- request handling --------------------------------------------------------------------
    def _next_action(self) -> tuple[int | None, float, bool]:
        with self._lock:
            self.requests += 1
            status = self._failures.pop(0) if self._failures else None
            hang = self._hangs.pop(0) if self._hangs else 0.0
            truncate = False
            if status is None and self._truncations:
                self._truncations -= 1
                truncate = True
            return status, hang, truncate

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        repo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                repo.seen.append(query)
                status, hang, truncate = repo._next_action()
                if hang:
                    time.sleep(hang)
                if status is not None:
                    return self._send_error(status, f"injected {status}")
                zip_path = repo.models.get(query.get(repo.model_id_param, ""))
                if zip_path is None:
                    return self._send_error(404, f"no model {query.get(repo.model_id_param)!r}")
                body = zip_path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Disposition", f'attachment; filename="{zip_path.name}"')
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body[: len(body) // 2] if truncate else body)
                    self.wfile.flush()
                if truncate:
                    self.close_connection = True

            def _send_error(self, status: int, message: str) -> None:
                body = message.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    self.wfile.write(body)

        return Handler


@contextlib.contextmanager
def repository_env(
    repo: ModelRepositoryServer | str,
    model_id: str = "1",
    model_version: str = "1",
    guid: str = "00000000-0000-0000-0000-000000000000",
    **extra: str,
) -> Iterator[dict[str, str]]:
    """Set XQUERY_ADDR/MODEL_ID/MODEL_VERSION/GUID (and ``extra``) in os.environ; restore after.

    Yields the variables, ready for ``subprocess.run(..., env={**os.environ, **vars})`` too.
    """
    url = repo.url if isinstance(repo, ModelRepositoryServer) else repo
    values = {"XQUERY_ADDR": url, "MODEL_ID": model_id, "MODEL_VERSION": model_version, "GUID": guid, **extra}
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield values
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def copy_tree(source: Path, dest: Path) -> Path:
    """Copy a model directory (a SavedModel, a checkpoint) for packing variants in a test."""
    shutil.copytree(source, dest)
    return dest

"""Start the real runtime server as a subprocess on 127.0.0.1 for a test, and stop it after.

The server runs under the serving virtual environment's Python when it exists (.venv/serve, built
by ``make install-serve``), so every HTTP test also proves that the runtime needs nothing from the
converter's environment. ``MODELPORT_SERVE_PYTHON`` overrides the interpreter.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def serve_python() -> str:
    explicit = os.environ.get("MODELPORT_SERVE_PYTHON")
    if explicit:
        return explicit
    candidate = ROOT / ".venv" / "serve" / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    process: subprocess.Popen
    port: int
    log_path: Path
    scheme: str = "http"
    grpc_port: int = 0  # 0: gRPC off

    @property
    def grpc_address(self) -> str:  # what tritonclient.grpc wants
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:  # what tritonclient wants
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextlib.contextmanager
def run_server(
    repository: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 120.0,
    wait_ready: bool = True,
    log_dir: Path | None = None,
    tls_ca: Path | None = None,
) -> Iterator[RunningServer]:
    """``python -m runtime --repository REPO --host 127.0.0.1 --port P *args``; yields once ready.

    ``tls_ca``: the server speaks https (its args carry --tls-cert/--tls-key); readiness is polled over
    https, verified against this CA certificate."""
    port = free_port()
    # every server gets its own gRPC port too (the default 8081 would collide between test servers)
    grpc_port = 0 if any(a.startswith("--grpc-port") for a in args) else free_port()
    log_dir = Path(log_dir or repository)
    log_path = log_dir / f"server-{port}.log"
    cmd = [
        serve_python(),
        "-m",
        "runtime",
        "--repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *(["--grpc-port", str(grpc_port)] if grpc_port else []),
        *args,
    ]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(proc, port, log_path, "https" if tls_ca else "http", grpc_port)
    try:
        if wait_ready:
            deadline = time.monotonic() + ready_timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited with {proc.returncode}:\n{server.log()}")
                with contextlib.suppress(requests.RequestException):
                    verify = str(tls_ca) if tls_ca else True
                    ready = requests.get(f"{server.url}/v2/health/ready", timeout=2, verify=verify)
                    if ready.status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"server not ready after {ready_timeout}s:\n{server.log()}")
                time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

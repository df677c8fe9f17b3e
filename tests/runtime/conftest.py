from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest

from runtime.engines import EngineOptions
from runtime.engines.onnx import session_options
from tests.runtime import models
from tests.support.server import RunningServer, run_server


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.build_repository(tmp_path_factory.mktemp("runtime-repo"))


@pytest.fixture(scope="session")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the protocol tests; lifecycle tests start their own."""
    with run_server(repository, "--all-versions", log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


@pytest.fixture(scope="session")
def reference(repository: Path):
    """onnxruntime run directly, with the server's own default session options."""
    sessions: dict[str, ort.InferenceSession] = {}

    def run(model: str, feed: dict, version: str = "1") -> dict:
        key = f"{model}/{version}"
        if key not in sessions:
            path = repository / model / version / "model.onnx"
            sessions[key] = ort.InferenceSession(
                str(path), session_options(EngineOptions()), providers=["CPUExecutionProvider"]
            )
        session = sessions[key]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feed), strict=True))

    return run

from __future__ import annotations

from pathlib import Path

import pytest

from tests.convert_torch.builders import Artifacts, build_artifacts


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """Every test model, saved every way, built once per session in a child process."""
    return build_artifacts(Path(tmp_path_factory.mktemp("torch_models")))

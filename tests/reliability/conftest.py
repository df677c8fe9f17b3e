from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability import models
from tests.support.server import RunningServer, run_server


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository with the MLP and the image model: what the fuzzer and the limit tests drive."""
    repo = tmp_path_factory.mktemp("repo")
    models.write_mlp(repo)
    models.write_vision(repo)
    return repo


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    with run_server(repository) as running:
        yield running


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.reliability.figures import FIGURES

    if FIGURES:
        terminalreporter.section("reliability figures")
        for line in FIGURES:
            terminalreporter.write_line(line)

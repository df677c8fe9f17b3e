"""Fixtures more than one suite shares."""

from __future__ import annotations

import pytest

from tests.support.examples import Built, build_examples


@pytest.fixture(scope="session")
def examples_built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The example models built and converted once per session (tests/support/examples.py)."""
    return build_examples(tmp_path_factory.mktemp("examples"))

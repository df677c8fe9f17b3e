from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from bundle.manifest import Manifest
from convert.formats import ConvertOptions, TabularOptions
from convert.pipeline import convert_model
from tests.pmml.models import TrainedModels, train

DATA = Path(__file__).parent / "data"
CLAIMS_PMML = DATA / "claims_regression.pmml"


@dataclass
class ConvertedRepository:
    path: Path
    manifests: dict[str, Manifest]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    return train(tmp_path_factory.mktemp("sklearn_models"))


@pytest.fixture(scope="session")
def repository(trained: TrainedModels, tmp_path_factory: pytest.TempPathFactory) -> ConvertedRepository:
    """Every test model converted once: three to PMML, the categorical pipeline also to ONNX, and
    the hand-written PMML passed through. Serving tests use subsets of it."""
    root = tmp_path_factory.mktemp("pmml_repository")
    jobs = {
        "logistic": (trained.paths["logistic"], ConvertOptions()),
        "forest": (trained.paths["forest"], ConvertOptions()),
        "categorical": (trained.paths["categorical"], ConvertOptions()),
        "claims": (CLAIMS_PMML, ConvertOptions()),
        "categorical_onnx": (
            trained.paths["categorical"],
            ConvertOptions(format_options=[TabularOptions(target="onnx")]),
        ),
    }
    manifests = {name: convert_model(source, root / "all", name, options=opts) for name, (source, opts) in jobs.items()}
    return ConvertedRepository(root / "all", manifests)


def claims_by_hand(age: float, salary: float, car_location: str) -> float:
    """The DMG example's regression equation, written out from its coefficients."""
    return 132.37 + 7.1 * age + 0.01 * salary + {"carpark": 41.1, "street": 325.03}[car_location]

from __future__ import annotations

from pathlib import Path

import pytest

from tests.convert_tf import builders


@pytest.fixture(scope="session")
def tf_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, builders.Saved]:
    """Every Keras/SavedModel/GraphDef test model, saved once per session."""
    directory = Path(tmp_path_factory.mktemp("tf_models"))
    models = {
        f"{kind}-{library}{suffix}": builders.save_keras(directory, kind, library, suffix)
        for kind in ("cnn", "two_io")
        for library, suffix in (("keras", ".keras"), ("keras", ".h5"), ("tf_keras", ".h5"))
    }
    models["savedmodel-keras-export"] = builders.save_keras_export(directory)
    models["savedmodel-tf-module"] = builders.save_tf_module(directory)
    models["savedmodel-tf1"] = builders.save_tf1_saved_model(directory)
    models["graphdef-tf1-frozen"] = builders.save_frozen_graph(directory)
    models["graphdef-tf2-function"] = builders.save_function_graph(directory)
    models["graphdef-keras2-session"] = builders.save_keras2_frozen_graph(directory)
    for variant in ("sequential_embedding", "dict_io", "tf_keras_sequential"):
        models[variant] = builders.save_keras_variant(directory, variant)
    return models


@pytest.fixture(scope="session")
def checkpoint_run(tmp_path_factory: pytest.TempPathFactory) -> builders.CheckpointRun:
    """One training run saved at steps 100, 1200 and 300 (in that order, so the newest step is not
    the last one written and the ``checkpoint`` file points to 300)."""
    return builders.save_checkpoints(Path(tmp_path_factory.mktemp("ckpt")) / "run", [100, 1200, 300])

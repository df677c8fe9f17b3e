"""The example models as ``make serve`` makes them: ``examples/make_examples.py`` builds the Keras
models, the pipeline converts them (the classifier with ``examples/labels.txt``). Built once per
test session (about a minute of TensorFlow) for every suite that needs them."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support.server import ROOT

EXAMPLES = ROOT / "examples"
LABELS = [line.strip() for line in (EXAMPLES / "labels.txt").read_text().splitlines() if line.strip()]


@dataclass
class Built:
    models: Path  # make_examples.py's output: the .keras files, labels.txt, sample.jpg
    repository: Path  # the converted bundles: colour-classifier/1, tabular-regressor/1


def build_examples(work: Path) -> Built:
    from convert.formats import ConvertOptions
    from convert.pipeline import convert_model

    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_examples.py"), str(work / "build")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sample.jpg -> red" in result.stdout
    repository = work / "models"
    convert_model(
        work / "build" / "colour_classifier.keras",
        repository,
        "colour-classifier",
        options=ConvertOptions(labels=LABELS),
    )
    convert_model(work / "build" / "tabular_regressor.keras", repository, "tabular-regressor")
    return Built(work / "build", repository)

"""``python -m score FOLDER`` with the example image classifier, as a user runs it: every image scored
in batch equals ``POST /api/models/colour-classifier/image`` for that file, and files that are not
images get the server's 400 text in ``error`` without failing the job."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

from tests.score.conftest import EXAMPLES, MASTER, SPARK_CONF, Built
from tests.support.server import ROOT, RunningServer


def _folder(root: Path) -> Path:
    folder = root / "images"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(5)
    (folder / "sample.jpg").write_bytes((EXAMPLES / "sample.jpg").read_bytes())
    for i, colour in enumerate([(220, 20, 30), (20, 200, 40), (30, 40, 210), (240, 230, 30), (128, 128, 128)]):
        size = (40 + 13 * i, 90 - 7 * i)  # not 64x64: the server's resize runs too
        pixels = np.clip(np.array(colour) + rng.normal(0, 12, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels)
        image.save(folder / f"colour-{i}.png")
        image.save(folder / "nested" / f"colour-{i}.jpg", quality=85)
    whole = (EXAMPLES / "sample.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.txt").write_text("not an image\n")
    return folder


def _same_text(batch: str, served: str) -> bool:
    """Pillow puts the BytesIO object's address into 'cannot identify image file': ignore only that."""
    address = re.compile(r" at 0x[0-9a-f]+")
    return address.sub("", batch) == address.sub("", served)


@pytest.mark.timeout(900)
def test_image_folder_equals_the_image_endpoint(built: Built, server: RunningServer, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "scored"
    command = [
        sys.executable,
        "-m",
        "score",
        str(folder),
        "--repository",
        str(built.repository),
        "--model",
        "colour-classifier",
        "--output",
        str(out),
        "--master",
        MASTER,
        "--batch-rows",
        "4",
        *[arg for key, value in SPARK_CONF.items() for arg in ("--conf", f"{key}={value}")],
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(r"colour-classifier v1: scored 13 rows \(2 with errors\) in [\d.]+s", summary), summary
    assert "Traceback" not in done.stderr

    got = pq.read_table(out).to_pylist()
    assert len(got) == 13
    # Small files are split over several tasks (Spark's 4 MB open cost per file would make 2 or 3).
    assert len(list(out.glob("part-*"))) >= 6
    probabilities = next(
        c for c in pq.read_schema(next(out.glob("*.parquet"))).names if c not in ("path", "label", "score", "error")
    )
    by_file = {Path(row["path"].removeprefix("file:")).relative_to(folder).as_posix(): row for row in got}
    assert set(by_file) == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for name, row in by_file.items():
        data = (folder / name).read_bytes()
        answer = requests.post(
            f"{server.url}/api/models/colour-classifier/image", files={"image": (Path(name).name, data)}, timeout=30
        )
        if name in ("truncated.jpg", "notes.txt"):
            assert answer.status_code == 400
            assert row["error"] and _same_text(row["error"], answer.json()["error"]), (row["error"], answer.text)
            assert row["label"] is None and row["score"] is None
            continue
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert row["error"] is None
        assert row["label"] == body["predictions"][0]["label"]
        assert row["score"] == pytest.approx(body["predictions"][0]["score"], rel=1e-5, abs=1e-6)
        (served,) = body["outputs"].values()
        np.testing.assert_allclose(row[probabilities], served[0], rtol=1e-5, atol=1e-6)
    assert by_file["sample.jpg"]["label"] == "red"

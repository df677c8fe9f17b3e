"""Tiny scikit-learn models trained on a pandas DataFrame, deterministic, for the PMML tests."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

COLORS = ["blue", "green", "red"]
NUMERIC = ["width", "height"]


def training_frame(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "width": rng.normal(5.0, 2.0, rows),
            "height": rng.normal(-1.0, 0.5, rows),
            "color": rng.choice(COLORS, rows),
        }
    )


def query_frame(rows: int = 25, seed: int = 1) -> pd.DataFrame:
    """Rows the models never saw, for comparing served predictions with scikit-learn's."""
    return training_frame(rows, seed)


@dataclass
class TrainedModels:
    logistic: LogisticRegression  # numeric fields only, integer labels 0/1
    forest: Pipeline  # StandardScaler + RandomForest, string labels
    categorical: Pipeline  # ColumnTransformer(StandardScaler | OneHotEncoder) + LogisticRegression
    paths: dict[str, Path]


def train(directory: Path) -> TrainedModels:
    frame = training_frame()
    numeric = frame[NUMERIC]
    logistic = LogisticRegression().fit(numeric, (frame.width + 2 * frame.height > 3).astype(int))
    forest = Pipeline(
        [("scale", StandardScaler()), ("forest", RandomForestClassifier(n_estimators=7, max_depth=4, random_state=0))]
    ).fit(numeric, np.where(frame.width > 5.0, "wide", np.where(frame.height > -1.0, "tall", "small")))
    encode = ColumnTransformer([("num", StandardScaler(), NUMERIC), ("cat", OneHotEncoder(), ["color"])])
    categorical = Pipeline([("prepare", encode), ("classify", LogisticRegression())]).fit(
        frame, np.where((frame.color == "red") | (frame.width > 6.0), "yes", "no")
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "logistic": directory / "logistic.pkl",
        "forest": directory / "forest.joblib",
        "categorical": directory / "categorical.joblib",
    }
    with open(paths["logistic"], "wb") as f:
        pickle.dump(logistic, f)  # a plain pickle; the others are joblib files (one compressed)
    joblib.dump(forest, paths["forest"])
    joblib.dump(categorical, paths["categorical"], compress=3)
    return TrainedModels(logistic, forest, categorical, paths)

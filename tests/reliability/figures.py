"""Measured figures (fuzz, load, overload, shutdown) collected during the run and printed in pytest's
terminal summary, so CI logs show them even without ``-s``."""

from __future__ import annotations

FIGURES: list[str] = []


def record(line: str) -> None:
    FIGURES.append(line.strip())
    print("\n" + line.strip())

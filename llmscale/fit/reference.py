"""The published Chinchilla runs (Hoffmann et al. 2022, digitised by Besiroglu et al. 2024),
shipped as package data (llmscale/fit/data/, provenance and licence in its README)."""

from __future__ import annotations

import csv
import io
from importlib.resources import files

import numpy as np

REFERENCE_FILE = "chinchilla_epoch.csv"
# Besiroglu et al. (2024), Table: 95% intervals of their refit on the 240 lowest-loss runs.
PUBLISHED_CI = {"E": (1.769, 1.871), "A": (285, 744), "B": (1042, 5810),
                "alpha": (0.317, 0.373), "beta": (0.331, 0.415)}


def chinchilla_text() -> str:
    return (files("llmscale.fit") / "data" / REFERENCE_FILE).read_text(encoding="utf-8")


def chinchilla_runs(keep: int = 240) -> dict[str, np.ndarray]:
    """N, D, C, loss of the `keep` lowest-loss runs (240: Besiroglu et al. drop the 5 highest,
    under-trained large models). D = C / (6 N), as they derive it."""
    rows = sorted(csv.DictReader(io.StringIO(chinchilla_text())),
                  key=lambda r: float(r["loss"]))[:keep]
    N = np.array([float(r["Model Size"]) for r in rows])
    C = np.array([float(r["Training FLOP"]) for r in rows])
    return {"N": N, "D": C / (6 * N), "C": C, "loss": np.array([float(r["loss"]) for r in rows])}

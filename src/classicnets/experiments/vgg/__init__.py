"""Reproduce the VGG paper's claims at small scale: `classicnets reproduce vgg`.

The experiment is data, in `paper`: GRID (which nets and how each is trained), TEST_PROTOCOLS (how each
is tested), PAPER (Simonyan & Zisserman's Tables 3-5) and CLAIMS (what is compared with what).
`reproduce_vgg` (in `runner`) trains every (grid row, seed) with `classicnets.training.trainer.train`,
tests the final weights with `classicnets.evaluation.evaluate`, and writes report.md, report.json and
errors.png (`report`); `stats` holds the rule that judges each claim.

Each run lives in OUT/runs/<config>-seed<k>/. A run with reproduce.json there is finished and is not
touched again; a run with only last.pt was interrupted and is resumed by the trainer; so the command
is simply re-run until it is done. A run that fails (say, diverges) leaves failed.json and the grid
goes on; delete that run dir to try it again.

Scale. The paper trains 224x224 crops from images rescaled to a short side S = 256 (or S drawn from
[256, 512]) and tests at Q = S, at Q = {S-32, S, S+32}, or Q = {256, 384, 512} for jittered S. We keep
those ratios to the crop size: with --size 32 the crop is 32, S = 37, jittered S in [37, 73], Q = 37
(55 for jittered S), multi-scale Q = {32, 37, 42} (and {37, 55, 73}).
"""

import importlib

from classicnets.experiments.vgg.paper import (
    CLAIMS,
    DEFAULT_GRID_RECIPE,
    GRID,
    GRID_RECIPES,
    GRID_ROWS,
    PAPER,
    PAPER_BESIDE,
    PAPER_REF,
    TEST_PROTOCOLS,
    Claim,
    Geometry,
    GridRow,
    PaperRow,
    TestProtocol,
)
from classicnets.experiments.vgg.settings import DEFAULT_JOBS, GridSettings

# The runner and the statistics import torch: loaded on first use, so `classicnets reproduce --help` is fast.
_LAZY = {"GridResult": "runner", "parse_train_options": "runner", "reproduce_vgg": "runner",
         "FAILS": "stats", "HOLDS": "stats", "RULE": "stats", "UNSURE": "stats", "judge": "stats",
         "verdict": "stats"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"classicnets.experiments.vgg.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'classicnets.experiments.vgg' has no attribute {name!r}")


__all__ = [
    "CLAIMS",
    "DEFAULT_GRID_RECIPE",
    "DEFAULT_JOBS",
    "FAILS",
    "GRID",
    "GRID_RECIPES",
    "GRID_ROWS",
    "HOLDS",
    "PAPER",
    "PAPER_BESIDE",
    "PAPER_REF",
    "RULE",
    "TEST_PROTOCOLS",
    "UNSURE",
    "Claim",
    "Geometry",
    "GridResult",
    "GridRow",
    "GridSettings",
    "PaperRow",
    "TestProtocol",
    "judge",
    "parse_train_options",
    "reproduce_vgg",
    "verdict",
]
